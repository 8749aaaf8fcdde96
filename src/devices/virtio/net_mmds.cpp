// virtio-net's side of the MMDS (see net.h): which transmitted frames go to the stack, how its
// replies reach the guest's receive buffers, when its timers wake the I/O thread, and its
// counters under Firecracker's `mmds` names.
#include <algorithm>
#include <array>
#include <climits>
#include <cstring>
#include <optional>

#include "base/counters.h"
#include "devices/virtio/net.h"
#include "mmds/stack.h"

namespace vessel::virtio {

namespace {

// The largest reply frame: an Ethernet frame at the standard MTU. The stack sizes its segments to
// the buffer it is given (and to the guest's MSS), so a smaller MTU in the guest is fine and a
// larger one only means shorter segments than it could take.
constexpr size_t kMmdsReplyBytes = 1514;

} // namespace

void NetDevice::set_mmds(std::unique_ptr<mmds::Stack> stack)
{
    m_mmds = std::move(stack);
    // Allocated once, here: the transmit path never allocates. A frame to the MMDS may be as
    // large as any (the chain check bounds it); the stack never writes more than the reply size.
    m_mmds_frame.assign(m_mmds ? kNetMaxFrameBytes : 0, 0);
    m_mmds_reply.assign(m_mmds ? kMmdsReplyBytes : 0, 0);
}

bool NetDevice::divert_to_mmds(const ChainReader& frame)
{
    // Peek at the bytes that decide (EtherType, ARP target, IPv4 destination) without touching
    // the rest: ordinary frames keep going out with one writev straight from guest RAM.
    std::array<uint8_t, mmds::Stack::kClassifyBytes> start;
    ChainReader peek = frame;
    const size_t peeked = peek.read(start);
    if (!m_mmds->is_mmds_frame(std::span(start).first(peeked)))
        return false;

    // Possibly ours: the whole frame is copied, so the stack parses bytes the guest can no longer
    // change under it. Bounded: transmit() dropped chains longer than the largest frame.
    ChainReader copy = frame;
    const size_t length
        = copy.read(std::span(m_mmds_frame).first(std::min<uint64_t>(frame.remaining(), m_mmds_frame.size())));
    m_mmds_metrics.frames_copied.add();
    // The copy decides: if the guest rewrote the frame since the peek, it is an ordinary frame
    // now and goes to the backend as any other (from guest RAM, as the guest left it).
    return m_mmds->handle_tx(std::span(m_mmds_frame).first(length));
}

bool NetDevice::mmds_has_reply() const
{
    return m_mmds && !m_mmds_stalled && m_mmds->has_rx();
}

bool NetDevice::mmds_wants_rx() const
{
    // Not while the guest gave no buffers or the limiter holds a frame back: the stack keeps its
    // replies (it builds them only when asked) until a notify or the limiter wakes the thread.
    return !m_rx_starved && !m_rx_throttled && !m_failed && mmds_has_reply();
}

size_t NetDevice::write_mmds_reply()
{
    // The room the pending chains offer: all of them with MRG_RXBUF, the first one without.
    const size_t ring = m_rx_chains.size();
    const uint64_t capacity = m_mergeable ? m_rx_capacity : m_rx_chains[m_rx_head].writable_bytes;
    const size_t room = static_cast<size_t>(
        std::min<uint64_t>(capacity > kNetHeaderBytes ? capacity - kNetHeaderBytes : 0, m_mmds_reply.size()));
    const size_t length = m_mmds->pop_rx(std::span(m_mmds_reply).first(room));
    if (length == 0) {
        // Buffers too small for any reply (a stack with a reply always fits kMinRxBuffer): wait
        // for the guest to add buffers, instead of asking again at every pass.
        m_mmds_stalled = true;
        m_mmds_metrics.tx_errors.add();
        return 0;
    }

    // A plain header: no checksum or segmentation offload (the stack fills in every checksum).
    // num_buffers is written by deliver_rx().
    NetHeader header {};
    const std::span<const uint8_t> pieces[] = {
        std::span(reinterpret_cast<const uint8_t*>(&header), sizeof(header)),
        std::span<const uint8_t>(m_mmds_reply).first(length),
    };
    // It fits: `room` was measured over these chains (only the first one without MRG_RXBUF).
    size_t chain = 0;
    std::optional<ChainWriter> writer;
    writer.emplace(m_rx_chains[m_rx_head]);
    for (std::span<const uint8_t> piece : pieces) {
        while (!piece.empty() && chain < m_rx_count) {
            piece = piece.subspan(writer->write(piece));
            if (!piece.empty() && ++chain < m_rx_count)
                writer.emplace(m_rx_chains[(m_rx_head + chain) % ring]);
        }
    }
    m_mmds_metrics.tx_frames.add();
    m_mmds_metrics.tx_bytes.add(length);
    return kNetHeaderBytes + length;
}

int NetDevice::mmds_timeout_ms() const
{
    if (!m_mmds || m_rx_starved || m_rx_throttled || m_mmds_stalled || m_failed)
        return -1; // a notify or the limiter's deadline wakes the thread then
    const std::optional<uint64_t> deadline = m_mmds->next_deadline();
    if (!deadline)
        return -1;
    const uint64_t now = m_mmds->now();
    // At least 1 ms: a timer that is due when there is nothing to send must not spin the loop.
    if (*deadline <= now)
        return 1;
    return static_cast<int>(std::min<uint64_t>(*deadline - now, INT_MAX));
}

void NetDevice::report_mmds_metrics(MetricsReport& out) const
{
    if (!m_mmds)
        return;
    const mmds::StackStats& s = m_mmds->stats();
    out.counter("rx_accepted", s.rx_frames.load(std::memory_order_relaxed));
    out.counter("rx_accepted_err", s.rx_errors.load(std::memory_order_relaxed));
    out.counter("rx_accepted_unusual", s.rx_unusual.load(std::memory_order_relaxed));
    // Firecracker's rx_bad_eth counts frames without a whole Ethernet header; the speculative
    // test never passes one to the stack, here as in Firecracker's newest device.
    out.counter("rx_bad_eth", 0);
    out.counter("rx_invalid_token", s.rx_invalid_token.load(std::memory_order_relaxed));
    out.counter("rx_no_token", s.rx_no_token.load(std::memory_order_relaxed));
    out.counter("rx_count", s.rx_segments.load(std::memory_order_relaxed));
    out.counter("tx_bytes", m_mmds_metrics.tx_bytes.get());
    out.counter("tx_count", s.tx_frames.load(std::memory_order_relaxed));
    out.counter("tx_errors", m_mmds_metrics.tx_errors.get());
    out.counter("tx_frames", m_mmds_metrics.tx_frames.get());
    out.counter("connections_created", s.connections_opened.load(std::memory_order_relaxed));
    out.counter("connections_destroyed", s.connections_closed.load(std::memory_order_relaxed));
}

} // namespace vessel::virtio
