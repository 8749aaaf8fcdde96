#include "memory/uffd_memory.h"

#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include <nlohmann/json.hpp>

namespace vessel::uffd {

namespace {

constexpr size_t kMaxFds = 4;

Result<uint64_t> read_u64(const nlohmann::json& region, const char* key, size_t index)
{
    auto it = region.find(key);
    if (it == region.end())
        return make_error("region {}: no \"{}\"", index, key);
    if (!it->is_number_unsigned() && !(it->is_number_integer() && it->get<int64_t>() >= 0))
        return make_error("region {}: \"{}\" is not an unsigned integer", index, key);
    return it->get<uint64_t>();
}

bool is_power_of_two(uint64_t v)
{
    return v && !(v & (v - 1));
}

} // namespace

std::string encode_regions(const std::vector<RegionMapping>& regions)
{
    // Firecracker serializes its GuestRegionUffdMapping with serde: fields in declaration order,
    // no spaces. page_size_kib repeats page_size (in bytes: Firecracker's misnamed, deprecated
    // field, which handlers written for its 1.5-1.9 releases read).
    nlohmann::ordered_json out = nlohmann::ordered_json::array();
    for (const auto& r : regions) {
        nlohmann::ordered_json o;
        o["base_host_virt_addr"] = r.base_host_virt_addr;
        o["size"] = r.size;
        o["offset"] = r.offset;
        o["page_size"] = r.page_size;
        o["page_size_kib"] = r.page_size;
        out.push_back(std::move(o));
    }
    return out.dump();
}

Result<std::vector<RegionMapping>> decode_regions(std::string_view text)
{
    if (text.size() > kMaxMessageBytes)
        return make_error("the region list is {} bytes long (at most {})", text.size(), kMaxMessageBytes);
    auto doc = nlohmann::json::parse(text.begin(), text.end(), nullptr, false);
    if (doc.is_discarded())
        return make_error("the region list is not valid JSON");
    if (!doc.is_array())
        return make_error("the region list is not a JSON array");
    if (doc.empty())
        return make_error("the region list is empty");
    if (doc.size() > kMaxRegions)
        return make_error("the region list has {} regions (at most {})", doc.size(), kMaxRegions);
    std::vector<RegionMapping> out;
    for (size_t i = 0; i < doc.size(); ++i) {
        const auto& j = doc[i];
        if (!j.is_object())
            return make_error("region {} is not a JSON object", i);
        RegionMapping r;
        r.base_host_virt_addr = TRY(read_u64(j, "base_host_virt_addr", i));
        r.size = TRY(read_u64(j, "size", i));
        r.offset = TRY(read_u64(j, "offset", i));
        if (j.contains("page_size")) {
            r.page_size = TRY(read_u64(j, "page_size", i));
        } else if (j.contains("page_size_kib")) {
            r.page_size = TRY(read_u64(j, "page_size_kib", i));
            if (r.page_size < 4096)
                r.page_size *= 1024;
        }
        if (!is_power_of_two(r.page_size) || r.page_size < 4096 || r.page_size > (1ULL << 30))
            return make_error("region {}: page size {} is not a power of two from 4 KiB to 1 GiB", i, r.page_size);
        if (r.size == 0 || r.size % r.page_size || r.base_host_virt_addr % r.page_size || r.offset % r.page_size)
            return make_error("region {}: address {:#x}, size {:#x} and offset {:#x} must be non-zero multiples of "
                              "the page size {:#x}",
                i, r.base_host_virt_addr, r.size, r.offset, r.page_size);
        if (r.base_host_virt_addr + r.size < r.base_host_virt_addr || r.offset + r.size < r.offset)
            return make_error("region {}: wraps around the address space", i);
        out.push_back(r);
    }
    auto sorted = out;
    std::sort(sorted.begin(), sorted.end(),
        [](const auto& a, const auto& b) { return a.base_host_virt_addr < b.base_host_virt_addr; });
    for (size_t i = 1; i < sorted.size(); ++i)
        if (sorted[i - 1].base_host_virt_addr + sorted[i - 1].size > sorted[i].base_host_virt_addr)
            return make_error(
                "regions at {:#x} and {:#x} overlap", sorted[i - 1].base_host_virt_addr, sorted[i].base_host_virt_addr);
    std::sort(sorted.begin(), sorted.end(), [](const auto& a, const auto& b) { return a.offset < b.offset; });
    for (size_t i = 1; i < sorted.size(); ++i)
        if (sorted[i - 1].offset + sorted[i - 1].size > sorted[i].offset)
            return make_error(
                "regions at file offsets {:#x} and {:#x} overlap", sorted[i - 1].offset, sorted[i].offset);
    return out;
}

Result<void> send_with_fd(int socket, std::string_view message, int fd)
{
    iovec iov { const_cast<char*>(message.data()), message.size() };
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] {};
    msghdr msg {};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof(control);
    cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(int));
    // SAFETY: the control buffer holds CMSG_SPACE(sizeof(int)) bytes, so the data fits one int.
    std::memcpy(CMSG_DATA(cmsg), &fd, sizeof(int));
    ssize_t n;
    do
        n = ::sendmsg(socket, &msg, MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return Error::from_errno("sending the region list to the page-fault handler");
    if (static_cast<size_t>(n) != message.size()) {
        // The fd went with the first byte; the rest follows in order on the stream.
        std::string_view rest = message.substr(static_cast<size_t>(n));
        while (!rest.empty()) {
            ssize_t m = ::send(socket, rest.data(), rest.size(), MSG_NOSIGNAL);
            if (m < 0 && errno == EINTR)
                continue;
            if (m <= 0)
                return Error::from_errno("sending the region list to the page-fault handler");
            rest.remove_prefix(static_cast<size_t>(m));
        }
    }
    return {};
}

Result<Received> receive_with_fds(int socket, size_t max_bytes, int timeout_ms)
{
    pollfd p { socket, POLLIN, 0 };
    int ready;
    do
        ready = ::poll(&p, 1, timeout_ms);
    while (ready < 0 && errno == EINTR);
    if (ready < 0)
        return Error::from_errno("waiting for the VMM's message");
    if (ready == 0)
        return make_error("no message from the VMM within {} ms", timeout_ms);
    Received out;
    out.message.resize(max_bytes);
    iovec iov { out.message.data(), max_bytes };
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFds)] {};
    msghdr msg {};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof(control);
    ssize_t n;
    do
        n = ::recvmsg(socket, &msg, MSG_CMSG_CLOEXEC);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return Error::from_errno("receiving the VMM's message");
    out.message.resize(static_cast<size_t>(n));
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
            continue;
        size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < count; ++i) {
            int fd;
            // SAFETY: the kernel wrote `count` ints after the header, inside `control`.
            std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
            out.fds.push_back(fd);
        }
    }
    if (msg.msg_flags & MSG_CTRUNC) {
        for (int fd : out.fds)
            ::close(fd);
        return make_error("the VMM sent more than {} file descriptors", kMaxFds);
    }
    return out;
}

Result<int> create_userfaultfd()
{
    // Kernel-mode faults are needed (no UFFD_USER_MODE_ONLY): KVM and syscalls such as read() into
    // guest RAM fault on it as well as the VMM's own threads.
    int fd = static_cast<int>(::syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK));
    int syscall_errno = errno;
    if (fd < 0 && (errno == EPERM || errno == ENOSYS)) {
        int dev = ::open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
        if (dev >= 0) {
            fd = ::ioctl(dev, USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK);
            ::close(dev);
        }
    }
    if (fd < 0)
        return Error::from_errno("cannot create a userfaultfd (an unprivileged VMM needs vm.unprivileged_userfaultfd=1 "
                                 "or read-write access to /dev/userfaultfd)",
            syscall_errno);
    uffdio_api api {};
    api.api = UFFD_API;
    api.features = UFFD_FEATURE_EVENT_REMOVE;
    if (::ioctl(fd, UFFDIO_API, &api) != 0) {
        auto err = Error::from_errno("userfaultfd: UFFDIO_API with UFFD_FEATURE_EVENT_REMOVE");
        ::close(fd);
        return err;
    }
    return fd;
}

std::vector<RegionMapping> regions_of(const GuestMemory& memory)
{
    std::vector<RegionMapping> out;
    for (const MemoryRegion& r : memory.regions())
        out.push_back(RegionMapping { reinterpret_cast<uint64_t>(r.host), r.size, r.file_offset, 4096 });
    return out;
}

Result<void> attach_handler(GuestMemory& memory, int connection)
{
    if (memory.backing() != GuestMemory::Backing::Anonymous)
        return make_error("the Uffd backend needs anonymous guest memory");
    int uffd = TRY(create_userfaultfd());
    auto fail = [&](Error e) -> Result<void> {
        ::close(uffd);
        return e;
    };
    constexpr uint64_t kNeeded = (1ULL << _UFFDIO_COPY) | (1ULL << _UFFDIO_ZEROPAGE) | (1ULL << _UFFDIO_WAKE);
    for (const MemoryRegion& r : memory.regions()) {
        uffdio_register reg {};
        reg.range.start = reinterpret_cast<uint64_t>(r.host);
        reg.range.len = r.size;
        reg.mode = UFFDIO_REGISTER_MODE_MISSING;
        if (::ioctl(uffd, UFFDIO_REGISTER, &reg) != 0)
            return fail(Error::from_errno(fmt::format("userfaultfd: registering {} MiB of guest RAM", r.size >> 20)));
        if ((reg.ioctls & kNeeded) != kNeeded)
            return fail(make_error("userfaultfd: the kernel offers no UFFDIO_COPY/ZEROPAGE on guest RAM"));
    }
    if (auto sent = send_with_fd(connection, encode_regions(regions_of(memory)), uffd); !sent.ok())
        return fail(sent.error());
    // The VMM keeps its copy of the userfaultfd: should the handler die, a fault then waits
    // (the VM hangs) instead of the memory silently turning into zero-filled anonymous memory.
    // It keeps the connection too: the handler sees it close when the VMM exits.
    memory.keep_fd(uffd);
    memory.keep_fd(connection);
    return {};
}

Result<GuestMemory> map_with_handler(const std::string& socket_path, uint64_t size)
{
    sockaddr_un addr {};
    addr.sun_family = AF_UNIX;
    if (socket_path.empty() || socket_path.size() >= sizeof(addr.sun_path))
        return make_error("page-fault handler socket '{}': the path is empty or longer than {} bytes", socket_path,
            sizeof(addr.sun_path) - 1);
    std::memcpy(addr.sun_path, socket_path.c_str(), socket_path.size());
    auto memory = TRY(GuestMemory::create_anonymous(size));
    int sock = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (sock < 0)
        return Error::from_errno("socket for the page-fault handler");
    int rc;
    do
        rc = ::connect(sock, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr));
    while (rc < 0 && errno == EINTR);
    if (rc != 0) {
        auto err = Error::from_errno(fmt::format("cannot connect to the page-fault handler at '{}'", socket_path));
        ::close(sock);
        return err;
    }
    if (auto attached = attach_handler(memory, sock); !attached.ok()) {
        ::close(sock);
        return attached.error().with_context(fmt::format("page-fault handler '{}'", socket_path));
    }
    return memory;
}

} // namespace vessel::uffd
