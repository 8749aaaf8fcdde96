// virtio-net (virtio v1.2, 5.1) on a host backend (a tap device; a socket in tests).
//
// Queues: receiveq1 (0) and transmitq1 (1); no control queue (CTRL_VQ is not offered, so the
// guest cannot change MAC filters or queue pairs and the device takes every frame the backend
// gives it). Offered features: MAC, STATUS (link always up), MRG_RXBUF, CSUM and HOST_TSO4/6/ECN
// (the backend takes partially checksummed and GSO frames from the guest), and GUEST_CSUM,
// GUEST_TSO4/6/ECN only where the backend can pass them through (a probed tap).
//
// All queue work runs on one thread per device (started by activate(), joined by reset() and
// shutdown()), waiting in epoll on the backend's descriptor and an eventfd that notify() kicks:
//  - transmit: each chain is the 12-byte header + frame; the header is copied (so the checks
//    made on it are the ones the backend sees) and the frame goes out with one writev straight
//    from guest RAM. Chains shorter than the header, longer than the largest frame, or whose
//    header asks for an offload the guest did not negotiate are dropped and counted.
//  - receive: frames are read with one readv straight into the guest's buffers. With MRG_RXBUF,
//    as many chains as the frame needs are filled and num_buffers says how many; without it,
//    each frame takes one chain. When the guest has posted too few buffers for the largest frame
//    it may get, the device stops polling the backend until the guest adds buffers (a notify on
//    the receive queue), so the backend queues (and eventually drops) frames, never the device.
// The guest can only make the device drop its own frames; a malformed ring (Queue::pop error)
// stops the device until the driver resets it (DEVICE_NEEDS_RESET).
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <string_view>
#include <thread>
#include <vector>

#include "devices/virtio/queue.h"
#include "devices/virtio/tap.h"
#include "devices/virtio/virtio.h"

namespace vessel::virtio {

// Feature bits (5.1.3).
constexpr uint64_t kNetFCsum = 1ULL << 0;
constexpr uint64_t kNetFGuestCsum = 1ULL << 1;
constexpr uint64_t kNetFMac = 1ULL << 5;
constexpr uint64_t kNetFGuestTso4 = 1ULL << 7;
constexpr uint64_t kNetFGuestTso6 = 1ULL << 8;
constexpr uint64_t kNetFGuestEcn = 1ULL << 9;
constexpr uint64_t kNetFGuestUfo = 1ULL << 10;
constexpr uint64_t kNetFHostTso4 = 1ULL << 11;
constexpr uint64_t kNetFHostTso6 = 1ULL << 12;
constexpr uint64_t kNetFHostEcn = 1ULL << 13;
constexpr uint64_t kNetFHostUfo = 1ULL << 14;
constexpr uint64_t kNetFMrgRxbuf = 1ULL << 15;
constexpr uint64_t kNetFStatus = 1ULL << 16;
constexpr uint64_t kNetFCtrlVq = 1ULL << 17;

// struct virtio_net_hdr_v1 (5.1.6): little-endian, 12 bytes with VERSION_1.
struct NetHeader {
    uint8_t flags;
    uint8_t gso_type;
    uint16_t hdr_len;
    uint16_t gso_size;
    uint16_t csum_start;
    uint16_t csum_offset;
    uint16_t num_buffers;
};
static_assert(sizeof(NetHeader) == 12);
constexpr uint32_t kNetHeaderBytes = sizeof(NetHeader);
constexpr uint8_t kNetHdrFNeedsCsum = 1;
constexpr uint8_t kNetHdrFDataValid = 2;
constexpr uint8_t kNetHdrGsoNone = 0;
constexpr uint8_t kNetHdrGsoTcpV4 = 1;
constexpr uint8_t kNetHdrGsoUdp = 3;
constexpr uint8_t kNetHdrGsoTcpV6 = 4;
constexpr uint8_t kNetHdrGsoEcn = 0x80;

constexpr uint16_t kNetStatusLinkUp = 1;

// Largest frame (after the header) either way: 64 KiB of IP packet (a GSO super-frame) plus an
// Ethernet header with a VLAN tag. Without guest GSO a received frame is at most 1518 bytes.
constexpr uint32_t kNetMaxFrameBytes = 65536 + 14 + 4;
constexpr uint32_t kNetMaxPlainFrameBytes = 1514 + 4;

struct NetStats {
    std::atomic<uint64_t> rx_frames { 0 }, rx_bytes { 0 }, rx_dropped { 0 };
    std::atomic<uint64_t> tx_frames { 0 }, tx_bytes { 0 }, tx_dropped { 0 };
};

class NetDevice final : public VirtioDevice {
public:
    static constexpr uint16_t kRxQueue = 0;
    static constexpr uint16_t kTxQueue = 1;
    static constexpr uint16_t kQueueSize = 256;

    // Thread: activate() starts the device's I/O thread (the VMM). Manual: no thread; the owner
    // calls poll() to run the queues (deterministic, for the fuzz target and tests).
    enum class Mode { Thread, Manual };

    NetDevice(std::unique_ptr<NetBackend> backend, std::array<uint8_t, 6> mac, Mode mode = Mode::Thread);
    ~NetDevice() override;

    // The MAC a device gets when none is configured: locally administered (52:54:00 ...),
    // stable for a given backend name and device index, different across taps.
    static std::array<uint8_t, 6> default_mac(std::string_view backend_name, size_t index);

    DeviceType type() const override { return DeviceType::Net; }
    std::string_view name() const override { return "net"; }
    uint64_t features() const override { return m_features; }
    std::vector<uint16_t> queue_max_sizes() const override { return { kQueueSize, kQueueSize }; }
    void read_config(uint64_t offset, std::span<uint8_t> data) override;
    Result<void> activate(const ActivateContext& ctx) override;
    void notify(uint16_t queue) override;
    void reset() override;
    void shutdown() override { reset(); }

    // Manual mode: processes both queues until neither can make progress (never blocks).
    void poll();

    const NetStats& stats() const { return m_stats; }
    const NetBackend& backend() const { return *m_backend; }

private:
    // One pass over a queue. Returns true if it stopped with work left (its budget ran out).
    bool process_tx();
    bool process_rx();
    bool transmit(const Chain& chain);
    bool fill_rx_chains();
    void deliver_rx(size_t frame_bytes);
    void run();
    void update_backend_events();
    void stop_thread();
    void fail(std::string_view why);

    std::unique_ptr<NetBackend> m_backend;
    std::array<uint8_t, 6> m_mac;
    Mode m_mode;
    uint64_t m_features { 0 };
    NetStats m_stats;

    // Set by activate(), cleared by reset(); only the I/O thread touches the queues in between.
    ActivateContext m_ctx;
    bool m_active { false };
    bool m_mergeable { false };
    uint32_t m_rx_need { 0 }; // bytes of buffer (header included) the largest frame needs
    bool m_failed { false }; // a queue was malformed: idle until reset
    bool m_tx_blocked { false }; // the backend said EAGAIN: wait until it is writable
    bool m_rx_starved { false }; // too few receive buffers: wait for a notify on the receive queue
    bool m_rx_returned { false }; // receive chains given back unused since the last interrupt check
    bool m_backend_dead { false }; // the backend failed for good: stop polling it

    // Receive chains popped from the queue but not filled yet, in ring order.
    std::vector<Chain> m_rx_chains;
    size_t m_rx_head { 0 };
    size_t m_rx_count { 0 };
    uint64_t m_rx_capacity { 0 }; // writable bytes of the pending chains
    std::vector<iovec> m_iov;
    Chain m_tx_chain;
    uint64_t m_log_count { 0 };

    std::thread m_thread;
    int m_epoll { -1 };
    int m_kick { -1 }; // eventfd: notify() and stop
    uint32_t m_backend_events { 0 };
    std::atomic<uint32_t> m_kicked { 0 }; // bit n = queue n was notified
    std::atomic<bool> m_stop { false };
};

} // namespace vessel::virtio
