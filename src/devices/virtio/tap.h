// Host-side backends of virtio-net: where the guest's Ethernet frames go and come from.
//
// Every frame crosses a backend as one message: the 12-byte virtio_net_hdr_v1 followed by the
// Ethernet frame, exactly the layout of a virtio-net buffer with VERSION_1, so the device can
// hand guest buffers to the kernel as they are (readv/writev straight into/out of guest RAM).
//  - TapBackend: a Linux tap device (/dev/net/tun, IFF_TAP | IFF_NO_PI | IFF_VNET_HDR), the real one.
//  - SocketBackend: a SOCK_SEQPACKET/SOCK_DGRAM socket, one frame per message; what the unit
//    tests and the fuzz target put behind the device (no root, no tap needed).
#pragma once

#include <sys/types.h>
#include <sys/uio.h>

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "base/result.h"

namespace vessel {

// Receive offloads (host → guest) a backend can pass through un-segmented / un-checksummed;
// the device offers the matching GUEST_* features only if the backend has them.
enum NetOffload : uint32_t {
    kNetOffloadCsum = 1, // partial checksums (VIRTIO_NET_F_GUEST_CSUM)
    kNetOffloadTso4 = 2, // TCPv4 segmentation (GUEST_TSO4)
    kNetOffloadTso6 = 4, // TCPv6 segmentation (GUEST_TSO6)
    kNetOffloadTsoEcn = 8, // TSO with ECN (GUEST_ECN)
};

class NetBackend {
public:
    virtual ~NetBackend() = default;
    // For log and error messages: "tap vessel0", "socket".
    virtual std::string describe() const = 0;
    // Non-blocking descriptor, readable when a frame waits, writable when one can be sent.
    virtual int fd() const = 0;
    // NetOffload bits the backend supports (probed once, when it was opened).
    virtual uint32_t supported_offloads() const = 0;
    // Which of them the guest accepted (a subset of supported_offloads()).
    virtual Result<void> set_offloads(uint32_t offloads) = 0;
    // Reads one frame (header included) into `iov`. Returns its length, or -errno: -EAGAIN when
    // no frame waits; any other error means this frame was lost (e.g. it did not fit).
    virtual ssize_t read_frame(std::span<const iovec> iov) = 0;
    // Writes one frame (header included). Returns the length written, or -errno (-EAGAIN: the
    // backend is full, try again once fd() is writable; other errors: the frame was dropped).
    virtual ssize_t write_frame(std::span<const iovec> iov) = 0;
};

class TapBackend final : public NetBackend {
public:
    // Attaches to tap `name`, or creates it (a tap named by the kernel, vessel0, vessel1, ...,
    // when `name` is empty) and brings it up; a tap Vessel created goes away when it exits.
    // Errors name the tap and say what to do (no /dev/net/tun, no permission, tap in use, not
    // a tap).
    static Result<std::unique_ptr<TapBackend>> open(std::string_view name);
    ~TapBackend() override;

    std::string describe() const override { return "tap " + m_name; }
    int fd() const override { return m_fd; }
    uint32_t supported_offloads() const override { return m_supported; }
    Result<void> set_offloads(uint32_t offloads) override;
    ssize_t read_frame(std::span<const iovec> iov) override;
    ssize_t write_frame(std::span<const iovec> iov) override;

    // The interface name (the kernel's choice when open() got none).
    const std::string& ifname() const { return m_name; }
    // Vessel created the tap (it did not exist before open()).
    bool created() const { return m_created; }

private:
    TapBackend(int fd, std::string name, bool created)
        : m_fd(fd)
        , m_name(std::move(name))
        , m_created(created)
    {
    }

    int m_fd;
    std::string m_name;
    bool m_created;
    uint32_t m_supported { 0 };
};

class SocketBackend final : public NetBackend {
public:
    // Takes ownership of `fd` (a connected SOCK_SEQPACKET or SOCK_DGRAM socket; made
    // non-blocking here). `offloads` = what supported_offloads() reports.
    explicit SocketBackend(int fd, uint32_t offloads = kNetOffloadCsum | kNetOffloadTso4 | kNetOffloadTso6);
    ~SocketBackend() override;

    std::string describe() const override { return "socket"; }
    int fd() const override { return m_fd; }
    uint32_t supported_offloads() const override { return m_supported; }
    Result<void> set_offloads(uint32_t offloads) override;
    ssize_t read_frame(std::span<const iovec> iov) override;
    ssize_t write_frame(std::span<const iovec> iov) override;

    // What the device last asked for (tests check the negotiation).
    uint32_t offloads() const { return m_offloads; }

private:
    int m_fd;
    uint32_t m_supported;
    uint32_t m_offloads { 0 };
};

} // namespace vessel
