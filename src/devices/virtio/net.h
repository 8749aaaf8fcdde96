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
// VM pause stops the thread between frames and keeps everything else (the epoll set, receive
// chains already popped, the queues' positions); frames the backend gets meanwhile wait in it
// (the tap's queue, bounded by the kernel). resume() starts a thread again, which first looks at
// both queues and the backend, so notifications that came while paused are not lost.
// The guest can only make the device drop its own frames; a malformed ring (Queue::pop error)
// stops the device until the driver resets it (DEVICE_NEEDS_RESET).
//
// Rate limiting (Firecracker's, one limiter per direction): a frame costs one op and its length
// with the 12-byte header. A transmit chain the tx limiter refuses goes back to the ring; a
// received frame the rx limiter refuses stays in the guest's buffers, not yet used, and the
// backend is not read again until it is delivered (the backend queues, as when the guest gives
// no buffers). The thread sleeps in epoll until the limiter's deadline. set_rate_limiters()
// changes the buckets from any thread. Counters (report_metrics) use Firecracker's net names.
//
// MMDS (set_mmds(); the glue is in net_mmds.cpp): the metadata service's network stack sits on
// this interface, as Firecracker's MmdsNetworkStack. Transmit: the first bytes of each frame are
// peeked from the chain (EtherType, ARP target, IPv4 destination); only a frame that may be for
// the MMDS is copied out (bounded by the largest frame) and handed to the stack, others keep the
// zero-copy writev. A frame the stack consumes completes its chain, never reaches the backend and
// gets its tx limiter charge back (as Firecracker). Receive: the stack's replies go to the guest
// before the backend's frames, with a plain header (no offloads), charged to the rx limiter and
// counted as received frames like the backend's. The stack builds replies only when there are
// buffers to put them in, so a guest without receive buffers loses nothing. Its retransmission
// timers bound the thread's epoll wait. Everything runs on the I/O thread: nothing happens
// while paused.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string_view>
#include <thread>
#include <vector>

#include "base/counters.h"
#include "devices/rate_limiter.h"
#include "devices/virtio/queue.h"
#include "devices/virtio/tap.h"
#include "devices/virtio/virtio.h"

namespace vessel::mmds {
class Stack;
}

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

// Firecracker's net metrics that this device can tell (totals since construction). Byte counts
// include the 12-byte virtio-net header, as Firecracker's.
struct NetMetrics {
    Counter rx_bytes_count, rx_packets_count, rx_count; // frames read from the backend
    Counter tx_bytes_count, tx_packets_count, tx_count; // frames the backend took
    Counter rx_queue_event_count, tx_queue_event_count; // notifications from the driver
    Counter rx_tap_event_count; // the backend became readable
    Counter tx_malformed_frames; // transmit chains dropped: too short or long, or bad offload requests
    Counter no_rx_avail_buffer; // a frame could not be read for want of receive buffers
    Counter tap_read_fails, tap_write_fails; // backend errors (EAGAIN excepted)
    Counter rx_rate_limiter_throttled, tx_rate_limiter_throttled; // deferred frames, notifications while blocked
    Counter rx_event_rate_limiter_count, tx_rate_limiter_event_count; // a limiter unblocked
    LatencyCounter tap_write_agg; // one frame's write to the backend, µs
};

// The MMDS counters the device keeps itself (the stack keeps the rest, mmds::StackStats).
struct NetMmdsMetrics {
    Counter tx_frames, tx_bytes; // replies written into the guest's buffers (bytes without the header)
    Counter tx_errors; // a reply did not fit the receive buffers the guest offered (it waits)
    Counter frames_copied; // transmitted frames copied out for the stack: only possible MMDS frames
};

class NetDevice final : public VirtioDevice {
public:
    static constexpr uint16_t kRxQueue = 0;
    static constexpr uint16_t kTxQueue = 1;
    static constexpr uint16_t kQueueSize = 256;

    // Thread: activate() starts the device's I/O thread (the VMM). Manual: no thread; the owner
    // calls poll() to run the queues (deterministic, for the fuzz target and tests).
    enum class Mode { Thread, Manual };

    // `rx_limiter`/`tx_limiter`: the interface's rx_rate_limiter/tx_rate_limiter; `clock`: their
    // time source (tests; default: the monotonic clock).
    NetDevice(std::unique_ptr<NetBackend> backend, std::array<uint8_t, 6> mac, Mode mode = Mode::Thread,
        const std::optional<RateLimiterConfig>& rx_limiter = std::nullopt,
        const std::optional<RateLimiterConfig>& tx_limiter = std::nullopt, RateLimiterClock clock = {});
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
    void pause() override;
    void resume() override;
    // Snapshots: the receive chains popped and not filled yet, by descriptor head in ring order
    // (the restored device takes them again, validated), and a frame held in them for the rx
    // limiter (delivered first after restore). The backend is reopened from the configuration by
    // the VMM; both rate limiters restart with full buckets. Of the MMDS stack only its address is
    // kept (mmds::Stack::State, as Firecracker's); its connections, ARP replies and resets not
    // sent are dropped, and the guest's TCP recovers with a RST or a timeout.
    nlohmann::json save_state() const override;
    Result<void> restore_state(const nlohmann::json& state) override;
    void report_metrics(MetricsReport& out) const override;

    // PATCH /network-interfaces: an absent limiter stays as it is; otherwise Firecracker's
    // update rules per bucket (RateLimiter::update). Any thread.
    void set_rate_limiters(const std::optional<RateLimiterConfig>& rx, const std::optional<RateLimiterConfig>& tx);
    const RateLimiter& rx_rate_limiter() const { return m_rx_limiter; }
    const RateLimiter& tx_rate_limiter() const { return m_tx_limiter; }
    const NetMetrics& metrics() const { return m_metrics; }

    // Puts the MMDS network stack on this interface (null: none). Before activate() only: from
    // then on the I/O thread owns it.
    void set_mmds(std::unique_ptr<mmds::Stack> stack);
    // The stack, for its address and statistics (set_ipv4() and stats() may be used from any
    // thread; the rest belongs to the I/O thread while the device is active).
    mmds::Stack* mmds_stack() const { return m_mmds.get(); }
    const NetMmdsMetrics& mmds_metrics() const { return m_mmds_metrics; }
    // Firecracker's `mmds` group for this interface (nothing without a stack). Any thread.
    void report_mmds_metrics(MetricsReport& out) const;

    // Manual mode: processes both queues until neither can make progress (never blocks); does
    // nothing while paused.
    void poll();

    const NetStats& stats() const { return m_stats; }
    const NetBackend& backend() const { return *m_backend; }

private:
    // One pass over a queue. Returns true if it stopped with work left (its budget ran out).
    enum class TxOutcome { Done, BackendFull, Throttled };

    bool process_tx();
    bool process_rx();
    TxOutcome transmit(const Chain& chain);
    // A throttled direction whose limiter no longer blocks: counts the limiter event and clears
    // the throttle; true if the direction should run again.
    bool unthrottle_rx();
    bool unthrottle_tx();
    // epoll_wait's timeout while a direction waits for its limiter (-1: none does).
    int limiter_timeout_ms() const;
    bool fill_rx_chains();
    // A frame of `frame_bytes` (header included) is in the pending chains: counts it and gives
    // it to the guest, or holds it there for the rx limiter (false: stop receiving).
    bool account_rx(size_t frame_bytes);
    void deliver_rx(size_t frame_bytes);
    // epoll_wait's timeout: the limiters' and the MMDS retransmission timer's (-1: none).
    int wait_timeout_ms() const;

    // net_mmds.cpp. A transmitted frame (`frame` just past the header): true if the MMDS took it.
    bool divert_to_mmds(const ChainReader& frame);
    // Writes the stack's next reply into the pending receive chains; returns its bytes with the
    // header, 0 if there is none or it does not fit.
    size_t write_mmds_reply();
    // The stack has a reply (that did not fail to fit the buffers there are).
    bool mmds_has_reply() const;
    // ... and the receive side could take it now: the I/O thread should run it.
    bool mmds_wants_rx() const;
    int mmds_timeout_ms() const;
    void run();
    void update_backend_events();
    Result<void> start_thread();
    // Stops the thread (after the frame it is on); the epoll set and the kick stay for a restart.
    void join_thread();
    // join_thread() and the descriptors closed.
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
    bool m_paused { false }; // between pause() and resume() (transport lock)
    bool m_rx_throttled { false }; // the rx limiter refused a frame: wait for its deadline
    bool m_tx_throttled { false }; // the tx limiter refused a chain (back in the ring)
    uint32_t m_rx_deferred { 0 }; // a received frame (bytes, header included) held for the rx limiter

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

    RateLimiter m_rx_limiter;
    RateLimiter m_tx_limiter;
    NetMetrics m_metrics;

    std::unique_ptr<mmds::Stack> m_mmds;
    std::vector<uint8_t> m_mmds_frame; // a transmitted frame copied for the stack (kNetMaxFrameBytes)
    std::vector<uint8_t> m_mmds_reply; // the stack writes a reply here, then it goes to the guest
    bool m_mmds_consumed { false }; // the stack took frames: look at the receive side at once
    bool m_mmds_stalled { false }; // a reply did not fit the buffers: wait for the guest to add some
    NetMmdsMetrics m_mmds_metrics;
};

} // namespace vessel::virtio
