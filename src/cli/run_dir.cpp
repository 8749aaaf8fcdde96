#include "cli/run_dir.h"

#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>

#include <fmt/format.h>

namespace vessel {

Result<std::string> run_directory()
{
    std::string dir;
    if (const char* xdg = std::getenv("XDG_RUNTIME_DIR"); xdg && *xdg)
        dir = std::string(xdg) + "/vessel";
    else if (::geteuid() == 0)
        dir = "/run/vessel";
    else
        dir = fmt::format("/tmp/vessel-{}", ::geteuid());
    if (const char* over = std::getenv("VESSEL_RUN_DIR"); over && *over)
        dir = over;
    if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST)
        return Error::from_errno(fmt::format("cannot create the run directory '{}'", dir));
    struct stat st { };
    if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
        return make_error("the run directory '{}' is not a directory", dir);
    return dir;
}

Result<void> check_instance_id(const std::string& id)
{
    if (id.empty() || id.size() > 64)
        return make_error("--id: '{}' must be 1 to 64 characters long", id);
    for (unsigned char c : id)
        if (!std::isalnum(c) && c != '-')
            return make_error("--id: '{}' may only contain letters, digits and '-'", id);
    return {};
}

Result<std::string> resolve_vm_socket(const std::string& id_or_path)
{
    if (id_or_path.find('/') != std::string::npos || id_or_path.ends_with(".sock"))
        return id_or_path;
    auto dir = TRY(run_directory());
    std::string path = dir + "/" + id_or_path + ".sock";
    if (::access(path.c_str(), F_OK) != 0)
        return make_error("no VM '{}' (no {}; `vessel ls` lists the running VMs)", id_or_path, path);
    return path;
}

std::vector<std::string> list_vm_sockets()
{
    std::vector<std::string> out;
    auto dir = run_directory();
    if (!dir.ok())
        return out;
    DIR* d = ::opendir(dir->c_str());
    if (!d)
        return out;
    while (dirent* e = ::readdir(d)) {
        std::string name = e->d_name;
        if (name.size() > 5 && name.ends_with(".sock"))
            out.push_back(*dir + "/" + name);
    }
    ::closedir(d);
    std::sort(out.begin(), out.end());
    return out;
}

} // namespace vessel
