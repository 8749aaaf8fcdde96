// The connection multiplexer behind virtio-vsock: the packet protocol (virtio v1.2, 5.10.6) between
// the guest's stream sockets and host Unix stream sockets, Firecracker-style.
//
//  * Host-initiated: a host process connects to the device's Unix socket (PATH) and sends
//    "CONNECT <port>\n"; the muxer sends the guest OP_REQUEST from CID 2 and a local port of its own
//    (from 2^30 up), and once the guest answers OP_RESPONSE it writes "OK <local port>\n" to the
//    host stream; then bytes flow both ways. An OP_RST from the guest (nobody listens) closes the
//    host stream without the OK line.
//  * Guest-initiated: a guest connect to CID 2 port P makes the muxer connect to the Unix socket
//    PATH_P (the connector); if nothing listens there the guest gets OP_RST.
//
// Flow control is the protocol's credit: the guest may have at most kBufAlloc bytes sent to a
// connection that the host side has not consumed yet (fwd_cnt counts what was written to the
// host stream); a slow host reader therefore stops the guest by withholding credit, and a guest
// that ignores it gets its connection reset. Towards the guest, at most its advertised credit is
// ever sent, and host data is only read ahead (kStagingBytes) while there is credit for it.
// Packets go to the guest only into rx buffers it offered.
//
// Everything the guest sends is untrusted: a packet with a short header, a length beyond its
// buffer or kMaxPayload, or a foreign source CID is dropped; an unknown type or operation, or a
// packet for no connection, is answered with OP_RST. Per-connection buffering and the number of
// connections (kMaxConnections) are bounded.
//
// No threads here: VsockMuxer is driven by poll(), from the device's I/O thread (vsock.h) or
// directly by tests and the fuzz target. Host sockets are watched with one epoll instance,
// edge-triggered for connections.
#pragma once

#include <sys/uio.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "base/result.h"
#include "devices/virtio/queue.h"
#include "devices/virtio/vsock_packet.h"

namespace vessel::virtio {

class VirtioInterrupt;

// Opens the host end of a guest-initiated connection to host port `port`: a connected,
// non-blocking stream socket (owned by the muxer from then on), or an error.
using VsockConnector = std::function<Result<int>(uint32_t port)>;

// Counters, atomic so that another thread (tests, a future metrics endpoint) may read them while
// the I/O thread runs.
struct VsockStats {
    std::atomic<uint64_t> tx_packets { 0 }; // packets taken from the guest's tx queue
    std::atomic<uint64_t> rx_packets { 0 }; // packets put into the guest's rx queue
    std::atomic<uint64_t> dropped { 0 }; // malformed guest packets (or rx buffers) dropped
    std::atomic<uint64_t> rsts_sent { 0 }; // RSTs for packets that matched no connection
    std::atomic<uint64_t> bytes_to_host { 0 }; // guest payload written to host streams
    std::atomic<uint64_t> bytes_to_guest { 0 }; // host payload delivered to the guest
    std::atomic<uint64_t> connections_opened { 0 }; // established, either direction
    std::atomic<uint64_t> credit_violations { 0 }; // guest sent beyond its credit (connection reset)
    // Firecracker's names: vsock connections entering and leaving the muxer's table (a host
    // stream counts once its CONNECT line is read), and those the host reset on its own
    // initiative (the guest never answered, or overran its credit).
    std::atomic<uint64_t> conns_added { 0 };
    std::atomic<uint64_t> conns_removed { 0 };
    std::atomic<uint64_t> conns_killed { 0 };
    std::atomic<uint64_t> rx_queue_events { 0 }; // driver notifications, by queue
    std::atomic<uint64_t> tx_queue_events { 0 };
};

class VsockMuxer {
public:
    // Buffer we advertise per connection (buf_alloc): guest data the host has not consumed yet.
    static constexpr uint32_t kBufAlloc = 256 * 1024;
    // Largest OP_RW payload accepted from the guest or sent to it (Linux's own maximum).
    static constexpr uint32_t kMaxPayload = 64 * 1024;
    // Host data read ahead per connection (never more than the guest's credit).
    static constexpr size_t kStagingBytes = 64 * 1024;
    // Connections of any kind, host streams still sending their CONNECT line included.
    static constexpr size_t kMaxConnections = 256;
    // RSTs for packets that match no connection, waiting for rx buffers; more are dropped.
    static constexpr size_t kMaxPendingRsts = 256;
    // Local ports of host-initiated connections (Firecracker's range: out of the guest's way).
    static constexpr uint32_t kFirstLocalPort = 1U << 30;
    // Longest "CONNECT <port>\n" line.
    static constexpr size_t kMaxConnectLine = 32;
    // A guest that neither answers nor resets a host-initiated REQUEST within this is given up on.
    static constexpr std::chrono::seconds kConnectTimeout { 30 };
    // Send the guest a CREDIT_UPDATE once the host consumed this much since the last one it saw,
    // or as soon as the host consumed anything while the guest sees less than this much free.
    static constexpr uint32_t kCreditUpdateThreshold = kBufAlloc / 4;
    // Packets taken from one queue per poll() before the other work gets a turn.
    static constexpr unsigned kBatch = 256;

    // `stats` (optional, must outlive the muxer) receives the counters; else the muxer keeps its own.
    VsockMuxer(uint64_t guest_cid, VsockConnector connector, VsockStats* stats = nullptr);
    ~VsockMuxer();
    VsockMuxer(const VsockMuxer&) = delete;
    VsockMuxer& operator=(const VsockMuxer&) = delete;

    Result<void> init(); // the epoll instance

    // The activated queues (event may be null) and where to signal them.
    void attach(VirtioInterrupt* interrupt, Queue* rx, Queue* tx, Queue* event);
    // Accepts host streams from `fd` (a listening socket, not owned).
    Result<void> watch_listener(int fd);
    // `fd` (an eventfd, not owned) wakes poll(); it is drained.
    Result<void> watch_wake(int fd);
    // A host stream as if accepted from the listener (takes ownership of `fd`).
    void add_host_stream(int fd);
    // Puts one VIRTIO_VSOCK_EVENT_TRANSPORT_RESET into the event queue (when it has a buffer).
    void queue_transport_reset_event() { m_pending_reset_event = true; }

    // One round: waits up to `timeout_ms` for host socket events, handles them, then moves
    // packets both ways and signals the queues that got used buffers.
    void poll(int timeout_ms);
    // More work is ready (a batch limit was hit): call poll() again without waiting.
    bool busy() const { return m_busy; }
    // A queue broke (malformed descriptor chain, reported through device_error): nothing more
    // happens until the device is reset.
    bool broken() const { return m_broken; }

    size_t connection_count() const { return m_conns.size(); }
    const VsockStats& stats() const { return *m_stats; }

private:
    struct Conn;
    using Clock = std::chrono::steady_clock;

    void accept_streams();
    void drain_wake();
    void process_tx();
    void handle_tx_packet(const Chain& chain);
    void handle_guest_request(const vsock::Header& h);
    bool handle_guest_rw(Conn& c, const vsock::Header& h, ChainReader& reader);
    void process_rx();
    uint32_t build_rx_packet(Conn& c, const Chain& chain);
    void process_events();
    void check_deadlines();

    // Moves what can move for one host stream (writes, reads, shutdowns, close); false if the
    // connection was closed (and destroyed).
    bool pump(Conn& c);
    bool read_connect_line(Conn& c);
    void flush_to_host(Conn& c);
    void mark_host_write_closed(Conn& c);
    void read_from_host(Conn& c);
    bool has_rx_work(const Conn& c) const;
    uint32_t shutdown_flags_due(const Conn& c) const;
    uint32_t peer_credit(const Conn& c) const;
    void enqueue_rx(Conn& c);
    void close_conn(Conn& c, bool send_rst);
    void queue_rst(uint64_t src_cid, uint32_t local_port, uint32_t peer_port);
    Conn* find(uint32_t local_port, uint32_t peer_port);
    Conn* find_id(uint64_t id);
    Result<void> epoll_add(int fd, uint32_t events, uint64_t tag);
    uint32_t allocate_local_port(uint32_t peer_port);
    void fail(std::string_view why);
    vsock::Header reply_header(uint32_t local_port, uint32_t peer_port, vsock::Op op) const;

    uint64_t m_guest_cid;
    VsockConnector m_connector;
    int m_epoll { -1 };
    int m_listener { -1 };
    int m_wake { -1 };

    VirtioInterrupt* m_interrupt { nullptr };
    Queue* m_rx { nullptr };
    Queue* m_tx { nullptr };
    Queue* m_event { nullptr };
    Chain m_tx_chain, m_rx_chain, m_event_chain;
    std::vector<iovec> m_iov;
    uint8_t m_scratch[16 * 1024];
    bool m_rx_used { false }, m_tx_used { false }, m_event_used { false };
    bool m_busy { false };
    bool m_broken { false };
    bool m_pending_reset_event { false };

    std::unordered_map<uint64_t, std::unique_ptr<Conn>> m_conns; // by id (also the epoll tag)
    std::unordered_map<uint64_t, uint64_t> m_by_ports; // (local << 32 | peer) -> id
    std::deque<uint64_t> m_rx_ready; // ids with something for the guest
    std::deque<vsock::Header> m_rsts;
    uint64_t m_next_id { 16 }; // below: the listener and wake tags
    uint32_t m_next_local_port { kFirstLocalPort };
    Clock::time_point m_next_deadline_check {};
    VsockStats m_own_stats;
    VsockStats* m_stats;
};

} // namespace vessel::virtio
