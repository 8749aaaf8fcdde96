#include "mmds/tcp_connection.h"

#include <algorithm>
#include <cstring>

#include "mmds/http_handler.h"

namespace vessel::mmds {

RstSpec rst_for_segment(const TcpSegmentView& segment)
{
    // RFC 793: with an ACK, the reset takes its sequence number from it; without, it acknowledges
    // the whole segment. Firecracker counts only the payload there, so the RST answering a SYN
    // acknowledges the peer's ISN itself, which a SYN-SENT peer ignores (its connect() then times
    // out instead of failing at once). SYN and FIN each take one sequence number.
    if (segment.flags & tcp::kAck)
        return { segment.src_mac, segment.src_ip, segment.src_port, segment.ack, 0, tcp::kRst };
    return { segment.src_mac, segment.src_ip, segment.src_port, 0, segment.seq + segment.seq_length(),
        static_cast<uint8_t>(tcp::kRst | tcp::kAck) };
}

bool is_connection_request(const TcpSegmentView& segment)
{
    // Firecracker wants SYN exactly and resets a SYN carrying ECE|CWR, so a guest with
    // net.ipv4.tcp_ecn=1 could not reach it. We take those and simply never answer with ECE: the
    // guest then runs the connection without ECN. Payload on a SYN (TCP Fast Open) is ignored; our
    // SYN-ACK acknowledges only the SYN, so the guest sends the data again.
    return (segment.flags & (tcp::kSyn | tcp::kAck | tcp::kRst | tcp::kFin)) == tcp::kSyn;
}

std::unique_ptr<TcpConnection> TcpConnection::accept(
    const TcpSegmentView& syn, uint32_t isn, uint64_t now, const TcpTimings& timings)
{
    uint16_t mss = kDefaultMss;
    if (auto option = parse_mss_option(syn.options)) {
        if (*option == 0)
            return nullptr;
        mss = *option;
    }
    return std::unique_ptr<TcpConnection>(new TcpConnection(syn, mss, isn, now, timings));
}

TcpConnection::TcpConnection(
    const TcpSegmentView& syn, uint16_t mss, uint32_t isn, uint64_t now, const TcpTimings& timings)
    : m_timings(timings)
    , m_remote_mac(syn.src_mac)
    , m_remote_ip(syn.src_ip)
    , m_remote_port(syn.src_port)
    , m_mss(mss)
    , m_irs(syn.seq)
    , m_rcv_nxt(syn.seq + 1)
    , m_iss(isn)
    , m_snd_una(isn)
    , m_snd_nxt(isn + 1)
    , m_snd_max(isn + 1)
    , m_snd_wnd_edge(isn + 1 + syn.window)
    , m_snd_wnd_last(syn.window)
    , m_response_seq(isn + 1)
    , m_rto(timings.rto_ms)
    , m_last_receive(now)
{
}

bool TcpConnection::rst_acceptable(uint32_t seq) const
{
    // In the receive window (at least its first byte when the window is shut).
    const uint32_t window = std::max<uint32_t>(local_window(), 1);
    return seq_ge(seq, m_rcv_nxt) && seq_lt(seq, m_rcv_nxt + window);
}

bool TcpConnection::window_closed() const
{
    return seq_lt(m_snd_nxt, data_end()) && seq_ge(m_snd_nxt, m_snd_wnd_edge);
}

bool TcpConnection::timer_needed() const
{
    if (m_reset || m_send_rst)
        return false;
    if (m_state == State::SynReceived)
        return m_synack_sent;
    return m_snd_una != m_snd_max || window_closed();
}

void TcpConnection::update_timer(uint64_t now)
{
    const bool needed = timer_needed();
    if (needed && !m_timer_armed) {
        m_timer_armed = true;
        m_timer_start = now;
    } else if (!needed) {
        m_timer_armed = false;
    }
}

std::optional<uint64_t> TcpConnection::next_deadline() const
{
    if (!m_timer_armed || m_reset)
        return std::nullopt;
    return m_timer_start + m_rto;
}

void TcpConnection::reset_self()
{
    if (m_send_rst || m_reset)
        return;
    // The sequence number the peer expects next: everything we sent reaches it in order.
    const uint32_t seq = m_state == State::Established ? m_snd_max : m_iss + 1;
    m_send_rst = RstSpec { m_remote_mac, m_remote_ip, m_remote_port, seq, m_rcv_nxt,
        static_cast<uint8_t>(tcp::kRst | tcp::kAck) };
}

RstSpec TcpConnection::abort()
{
    reset_self();
    RstSpec rst = m_send_rst.value_or(RstSpec {
        m_remote_mac, m_remote_ip, m_remote_port, m_snd_max, m_rcv_nxt, static_cast<uint8_t>(tcp::kRst | tcp::kAck) });
    m_send_rst.reset();
    m_reset = true;
    return rst;
}

TcpConnection::Receive TcpConnection::receive(const TcpSegmentView& segment, uint64_t now, const Responder& responder)
{
    if (m_reset || m_send_rst)
        return Receive::Ok;
    m_last_receive = now;
    const uint8_t flags = segment.flags;

    if (flags & tcp::kRst) {
        // An out-of-window RST is ignored (it may be stale).
        if (rst_acceptable(segment.seq))
            m_reset = true;
        return Receive::Ok;
    }

    if (m_state == State::SynReceived) {
        if (flags & tcp::kSyn) {
            if (!(flags & tcp::kAck) && segment.seq == m_irs) {
                // The guest sent its SYN again: our SYN-ACK is late or was not seen. Send it again;
                // the guest's ACK to either copy establishes the connection (Firecracker resets
                // when that ACK arrives while the second copy is pending).
                if (m_synack_sent)
                    m_synack_pending = true;
                return Receive::Ok;
            }
            // A fresh SYN on this port: the guest gave up the first attempt.
            return is_connection_request(segment) ? Receive::Restart : Receive::RstSegment;
        }
        if (!(flags & tcp::kAck))
            return Receive::Ok;
        // Only an ACK of our SYN-ACK opens the connection. Anything else is a stale segment of
        // an older connection on the same ports: RFC 793 resets that segment and keeps this
        // one (Firecracker drops the connection; the guest's SYN retransmission then recreates it
        // a second later).
        if (!m_synack_sent || segment.ack != m_iss + 1)
            return Receive::RstSegment;
        m_state = State::Established;
        m_synack_pending = false;
        m_snd_una = segment.ack;
        m_snd_wnd_edge = segment.ack + segment.window;
        m_snd_wnd_last = segment.window;
        m_rto_count = 0;
        m_rto = m_timings.rto_ms;
        m_timer_armed = false;
        // The same segment may carry the request and even a FIN.
    } else {
        if (flags & tcp::kSyn) {
            // RFC 5961 challenge ACK: a retransmitted opening SYN is answered harmlessly, and a
            // guest that really starts over answers our ACK with a RST, which closes this
            // connection so that its next SYN opens a new one. Firecracker resets on any SYN here.
            m_pending_ack = true;
            return Receive::Ok;
        }
        if (!(flags & tcp::kAck))
            return Receive::Ok; // RFC 793: drop segments without ACK once synchronized
        if (!process_ack(segment, now))
            return Receive::Ok;
    }

    process_data(segment);
    process_requests(responder);
    update_timer(now);
    return Receive::Ok;
}

bool TcpConnection::process_ack(const TcpSegmentView& segment, uint64_t now)
{
    const uint32_t ack = segment.ack;
    if (seq_gt(ack, m_snd_max)) {
        // Acknowledges data never sent: answer with an ACK and drop the segment (RFC 793).
        m_pending_ack = true;
        return false;
    }
    if (seq_lt(ack, m_snd_una))
        return true; // an old ACK (reordered or retransmitted): its data may still be new

    m_rto_count = 0; // the peer is alive
    if (seq_gt(ack, m_snd_una)) {
        m_snd_una = ack;
        if (seq_lt(m_snd_nxt, ack))
            m_snd_nxt = ack; // after a go-back-N rewind the peer may ack past where we resend
        m_rto = m_timings.rto_ms;
        m_timer_start = now;
        if (m_fin_seq && seq_gt(ack, *m_fin_seq))
            m_fin_acked = true;
        if (m_in_recovery) {
            if (seq_ge(ack, m_recover))
                m_in_recovery = false;
            else
                m_fast_retransmit = true; // partial ACK: the next hole (NewReno)
        }
    } else if (segment.payload.empty() && !(segment.flags & tcp::kFin) && m_snd_una != m_snd_max
        && segment.window == m_snd_wnd_last) {
        // A duplicate ACK in RFC 5681's sense. Firecracker counts any segment repeating the ACK
        // number (a window update, the next pipelined request) and retransmits on each; we take
        // only pure ACKs, retransmit at the first as Firecracker does (no reordering happens on
        // a virtio ring, so one is a loss signal), but once per loss.
        if (!m_in_recovery) {
            m_in_recovery = true;
            m_recover = m_snd_max;
            m_fast_retransmit = true;
        }
    }
    if (m_snd_una == m_snd_max) {
        m_in_recovery = false;
        m_fast_retransmit = false;
    }
    // The peer's right edge only moves right (Linux never shrinks its window).
    const uint32_t edge = ack + segment.window;
    if (seq_gt(edge, m_snd_wnd_edge))
        m_snd_wnd_edge = edge;
    m_snd_wnd_last = segment.window;
    return true;
}

void TcpConnection::process_data(const TcpSegmentView& segment)
{
    const bool fin = segment.flags & tcp::kFin;
    if (m_fin_received) {
        // The guest closed its side already; a retransmitted FIN or data means our ACK was not
        // seen: acknowledge again. (Firecracker stays silent.)
        if (!segment.payload.empty() || fin)
            m_pending_ack = true;
        return;
    }
    uint32_t seq = segment.seq;
    std::span<const uint8_t> payload = segment.payload;
    const uint32_t fin_seq = segment.seq + static_cast<uint32_t>(payload.size());
    if (!payload.empty()) {
        m_pending_ack = true;
        // Bytes we already have (a retransmission overlapping new data) are skipped; Firecracker
        // drops such a segment whole.
        if (seq_lt(seq, m_rcv_nxt)) {
            const size_t skip = std::min<size_t>(m_rcv_nxt - seq, payload.size());
            payload = payload.subspan(skip);
            seq += static_cast<uint32_t>(skip);
        }
        if (!payload.empty()) {
            if (seq != m_rcv_nxt)
                return; // after a hole: dropped, the ACK tells the guest where to resume
            // The window is the free buffer, so what does not fit is past the window: trimmed
            // (a zero-window probe thus gets only our ACK).
            const size_t take = std::min(payload.size(), kReceiveBufferBytes - m_rx_len);
            std::memcpy(m_rx.data() + m_rx_len, payload.data(), take);
            m_rx_len += take;
            m_rcv_nxt += static_cast<uint32_t>(take);
        }
    }
    if (fin) {
        m_pending_ack = true;
        // Only a FIN right after everything received counts (as Firecracker).
        if (fin_seq == m_rcv_nxt) {
            m_fin_received = true;
            m_rcv_nxt += 1;
        }
    }
}

void TcpConnection::process_requests(const Responder& responder)
{
    if (m_reset || m_send_rst)
        return;
    if (!m_response.empty() && seq_ge(m_snd_una, data_end())) {
        // The whole response is acknowledged: the next request may be answered.
        m_response_seq = data_end();
        m_response.clear();
    }
    const std::span<const uint8_t> buffered { m_rx.data(), m_rx_len };
    if (m_response.empty() && !m_fin_seq) {
        if (auto end = find_request_end(buffered)) {
            const bool window_was_small = local_window() < kReceiveBufferBytes / 2;
            m_response = responder(std::string_view(reinterpret_cast<const char*>(m_rx.data()), *end));
            std::memmove(m_rx.data(), m_rx.data() + *end, m_rx_len - *end);
            m_rx_len -= *end;
            // Tell a guest held back by a small window that it may send again.
            if (window_was_small)
                m_pending_ack = true;
        } else if (m_rx_len == kReceiveBufferBytes) {
            // A full buffer without a complete request: over the request size limit.
            reset_self();
            return;
        }
    }
    if (m_fin_received && !m_fin_seq && !find_request_end({ m_rx.data(), m_rx_len })) {
        // The guest will send nothing more and no request is left: our FIN follows the response
        // being sent (on its last segment if that is still to go). Firecracker waits for the
        // response's ACK and then sends a separate FIN.
        m_fin_seq = data_end();
    }
}

TcpConnection::Action TcpConnection::next_action(uint64_t now) const
{
    if (m_reset)
        return Action::Nothing;
    if (m_send_rst)
        return Action::Rst;
    // A timer that fired counts only while it still has a reason to run, so that a timeout
    // always produces a segment (has_segment() promises one).
    const bool timeout = timer_expired(now) && timer_needed();
    if (m_state == State::SynReceived) {
        if (m_synack_pending)
            return Action::SynAck;
        return timeout ? Action::Timeout : Action::Nothing;
    }
    if (timeout)
        return Action::Timeout;
    const uint32_t seq = send_seq();
    const uint32_t usable_end = seq_lt(data_end(), m_snd_wnd_edge) ? data_end() : m_snd_wnd_edge;
    if (seq_lt(seq, usable_end))
        return Action::Data;
    if (m_fin_seq && !m_fin_acked && seq == *m_fin_seq)
        return Action::Fin;
    return m_pending_ack ? Action::Ack : Action::Nothing;
}

bool TcpConnection::has_segment(uint64_t now) const
{
    return next_action(now) != Action::Nothing;
}

size_t TcpConnection::write(std::span<uint8_t> out, const Ipv4Address& local_ip, uint32_t seq, uint32_t ack,
    uint8_t flags, std::span<const uint8_t> payload, bool mss_option)
{
    const TcpSegmentSpec spec {
        .dst_mac = m_remote_mac,
        .src_ip = local_ip,
        .dst_ip = m_remote_ip,
        .src_port = kMmdsTcpPort,
        .dst_port = m_remote_port,
        .seq = seq,
        .ack = ack,
        .flags = flags,
        .window = local_window(),
        // The SYN-ACK echoes the guest's MSS (Firecracker); it offers no other option.
        .mss_option = mss_option ? std::optional<uint16_t>(m_mss) : std::nullopt,
        .payload = payload,
    };
    const size_t bytes = write_tcp_frame(out, spec);
    if (bytes && (flags & tcp::kAck))
        m_pending_ack = false;
    return bytes;
}

size_t TcpConnection::send_data_fin_or_ack(std::span<uint8_t> out, const Ipv4Address& local_ip, uint64_t now)
{
    const uint32_t seq = send_seq();
    const uint32_t end = data_end();
    const uint32_t usable_end = seq_lt(end, m_snd_wnd_edge) ? end : m_snd_wnd_edge;
    size_t bytes = 0;
    uint32_t after = seq;
    if (seq_lt(seq, usable_end)) {
        // One segment: at most the MSS, what the window allows, and what fits the guest's buffer.
        const size_t room
            = std::min<size_t>(out.size() - kTcpFrameOverhead, 0xffff - kIpv4HeaderBytes - kTcpHeaderBytes);
        const size_t length = std::min({ static_cast<size_t>(usable_end - seq), static_cast<size_t>(m_mss), room });
        const size_t offset = seq - m_response_seq;
        const auto* data = reinterpret_cast<const uint8_t*>(m_response.data()) + offset;
        uint8_t flags = tcp::kAck;
        after = seq + static_cast<uint32_t>(length);
        if (after == end)
            flags |= tcp::kPsh;
        if (m_fin_seq && after == *m_fin_seq) {
            flags |= tcp::kFin;
            ++after;
        }
        bytes = write(out, local_ip, seq, m_rcv_nxt, flags, { data, length }, false);
    } else if (m_fin_seq && !m_fin_acked && seq == *m_fin_seq) {
        bytes = write(out, local_ip, seq, m_rcv_nxt, tcp::kFin | tcp::kAck, {}, false);
        after = seq + 1;
    } else if (m_pending_ack) {
        return write(out, local_ip, m_snd_nxt, m_rcv_nxt, tcp::kAck, {}, false);
    }
    if (bytes == 0)
        return 0;
    m_fast_retransmit = false;
    if (seq_gt(after, m_snd_nxt))
        m_snd_nxt = after;
    if (seq_gt(m_snd_nxt, m_snd_max))
        m_snd_max = m_snd_nxt;
    update_timer(now);
    return bytes;
}

size_t TcpConnection::write_segment(std::span<uint8_t> out, const Ipv4Address& local_ip, uint64_t now)
{
    // Checked first so that a timeout is never consumed without its segment going out.
    if (out.size() < kMinFrameBuffer)
        return 0;
    switch (next_action(now)) {
    case Action::Nothing: return 0;
    case Action::Rst: {
        const RstSpec rst = *m_send_rst;
        const size_t bytes = write(out, local_ip, rst.seq, rst.ack, rst.flags, {}, false);
        m_send_rst.reset();
        m_reset = true;
        return bytes;
    }
    case Action::SynAck: {
        const size_t bytes = write(out, local_ip, m_iss, m_rcv_nxt, tcp::kSyn | tcp::kAck, {}, true);
        m_synack_pending = false;
        m_synack_sent = true;
        m_timer_armed = true;
        m_timer_start = now;
        return bytes;
    }
    case Action::Timeout:
        if (++m_rto_count > m_timings.max_retransmissions) {
            reset_self();
            return write_segment(out, local_ip, now);
        }
        // Exponential backoff (Firecracker retries every ~300 ms, 15 times, then resets: 4.5 s
        // is short for a guest on the software engine, or one busy elsewhere).
        m_rto = std::min(m_rto * 2, m_timings.max_rto_ms);
        m_timer_start = now;
        if (m_state == State::SynReceived)
            return write(out, local_ip, m_iss, m_rcv_nxt, tcp::kSyn | tcp::kAck, {}, true);
        if (m_snd_una != m_snd_max) {
            // Go back: everything not acknowledged is sent again (Firecracker resends one segment).
            m_snd_nxt = m_snd_una;
            m_in_recovery = false;
            m_fast_retransmit = false;
        } else if (window_closed()) {
            // Zero-window probe: an old sequence number makes the guest answer with an ACK that
            // carries its current window, even if its window update was lost.
            return write(out, local_ip, m_snd_una - 1, m_rcv_nxt, tcp::kAck, {}, false);
        }
        return send_data_fin_or_ack(out, local_ip, now);
    case Action::Data:
    case Action::Fin:
    case Action::Ack: return send_data_fin_or_ack(out, local_ip, now);
    }
    return 0;
}

} // namespace vessel::mmds
