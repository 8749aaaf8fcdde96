#include "mmds/stack.h"

#include <algorithm>
#include <array>
#include <cstring>

#include "mmds/http_handler.h"

namespace vessel::mmds {

namespace {

uint32_t pack(const Ipv4Address& address)
{
    uint32_t value;
    std::memcpy(&value, address.data(), 4);
    return value;
}

Ipv4Address unpack(uint32_t value)
{
    Ipv4Address address;
    std::memcpy(address.data(), &value, 4);
    return address;
}

// splitmix64: a fast, well-mixed sequence from any seed. Initial sequence numbers need to be
// hard to guess only across connections of one guest, whose traffic never leaves the host.
uint64_t splitmix64(uint64_t& state)
{
    uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

} // namespace

Stack::Stack(std::shared_ptr<DataStore> store, std::shared_ptr<TokenAuthority> tokens, StackConfig config, Clock clock)
    : m_store(std::move(store))
    , m_tokens(std::move(tokens))
    , m_config(config)
    , m_clock(clock ? std::move(clock) : Clock(monotonic_ms))
    , m_ipv4(pack(config.ipv4))
{
    if (m_config.isn_seed) {
        m_isn_state = *m_config.isn_seed;
    } else {
        std::array<uint8_t, 8> seed {};
        // Without entropy the sequence is still valid TCP, merely guessable: fall back to time.
        if (!fill_random(seed))
            m_isn_state = monotonic_ms();
        else
            std::memcpy(&m_isn_state, seed.data(), sizeof(m_isn_state));
    }
    m_responder = [this](std::string_view request) { return respond(request); };
}

Stack::~Stack() = default;

Ipv4Address Stack::ipv4() const
{
    return unpack(m_ipv4.load(std::memory_order_relaxed));
}

void Stack::set_ipv4(const Ipv4Address& address)
{
    m_ipv4.store(pack(address), std::memory_order_relaxed);
}

void Stack::restore(const State& state)
{
    set_ipv4(state.ipv4);
    m_arp_replies.clear();
    m_resets.clear();
    m_stats.connections_closed += m_connections.size();
    m_connections.clear();
    m_next_connection = 0;
}

uint32_t Stack::next_isn()
{
    return static_cast<uint32_t>(splitmix64(m_isn_state));
}

std::string Stack::respond(std::string_view request)
{
    TokenCheck check = TokenCheck::NotChecked;
    std::string response = handle_request(request, *m_store, *m_tokens, &check);
    if (check == TokenCheck::Missing)
        ++m_stats.rx_no_token;
    else if (check == TokenCheck::Invalid)
        ++m_stats.rx_invalid_token;
    return response;
}

bool Stack::is_mmds_frame(std::span<const uint8_t> frame_start) const
{
    // Firecracker's speculative test: the frame's fixed offsets name the MMDS address. Only
    // untagged frames count (a VLAN tag moves the EtherType out of place: not ours).
    const Ipv4Address address = ipv4();
    switch (ethertype(frame_start)) {
    case kEtherTypeArp: return arp_target_ip(frame_start) == address;
    case kEtherTypeIpv4: return ipv4_destination(frame_start) == address;
    default: return false;
    }
}

bool Stack::handle_tx(std::span<const uint8_t> frame)
{
    // From the speculative test on the frame is ours, parsed or not (newest Firecracker: it
    // never reaches the tap).
    if (!is_mmds_frame(frame))
        return false;
    ++m_stats.rx_frames;
    if (ethertype(frame) == kEtherTypeArp)
        handle_arp(frame);
    else
        handle_ipv4(frame);
    return true;
}

void Stack::handle_arp(std::span<const uint8_t> frame)
{
    auto request = parse_arp_request(frame);
    if (!request) {
        // ARP replies and malformed frames aimed at the MMDS address: nothing to say.
        ++m_stats.rx_dropped;
        ++m_stats.rx_errors;
        return;
    }
    // One pending reply per requester (a repeated request replaces the queued one); Firecracker
    // keeps a single reply for all requesters, so two guest interfaces asking at once lose one.
    std::erase_if(m_arp_replies, [&](const ArpRequest& queued) {
        return queued.sender_mac == request->sender_mac && queued.sender_ip == request->sender_ip;
    });
    if (m_arp_replies.size() >= kMaxPendingArpReplies)
        m_arp_replies.pop_front();
    m_arp_replies.push_back(*request);
}

void Stack::handle_ipv4(std::span<const uint8_t> frame)
{
    TcpSegmentView segment {};
    const Ipv4Parse parsed = parse_tcp_frame(frame, segment);
    if (parsed != Ipv4Parse::Ok || segment.dst_port != kMmdsTcpPort) {
        // Not TCP (ICMP echo included), fragments, malformed headers, other ports: dropped
        // silently, as Firecracker does.
        ++m_stats.rx_dropped;
        ++(parsed == Ipv4Parse::NotTcp ? m_stats.rx_unusual : m_stats.rx_errors);
        return;
    }
    ++m_stats.rx_segments;
    handle_segment(segment, m_clock());
    remove_done();
}

std::vector<std::unique_ptr<TcpConnection>>::iterator Stack::find_connection(const TcpSegmentView& segment)
{
    return std::find_if(m_connections.begin(), m_connections.end(), [&](const auto& connection) {
        return connection->remote_ip() == segment.src_ip && connection->remote_port() == segment.src_port;
    });
}

void Stack::handle_segment(const TcpSegmentView& segment, uint64_t now)
{
    auto it = find_connection(segment);
    if (it == m_connections.end()) {
        if (segment.flags & tcp::kRst)
            return; // never answer a RST
        if (is_connection_request(segment)) {
            open_connection(segment, now);
            return;
        }
        // No connection: a stray segment, e.g. an ACK arriving after we forgot the connection.
        queue_rst(rst_for_segment(segment));
        return;
    }
    switch ((*it)->receive(segment, now, m_responder)) {
    case TcpConnection::Receive::Ok: break;
    case TcpConnection::Receive::RstSegment: queue_rst(rst_for_segment(segment)); break;
    case TcpConnection::Receive::Restart:
        erase_connection(it);
        open_connection(segment, now);
        break;
    }
}

void Stack::open_connection(const TcpSegmentView& syn, uint64_t now)
{
    if (m_connections.size() >= m_config.max_connections) {
        // Full: make room by evicting the first connection idle for long enough (its peer gets a
        // RST), otherwise refuse the new one with a RST.
        auto idle = std::find_if(m_connections.begin(), m_connections.end(),
            [now](const auto& connection) { return connection->evictable(now); });
        if (idle == m_connections.end()) {
            ++m_stats.connections_refused;
            queue_rst(rst_for_segment(syn));
            return;
        }
        queue_rst((*idle)->abort());
        erase_connection(idle);
    }
    auto connection = TcpConnection::accept(syn, next_isn(), now, m_config.timings);
    if (!connection) {
        ++m_stats.rx_dropped; // a malformed MSS option: Firecracker drops the SYN too
        return;
    }
    ++m_stats.connections_opened;
    m_connections.push_back(std::move(connection));
}

void Stack::queue_rst(const RstSpec& rst)
{
    if (m_resets.size() >= m_config.max_pending_resets) {
        ++m_stats.resets_dropped;
        return;
    }
    m_resets.push_back(rst);
}

void Stack::erase_connection(std::vector<std::unique_ptr<TcpConnection>>::iterator it)
{
    m_connections.erase(it);
    ++m_stats.connections_closed;
    m_next_connection = 0;
}

void Stack::remove_done()
{
    const size_t removed = std::erase_if(m_connections, [](const auto& connection) { return connection->done(); });
    if (removed != 0) {
        m_stats.connections_closed += removed;
        m_next_connection = 0;
    }
}

bool Stack::has_rx() const
{
    if (!m_arp_replies.empty() || !m_resets.empty())
        return true;
    const uint64_t now = m_clock();
    return std::any_of(m_connections.begin(), m_connections.end(),
        [now](const auto& connection) { return connection->has_segment(now); });
}

size_t Stack::pop_rx(std::span<uint8_t> out)
{
    if (out.size() < kMinRxBuffer)
        return 0;
    const Ipv4Address address = ipv4();
    size_t bytes = 0;
    // Order as Firecracker: ARP, then RSTs, then connection data.
    if (!m_arp_replies.empty()) {
        bytes = write_arp_reply(out, address, m_arp_replies.front());
        m_arp_replies.pop_front();
    } else if (!m_resets.empty()) {
        const RstSpec& rst = m_resets.front();
        bytes = write_tcp_frame(out,
            TcpSegmentSpec {
                .dst_mac = rst.mac,
                .src_ip = address,
                .dst_ip = rst.ip,
                .src_port = kMmdsTcpPort,
                .dst_port = rst.port,
                .seq = rst.seq,
                .ack = rst.ack,
                .flags = rst.flags,
                .window = 0,
                .mss_option = std::nullopt,
                .payload = {},
            });
        m_resets.pop_front();
    } else {
        const uint64_t now = m_clock();
        const size_t count = m_connections.size();
        for (size_t i = 0; i < count && bytes == 0; ++i) {
            const size_t index = (m_next_connection + i) % count;
            bytes = m_connections[index]->write_segment(out, address, now);
            if (bytes)
                m_next_connection = index + 1;
        }
        remove_done();
    }
    if (bytes)
        ++m_stats.tx_frames;
    return bytes;
}

std::optional<uint64_t> Stack::next_deadline() const
{
    std::optional<uint64_t> earliest;
    for (const auto& connection : m_connections) {
        if (auto deadline = connection->next_deadline(); deadline && (!earliest || *deadline < *earliest))
            earliest = deadline;
    }
    return earliest;
}

} // namespace vessel::mmds
