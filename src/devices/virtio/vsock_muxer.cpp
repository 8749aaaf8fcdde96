#include "devices/virtio/vsock_muxer.h"

#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <string>
#include <string_view>

#include "base/log.h"
#include "devices/virtio/virtio.h"

namespace vessel::virtio {

using vsock::Header;
using vsock::kHeaderSize;
using vsock::kHostCid;
using vsock::kShutdownBoth;
using vsock::kShutdownRcv;
using vsock::kShutdownSend;
using vsock::Op;

namespace {

constexpr uint64_t kListenerTag = 1;
constexpr uint64_t kWakeTag = 2;

uint64_t port_key(uint32_t local_port, uint32_t peer_port)
{
    return (uint64_t(local_port) << 32) | peer_port;
}

// Bytes waiting to go one way: appended at the back, consumed from the front, contiguous (so one
// send() or one copy into a guest buffer takes them). The owner bounds its size.
class ByteQueue {
public:
    size_t size() const { return m_data.size() - m_head; }
    bool empty() const { return size() == 0; }
    const uint8_t* data() const { return m_data.data() + m_head; }

    void append(const uint8_t* p, size_t n)
    {
        compact();
        m_data.insert(m_data.end(), p, p + n);
    }
    // Room for `n` bytes at the back; commit() says how many were filled.
    uint8_t* prepare(size_t n)
    {
        compact();
        size_t old = m_data.size();
        m_data.resize(old + n);
        return m_data.data() + old;
    }
    void commit(size_t prepared, size_t used) { m_data.resize(m_data.size() - (prepared - used)); }
    void consume(size_t n)
    {
        m_head += std::min(n, size());
        if (m_head == m_data.size())
            clear();
    }
    void clear()
    {
        m_data.clear();
        m_head = 0;
    }

private:
    void compact()
    {
        if (m_head > 0 && m_head >= m_data.size() / 2) {
            m_data.erase(m_data.begin(), m_data.begin() + static_cast<ptrdiff_t>(m_head));
            m_head = 0;
        }
    }

    std::vector<uint8_t> m_data;
    size_t m_head { 0 };
};

// "CONNECT <port>" (the newline already stripped, a CR tolerated) -> the port.
bool parse_connect_line(std::string_view line, uint32_t& port)
{
    if (!line.empty() && line.back() == '\r')
        line.remove_suffix(1);
    constexpr std::string_view kVerb = "CONNECT ";
    if (!line.starts_with(kVerb))
        return false;
    line.remove_prefix(kVerb.size());
    if (line.empty() || line.front() < '0' || line.front() > '9')
        return false;
    auto [end, ec] = std::from_chars(line.data(), line.data() + line.size(), port);
    // Port 0xffffffff is VMADDR_PORT_ANY, not a port one can connect to.
    return ec == std::errc() && end == line.data() + line.size() && port != UINT32_MAX;
}

} // namespace

struct VsockMuxer::Conn {
    enum class State {
        AwaitLine, // host stream accepted, its "CONNECT <port>\n" not complete yet
        Requesting, // host-initiated: REQUEST queued or sent, waiting for the guest's RESPONSE
        Established,
    };

    uint64_t id { 0 };
    int fd { -1 };
    State state { State::AwaitLine };
    uint32_t local_port { 0 }; // our side (the source port of what we send)
    uint32_t peer_port { 0 }; // the guest's side
    std::string line; // AwaitLine: the partial command
    Clock::time_point deadline {};

    // Host stream readiness as edge-triggered epoll reported it (cleared on EAGAIN).
    bool readable { true };
    bool writable { true };
    bool hung_up { false }; // EPOLLHUP: the host closed both ways
    bool host_rd_closed { false }; // read returned EOF: the host sends no more
    bool host_wr_closed { false }; // the host takes no more (write failed or hung up)
    bool shut_wr_done { false }; // we passed the guest's SHUTDOWN(SEND) on (shutdown(SHUT_WR))

    // Guest -> host. `prefix` bytes at the front are ours ("OK <port>\n"), not guest payload.
    ByteQueue to_host;
    size_t prefix { 0 };
    uint32_t rx_cnt { 0 }; // guest payload bytes received
    uint32_t fwd_cnt { 0 }; // of which written to the host (or discarded): our fwd_cnt
    uint32_t last_fwd_sent { 0 }; // fwd_cnt in the last header the guest got

    // Host -> guest.
    ByteQueue to_guest;
    uint32_t tx_cnt { 0 }; // payload bytes sent to the guest
    uint32_t peer_buf_alloc { 0 };
    uint32_t peer_fwd_cnt { 0 };

    uint32_t peer_shutdown { 0 }; // SHUTDOWN flags the guest sent
    uint32_t shutdown_sent { 0 }; // SHUTDOWN flags we sent
    bool need_request { false };
    bool need_response { false };
    bool need_credit_update { false };
    bool in_rx_queue { false };
};

VsockMuxer::VsockMuxer(uint64_t guest_cid, VsockConnector connector, VsockStats* stats)
    : m_guest_cid(guest_cid)
    , m_connector(std::move(connector))
    , m_stats(stats ? stats : &m_own_stats)
{
}

VsockMuxer::~VsockMuxer()
{
    for (auto& [id, c] : m_conns)
        ::close(c->fd);
    if (m_epoll >= 0)
        ::close(m_epoll);
}

Result<void> VsockMuxer::init()
{
    m_epoll = ::epoll_create1(EPOLL_CLOEXEC);
    if (m_epoll < 0)
        return Error::from_errno("vsock: epoll_create1");
    return {};
}

void VsockMuxer::attach(VirtioInterrupt* interrupt, Queue* rx, Queue* tx, Queue* event)
{
    m_interrupt = interrupt;
    m_rx = rx;
    m_tx = tx;
    m_event = event;
}

Result<void> VsockMuxer::epoll_add(int fd, uint32_t events, uint64_t tag)
{
    epoll_event ev {};
    ev.events = events;
    ev.data.u64 = tag;
    if (::epoll_ctl(m_epoll, EPOLL_CTL_ADD, fd, &ev) < 0)
        return Error::from_errno("vsock: epoll_ctl");
    return {};
}

Result<void> VsockMuxer::watch_listener(int fd)
{
    TRY(epoll_add(fd, EPOLLIN, kListenerTag));
    m_listener = fd;
    return {};
}

Result<void> VsockMuxer::watch_wake(int fd)
{
    TRY(epoll_add(fd, EPOLLIN, kWakeTag));
    m_wake = fd;
    return {};
}

VsockMuxer::Conn* VsockMuxer::find_id(uint64_t id)
{
    auto it = m_conns.find(id);
    return it == m_conns.end() ? nullptr : it->second.get();
}

VsockMuxer::Conn* VsockMuxer::find(uint32_t local_port, uint32_t peer_port)
{
    auto it = m_by_ports.find(port_key(local_port, peer_port));
    return it == m_by_ports.end() ? nullptr : find_id(it->second);
}

void VsockMuxer::fail(std::string_view why)
{
    m_broken = true;
    // The level-triggered listener would wake every poll() from now on: stop watching it.
    if (m_listener >= 0)
        ::epoll_ctl(m_epoll, EPOLL_CTL_DEL, m_listener, nullptr);
    if (m_interrupt)
        m_interrupt->device_error(why);
}

void VsockMuxer::poll(int timeout_ms)
{
    m_busy = false;
    epoll_event events[64];
    int n = ::epoll_wait(m_epoll, events, 64, timeout_ms);
    for (int i = 0; i < n; ++i) {
        uint64_t tag = events[i].data.u64;
        uint32_t ev = events[i].events;
        if (tag == kWakeTag) {
            drain_wake();
            continue;
        }
        if (m_broken)
            continue;
        if (tag == kListenerTag) {
            accept_streams();
            continue;
        }
        // An earlier event of this batch may have closed the connection: then it is not found.
        Conn* c = find_id(tag);
        if (!c)
            continue;
        if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
            c->readable = true;
        if (ev & (EPOLLOUT | EPOLLHUP | EPOLLERR))
            c->writable = true;
        if (ev & EPOLLHUP)
            c->hung_up = true;
        pump(*c);
    }
    if (m_broken)
        return;
    process_tx();
    process_rx();
    process_events();
    check_deadlines();
    if (m_tx_used && m_tx->needs_interrupt())
        m_interrupt->signal_queue(vsock::kTxQueue);
    if (m_rx_used && m_rx->needs_interrupt())
        m_interrupt->signal_queue(vsock::kRxQueue);
    if (m_event_used && m_event->needs_interrupt())
        m_interrupt->signal_queue(vsock::kEventQueue);
    m_tx_used = m_rx_used = m_event_used = false;
}

void VsockMuxer::drain_wake()
{
    uint64_t value;
    while (::read(m_wake, &value, sizeof(value)) == sizeof(value)) { }
}

void VsockMuxer::accept_streams()
{
    // A bounded batch: the listener is level-triggered, so what is left wakes the next poll().
    for (int i = 0; i < 16; ++i) {
        int fd = ::accept4(m_listener, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                log_warn("vsock: accept on the host socket: {}", std::strerror(errno));
            return;
        }
        add_host_stream(fd);
    }
    m_busy = true;
}

void VsockMuxer::add_host_stream(int fd)
{
    if (m_conns.size() >= kMaxConnections) {
        log_debug("vsock: {} connections open, refusing another host stream", m_conns.size());
        ::close(fd);
        return;
    }
    auto owned = std::make_unique<Conn>();
    owned->id = m_next_id++;
    owned->fd = fd;
    if (auto r = epoll_add(fd, EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, owned->id); !r.ok()) {
        log_warn("{}", r.error().message());
        ::close(fd);
        return;
    }
    Conn& c = *owned;
    m_conns.emplace(c.id, std::move(owned));
    pump(c);
}

uint32_t VsockMuxer::allocate_local_port(uint32_t peer_port)
{
    // At most kMaxConnections ports are taken, so this ends quickly.
    for (;;) {
        uint32_t port = m_next_local_port++;
        if (m_next_local_port == UINT32_MAX)
            m_next_local_port = kFirstLocalPort;
        if (!find(port, peer_port))
            return port;
    }
}

bool VsockMuxer::read_connect_line(Conn& c)
{
    while (c.readable) {
        char buf[kMaxConnectLine];
        size_t room = kMaxConnectLine - c.line.size();
        if (room == 0)
            return false; // no newline within the longest valid line
        ssize_t n = ::recv(c.fd, buf, room, MSG_DONTWAIT);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            c.readable = false;
            return true;
        }
        if (n <= 0)
            return false; // EOF or an error before a complete command
        c.line.append(buf, static_cast<size_t>(n));
        size_t nl = c.line.find('\n');
        if (nl == std::string::npos)
            continue;
        uint32_t port = 0;
        if (!parse_connect_line(std::string_view(c.line).substr(0, nl), port)) {
            log_debug("vsock: bad command from a host stream: '{}'", std::string_view(c.line).substr(0, nl));
            return false;
        }
        // Whatever followed the newline is the first payload for the guest.
        c.to_guest.append(reinterpret_cast<const uint8_t*>(c.line.data()) + nl + 1, c.line.size() - nl - 1);
        c.line = std::string();
        c.peer_port = port;
        c.local_port = allocate_local_port(port);
        c.state = Conn::State::Requesting;
        c.need_request = true;
        c.deadline = Clock::now() + kConnectTimeout;
        m_by_ports[port_key(c.local_port, c.peer_port)] = c.id;
        ++m_stats->conns_added;
        return true;
    }
    return true;
}

uint32_t VsockMuxer::peer_credit(const Conn& c) const
{
    // What the guest said it can still take. A fwd_cnt beyond what we sent (a lying guest) makes
    // the unsigned difference huge: no credit, never a wrap into a large one.
    uint32_t in_flight = c.tx_cnt - c.peer_fwd_cnt;
    return in_flight >= c.peer_buf_alloc ? 0 : c.peer_buf_alloc - in_flight;
}

uint32_t VsockMuxer::shutdown_flags_due(const Conn& c) const
{
    if (c.state != Conn::State::Established)
        return c.shutdown_sent;
    uint32_t flags = c.shutdown_sent;
    if (c.host_wr_closed)
        flags |= kShutdownRcv;
    // SEND only after every byte the host sent has reached the guest.
    if (c.host_rd_closed && c.to_guest.empty())
        flags |= kShutdownSend;
    return flags;
}

bool VsockMuxer::has_rx_work(const Conn& c) const
{
    if (c.state == Conn::State::AwaitLine)
        return false;
    if (c.need_request || c.need_response || c.need_credit_update)
        return true;
    if (c.state != Conn::State::Established)
        return false;
    if (!c.to_guest.empty() && peer_credit(c) > 0)
        return true;
    return shutdown_flags_due(c) != c.shutdown_sent;
}

void VsockMuxer::enqueue_rx(Conn& c)
{
    if (c.in_rx_queue)
        return;
    c.in_rx_queue = true;
    m_rx_ready.push_back(c.id);
}

void VsockMuxer::mark_host_write_closed(Conn& c)
{
    c.host_wr_closed = true;
    // Guest bytes that can no longer be delivered count as consumed: the guest is told (SHUTDOWN
    // RCV) and must not stay blocked on credit meanwhile.
    c.fwd_cnt += static_cast<uint32_t>(c.to_host.size() - c.prefix);
    c.to_host.clear();
    c.prefix = 0;
}

void VsockMuxer::flush_to_host(Conn& c)
{
    if (c.hung_up && !c.host_wr_closed)
        mark_host_write_closed(c);
    while (!c.to_host.empty() && c.writable && !c.host_wr_closed) {
        ssize_t n = ::send(c.fd, c.to_host.data(), c.to_host.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                c.writable = false;
            else
                mark_host_write_closed(c); // EPIPE, ECONNRESET: the host stopped reading
            break;
        }
        size_t ours = std::min(static_cast<size_t>(n), c.prefix);
        c.prefix -= ours;
        c.fwd_cnt += static_cast<uint32_t>(static_cast<size_t>(n) - ours);
        m_stats->bytes_to_host += static_cast<size_t>(n) - ours;
        c.to_host.consume(static_cast<size_t>(n));
    }
}

void VsockMuxer::read_from_host(Conn& c)
{
    // After the guest's SHUTDOWN(RCV) whatever the host still sends is read and dropped, so that
    // a host writer is not left blocked on a connection nobody reads.
    bool discard = c.peer_shutdown & kShutdownRcv;
    while (c.readable && !c.host_rd_closed) {
        size_t room;
        if (discard) {
            room = sizeof(m_scratch);
        } else {
            // Only what the guest has credit for is read ahead (the rest waits in the host
            // stream: the host writer is slowed down, not our memory filled).
            size_t staged = c.to_guest.size();
            size_t credit = peer_credit(c);
            room = std::min(kStagingBytes - std::min(staged, kStagingBytes), credit > staged ? credit - staged : 0);
        }
        if (room == 0)
            return;
        uint8_t* p = discard ? m_scratch : c.to_guest.prepare(room);
        ssize_t n = ::recv(c.fd, p, room, MSG_DONTWAIT);
        int err = errno;
        if (!discard)
            c.to_guest.commit(room, n > 0 ? static_cast<size_t>(n) : 0);
        if (n > 0)
            continue;
        if (n == 0) {
            c.host_rd_closed = true;
            return;
        }
        if (err == EINTR)
            continue;
        if (err == EAGAIN || err == EWOULDBLOCK) {
            c.readable = false;
            return;
        }
        // ECONNRESET and the like: the host stream is gone both ways.
        c.host_rd_closed = true;
        mark_host_write_closed(c);
        return;
    }
}

bool VsockMuxer::pump(Conn& c)
{
    if (c.state == Conn::State::AwaitLine) {
        if (!read_connect_line(c)) {
            close_conn(c, false); // no vsock side yet: just close the host stream
            return false;
        }
        if (c.state == Conn::State::AwaitLine)
            return true;
    }
    flush_to_host(c);
    // The guest sends no more and the host got everything: pass the half-close on.
    if ((c.peer_shutdown & kShutdownSend) && c.to_host.empty() && !c.host_wr_closed && !c.shut_wr_done) {
        ::shutdown(c.fd, SHUT_WR);
        c.shut_wr_done = true;
    }
    // The guest is done both ways (Linux sends this on close()) and the host got everything: an RST
    // completes the close (the guest waits for it), and the host sees EOF.
    if (c.peer_shutdown == kShutdownBoth && c.to_host.empty()) {
        close_conn(c, true);
        return false;
    }
    if (c.peer_shutdown & kShutdownRcv)
        c.to_guest.clear();
    if (c.state == Conn::State::Established)
        read_from_host(c);
    // Tell the guest what the host consumed: after every kCreditUpdateThreshold bytes, and at once
    // while the guest believes we are (nearly) full, so that a slow host reader stalls the guest
    // no longer than it has to.
    if (c.fwd_cnt != c.last_fwd_sent) {
        uint32_t believed_used = std::min(c.rx_cnt - c.last_fwd_sent, kBufAlloc);
        if (c.fwd_cnt - c.last_fwd_sent >= kCreditUpdateThreshold || kBufAlloc - believed_used < kCreditUpdateThreshold)
            c.need_credit_update = true;
    }
    if (has_rx_work(c))
        enqueue_rx(c);
    return true;
}

void VsockMuxer::close_conn(Conn& c, bool send_rst)
{
    if (c.state != Conn::State::AwaitLine) {
        ++m_stats->conns_removed;
        if (send_rst)
            queue_rst(kHostCid, c.local_port, c.peer_port);
        auto it = m_by_ports.find(port_key(c.local_port, c.peer_port));
        if (it != m_by_ports.end() && it->second == c.id)
            m_by_ports.erase(it);
    }
    ::epoll_ctl(m_epoll, EPOLL_CTL_DEL, c.fd, nullptr);
    ::close(c.fd);
    m_conns.erase(c.id); // destroys c
}

Header VsockMuxer::reply_header(uint32_t local_port, uint32_t peer_port, Op op) const
{
    Header h;
    h.src_cid = kHostCid;
    h.dst_cid = m_guest_cid;
    h.src_port = local_port;
    h.dst_port = peer_port;
    h.type = vsock::kTypeStream;
    h.op = static_cast<uint16_t>(op);
    return h;
}

void VsockMuxer::queue_rst(uint64_t src_cid, uint32_t local_port, uint32_t peer_port)
{
    // Bounded: a guest that floods bad packets without taking replies loses RSTs (its sockets
    // then time out on their own) instead of growing our memory.
    if (m_rsts.size() >= kMaxPendingRsts)
        return;
    Header h = reply_header(local_port, peer_port, Op::Rst);
    h.src_cid = src_cid;
    m_rsts.push_back(h);
}

void VsockMuxer::process_tx()
{
    if (!m_tx || !m_tx->active())
        return;
    for (unsigned i = 0; i < kBatch; ++i) {
        auto popped = m_tx->pop(m_tx_chain);
        if (!popped.ok()) {
            fail(popped.error().message());
            return;
        }
        if (!popped.value())
            return;
        ++m_stats->tx_packets;
        handle_tx_packet(m_tx_chain);
        m_tx->add_used(m_tx_chain, 0);
        m_tx_used = true;
    }
    m_busy = true;
}

void VsockMuxer::handle_tx_packet(const Chain& chain)
{
    if (chain.readable_bytes < kHeaderSize) {
        ++m_stats->dropped;
        return;
    }
    ChainReader reader(chain);
    uint8_t raw[kHeaderSize];
    reader.read(raw);
    Header h = vsock::decode_header(raw);
    // A header that lies about its payload, or one from another CID, cannot be answered sensibly.
    if (h.len > kMaxPayload || h.len > reader.remaining() || h.src_cid != m_guest_cid) {
        ++m_stats->dropped;
        return;
    }
    auto op = static_cast<Op>(h.op);
    bool known_op = h.op >= static_cast<uint16_t>(Op::Request) && h.op <= static_cast<uint16_t>(Op::CreditRequest);
    Conn* c = find(h.dst_port, h.src_port);
    if (h.dst_cid != kHostCid || h.type != vsock::kTypeStream || !known_op) {
        // Nothing here can route or understand it: the sender's socket gets a reset (an RST is
        // never answered, so two sides cannot ping-pong them).
        if (c)
            close_conn(*c, false);
        if (op != Op::Rst)
            queue_rst(h.dst_cid, h.dst_port, h.src_port);
        return;
    }
    if (c) {
        // Every packet carries the sender's credit state.
        c->peer_buf_alloc = h.buf_alloc;
        c->peer_fwd_cnt = h.fwd_cnt;
    }
    switch (op) {
    case Op::Request:
        if (c) {
            close_conn(*c, true); // a second REQUEST for a live connection: reset both sides
            return;
        }
        handle_guest_request(h);
        return;
    case Op::Response:
        if (!c || c->state != Conn::State::Requesting || c->need_request) {
            // A RESPONSE to nothing we asked (or before we asked): reset.
            if (c)
                close_conn(*c, true);
            else
                queue_rst(kHostCid, h.dst_port, h.src_port);
            return;
        }
        c->state = Conn::State::Established;
        ++m_stats->connections_opened;
        {
            std::string ok = fmt::format("OK {}\n", c->local_port);
            c->to_host.append(reinterpret_cast<const uint8_t*>(ok.data()), ok.size());
            c->prefix += ok.size();
        }
        break;
    case Op::Rst:
        if (c)
            close_conn(*c, false);
        return;
    case Op::Shutdown:
        if (!c) {
            queue_rst(kHostCid, h.dst_port, h.src_port);
            return;
        }
        c->peer_shutdown |= h.flags & kShutdownBoth;
        break;
    case Op::Rw:
        if (!c || c->state != Conn::State::Established) {
            if (c)
                close_conn(*c, true);
            else
                queue_rst(kHostCid, h.dst_port, h.src_port);
            return;
        }
        if (!handle_guest_rw(*c, h, reader))
            return;
        break;
    case Op::CreditUpdate:
    case Op::CreditRequest:
        if (!c) {
            queue_rst(kHostCid, h.dst_port, h.src_port);
            return;
        }
        if (op == Op::CreditRequest)
            c->need_credit_update = true;
        break;
    case Op::Invalid: return; // excluded above
    }
    pump(*c);
}

void VsockMuxer::handle_guest_request(const Header& h)
{
    if (m_conns.size() >= kMaxConnections) {
        log_debug("vsock: {} connections open, refusing guest port {} -> {}", m_conns.size(), h.src_port, h.dst_port);
        queue_rst(kHostCid, h.dst_port, h.src_port);
        return;
    }
    auto fd = m_connector(h.dst_port);
    if (!fd.ok()) {
        log_debug("vsock: guest connect to host port {}: {}", h.dst_port, fd.error().message());
        queue_rst(kHostCid, h.dst_port, h.src_port);
        return;
    }
    auto owned = std::make_unique<Conn>();
    owned->id = m_next_id++;
    owned->fd = fd.value();
    if (auto r = epoll_add(owned->fd, EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, owned->id); !r.ok()) {
        log_warn("{}", r.error().message());
        ::close(owned->fd);
        queue_rst(kHostCid, h.dst_port, h.src_port);
        return;
    }
    Conn& c = *owned;
    c.state = Conn::State::Established;
    c.local_port = h.dst_port;
    c.peer_port = h.src_port;
    c.peer_buf_alloc = h.buf_alloc;
    c.peer_fwd_cnt = h.fwd_cnt;
    c.need_response = true;
    m_conns.emplace(c.id, std::move(owned));
    m_by_ports[port_key(c.local_port, c.peer_port)] = c.id;
    ++m_stats->connections_opened;
    ++m_stats->conns_added;
    pump(c);
}

bool VsockMuxer::handle_guest_rw(Conn& c, const Header& h, ChainReader& reader)
{
    if (h.len == 0)
        return true;
    // Everything received and not yet consumed by the host is in to_host: the guest may never
    // have more than kBufAlloc there (its credit). One that does is reset, not buffered.
    uint64_t unconsumed = static_cast<uint32_t>(c.rx_cnt - c.fwd_cnt);
    if (unconsumed + h.len > kBufAlloc) {
        ++m_stats->credit_violations;
        ++m_stats->conns_killed;
        log_debug("vsock: guest port {} sent {} bytes beyond its credit; resetting", c.peer_port,
            unconsumed + h.len - kBufAlloc);
        close_conn(c, true);
        return false;
    }
    c.rx_cnt += h.len;
    if (c.host_wr_closed || c.shut_wr_done) {
        // Nobody to deliver to (the guest has been told with SHUTDOWN RCV), or data after the
        // guest's own SHUTDOWN(SEND): dropped, but counted as consumed.
        reader.skip(h.len);
        c.fwd_cnt += h.len;
        return true;
    }
    if (!c.to_host.empty() || !c.writable) {
        reader.for_each(h.len, [&](const uint8_t* p, size_t n) { c.to_host.append(p, n); });
        return true;
    }
    // Straight from guest memory into the host stream (no copy while the host keeps up); what the
    // socket does not take is queued.
    m_iov.clear();
    reader.for_each(h.len, [&](const uint8_t* p, size_t n) { m_iov.push_back({ const_cast<uint8_t*>(p), n }); });
    msghdr msg {};
    msg.msg_iov = m_iov.data();
    msg.msg_iovlen = m_iov.size();
    ssize_t sent;
    do
        sent = ::sendmsg(c.fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    while (sent < 0 && errno == EINTR);
    if (sent < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK) {
            c.fwd_cnt += h.len;
            mark_host_write_closed(c);
            return true;
        }
        sent = 0;
    }
    size_t done = static_cast<size_t>(sent);
    c.fwd_cnt += static_cast<uint32_t>(done);
    m_stats->bytes_to_host += done;
    if (done < h.len)
        c.writable = false; // a short write: the socket buffer is full
    for (const iovec& v : m_iov) {
        if (done >= v.iov_len) {
            done -= v.iov_len;
            continue;
        }
        c.to_host.append(static_cast<const uint8_t*>(v.iov_base) + done, v.iov_len - done);
        done = 0;
    }
    return true;
}

void VsockMuxer::process_rx()
{
    if (!m_rx || !m_rx->active())
        return;
    unsigned budget = kBatch;
    while (!m_rsts.empty() || !m_rx_ready.empty()) {
        if (budget-- == 0) {
            m_busy = true;
            return;
        }
        auto popped = m_rx->pop(m_rx_chain);
        if (!popped.ok()) {
            fail(popped.error().message());
            return;
        }
        if (!popped.value())
            return; // no buffer: the driver notifies the rx queue when it adds some
        if (m_rx_chain.writable_bytes < kHeaderSize) {
            // Cannot hold a header: returned unused (Linux drops such a completion).
            ++m_stats->dropped;
            m_rx->add_used(m_rx_chain, 0);
            m_rx_used = true;
            continue;
        }
        uint32_t written = 0;
        if (!m_rsts.empty()) {
            uint8_t raw[kHeaderSize];
            vsock::encode_header(m_rsts.front(), raw);
            m_rsts.pop_front();
            ChainWriter(m_rx_chain).write(raw);
            written = kHeaderSize;
            ++m_stats->rsts_sent;
        } else {
            uint64_t id = m_rx_ready.front();
            m_rx_ready.pop_front();
            Conn* c = find_id(id);
            if (c) {
                c->in_rx_queue = false;
                written = build_rx_packet(*c, m_rx_chain);
            }
            if (written == 0) {
                m_rx->undo_pop();
                continue;
            }
            m_rx->add_used(m_rx_chain, written);
            m_rx_used = true;
            ++m_stats->rx_packets;
            pump(*c); // read more host data into the room just made, queue the next packet
            continue;
        }
        m_rx->add_used(m_rx_chain, written);
        m_rx_used = true;
        ++m_stats->rx_packets;
    }
}

uint32_t VsockMuxer::build_rx_packet(Conn& c, const Chain& chain)
{
    Header h = reply_header(c.local_port, c.peer_port, Op::Invalid);
    uint32_t payload = 0;
    uint32_t shutdown = shutdown_flags_due(c);
    if (c.need_request) {
        h.op = static_cast<uint16_t>(Op::Request);
        c.need_request = false;
    } else if (c.need_response) {
        h.op = static_cast<uint16_t>(Op::Response);
        c.need_response = false;
    } else if (c.state == Conn::State::Established && !c.to_guest.empty() && peer_credit(c) > 0) {
        h.op = static_cast<uint16_t>(Op::Rw);
        uint64_t room = chain.writable_bytes - kHeaderSize;
        payload = static_cast<uint32_t>(
            std::min<uint64_t>({ c.to_guest.size(), peer_credit(c), room, uint64_t(kMaxPayload) }));
        if (payload == 0)
            return 0;
    } else if (shutdown != c.shutdown_sent) {
        h.op = static_cast<uint16_t>(Op::Shutdown);
        h.flags = shutdown;
        c.shutdown_sent = shutdown;
    } else if (c.need_credit_update) {
        h.op = static_cast<uint16_t>(Op::CreditUpdate);
    } else {
        return 0;
    }
    // Every packet tells the guest our credit, so no separate update is due after it.
    h.buf_alloc = kBufAlloc;
    h.fwd_cnt = c.fwd_cnt;
    h.len = payload;
    c.last_fwd_sent = c.fwd_cnt;
    c.need_credit_update = false;

    uint8_t raw[kHeaderSize];
    vsock::encode_header(h, raw);
    ChainWriter writer(chain);
    writer.write(raw);
    if (payload) {
        writer.write(std::span(c.to_guest.data(), payload));
        c.to_guest.consume(payload);
        c.tx_cnt += payload;
        m_stats->bytes_to_guest += payload;
    }
    return static_cast<uint32_t>(kHeaderSize + payload);
}

void VsockMuxer::process_events()
{
    if (!m_pending_reset_event || !m_event || !m_event->active())
        return;
    for (;;) {
        auto popped = m_event->pop(m_event_chain);
        if (!popped.ok()) {
            fail(popped.error().message());
            return;
        }
        if (!popped.value())
            return;
        m_event_used = true;
        if (m_event_chain.writable_bytes < vsock::kEventSize) {
            m_event->add_used(m_event_chain, 0); // too small for an event
            continue;
        }
        uint8_t raw[vsock::kEventSize];
        vsock::store_le<uint32_t>(raw, vsock::kEventTransportReset);
        ChainWriter(m_event_chain).write(raw);
        m_event->add_used(m_event_chain, vsock::kEventSize);
        m_pending_reset_event = false;
        return;
    }
}

void VsockMuxer::check_deadlines()
{
    auto now = Clock::now();
    if (now < m_next_deadline_check)
        return;
    m_next_deadline_check = now + std::chrono::seconds(1);
    std::vector<uint64_t> expired;
    for (auto& [id, c] : m_conns)
        if (c->state == Conn::State::Requesting && now >= c->deadline)
            expired.push_back(id);
    for (uint64_t id : expired) {
        if (Conn* c = find_id(id)) {
            log_debug("vsock: guest did not answer the connection to its port {}; giving up", c->peer_port);
            ++m_stats->conns_killed;
            close_conn(*c, true);
        }
    }
}

} // namespace vessel::virtio
