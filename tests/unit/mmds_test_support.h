// Helpers for the MMDS tests: a fake clock, guest frames built by hand, the MMDS's frames taken
// apart, and a checksum written independently of src/mmds/packet.cpp so that a shared mistake
// cannot pass unnoticed.
#pragma once

#include <gtest/gtest.h>

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "mmds/data_store.h"
#include "mmds/stack.h"
#include "mmds/token_authority.h"

namespace mmds_test {

using vessel::mmds::Ipv4Address;
using vessel::mmds::MacAddress;

constexpr MacAddress kGuestMac { 0x52, 0x54, 0x00, 0x12, 0x34, 0x56 };
constexpr Ipv4Address kGuestIp { 192, 168, 0, 2 };
constexpr Ipv4Address kMmdsIp { 169, 254, 169, 254 };

struct FakeClock {
    uint64_t now { 1'000'000 };
    vessel::mmds::Clock clock()
    {
        return [this] { return now; };
    }
};

inline uint16_t be16(const uint8_t* p)
{
    return static_cast<uint16_t>(p[0] << 8 | p[1]);
}

inline uint32_t be32(const uint8_t* p)
{
    return static_cast<uint32_t>(p[0]) << 24 | static_cast<uint32_t>(p[1]) << 16 | static_cast<uint32_t>(p[2]) << 8
        | p[3];
}

inline void put16(std::vector<uint8_t>& v, uint16_t x)
{
    v.push_back(static_cast<uint8_t>(x >> 8));
    v.push_back(static_cast<uint8_t>(x));
}

inline void put32(std::vector<uint8_t>& v, uint32_t x)
{
    put16(v, static_cast<uint16_t>(x >> 16));
    put16(v, static_cast<uint16_t>(x));
}

// RFC 1071 the slow, obvious way: every 16-bit word (an odd last byte padded with zero) added
// into a 64-bit sum, carries folded once at the end.
inline uint16_t reference_checksum(const std::vector<uint8_t>& bytes)
{
    uint64_t sum = 0;
    for (size_t i = 0; i < bytes.size(); i += 2) {
        const uint64_t hi = bytes[i];
        const uint64_t lo = i + 1 < bytes.size() ? bytes[i + 1] : 0;
        sum += hi * 256 + lo;
    }
    while (sum > 0xffff)
        sum = (sum & 0xffff) + (sum >> 16);
    return static_cast<uint16_t>(~sum & 0xffff);
}

inline uint16_t reference_tcp_checksum(
    const Ipv4Address& src, const Ipv4Address& dst, const uint8_t* segment, size_t length)
{
    std::vector<uint8_t> pseudo(src.begin(), src.end());
    pseudo.insert(pseudo.end(), dst.begin(), dst.end());
    pseudo.push_back(0);
    pseudo.push_back(6);
    put16(pseudo, static_cast<uint16_t>(length));
    pseudo.insert(pseudo.end(), segment, segment + length);
    return reference_checksum(pseudo);
}

inline std::vector<uint8_t> arp_request(const Ipv4Address& target, size_t pad_to = 0, const MacAddress& mac = kGuestMac,
    const Ipv4Address& ip = kGuestIp, uint16_t oper = 1)
{
    std::vector<uint8_t> f = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };
    f.insert(f.end(), mac.begin(), mac.end());
    put16(f, 0x0806);
    put16(f, 1);
    put16(f, 0x0800);
    f.push_back(6);
    f.push_back(4);
    put16(f, oper);
    f.insert(f.end(), mac.begin(), mac.end());
    f.insert(f.end(), ip.begin(), ip.end());
    for (int i = 0; i < 6; ++i)
        f.push_back(0);
    f.insert(f.end(), target.begin(), target.end());
    while (f.size() < pad_to)
        f.push_back(0);
    return f;
}

struct TcpOut {
    uint16_t src_port { 40000 };
    uint16_t dst_port { 80 };
    uint32_t seq { 0 };
    uint32_t ack { 0 };
    uint8_t flags { 0 };
    uint16_t window { 64240 };
    std::vector<uint8_t> options;
    std::string payload;
    Ipv4Address src_ip { kGuestIp };
    Ipv4Address dst_ip { kMmdsIp };
    MacAddress src_mac { kGuestMac };
    uint8_t protocol { 6 };
    uint16_t fragment { 0x4000 }; // DF, as Linux sends TCP
    size_t pad_to { 0 };
};

// A guest frame: Ethernet, IPv4 (checksummed), TCP (checksummed).
inline std::vector<uint8_t> tcp_frame(const TcpOut& s)
{
    std::vector<uint8_t> tcp;
    put16(tcp, s.src_port);
    put16(tcp, s.dst_port);
    put32(tcp, s.seq);
    put32(tcp, s.ack);
    tcp.push_back(static_cast<uint8_t>((20 + s.options.size()) / 4 << 4));
    tcp.push_back(s.flags);
    put16(tcp, s.window);
    put16(tcp, 0);
    put16(tcp, 0);
    tcp.insert(tcp.end(), s.options.begin(), s.options.end());
    tcp.insert(tcp.end(), s.payload.begin(), s.payload.end());
    const uint16_t csum = reference_tcp_checksum(s.src_ip, s.dst_ip, tcp.data(), tcp.size());
    tcp[16] = static_cast<uint8_t>(csum >> 8);
    tcp[17] = static_cast<uint8_t>(csum);

    std::vector<uint8_t> ip;
    ip.push_back(0x45);
    ip.push_back(0);
    put16(ip, static_cast<uint16_t>(20 + tcp.size()));
    put16(ip, 0x1234);
    put16(ip, s.fragment);
    ip.push_back(64);
    ip.push_back(s.protocol);
    put16(ip, 0);
    ip.insert(ip.end(), s.src_ip.begin(), s.src_ip.end());
    ip.insert(ip.end(), s.dst_ip.begin(), s.dst_ip.end());
    const uint16_t ip_csum = reference_checksum(ip);
    ip[10] = static_cast<uint8_t>(ip_csum >> 8);
    ip[11] = static_cast<uint8_t>(ip_csum);

    std::vector<uint8_t> f(vessel::mmds::kMmdsMac.begin(), vessel::mmds::kMmdsMac.end());
    f.insert(f.end(), s.src_mac.begin(), s.src_mac.end());
    put16(f, 0x0800);
    f.insert(f.end(), ip.begin(), ip.end());
    f.insert(f.end(), tcp.begin(), tcp.end());
    while (f.size() < s.pad_to)
        f.push_back(0);
    return f;
}

inline std::vector<uint8_t> mss_option(uint16_t mss)
{
    return { 2, 4, static_cast<uint8_t>(mss >> 8), static_cast<uint8_t>(mss) };
}

// A frame the MMDS produced, taken apart and checked.
struct Segment {
    MacAddress dst_mac {};
    MacAddress src_mac {};
    Ipv4Address src_ip {};
    Ipv4Address dst_ip {};
    uint8_t ttl { 0 };
    uint16_t ip_id { 0 };
    uint16_t ip_fragment { 0 };
    uint16_t src_port { 0 };
    uint16_t dst_port { 0 };
    uint32_t seq { 0 };
    uint32_t ack { 0 };
    uint8_t flags { 0 };
    uint16_t window { 0 };
    std::vector<uint8_t> options;
    std::string payload;
    bool ip_checksum_ok { false };
    bool tcp_checksum_ok { false };

    bool has(uint8_t f) const { return (flags & f) == f; }
};

inline std::optional<Segment> parse_segment(const std::vector<uint8_t>& f)
{
    if (f.size() < 54 || be16(f.data() + 12) != 0x0800)
        return std::nullopt;
    Segment s;
    std::copy(f.begin(), f.begin() + 6, s.dst_mac.begin());
    std::copy(f.begin() + 6, f.begin() + 12, s.src_mac.begin());
    const uint8_t* ip = f.data() + 14;
    if (ip[0] != 0x45 || ip[9] != 6)
        return std::nullopt;
    const size_t total = be16(ip + 2);
    if (14 + total != f.size())
        return std::nullopt;
    s.ttl = ip[8];
    s.ip_id = be16(ip + 4);
    s.ip_fragment = be16(ip + 6);
    std::copy(ip + 12, ip + 16, s.src_ip.begin());
    std::copy(ip + 16, ip + 20, s.dst_ip.begin());
    s.ip_checksum_ok = reference_checksum(std::vector<uint8_t>(ip, ip + 20)) == 0;
    const uint8_t* tcp = ip + 20;
    const size_t tcp_len = total - 20;
    const size_t header = static_cast<size_t>(tcp[12] >> 4) * 4;
    s.src_port = be16(tcp);
    s.dst_port = be16(tcp + 2);
    s.seq = be32(tcp + 4);
    s.ack = be32(tcp + 8);
    s.flags = tcp[13];
    s.window = be16(tcp + 14);
    s.options.assign(tcp + 20, tcp + header);
    s.payload.assign(reinterpret_cast<const char*>(tcp + header), tcp_len - header);
    s.tcp_checksum_ok = reference_tcp_checksum(s.src_ip, s.dst_ip, tcp, tcp_len) == 0;
    return s;
}

// Everything the stack has for the guest now, each frame checked for valid checksums.
inline std::vector<std::vector<uint8_t>> drain(vessel::mmds::Stack& stack, size_t buffer = 2048, size_t limit = 10000)
{
    std::vector<std::vector<uint8_t>> frames;
    std::vector<uint8_t> buf(buffer);
    while (stack.has_rx() && frames.size() < limit) {
        const size_t n = stack.pop_rx(buf);
        if (n == 0)
            break;
        frames.emplace_back(buf.begin(), buf.begin() + static_cast<ptrdiff_t>(n));
    }
    return frames;
}

inline std::vector<Segment> drain_segments(vessel::mmds::Stack& stack, size_t buffer = 2048)
{
    std::vector<Segment> out;
    for (auto& frame : drain(stack, buffer)) {
        auto s = parse_segment(frame);
        EXPECT_TRUE(s.has_value()) << "not a TCP frame";
        if (!s)
            continue;
        EXPECT_TRUE(s->ip_checksum_ok);
        EXPECT_TRUE(s->tcp_checksum_ok);
        out.push_back(*s);
    }
    return out;
}

// A store, token authority and stack on a fake clock, with Firecracker's test document.
struct Fixture {
    FakeClock clock;
    std::shared_ptr<vessel::mmds::DataStore> store { std::make_shared<vessel::mmds::DataStore>() };
    std::shared_ptr<vessel::mmds::TokenAuthority> tokens { std::make_shared<vessel::mmds::TokenAuthority>(
        clock.clock()) };
    std::unique_ptr<vessel::mmds::Stack> stack;

    explicit Fixture(vessel::mmds::StackConfig config = {})
    {
        config.isn_seed = config.isn_seed.value_or(42);
        stack = std::make_unique<vessel::mmds::Stack>(store, tokens, config, clock.clock());
        EXPECT_TRUE(store
                        ->put_json(R"({"latest":{"meta-data":{"ami-id":"ami-12345678","reservation-id":"r-fea54097"}},)"
                                   R"("age":43,"name":{"first":"John","second":"Doe"}})")
                        .ok());
    }
};

// The guest end of one TCP connection, tracking sequence numbers as a real stack would.
class Peer {
public:
    Peer(vessel::mmds::Stack& stack, uint16_t port = 40000)
        : m_stack(stack)
        , m_port(port)
    {
    }

    TcpOut base(uint8_t flags) const
    {
        TcpOut s;
        s.src_port = m_port;
        s.seq = seq;
        s.ack = ack;
        s.flags = flags;
        s.window = window;
        return s;
    }

    bool send(uint8_t flags, std::string payload = {})
    {
        TcpOut s = base(flags);
        s.payload = std::move(payload);
        return m_stack.handle_tx(tcp_frame(s));
    }

    // SYN (with an MSS option unless 0) → SYN-ACK → ACK. Returns the SYN-ACK.
    Segment connect(uint16_t mss = 1460)
    {
        TcpOut syn = base(vessel::mmds::tcp::kSyn);
        if (mss)
            syn.options = mss_option(mss);
        EXPECT_TRUE(m_stack.handle_tx(tcp_frame(syn)));
        auto segments = drain_segments(m_stack);
        EXPECT_EQ(segments.size(), 1u);
        Segment synack = segments.empty() ? Segment {} : segments.front();
        seq += 1;
        ack = synack.seq + 1;
        EXPECT_TRUE(send(vessel::mmds::tcp::kAck));
        return synack;
    }

    // Takes the stack's segments for this connection in: in-order payload is appended to
    // `received`, FIN noted. Returns the segments.
    std::vector<Segment> receive(size_t buffer = 2048)
    {
        auto segments = drain_segments(m_stack, buffer);
        for (const auto& s : segments) {
            if (s.dst_port != m_port)
                continue;
            if (s.seq == ack && !s.payload.empty()) {
                received += s.payload;
                ack += static_cast<uint32_t>(s.payload.size());
            }
            // A FIN counts once everything before it is in.
            if (s.has(vessel::mmds::tcp::kFin) && !fin_received
                && s.seq + static_cast<uint32_t>(s.payload.size()) == ack) {
                fin_received = true;
                ack += 1;
            }
        }
        return segments;
    }

    uint32_t seq { 1000 };
    uint32_t ack { 0 };
    uint16_t window { 64240 };
    std::string received;
    bool fin_received { false };

private:
    vessel::mmds::Stack& m_stack;
    uint16_t m_port;
};

} // namespace mmds_test
