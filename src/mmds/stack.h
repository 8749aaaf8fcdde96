// The MMDS network stack of one net device (Firecracker's MmdsNetworkStack, "dumbo"): it sits
// on the device's transmit path, swallows the guest's frames meant for the MMDS and produces the
// replies for its receive path.
//
//   device TX:  if (stack.is_mmds_frame(first bytes) && stack.handle_tx(copy of the frame))
//                 — consumed, do not send it to the tap (other frames need no copy)
//   device RX:  while (guest posted buffers && stack.has_rx()) n = stack.pop_rx(buffer)
//               (before reading the tap: MMDS replies go first, as in Firecracker)
//
// What is swallowed (Firecracker's is_mmds_frame): every ARP frame whose target IP is the MMDS
// address and every IPv4 frame addressed to it, whether or not it parses. Only ARP requests get
// an answer (from MAC 06:01:23:45:67:01); TCP to port 80 is served, other ports and protocols are
// dropped without a reply (no RST, no ICMP). Everything else (VLAN-tagged frames included) is
// left to the device.
//
// Replies are generated when pop_rx() is called, never queued as frames: a guest whose receive
// ring is full loses nothing, and memory stays bounded (one pending ARP reply per requester, at
// most 8; at most 100 pending RSTs; at most 30 connections, each with a 2500-byte request buffer
// and one response).
//
// Not thread-safe: the device's I/O thread owns it. The data store and token authority it shares
// with the API are thread-safe, and set_ipv4() may be called from another thread.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "mmds/clock.h"
#include "mmds/data_store.h"
#include "mmds/packet.h"
#include "mmds/tcp_connection.h"
#include "mmds/token_authority.h"

namespace vessel::mmds {

struct StackConfig {
    Ipv4Address ipv4 { kDefaultMmdsIpv4 };
    size_t max_connections { 30 }; // Firecracker's DEFAULT_MAX_CONNECTIONS
    size_t max_pending_resets { 100 }; // Firecracker's DEFAULT_MAX_PENDING_RESETS
    TcpTimings timings {};
    // Seeds the initial sequence numbers; unset: random (getrandom). Tests and the fuzz target
    // set it to make runs reproducible.
    std::optional<uint64_t> isn_seed {};
};

// Totals since construction; any thread may read them. The comments name the field of
// Firecracker's `mmds` metrics group each one feeds (NetDevice::report_mmds_metrics).
struct StackStats {
    std::atomic<uint64_t> rx_frames { 0 }; // guest frames consumed (rx_accepted)
    std::atomic<uint64_t> rx_dropped { 0 }; // consumed without effect (malformed, other port, not TCP)
    std::atomic<uint64_t> rx_unusual { 0 }; // of those: IPv4 not carrying TCP (rx_accepted_unusual)
    std::atomic<uint64_t> rx_errors { 0 }; // of those: everything else (rx_accepted_err)
    std::atomic<uint64_t> rx_segments { 0 }; // TCP segments to port 80 taken in (rx_count)
    std::atomic<uint64_t> rx_no_token { 0 }; // GETs without a session token (rx_no_token)
    std::atomic<uint64_t> rx_invalid_token { 0 }; // GETs with an unknown or expired one (rx_invalid_token)
    std::atomic<uint64_t> tx_frames { 0 }; // frames handed to the guest (tx_count)
    std::atomic<uint64_t> connections_opened { 0 }; // (connections_created)
    std::atomic<uint64_t> connections_closed { 0 }; // done, reset, evicted or replaced (connections_destroyed)
    std::atomic<uint64_t> connections_refused { 0 }; // table full: the SYN got a RST
    std::atomic<uint64_t> resets_dropped { 0 }; // RST queue full
};

class Stack {
public:
    static constexpr size_t kMaxPendingArpReplies = 8;
    // pop_rx() makes progress with any buffer at least this large (Ethernet frames of 1514 bytes
    // and up are what a device offers).
    static constexpr size_t kMinRxBuffer = TcpConnection::kMinFrameBuffer;

    Stack(std::shared_ptr<DataStore> store, std::shared_ptr<TokenAuthority> tokens, StackConfig config = {},
        Clock clock = {});
    ~Stack();

    Stack(const Stack&) = delete;
    Stack& operator=(const Stack&) = delete;

    // How many bytes of a frame's start decide whether it is for the MMDS (the ARP target
    // address ends there; the IPv4 destination ends earlier).
    static constexpr size_t kClassifyBytes = kArpFrameBytes;

    // Firecracker's speculative test: true if the frame (or its first kClassifyBytes bytes, all
    // of them if it is shorter) is an ARP frame for the MMDS address or an IPv4 frame to it.
    // handle_tx() consumes exactly these frames. A device can thus decide from a peek, without
    // copying frames that are not for the MMDS.
    bool is_mmds_frame(std::span<const uint8_t> frame_start) const;

    // A frame the guest transmits (Ethernet header first, no virtio header). True if it was
    // addressed to the MMDS and consumed; false if the device should send it on.
    bool handle_tx(std::span<const uint8_t> frame);

    // True if pop_rx() has a frame to give now (ARP reply, RST, or a connection's next segment,
    // retransmissions whose timer expired included).
    bool has_rx() const;
    // Writes the next reply frame into `out` (a receive buffer the guest posted) and returns its
    // length; 0 if there is none or `out` is smaller than kMinRxBuffer.
    size_t pop_rx(std::span<uint8_t> out);

    // When the earliest retransmission timer fires (clock milliseconds), if any: a device that
    // wants retransmissions without guest activity polls has_rx() then. Firecracker has no such
    // timer and only retransmits when the guest next sends or posts buffers.
    std::optional<uint64_t> next_deadline() const;
    // The stack's clock now (milliseconds), against which next_deadline() is measured.
    uint64_t now() const { return m_clock(); }

    Ipv4Address ipv4() const;
    void set_ipv4(const Ipv4Address& address);

    const StackStats& stats() const { return m_stats; }
    size_t connection_count() const { return m_connections.size(); }

    // What a snapshot keeps (Firecracker persists the address; connections are not kept: the
    // guest's TCP recovers with a RST or a timeout).
    struct State {
        Ipv4Address ipv4;
    };
    State save() const { return { ipv4() }; }
    void restore(const State& state);

private:
    void handle_arp(std::span<const uint8_t> frame);
    void handle_ipv4(std::span<const uint8_t> frame);
    void handle_segment(const TcpSegmentView& segment, uint64_t now);
    void open_connection(const TcpSegmentView& syn, uint64_t now);
    void queue_rst(const RstSpec& rst);
    std::vector<std::unique_ptr<TcpConnection>>::iterator find_connection(const TcpSegmentView& segment);
    void remove_done();
    void erase_connection(std::vector<std::unique_ptr<TcpConnection>>::iterator it);
    uint32_t next_isn();
    std::string respond(std::string_view request);

    std::shared_ptr<DataStore> m_store;
    std::shared_ptr<TokenAuthority> m_tokens;
    StackConfig m_config;
    Clock m_clock;
    Responder m_responder;
    std::atomic<uint32_t> m_ipv4; // the address's four bytes in network order, packed
    uint64_t m_isn_state;

    std::deque<ArpRequest> m_arp_replies;
    std::deque<RstSpec> m_resets;
    std::vector<std::unique_ptr<TcpConnection>> m_connections;
    size_t m_next_connection { 0 }; // round-robin start, so one connection cannot starve others

    StackStats m_stats;
};

} // namespace vessel::mmds
