#include "devices/virtio/tap.h"

#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "base/log.h"

namespace vessel {

namespace {

// virtio_net_hdr_v1 with VERSION_1: num_buffers is always part of the header (virtio v1.2, 5.1.6).
constexpr int kVnetHdrBytes = 12;

unsigned tun_flags(uint32_t offloads)
{
    unsigned flags = 0;
    if (offloads & kNetOffloadCsum)
        flags |= TUN_F_CSUM;
    if (offloads & kNetOffloadTso4)
        flags |= TUN_F_TSO4;
    if (offloads & kNetOffloadTso6)
        flags |= TUN_F_TSO6;
    if (offloads & kNetOffloadTsoEcn)
        flags |= TUN_F_TSO_ECN;
    return flags;
}

// Brings a tap Vessel created up (a fresh tap is down, and a down tap drops every frame).
void bring_up(const std::string& name)
{
    int s = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0)
        return;
    ifreq ifr {};
    std::strncpy(ifr.ifr_name, name.c_str(), IFNAMSIZ - 1);
    if (::ioctl(s, SIOCGIFFLAGS, &ifr) == 0) {
        ifr.ifr_flags |= IFF_UP;
        if (::ioctl(s, SIOCSIFFLAGS, &ifr) != 0)
            log_warn("tap {}: cannot bring it up: {}", name, std::strerror(errno));
    }
    ::close(s);
}

ssize_t result_or_errno(ssize_t n)
{
    return n >= 0 ? n : -errno;
}

} // namespace

Result<std::unique_ptr<TapBackend>> TapBackend::open(std::string_view name)
{
    const std::string shown = name.empty() ? std::string("(new)") : std::string(name);
    if (name.size() >= IFNAMSIZ)
        return make_error("tap '{}': interface names are at most {} characters", name, IFNAMSIZ - 1);
    int fd = ::open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        int err = errno;
        if (err == ENOENT || err == ENODEV || err == ENXIO)
            return make_error(
                "tap '{}': /dev/net/tun does not exist (the tun module is not loaded: modprobe tun)", shown);
        if (err == EACCES || err == EPERM)
            return make_error("tap '{}': cannot open /dev/net/tun: permission denied (run as root, or give this user "
                              "access to /dev/net/tun)",
                shown);
        return Error::from_errno(fmt::format("tap '{}': cannot open /dev/net/tun", shown), err);
    }
    // A name that does not exist yet makes TUNSETIFF create the tap (with CAP_NET_ADMIN): like
    // one the kernel names, it is Vessel's, down and without address until brought up.
    bool created = name.empty() || ::if_nametoindex(std::string(name).c_str()) == 0;
    // From here on the descriptor is owned by the object (closed by its destructor on errors).
    std::unique_ptr<TapBackend> tap(new TapBackend(fd, std::string(name), created));

    ifreq ifr {};
    // "vessel%d": the kernel replaces %d with the first free number.
    std::strncpy(ifr.ifr_name, name.empty() ? "vessel%d" : std::string(name).c_str(), IFNAMSIZ - 1);
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
    if (::ioctl(fd, TUNSETIFF, &ifr) != 0) {
        int err = errno;
        switch (err) {
        case EPERM:
        case EACCES:
            return make_error("tap '{}': permission denied (creating a tap, or attaching to one owned by another "
                              "user, needs CAP_NET_ADMIN; as root: ip tuntap add dev {} mode tap user $USER)",
                shown, name.empty() ? "NAME" : shown);
        case EBUSY: return make_error("tap '{}' is busy: another process (another VM?) is attached to it", shown);
        case EINVAL:
            return make_error("'{}' exists but is not a single-queue tap device (it is a tun device, a multi-queue "
                              "tap, or another kind of interface)",
                shown);
        default: return Error::from_errno(fmt::format("tap '{}': TUNSETIFF", shown), err);
        }
    }
    tap->m_name = ifr.ifr_name; // the kernel's choice for "vessel%d"

    int hdr = kVnetHdrBytes;
    if (::ioctl(fd, TUNSETVNETHDRSZ, &hdr) != 0)
        return Error::from_errno(fmt::format("tap '{}': TUNSETVNETHDRSZ {}", tap->m_name, hdr));

    // Probe the receive offloads: TUNSETOFFLOAD fails with EINVAL on bits the kernel lacks.
    // The richest set first; then none until the guest accepts some (activation).
    const uint32_t candidates[] = {
        kNetOffloadCsum | kNetOffloadTso4 | kNetOffloadTso6 | kNetOffloadTsoEcn,
        kNetOffloadCsum | kNetOffloadTso4 | kNetOffloadTso6,
        kNetOffloadCsum,
    };
    for (uint32_t c : candidates) {
        if (::ioctl(fd, TUNSETOFFLOAD, static_cast<unsigned long>(tun_flags(c))) == 0) {
            tap->m_supported = c;
            break;
        }
    }
    if (::ioctl(fd, TUNSETOFFLOAD, 0UL) != 0)
        return Error::from_errno(fmt::format("tap '{}': TUNSETOFFLOAD", tap->m_name));

    if (tap->m_created)
        bring_up(tap->m_name);
    return tap;
}

TapBackend::~TapBackend()
{
    if (m_fd >= 0)
        ::close(m_fd);
}

Result<void> TapBackend::set_offloads(uint32_t offloads)
{
    offloads &= m_supported;
    if (::ioctl(m_fd, TUNSETOFFLOAD, static_cast<unsigned long>(tun_flags(offloads))) != 0)
        return Error::from_errno(fmt::format("tap {}: TUNSETOFFLOAD {:#x}", m_name, tun_flags(offloads)));
    return {};
}

ssize_t TapBackend::read_frame(std::span<const iovec> iov)
{
    // One read = one frame; a frame longer than the buffers is dropped by the kernel (error).
    return result_or_errno(::readv(m_fd, iov.data(), static_cast<int>(iov.size())));
}

ssize_t TapBackend::write_frame(std::span<const iovec> iov)
{
    return result_or_errno(::writev(m_fd, iov.data(), static_cast<int>(iov.size())));
}

SocketBackend::SocketBackend(int fd, uint32_t offloads)
    : m_fd(fd)
    , m_supported(offloads)
{
    int flags = ::fcntl(m_fd, F_GETFL);
    if (flags >= 0)
        ::fcntl(m_fd, F_SETFL, flags | O_NONBLOCK);
}

SocketBackend::~SocketBackend()
{
    if (m_fd >= 0)
        ::close(m_fd);
}

Result<void> SocketBackend::set_offloads(uint32_t offloads)
{
    if (offloads & ~m_supported)
        return make_error("socket backend: offloads {:#x} not supported ({:#x})", offloads, m_supported);
    m_offloads = offloads;
    return {};
}

ssize_t SocketBackend::read_frame(std::span<const iovec> iov)
{
    msghdr msg {};
    msg.msg_iov = const_cast<iovec*>(iov.data()); // recvmsg does not modify the array
    msg.msg_iovlen = iov.size();
    ssize_t n = ::recvmsg(m_fd, &msg, MSG_DONTWAIT);
    if (n < 0)
        return -errno;
    if (msg.msg_flags & MSG_TRUNC)
        return -EMSGSIZE; // like a tap: a frame that does not fit is lost, not cut
    return n;
}

ssize_t SocketBackend::write_frame(std::span<const iovec> iov)
{
    msghdr msg {};
    msg.msg_iov = const_cast<iovec*>(iov.data()); // sendmsg does not modify the array
    msg.msg_iovlen = iov.size();
    return result_or_errno(::sendmsg(m_fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL));
}

} // namespace vessel
