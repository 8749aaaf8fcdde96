#include "base/file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <charconv>

namespace vessel {

Result<std::vector<uint8_t>> read_file(const std::string& path, uint64_t max_bytes)
{
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return Error::from_errno(fmt::format("cannot open '{}'", path));
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
        int err = errno;
        ::close(fd);
        return Error::from_errno(fmt::format("cannot stat '{}'", path), err);
    }
    if (!S_ISREG(st.st_mode)) {
        ::close(fd);
        return make_error("'{}' is not a regular file", path);
    }
    if (static_cast<uint64_t>(st.st_size) > max_bytes) {
        ::close(fd);
        return make_error("'{}' is too large ({} bytes, limit {})", path, st.st_size, max_bytes);
    }
    std::vector<uint8_t> data(static_cast<size_t>(st.st_size));
    size_t done = 0;
    while (done < data.size()) {
        ssize_t n = ::read(fd, data.data() + done, data.size() - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            int err = n < 0 ? errno : EIO;
            ::close(fd);
            return Error::from_errno(fmt::format("cannot read '{}'", path), err);
        }
        done += static_cast<size_t>(n);
    }
    ::close(fd);
    return data;
}

Result<uint64_t> parse_size(std::string_view text)
{
    if (text.empty())
        return make_error("empty size");
    uint64_t value = 0;
    auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (ec != std::errc() || ptr == text.data())
        return make_error("invalid size '{}'", text);
    std::string_view suffix(ptr, static_cast<size_t>(text.data() + text.size() - ptr));
    unsigned shift = 0;
    if (suffix.empty() || suffix == "B" || suffix == "b")
        shift = 0;
    else if (suffix == "K" || suffix == "k" || suffix == "KiB" || suffix == "KB")
        shift = 10;
    else if (suffix == "M" || suffix == "m" || suffix == "MiB" || suffix == "MB")
        shift = 20;
    else if (suffix == "G" || suffix == "g" || suffix == "GiB" || suffix == "GB")
        shift = 30;
    else if (suffix == "T" || suffix == "t" || suffix == "TiB" || suffix == "TB")
        shift = 40;
    else
        return make_error("invalid size suffix in '{}' (use K, M, G or T)", text);
    if (shift && value > (UINT64_MAX >> shift))
        return make_error("size '{}' is too large", text);
    return value << shift;
}

} // namespace vessel
