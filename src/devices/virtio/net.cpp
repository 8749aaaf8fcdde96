#include "devices/virtio/net.h"

#include <pthread.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstring>
#include <utility>

#include "base/log.h"
#include "base/log_limit.h"
#include "devices/virtio/state_json.h"
#include "mmds/stack.h"

namespace vessel::virtio {

namespace {

// readv/writev take at most this many pieces (UIO_MAXIOV).
constexpr size_t kMaxIov = 1024;
// Frames handled per pass over a queue before the other queue gets its turn.
constexpr unsigned kBudget = 256;

// Backend errors after which it will never give a frame again (tap gone, peer closed): the
// device stops polling it instead of spinning on EPOLLERR/EPOLLHUP.
bool backend_gone(ssize_t err)
{
    switch (-err) {
    case EBADF:
    case EBADFD:
    case EIO:
    case ENXIO:
    case ENODEV:
    case ECONNRESET:
    case ENOTCONN:
    case EPIPE: return true;
    default: return false;
    }
}

} // namespace

NetDevice::NetDevice(std::unique_ptr<NetBackend> backend, std::array<uint8_t, 6> mac, Mode mode,
    const std::optional<RateLimiterConfig>& rx_limiter, const std::optional<RateLimiterConfig>& tx_limiter,
    RateLimiterClock clock)
    : m_backend(std::move(backend))
    , m_mac(mac)
    , m_mode(mode)
    , m_rx_limiter(rx_limiter, clock)
    , m_tx_limiter(tx_limiter, clock)
{
    // Guest → host offloads: a tap with IFF_VNET_HDR takes partially checksummed and GSO
    // frames and finishes them itself. Host → guest ones only where the backend can (probed).
    m_features = kNetFMac | kNetFStatus | kNetFMrgRxbuf | kNetFCsum | kNetFHostTso4 | kNetFHostTso6 | kNetFHostEcn;
    uint32_t offloads = m_backend->supported_offloads();
    if (offloads & kNetOffloadCsum) {
        m_features |= kNetFGuestCsum;
        if (offloads & kNetOffloadTso4)
            m_features |= kNetFGuestTso4;
        if (offloads & kNetOffloadTso6)
            m_features |= kNetFGuestTso6;
        if ((offloads & kNetOffloadTsoEcn) && (offloads & (kNetOffloadTso4 | kNetOffloadTso6)))
            m_features |= kNetFGuestEcn;
    }
    m_iov.reserve(kMaxIov);
}

NetDevice::~NetDevice()
{
    stop_thread();
}

std::array<uint8_t, 6> NetDevice::default_mac(std::string_view backend_name, size_t index)
{
    // FNV-1a over the name and the index: stable across runs, different across taps.
    uint32_t h = 2166136261u;
    auto mix = [&](uint8_t b) { h = (h ^ b) * 16777619u; };
    for (char c : backend_name)
        mix(static_cast<uint8_t>(c));
    for (int i = 0; i < 8; ++i)
        mix(static_cast<uint8_t>(index >> (8 * i)));
    // 0x52: locally administered (bit 1), unicast (bit 0 clear); 52:54:00 as QEMU's default.
    return { 0x52, 0x54, 0x00, static_cast<uint8_t>(h >> 16), static_cast<uint8_t>(h >> 8), static_cast<uint8_t>(h) };
}

void NetDevice::read_config(uint64_t offset, std::span<uint8_t> data)
{
    // struct virtio_net_config (5.1.4): mac[6], status, max_virtqueue_pairs, then fields of
    // features not offered (read as zero).
    uint8_t config[10] = {};
    std::memcpy(config, m_mac.data(), 6);
    config[6] = kNetStatusLinkUp;
    config[8] = 1;
    for (size_t i = 0; i < data.size(); ++i) {
        uint64_t at = offset + i;
        data[i] = at < sizeof(config) ? config[at] : 0;
    }
}

Result<void> NetDevice::activate(const ActivateContext& ctx)
{
    if (ctx.queues.size() < 2 || !ctx.queues[kRxQueue].active() || !ctx.queues[kTxQueue].active())
        return make_error("virtio-net: the receive and transmit queues must both be set up");
    stop_thread();
    const uint64_t f = ctx.features;
    m_mergeable = f & kNetFMrgRxbuf;
    bool guest_gso = f & (kNetFGuestTso4 | kNetFGuestTso6 | kNetFGuestUfo);
    m_rx_need = kNetHeaderBytes + (guest_gso ? kNetMaxFrameBytes : kNetMaxPlainFrameBytes);

    // Segmentation offloads need checksum offload (5.1.3.1); a driver that accepted them
    // without it gets full-sized, checksummed frames.
    uint32_t offloads = 0;
    if (f & kNetFGuestCsum) {
        offloads |= kNetOffloadCsum;
        if (f & kNetFGuestTso4)
            offloads |= kNetOffloadTso4;
        if (f & kNetFGuestTso6)
            offloads |= kNetOffloadTso6;
        if ((f & kNetFGuestEcn) && (offloads & (kNetOffloadTso4 | kNetOffloadTso6)))
            offloads |= kNetOffloadTsoEcn;
    }
    TRY_CTX(m_backend->set_offloads(offloads & m_backend->supported_offloads()), "virtio-net");

    m_ctx = ctx;
    m_rx_chains.resize(ctx.queues[kRxQueue].size());
    m_rx_head = m_rx_count = 0;
    m_rx_capacity = 0;
    m_failed = m_tx_blocked = m_rx_starved = m_backend_dead = false;
    m_rx_throttled = m_tx_throttled = false;
    m_rx_deferred = 0;
    m_kicked.store(0);
    m_active = true;
    m_paused = ctx.paused; // a snapshot restore: resume() starts the thread

    if (m_mode == Mode::Thread) {
        m_kick = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        m_epoll = ::epoll_create1(EPOLL_CLOEXEC);
        if (m_kick < 0 || m_epoll < 0) {
            auto err = Error::from_errno("virtio-net: eventfd/epoll");
            stop_thread();
            m_active = false;
            return err;
        }
        epoll_event ev {};
        ev.events = EPOLLIN;
        ev.data.fd = m_kick;
        ::epoll_ctl(m_epoll, EPOLL_CTL_ADD, m_kick, &ev);
        m_backend_events = 0;
        if (m_paused)
            return {};
        if (auto started = start_thread(); !started.ok()) {
            stop_thread();
            m_active = false;
            return started;
        }
    }
    return {};
}

Result<void> NetDevice::start_thread()
{
    m_stop.store(false);
    try {
        m_thread = std::thread([this] { run(); });
    } catch (const std::system_error& e) {
        return make_error("virtio-net: cannot start the I/O thread: {}", e.what());
    }
    ::pthread_setname_np(m_thread.native_handle(), "virtio-net"); // for top -H, perf, gdb
    return {};
}

void NetDevice::join_thread()
{
    if (!m_thread.joinable())
        return;
    m_stop.store(true, std::memory_order_release);
    uint64_t one = 1;
    // The eventfd's counter cannot overflow here (one write per stop); a failed write would
    // only mean the thread is already awake.
    [[maybe_unused]] ssize_t r = ::write(m_kick, &one, sizeof(one));
    m_thread.join();
}

void NetDevice::stop_thread()
{
    join_thread();
    if (m_epoll >= 0)
        ::close(m_epoll);
    if (m_kick >= 0)
        ::close(m_kick);
    m_epoll = m_kick = -1;
    m_backend_events = 0;
}

void NetDevice::reset()
{
    stop_thread();
    if (m_active)
        log_info("virtio-net: {}: received {} frames ({} bytes, {} dropped), sent {} frames ({} bytes, {} dropped)",
            m_backend->describe(), m_stats.rx_frames.load(), m_stats.rx_bytes.load(), m_stats.rx_dropped.load(),
            m_stats.tx_frames.load(), m_stats.tx_bytes.load(), m_stats.tx_dropped.load());
    m_active = false;
    m_paused = false;
    m_ctx = {};
    m_rx_head = m_rx_count = 0;
    m_rx_capacity = 0;
    m_rx_throttled = m_tx_throttled = false;
    m_rx_deferred = 0; // the driver took its buffers back
    m_mmds_consumed = m_mmds_stalled = false;
    // What the stack had for the old driver (ARP replies, connections) means nothing to the
    // next one; the guest's TCP learns of it with a RST, as after a snapshot restore.
    if (m_mmds)
        m_mmds->restore(m_mmds->save());
}

void NetDevice::set_rate_limiters(
    const std::optional<RateLimiterConfig>& rx, const std::optional<RateLimiterConfig>& tx)
{
    // A block already running is not cut short (Firecracker leaves the timer alone), so the I/O
    // thread's deadline stays right and needs no wake-up.
    if (rx)
        m_rx_limiter.update(*rx);
    if (tx)
        m_tx_limiter.update(*tx);
}

void NetDevice::pause()
{
    // The thread finishes the frame it is on (each one is used and signalled within its pass)
    // and exits; receive chains it popped but has not filled stay with the device, untouched.
    m_paused = true;
    join_thread();
}

void NetDevice::resume()
{
    if (!m_paused)
        return;
    m_paused = false;
    if (!m_active || m_mode != Mode::Thread || m_failed)
        return;
    // The new thread starts with a pass over both queues and the backend: what the driver
    // queued (and notified) while paused, and the frames the backend holds, go through at once.
    if (auto started = start_thread(); !started.ok()) {
        log_error("{}", started.error().message());
        fail("cannot restart the I/O thread after a pause");
    }
}

nlohmann::json NetDevice::save_state() const
{
    nlohmann::json heads = nlohmann::json::array();
    for (size_t i = 0; i < m_rx_count; ++i)
        heads.push_back(m_rx_chains[(m_rx_head + i) % m_rx_chains.size()].head);
    nlohmann::json stack = nullptr;
    if (m_mmds) {
        mmds::Ipv4Address ip = m_mmds->save().ipv4;
        stack = { { "ipv4", nlohmann::json::binary(std::vector<uint8_t>(ip.begin(), ip.end())) } };
    }
    return { { "rx_buffers", std::move(heads) }, { "rx_deferred_bytes", m_rx_deferred }, { "mmds", std::move(stack) } };
}

Result<void> NetDevice::restore_state(const nlohmann::json& state)
{
    constexpr std::string_view what = "virtio-net";
    auto heads = TRY(state::get_uint_array(state, "rx_buffers", what, kQueueSize, 0xffff));
    uint32_t deferred = static_cast<uint32_t>(TRY(state::get_uint(state, "rx_deferred_bytes", what, UINT32_MAX)));
    // The MMDS stack keeps its address (the API may have changed it); a device built without a
    // stack ignores it. No thread runs here (paused or not activated).
    const nlohmann::json* stack = TRY(state::field(state, "mmds", what));
    if (!stack->is_null()) {
        auto ip = TRY(state::get_binary(*stack, "ipv4", "virtio-net mmds", 4));
        if (ip.size() != 4)
            return make_error("virtio-net mmds: \"ipv4\" holds {} bytes, not 4", ip.size());
        if (m_mmds)
            m_mmds->restore({ { ip[0], ip[1], ip[2], ip[3] } });
    }
    if (!m_active)
        return {}; // not activated (or failed): the driver sets the queues up again
    if (heads.size() > m_rx_chains.size())
        return make_error("{}: {} receive buffers held on a queue of {}", what, heads.size(), m_rx_chains.size());
    Queue& q = m_ctx.queues[kRxQueue];
    m_rx_head = m_rx_count = 0;
    m_rx_capacity = 0;
    for (uint64_t head : heads) {
        Chain& c = m_rx_chains[m_rx_count];
        TRY_CTX(q.take(static_cast<uint16_t>(head), c), fmt::format("{}: receive buffer {}", what, head));
        if (c.writable_bytes < kNetHeaderBytes)
            return make_error("{}: receive buffer {} cannot hold a header ({} bytes)", what, head, c.writable_bytes);
        ++m_rx_count;
        m_rx_capacity += c.writable_bytes;
    }
    // A frame held back for the rx limiter is in those buffers already: it goes to the guest
    // first (the restored limiter starts full).
    if (deferred != 0 && (deferred < kNetHeaderBytes || deferred > m_rx_capacity))
        return make_error("{}: a held frame of {} bytes in receive buffers of {}", what, deferred, m_rx_capacity);
    m_rx_deferred = deferred;
    m_rx_throttled = false;
    return {};
}

void NetDevice::notify(uint16_t queue)
{
    if (queue > kTxQueue || !m_active)
        return;
    // Firecracker counts a queue event that finds the direction's limiter blocked as throttled.
    if (queue == kRxQueue) {
        m_metrics.rx_queue_event_count.add();
        if (m_rx_limiter.is_blocked())
            m_metrics.rx_rate_limiter_throttled.add();
    } else {
        m_metrics.tx_queue_event_count.add();
        if (m_tx_limiter.is_blocked())
            m_metrics.tx_rate_limiter_throttled.add();
    }
    // While paused this only leaves the bit and the kick for the thread resume() starts.
    m_kicked.fetch_or(1u << queue, std::memory_order_acq_rel);
    if (m_kick >= 0) {
        uint64_t one = 1;
        // Non-blocking: a full counter (2^64-2 kicks pending) still leaves the thread awake.
        [[maybe_unused]] ssize_t r = ::write(m_kick, &one, sizeof(one));
    }
}

void NetDevice::fail(std::string_view why)
{
    m_failed = true;
    m_ctx.interrupt->device_error(why);
}

void NetDevice::poll()
{
    if (!m_active || m_mode != Mode::Manual || m_paused)
        return;
    m_tx_blocked = false;
    if ((m_kicked.exchange(0) >> kRxQueue) & 1)
        m_mmds_stalled = false; // new buffers: a reply that did not fit may now
    unthrottle_tx();
    unthrottle_rx();
    // Bounded: a peer that keeps sending cannot keep the caller here forever.
    for (int round = 0; round < 64; ++round) {
        bool more = process_tx();
        more |= process_rx();
        if (!more)
            break;
    }
    m_mmds_consumed = false; // process_rx() ran after every process_tx()
}

// --- transmit ---------------------------------------------------------------------------------

bool NetDevice::unthrottle_rx()
{
    if (!m_rx_throttled || m_rx_limiter.is_blocked())
        return false;
    m_rx_throttled = false;
    m_metrics.rx_event_rate_limiter_count.add();
    return true;
}

bool NetDevice::unthrottle_tx()
{
    if (!m_tx_throttled || m_tx_limiter.is_blocked())
        return false;
    m_tx_throttled = false;
    m_metrics.tx_rate_limiter_event_count.add();
    return true;
}

int NetDevice::wait_timeout_ms() const
{
    int limiter = limiter_timeout_ms();
    int mmds = mmds_timeout_ms();
    if (limiter < 0 || mmds < 0)
        return std::max(limiter, mmds);
    return std::min(limiter, mmds);
}

int NetDevice::limiter_timeout_ms() const
{
    int timeout = -1;
    for (auto [throttled, limiter] :
        { std::pair { m_rx_throttled, &m_rx_limiter }, { m_tx_throttled, &m_tx_limiter } }) {
        if (!throttled)
            continue;
        int ms = std::max(limiter->poll_timeout_ms(), 0); // -1: unblocked meanwhile, look at once
        timeout = timeout < 0 ? ms : std::min(timeout, ms);
    }
    return timeout;
}

bool NetDevice::process_tx()
{
    if (m_failed || m_tx_blocked || m_tx_throttled)
        return false;
    Queue& q = m_ctx.queues[kTxQueue];
    bool used = false;
    bool more = false;
    unsigned budget = kBudget;
    q.disable_notifications();
    for (;;) {
        // A pause waits for the frame in hand only (a full budget of 64 KiB frames takes
        // milliseconds); notifications stay off, the restarted thread comes back here anyway.
        if (m_stop.load(std::memory_order_relaxed)) {
            more = true;
            break;
        }
        auto popped = q.pop(m_tx_chain);
        if (!popped.ok()) {
            fail(popped.error().message());
            return false;
        }
        if (!popped.value()) {
            // Ask for a kick at the next buffer, then look once more (one may have raced in).
            if (q.enable_notifications()) {
                q.disable_notifications();
                continue;
            }
            break;
        }
        TxOutcome outcome = transmit(m_tx_chain);
        if (outcome == TxOutcome::Throttled) {
            // Back to the ring until the limiter unblocks (charged again then).
            q.undo_pop();
            m_tx_throttled = true;
            m_metrics.tx_rate_limiter_throttled.add();
            break;
        }
        if (outcome == TxOutcome::BackendFull) {
            // The backend is full: keep the chain for when it is writable again.
            q.undo_pop();
            m_tx_blocked = true;
            break;
        }
        q.add_used(m_tx_chain, 0);
        used = true;
        if (--budget == 0) {
            more = true;
            break;
        }
    }
    if (used && q.needs_interrupt())
        m_ctx.interrupt->signal_queue(kTxQueue);
    return more;
}

NetDevice::TxOutcome NetDevice::transmit(const Chain& chain)
{
    auto drop = [&](std::string_view why) {
        m_stats.tx_dropped.fetch_add(1, std::memory_order_relaxed);
        m_metrics.tx_malformed_frames.add();
        if (log_allowed(m_log_count))
            log_debug("virtio-net: dropped a transmit buffer of {} bytes: {}", chain.readable_bytes, why);
        return TxOutcome::Done;
    };
    // As Firecracker: an oversized chain is dropped before the limiter sees it; anything else is
    // charged (header included), even if it turns out malformed.
    if (chain.readable_bytes > kNetHeaderBytes + kNetMaxFrameBytes)
        return drop("longer than the largest frame");
    if (!m_tx_limiter.consume_request(chain.readable_bytes))
        return TxOutcome::Throttled;
    if (chain.readable_bytes < kNetHeaderBytes)
        return drop("shorter than the header");

    // The header is copied out: the backend must see the header checked here, not whatever
    // another vCPU writes into guest memory meanwhile.
    NetHeader hdr;
    ChainReader reader(chain);
    reader.read(std::span(reinterpret_cast<uint8_t*>(&hdr), sizeof(hdr)));
    const uint64_t f = m_ctx.features;
    if ((hdr.flags & kNetHdrFNeedsCsum) && !(f & kNetFCsum))
        return drop("checksum offload not negotiated");
    if ((hdr.gso_type & kNetHdrGsoEcn) && !(f & kNetFHostEcn))
        return drop("ECN segmentation not negotiated");
    switch (hdr.gso_type & ~kNetHdrGsoEcn) {
    case kNetHdrGsoNone: break;
    case kNetHdrGsoTcpV4:
        if (!(f & kNetFHostTso4))
            return drop("TSOv4 not negotiated");
        break;
    case kNetHdrGsoTcpV6:
        if (!(f & kNetFHostTso6))
            return drop("TSOv6 not negotiated");
        break;
    default: return drop("unsupported segmentation type");
    }
    hdr.flags &= kNetHdrFNeedsCsum; // DATA_VALID / RSC_INFO are receive-only (5.1.6.2)
    hdr.num_buffers = 0;

    if (m_mmds && divert_to_mmds(reader)) {
        // Firecracker gives the tx limiter back what the MMDS consumed: only frames that leave
        // the VM are limited.
        m_tx_limiter.replenish_request(chain.readable_bytes);
        m_mmds_consumed = true;
        return TxOutcome::Done;
    }

    m_iov.clear();
    m_iov.push_back({ &hdr, sizeof(hdr) });
    bool too_many = false;
    reader.for_each(reader.remaining(), [&](const uint8_t* p, size_t n) {
        if (m_iov.size() == kMaxIov) {
            too_many = true;
            return;
        }
        // Guest RAM, checked by Queue::pop(); the backend only reads it.
        m_iov.push_back({ const_cast<uint8_t*>(p), n });
    });
    if (too_many)
        return drop("more than 1023 pieces");

    auto started = std::chrono::steady_clock::now();
    ssize_t n = m_backend->write_frame(m_iov);
    if (n == -EAGAIN || n == -EWOULDBLOCK || n == -ENOBUFS) {
        // Kept for later (Firecracker would drop it): not sent, so not charged either.
        m_tx_limiter.replenish_request(chain.readable_bytes);
        return TxOutcome::BackendFull;
    }
    m_metrics.tap_write_agg.record(
        std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - started));
    if (n < 0) {
        m_stats.tx_dropped.fetch_add(1, std::memory_order_relaxed);
        m_metrics.tap_write_fails.add();
        if (log_allowed(m_log_count))
            log_warn("virtio-net: {}: frame not sent: {}", m_backend->describe(), std::strerror(static_cast<int>(-n)));
        return TxOutcome::Done;
    }
    m_stats.tx_frames.fetch_add(1, std::memory_order_relaxed);
    m_stats.tx_bytes.fetch_add(chain.readable_bytes - kNetHeaderBytes, std::memory_order_relaxed);
    m_metrics.tx_bytes_count.add(chain.readable_bytes);
    m_metrics.tx_packets_count.add();
    m_metrics.tx_count.add();
    return TxOutcome::Done;
}

// --- receive ----------------------------------------------------------------------------------

bool NetDevice::fill_rx_chains()
{
    Queue& q = m_ctx.queues[kRxQueue];
    const size_t ring = m_rx_chains.size();
    q.disable_notifications();
    // With MRG_RXBUF a frame may take many chains: gather enough for the largest frame (or
    // every chain the ring can hold). Without it, each frame goes into one chain.
    auto enough = [&] { return m_mergeable ? m_rx_capacity >= m_rx_need : m_rx_count > 0; };
    while (!enough() && m_rx_count < ring) {
        Chain& c = m_rx_chains[(m_rx_head + m_rx_count) % ring];
        auto popped = q.pop(c);
        if (!popped.ok()) {
            fail(popped.error().message());
            return false;
        }
        if (!popped.value()) {
            if (q.enable_notifications()) {
                q.disable_notifications();
                continue;
            }
            // Out of buffers: wait for the driver's notify (notifications stay enabled).
            m_rx_starved = true;
            m_metrics.no_rx_avail_buffer.add();
            return false;
        }
        if (c.writable_bytes < kNetHeaderBytes) {
            // Cannot even hold the header: give it back unused.
            q.add_used(c, 0);
            m_rx_returned = true;
            continue;
        }
        ++m_rx_count;
        m_rx_capacity += c.writable_bytes;
    }
    m_rx_starved = false;
    return m_rx_count > 0;
}

bool NetDevice::process_rx()
{
    if (m_failed || m_rx_throttled || (m_backend_dead && m_rx_deferred == 0 && !mmds_has_reply()))
        return false;
    Queue& q = m_ctx.queues[kRxQueue];
    const size_t ring = m_rx_chains.size();
    bool more = false;
    for (unsigned budget = kBudget;; --budget) {
        if (budget == 0 || m_stop.load(std::memory_order_relaxed)) { // as in process_tx()
            more = true;
            break;
        }
        // A frame the limiter refused is already in the guest's buffers: it goes first, and
        // nothing more is read until it does.
        if (m_rx_deferred != 0) {
            if (!m_rx_limiter.consume_request(m_rx_deferred)) {
                m_rx_throttled = true;
                m_metrics.rx_rate_limiter_throttled.add();
                break;
            }
            deliver_rx(std::exchange(m_rx_deferred, 0));
            if (q.needs_interrupt())
                m_ctx.interrupt->signal_queue(kRxQueue);
            continue;
        }
        // MMDS replies go before the backend's frames (Firecracker's order), into the buffers
        // there are: the stack sizes its segments to them.
        if (mmds_has_reply()) {
            const bool filled = fill_rx_chains();
            if (m_failed || (!filled && m_rx_count == 0))
                break; // no buffers: the reply waits in the stack for the guest's
            if (size_t n = write_mmds_reply()) {
                if (!account_rx(n))
                    break;
                continue;
            }
        }
        if (m_backend_dead || !fill_rx_chains())
            break;
        // The pending chains' buffers, up to what the largest frame needs.
        m_iov.clear();
        uint64_t bytes = 0;
        size_t chains = m_mergeable ? m_rx_count : 1;
        for (size_t i = 0; i < chains && bytes < m_rx_need && m_iov.size() < kMaxIov; ++i) {
            for (const Segment& s : m_rx_chains[(m_rx_head + i) % ring].segments) {
                if (!s.writable || s.len == 0)
                    continue;
                if (m_iov.size() == kMaxIov)
                    break;
                m_iov.push_back({ s.host, s.len }); // guest RAM, checked by Queue::pop()
                bytes += s.len;
            }
        }
        ssize_t n = m_backend->read_frame(m_iov);
        if (n == -EAGAIN || n == -EWOULDBLOCK)
            break;
        if (n < 0)
            m_metrics.tap_read_fails.add();
        if (n < 0 && backend_gone(n)) {
            log_warn("virtio-net: {}: {}; no more frames will be received", m_backend->describe(),
                std::strerror(static_cast<int>(-n)));
            m_backend_dead = true;
            break;
        }
        if (n < static_cast<ssize_t>(kNetHeaderBytes)) {
            // Lost by the backend (did not fit), or a runt without a header: the buffers stay
            // pending for the next frame.
            m_stats.rx_dropped.fetch_add(1, std::memory_order_relaxed);
            if (n == 0) { // an orderly shutdown of a socket peer
                m_backend_dead = true;
                break;
            }
            continue;
        }
        if (!account_rx(static_cast<size_t>(n)))
            break;
    }
    if (m_rx_returned) {
        m_rx_returned = false;
        if (q.needs_interrupt())
            m_ctx.interrupt->signal_queue(kRxQueue);
    }
    return more && !m_failed;
}

bool NetDevice::account_rx(size_t frame_bytes)
{
    // Counted when read, before the limiter (as Firecracker).
    m_metrics.rx_count.add();
    m_metrics.rx_packets_count.add();
    m_metrics.rx_bytes_count.add(frame_bytes);
    if (!m_rx_limiter.consume_request(frame_bytes)) {
        // Held in the buffers it was written into (not used yet) until the limiter unblocks.
        m_rx_deferred = static_cast<uint32_t>(frame_bytes);
        m_rx_throttled = true;
        m_metrics.rx_rate_limiter_throttled.add();
        return false;
    }
    deliver_rx(frame_bytes);
    if (m_ctx.queues[kRxQueue].needs_interrupt())
        m_ctx.interrupt->signal_queue(kRxQueue);
    return true;
}

void NetDevice::deliver_rx(size_t frame_bytes)
{
    Queue& q = m_ctx.queues[kRxQueue];
    const size_t ring = m_rx_chains.size();
    // How many chains the frame filled (only the first one without MRG_RXBUF).
    size_t k = 0;
    for (uint64_t left = frame_bytes; left > 0 && k < m_rx_count; ++k)
        left -= std::min<uint64_t>(left, m_rx_chains[(m_rx_head + k) % ring].writable_bytes);

    // num_buffers is the device's (a tap skips it): 1 without MRG_RXBUF (5.1.6.4).
    uint16_t num_buffers = static_cast<uint16_t>(m_mergeable ? k : 1);
    ChainWriter header(m_rx_chains[m_rx_head]);
    header.skip(offsetof(NetHeader, num_buffers));
    header.write(std::span(reinterpret_cast<const uint8_t*>(&num_buffers), sizeof(num_buffers)));

    uint64_t left = frame_bytes;
    for (size_t i = 0; i < k; ++i) {
        Chain& c = m_rx_chains[m_rx_head];
        uint32_t written = static_cast<uint32_t>(std::min<uint64_t>(left, c.writable_bytes));
        left -= written;
        q.add_used(c, written);
        m_rx_capacity -= c.writable_bytes;
        m_rx_head = (m_rx_head + 1) % ring;
        --m_rx_count;
    }
    m_stats.rx_frames.fetch_add(1, std::memory_order_relaxed);
    m_stats.rx_bytes.fetch_add(frame_bytes - kNetHeaderBytes, std::memory_order_relaxed);
    m_mmds_stalled = false; // other chains lead now: a waiting MMDS reply may fit them
}

// --- the I/O thread ---------------------------------------------------------------------------

void NetDevice::update_backend_events()
{
    uint32_t want = 0;
    if (!m_failed && !m_backend_dead) {
        // Not while the rx limiter holds a frame back: the backend keeps what comes meanwhile.
        if (!m_rx_starved && !m_rx_throttled)
            want |= EPOLLIN;
        if (m_tx_blocked)
            want |= EPOLLOUT;
    }
    if (want == m_backend_events)
        return;
    epoll_event ev {};
    ev.events = want;
    ev.data.fd = m_backend->fd();
    // Removed rather than set to 0 events: EPOLLHUP/EPOLLERR are reported regardless of the mask.
    int op = want == 0 ? EPOLL_CTL_DEL : (m_backend_events == 0 ? EPOLL_CTL_ADD : EPOLL_CTL_MOD);
    if (::epoll_ctl(m_epoll, op, m_backend->fd(), &ev) != 0 && log_allowed(m_log_count))
        log_warn("virtio-net: epoll_ctl on {}: {}", m_backend->describe(), std::strerror(errno));
    m_backend_events = want;
}

void NetDevice::run()
{
    // Buffers and frames may be waiting from before activation (kicks before DRIVER_OK are lost).
    bool tx_more = true;
    bool rx_more = true;
    epoll_event events[4];
    while (!m_stop.load(std::memory_order_acquire)) {
        update_backend_events();
        int n = ::epoll_wait(m_epoll, events, 4, tx_more || rx_more ? 0 : wait_timeout_ms());
        if (n < 0) {
            if (errno == EINTR)
                continue;
            log_warn("virtio-net: epoll_wait: {}; device stopped", std::strerror(errno));
            return;
        }
        for (int i = 0; i < n; ++i) {
            if (events[i].data.fd == m_kick) {
                uint64_t value;
                [[maybe_unused]] ssize_t r = ::read(m_kick, &value, sizeof(value));
                continue;
            }
            if (events[i].events & EPOLLIN)
                m_metrics.rx_tap_event_count.add();
            if (events[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP))
                rx_more = true;
            if (events[i].events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) {
                m_tx_blocked = false;
                tx_more = true;
            }
        }
        if (m_stop.load(std::memory_order_acquire))
            break;
        uint32_t kicked = m_kicked.exchange(0, std::memory_order_acq_rel);
        tx_more |= (kicked >> kTxQueue) & 1;
        rx_more |= (kicked >> kRxQueue) & 1;
        if ((kicked >> kRxQueue) & 1)
            m_mmds_stalled = false; // new buffers: a reply that did not fit may now
        tx_more |= unthrottle_tx();
        rx_more |= unthrottle_rx();
        if (tx_more)
            tx_more = process_tx();
        // Replies to what the MMDS just took, and retransmissions whose timer fired, go out in
        // this pass.
        rx_more |= std::exchange(m_mmds_consumed, false);
        rx_more |= mmds_wants_rx();
        if (rx_more)
            rx_more = process_rx();
    }
}

void NetDevice::report_metrics(MetricsReport& out) const
{
    const NetMetrics& m = m_metrics;
    out.counter("rx_bytes_count", m.rx_bytes_count.get());
    out.counter("rx_packets_count", m.rx_packets_count.get());
    out.counter("rx_count", m.rx_count.get());
    out.counter("tx_bytes_count", m.tx_bytes_count.get());
    out.counter("tx_packets_count", m.tx_packets_count.get());
    out.counter("tx_count", m.tx_count.get());
    out.counter("rx_queue_event_count", m.rx_queue_event_count.get());
    out.counter("tx_queue_event_count", m.tx_queue_event_count.get());
    out.counter("rx_tap_event_count", m.rx_tap_event_count.get());
    out.counter("tx_malformed_frames", m.tx_malformed_frames.get());
    out.counter("no_rx_avail_buffer", m.no_rx_avail_buffer.get());
    out.counter("tap_read_fails", m.tap_read_fails.get());
    out.counter("tap_write_fails", m.tap_write_fails.get());
    out.counter("rx_rate_limiter_throttled", m.rx_rate_limiter_throttled.get());
    out.counter("tx_rate_limiter_throttled", m.tx_rate_limiter_throttled.get());
    out.counter("rx_event_rate_limiter_count", m.rx_event_rate_limiter_count.get());
    out.counter("tx_rate_limiter_event_count", m.tx_rate_limiter_event_count.get());
    out.latency("tap_write_agg", m.tap_write_agg);
}

} // namespace vessel::virtio
