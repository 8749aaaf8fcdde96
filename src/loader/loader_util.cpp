#include "loader/loader_util.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/log.h"

#include "arch/x86/layout.h"

namespace vessel::loader {

namespace {

// Closes a file descriptor on scope exit.
class FdGuard {
public:
    explicit FdGuard(int fd) : m_fd(fd) { }
    FdGuard(const FdGuard&) = delete;
    FdGuard& operator=(const FdGuard&) = delete;
    ~FdGuard()
    {
        if (m_fd >= 0)
            ::close(m_fd);
    }
    int get() const { return m_fd; }

private:
    int m_fd;
};

} // namespace

uint64_t low_ram_end(const GuestMemory& memory)
{
    for (const auto& region : memory.regions()) {
        if (region.guest_base == 0)
            return region.size;
    }
    return 0;
}

std::string kernel_context(const LoadRequest& request)
{
    return fmt::format("kernel '{}'", request.kernel_path);
}

Result<std::optional<InitrdPlacement>> load_initrd(GuestMemory& memory, const LoadRequest& request,
                                                   uint64_t lowest, uint64_t limit)
{
    if (request.initrd_path.empty())
        return std::optional<InitrdPlacement> {};
    const std::string& path = request.initrd_path;

    FdGuard fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (fd.get() < 0)
        return Error::from_errno(fmt::format("initrd '{}': cannot open", path));
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0)
        return Error::from_errno(fmt::format("initrd '{}': cannot stat", path));
    if (!S_ISREG(st.st_mode))
        return make_error("initrd '{}': not a regular file", path);
    uint64_t size = static_cast<uint64_t>(st.st_size);
    if (size == 0)
        return make_error("initrd '{}': file is empty", path);

    lowest = align_up(lowest, kPageSize);
    limit = std::min(limit, low_ram_end(memory));
    uint64_t room = limit > lowest ? limit - lowest : 0;
    // lowest is page-aligned, so aligning the start down never takes it below lowest.
    if (size > room)
        return make_error("initrd '{}': too large ({} bytes; guest RAM has room for {} bytes between "
                          "{:#x} and {:#x} above the kernel)",
                          path, size, room, lowest, limit);
    uint64_t addr = align_down(limit - size, kPageSize);

    // SAFETY: host_ptr checks that [addr, addr + size) lies inside one RAM mapping; the read
    // loop below never writes beyond `size` bytes from dst.
    uint8_t* dst = memory.host_ptr(addr, size);
    if (!dst)
        return make_error("initrd '{}': {:#x}+{:#x} is not inside guest RAM", path, addr, size);
    uint64_t done = 0;
    while (done < size) {
        ssize_t n = ::read(fd.get(), dst + done, size - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return Error::from_errno(fmt::format("initrd '{}': cannot read", path));
        if (n == 0)
            return make_error("initrd '{}': file shrank while being read ({} of {} bytes)", path, done, size);
        done += static_cast<uint64_t>(n);
    }
    log_debug("initrd '{}': {} bytes at {:#x}", path, size, addr);
    return std::optional<InitrdPlacement>(InitrdPlacement { addr, size });
}

Result<void> write_cmdline(GuestMemory& memory, const LoadRequest& request, uint64_t max_length)
{
    const std::string& cmdline = request.cmdline;
    uint64_t limit = std::min(max_length, layout::kCmdlineMax - 1);
    if (cmdline.size() > limit)
        return make_error("{}: command line is {} bytes, longer than the limit of {} bytes",
                          kernel_context(request), cmdline.size(), limit);
    if (cmdline.find('\0') != std::string::npos)
        return make_error("{}: command line contains a NUL byte", kernel_context(request));
    auto bytes = std::span(reinterpret_cast<const uint8_t*>(cmdline.data()), cmdline.size());
    TRY_CTX(memory.write(layout::kCmdline, bytes), kernel_context(request));
    TRY_CTX(memory.fill(layout::kCmdline + cmdline.size(), 0, 1), kernel_context(request));
    return {};
}

Result<void> check_above_low_memory(uint64_t addr, uint64_t size, std::string_view what)
{
    if (size != 0 && addr < layout::kHighMemStart)
        return make_error("{} at {:#x} overlaps the memory below 1 MiB that Vessel reserves for "
                          "boot structures and firmware tables",
                          what, addr);
    return {};
}

} // namespace vessel::loader
