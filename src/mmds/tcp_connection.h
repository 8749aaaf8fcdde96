// One TCP connection of the MMDS (a passive open on port 80) together with its HTTP endpoint:
// Firecracker's dumbo Connection + Endpoint. Deliberately small TCP, safe because no segment ever
// leaves the host: no congestion control (flow control only), in-order reception only, MSS is the
// only option read from the SYN (no window scaling, timestamps or SACK, so the guest turns them
// off), one HTTP response in flight at a time.
//
// Memory is bounded per connection: a 2500-byte receive buffer (also the advertised window; a
// request that does not fit resets the connection) and one response (at most the data store's
// size limit plus headers).
//
// Segments are produced lazily: write_segment() builds the next one straight into the receive
// buffer the guest posted, so nothing waits in a queue while the guest's receive ring is full;
// retransmission timers are checked at those calls (and next_deadline() tells a device that
// wants to poll when the next one fires).
//
// Where this differs from Firecracker, on purpose (each place says why in the .cpp):
//  - our FIN waits for its ACK before the connection goes, so the guest's last ACK finds the
//    connection and draws no gratuitous RST; the FIN rides on the last data segment;
//  - a SYN or stale ACK that does not fit the connection draws a challenge ACK or a RST for that
//    segment only, instead of killing the connection (a retransmitted SYN never breaks it);
//  - data overlapping what was received is trimmed and accepted, and data past the window is
//    trimmed to it, instead of dropping the whole segment;
//  - a duplicate ACK is only a pure ACK that moves nothing (RFC 5681), and triggers one fast
//    retransmission per loss; a timeout resends everything unacknowledged (go-back-N) with
//    exponential backoff; a zero window is probed;
//  - RSTs carry an acknowledgment number the peer accepts (SYN and FIN count in SEG.LEN).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "mmds/packet.h"

namespace vessel::mmds {

// Turns one request (bytes up to the blank line) into the response bytes.
using Responder = std::function<std::string(std::string_view request)>;

struct TcpTimings {
    uint64_t rto_ms { 300 }; // Firecracker: ~300 ms (1.2e9 TSC cycles at 4 GHz)
    uint64_t max_rto_ms { 5000 }; // backoff cap
    unsigned max_retransmissions { 15 }; // Firecracker's CONNECTION_RTO_COUNT_MAX
    uint64_t eviction_ms { 10000 }; // idle time after which a full table may evict (~10 s)
};

// A RST to send for one segment (RFC 793 "reset generation"), or a connection's own.
struct RstSpec {
    MacAddress mac;
    Ipv4Address ip;
    uint16_t port;
    uint32_t seq;
    uint32_t ack;
    uint8_t flags;
};

// The RST answering `segment` when nothing should have received it.
RstSpec rst_for_segment(const TcpSegmentView& segment);

// A SYN that may open a connection: SYN alone, or with only ECE/CWR/PSH/URG beside it.
bool is_connection_request(const TcpSegmentView& segment);

class TcpConnection {
public:
    static constexpr size_t kReceiveBufferBytes = 2500; // Firecracker's RCV_BUF_MAX_SIZE
    static constexpr uint16_t kDefaultMss = 536; // RFC 879, when the SYN has no option
    // write_segment() needs room for the largest header (SYN-ACK with MSS) and one payload byte.
    static constexpr size_t kMinFrameBuffer = kTcpFrameOverhead + 4 + 1;

    enum class Receive {
        Ok,
        RstSegment, // answer this segment with rst_for_segment(); the connection carries on
        Restart, // a new SYN for a connection never established: open it afresh
    };

    // Passive open from `syn` (is_connection_request). Null if its MSS option is malformed or 0,
    // which Firecracker drops too.
    static std::unique_ptr<TcpConnection> accept(
        const TcpSegmentView& syn, uint32_t isn, uint64_t now, const TcpTimings& timings);

    Receive receive(const TcpSegmentView& segment, uint64_t now, const Responder& responder);

    // True if write_segment() would produce a frame now.
    bool has_segment(uint64_t now) const;
    // Writes the next frame (Ethernet to TCP payload) into `out`; 0 if there is none or `out` is
    // too small (nothing is lost then: the same segment comes next time).
    size_t write_segment(std::span<uint8_t> out, const Ipv4Address& local_ip, uint64_t now);

    // Done: reset, or both FINs exchanged and ours acknowledged. The owner then forgets it.
    bool done() const { return m_reset || (m_fin_received && m_fin_acked); }
    bool evictable(uint64_t now) const { return now - m_last_receive > m_timings.eviction_ms; }
    // When the retransmission (or persist) timer fires, if armed.
    std::optional<uint64_t> next_deadline() const;
    // The RST telling the peer this connection is gone (eviction); marks it done.
    RstSpec abort();

    bool established() const { return m_state == State::Established; }
    const Ipv4Address& remote_ip() const { return m_remote_ip; }
    uint16_t remote_port() const { return m_remote_port; }
    uint16_t mss() const { return m_mss; }

private:
    enum class State { SynReceived, Established };
    enum class Action { Nothing, Rst, SynAck, Timeout, Data, Fin, Ack };

    TcpConnection(const TcpSegmentView& syn, uint16_t mss, uint32_t isn, uint64_t now, const TcpTimings& timings);

    Action next_action(uint64_t now) const;
    bool timer_expired(uint64_t now) const { return m_timer_armed && now - m_timer_start >= m_rto; }
    bool timer_needed() const;
    void update_timer(uint64_t now);
    uint32_t data_end() const { return m_response_seq + static_cast<uint32_t>(m_response.size()); }
    uint32_t send_seq() const { return m_fast_retransmit ? m_snd_una : m_snd_nxt; }
    bool window_closed() const;
    uint16_t local_window() const { return static_cast<uint16_t>(kReceiveBufferBytes - m_rx_len); }
    bool rst_acceptable(uint32_t seq) const;
    void reset_self();
    size_t send_data_fin_or_ack(std::span<uint8_t> out, const Ipv4Address& local_ip, uint64_t now);

    bool process_ack(const TcpSegmentView& segment, uint64_t now);
    void process_data(const TcpSegmentView& segment);
    void process_requests(const Responder& responder);

    size_t write(std::span<uint8_t> out, const Ipv4Address& local_ip, uint32_t seq, uint32_t ack, uint8_t flags,
        std::span<const uint8_t> payload, bool mss_option);

    TcpTimings m_timings;
    State m_state { State::SynReceived };
    MacAddress m_remote_mac;
    Ipv4Address m_remote_ip;
    uint16_t m_remote_port;
    uint16_t m_mss;

    // Handshake.
    uint32_t m_irs; // the peer's initial sequence number (its SYN)
    bool m_synack_pending { true };
    bool m_synack_sent { false };

    // Receive side: bytes of requests not consumed yet.
    uint32_t m_rcv_nxt;
    bool m_fin_received { false };
    size_t m_rx_len { 0 };
    std::array<uint8_t, kReceiveBufferBytes> m_rx {};
    bool m_pending_ack { false };

    // Send side. m_response holds the response being sent; its first byte has m_response_seq.
    uint32_t m_iss;
    uint32_t m_snd_una;
    uint32_t m_snd_nxt;
    uint32_t m_snd_max;
    uint32_t m_snd_wnd_edge;
    uint16_t m_snd_wnd_last { 0 };
    std::string m_response;
    uint32_t m_response_seq;
    std::optional<uint32_t> m_fin_seq; // our FIN's sequence number once we close
    bool m_fin_acked { false };
    bool m_fast_retransmit { false };
    bool m_in_recovery { false };
    uint32_t m_recover { 0 };

    // One timer: SYN-ACK or data retransmission, or zero-window persist.
    bool m_timer_armed { false };
    uint64_t m_timer_start { 0 };
    uint64_t m_rto;
    unsigned m_rto_count { 0 };

    std::optional<RstSpec> m_send_rst; // our own reset, sent once, then done
    bool m_reset { false };
    uint64_t m_last_receive;
};

} // namespace vessel::mmds
