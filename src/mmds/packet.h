// Wire formats the MMDS network stack reads and writes: Ethernet II, ARP for IPv4 over
// Ethernet, IPv4 without options, TCP. Parsers take untrusted guest frames and check every
// length before reading; writers fill a caller's buffer and return the bytes used (0 when it is
// too small). Multi-byte fields are big-endian on the wire and read byte by byte, so frames need
// no alignment.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>

namespace vessel::mmds {

using MacAddress = std::array<uint8_t, 6>;
using Ipv4Address = std::array<uint8_t, 4>;

// Firecracker's MMDS identity: the MAC is fixed, the IPv4 address configurable.
constexpr MacAddress kMmdsMac { 0x06, 0x01, 0x23, 0x45, 0x67, 0x01 };
constexpr Ipv4Address kDefaultMmdsIpv4 { 169, 254, 169, 254 };
constexpr uint16_t kMmdsTcpPort = 80;

constexpr uint16_t kEtherTypeIpv4 = 0x0800;
constexpr uint16_t kEtherTypeArp = 0x0806;
constexpr size_t kEthernetHeaderBytes = 14;
constexpr size_t kArpBytes = 28; // htype, ptype, hlen, plen, oper, sha, spa, tha, tpa
constexpr size_t kArpFrameBytes = kEthernetHeaderBytes + kArpBytes;
constexpr size_t kIpv4HeaderBytes = 20;
constexpr size_t kTcpHeaderBytes = 20;
constexpr size_t kTcpFrameOverhead = kEthernetHeaderBytes + kIpv4HeaderBytes + kTcpHeaderBytes;
constexpr uint8_t kIpProtocolTcp = 6;
// Replies leave with TTL 1 (Firecracker's DEFAULT_TTL): no router may forward them further.
constexpr uint8_t kReplyTtl = 1;
constexpr uint16_t kArpOperRequest = 1;
constexpr uint16_t kArpOperReply = 2;

namespace tcp {
constexpr uint8_t kFin = 0x01;
constexpr uint8_t kSyn = 0x02;
constexpr uint8_t kRst = 0x04;
constexpr uint8_t kPsh = 0x08;
constexpr uint8_t kAck = 0x10;
constexpr uint8_t kUrg = 0x20;
constexpr uint8_t kEce = 0x40;
constexpr uint8_t kCwr = 0x80;
constexpr uint8_t kOptionEnd = 0;
constexpr uint8_t kOptionNop = 1;
constexpr uint8_t kOptionMss = 2;
} // namespace tcp

inline uint16_t load_be16(const uint8_t* p)
{
    return static_cast<uint16_t>(p[0] << 8 | p[1]);
}

inline uint32_t load_be32(const uint8_t* p)
{
    return static_cast<uint32_t>(p[0]) << 24 | static_cast<uint32_t>(p[1]) << 16 | static_cast<uint32_t>(p[2]) << 8
        | p[3];
}

inline void store_be16(uint8_t* p, uint16_t v)
{
    p[0] = static_cast<uint8_t>(v >> 8);
    p[1] = static_cast<uint8_t>(v);
}

inline void store_be32(uint8_t* p, uint32_t v)
{
    p[0] = static_cast<uint8_t>(v >> 24);
    p[1] = static_cast<uint8_t>(v >> 16);
    p[2] = static_cast<uint8_t>(v >> 8);
    p[3] = static_cast<uint8_t>(v);
}

// TCP sequence-space comparisons (RFC 793 modular arithmetic).
inline bool seq_lt(uint32_t a, uint32_t b)
{
    return static_cast<int32_t>(a - b) < 0;
}
inline bool seq_le(uint32_t a, uint32_t b)
{
    return static_cast<int32_t>(a - b) <= 0;
}
inline bool seq_gt(uint32_t a, uint32_t b)
{
    return seq_lt(b, a);
}
inline bool seq_ge(uint32_t a, uint32_t b)
{
    return seq_le(b, a);
}

// The Internet checksum (RFC 1071): a running one's-complement sum, then folded and inverted.
uint32_t checksum_add(uint32_t sum, std::span<const uint8_t> bytes);
uint16_t checksum_finish(uint32_t sum);
// TCP checksum over the IPv4 pseudo-header and the whole segment (its checksum field included:
// pass a zeroed field to compute one, a filled one to verify — the result is then 0).
uint16_t tcp_checksum(const Ipv4Address& src, const Ipv4Address& dst, std::span<const uint8_t> segment);

// An ARP request as Firecracker answers it: Ethernet/IPv4, oper 1.
struct ArpRequest {
    MacAddress sender_mac;
    Ipv4Address sender_ip;
    Ipv4Address target_ip;
};

// A TCP segment from the guest, with the addresses the reply needs. Spans point into the frame.
struct TcpSegmentView {
    MacAddress src_mac;
    Ipv4Address src_ip;
    Ipv4Address dst_ip;
    uint16_t src_port;
    uint16_t dst_port;
    uint32_t seq;
    uint32_t ack;
    uint8_t flags;
    uint16_t window;
    std::span<const uint8_t> options;
    std::span<const uint8_t> payload;

    // Sequence space the segment occupies: payload plus one for SYN and one for FIN.
    uint32_t seq_length() const;
};

// Frame kinds the stack cares about, read without trusting any field.
uint16_t ethertype(std::span<const uint8_t> frame); // 0 if shorter than an Ethernet header
// The ARP target / IPv4 destination at their fixed offsets, if the frame is long enough to hold it
// (Firecracker's speculative test: it decides whether the MMDS swallows the frame).
std::optional<Ipv4Address> arp_target_ip(std::span<const uint8_t> frame);
std::optional<Ipv4Address> ipv4_destination(std::span<const uint8_t> frame);

// Parses an ARP request for IPv4 over Ethernet. Trailing Ethernet padding is allowed.
std::optional<ArpRequest> parse_arp_request(std::span<const uint8_t> frame);

enum class Ipv4Parse { Ok, Malformed, NotTcp, Fragment };
// Parses an IPv4 packet carrying a TCP segment. Checksums are not verified: the guest may leave
// the TCP checksum to the device (virtio-net checksum offload), and frames never cross a wire.
Ipv4Parse parse_tcp_frame(std::span<const uint8_t> frame, TcpSegmentView& out);

// The MSS option of a SYN: nullopt if absent, 0 if the options are malformed (or MSS is 0).
std::optional<uint16_t> parse_mss_option(std::span<const uint8_t> options);

// Writes the ARP reply to `request` from `mmds_ip`/kMmdsMac: 42 bytes, unpadded as Firecracker's.
size_t write_arp_reply(std::span<uint8_t> out, const Ipv4Address& mmds_ip, const ArpRequest& request);

// A segment to write: Ethernet + IPv4 + TCP (+ MSS option) + payload, checksums filled in.
struct TcpSegmentSpec {
    MacAddress dst_mac;
    Ipv4Address src_ip;
    Ipv4Address dst_ip;
    uint16_t src_port;
    uint16_t dst_port;
    uint32_t seq;
    uint32_t ack;
    uint8_t flags;
    uint16_t window;
    std::optional<uint16_t> mss_option;
    std::span<const uint8_t> payload;
};
size_t write_tcp_frame(std::span<uint8_t> out, const TcpSegmentSpec& spec);

} // namespace vessel::mmds
