#include "mmds/packet.h"

#include <algorithm>
#include <cstring>

namespace vessel::mmds {

namespace {

constexpr size_t kArpTargetIpOffset = kEthernetHeaderBytes + 24;
constexpr size_t kIpv4DestinationOffset = kEthernetHeaderBytes + 16;

Ipv4Address ip_at(const uint8_t* p)
{
    return { p[0], p[1], p[2], p[3] };
}

} // namespace

uint32_t checksum_add(uint32_t sum, std::span<const uint8_t> bytes)
{
    size_t i = 0;
    for (; i + 1 < bytes.size(); i += 2)
        sum += static_cast<uint32_t>(bytes[i] << 8 | bytes[i + 1]);
    if (i < bytes.size())
        sum += static_cast<uint32_t>(bytes[i] << 8);
    // Fold as we go so that long segments cannot overflow the accumulator.
    while (sum >> 16)
        sum = (sum & 0xffff) + (sum >> 16);
    return sum;
}

uint16_t checksum_finish(uint32_t sum)
{
    while (sum >> 16)
        sum = (sum & 0xffff) + (sum >> 16);
    return static_cast<uint16_t>(~sum);
}

uint16_t tcp_checksum(const Ipv4Address& src, const Ipv4Address& dst, std::span<const uint8_t> segment)
{
    uint8_t pseudo[12];
    std::memcpy(pseudo, src.data(), 4);
    std::memcpy(pseudo + 4, dst.data(), 4);
    pseudo[8] = 0;
    pseudo[9] = kIpProtocolTcp;
    store_be16(pseudo + 10, static_cast<uint16_t>(segment.size()));
    return checksum_finish(checksum_add(checksum_add(0, pseudo), segment));
}

uint32_t TcpSegmentView::seq_length() const
{
    return static_cast<uint32_t>(payload.size()) + ((flags & tcp::kSyn) ? 1 : 0) + ((flags & tcp::kFin) ? 1 : 0);
}

uint16_t ethertype(std::span<const uint8_t> frame)
{
    return frame.size() < kEthernetHeaderBytes ? 0 : load_be16(frame.data() + 12);
}

std::optional<Ipv4Address> arp_target_ip(std::span<const uint8_t> frame)
{
    if (frame.size() < kArpFrameBytes)
        return std::nullopt;
    return ip_at(frame.data() + kArpTargetIpOffset);
}

std::optional<Ipv4Address> ipv4_destination(std::span<const uint8_t> frame)
{
    if (frame.size() < kEthernetHeaderBytes + kIpv4HeaderBytes)
        return std::nullopt;
    return ip_at(frame.data() + kIpv4DestinationOffset);
}

std::optional<ArpRequest> parse_arp_request(std::span<const uint8_t> frame)
{
    // Firecracker insists on exactly 28 bytes of ARP; a guest (or a bridge in it) may pad the
    // frame to Ethernet's 60-byte minimum, and such a request deserves an answer too.
    if (frame.size() < kArpFrameBytes || ethertype(frame) != kEtherTypeArp)
        return std::nullopt;
    const uint8_t* arp = frame.data() + kEthernetHeaderBytes;
    if (load_be16(arp) != 1 || load_be16(arp + 2) != kEtherTypeIpv4 || arp[4] != 6 || arp[5] != 4
        || load_be16(arp + 6) != kArpOperRequest)
        return std::nullopt;
    ArpRequest request;
    std::memcpy(request.sender_mac.data(), arp + 8, 6);
    request.sender_ip = ip_at(arp + 14);
    request.target_ip = ip_at(arp + 24);
    return request;
}

Ipv4Parse parse_tcp_frame(std::span<const uint8_t> frame, TcpSegmentView& out)
{
    if (frame.size() < kEthernetHeaderBytes + kIpv4HeaderBytes || ethertype(frame) != kEtherTypeIpv4)
        return Ipv4Parse::Malformed;
    const std::span<const uint8_t> packet = frame.subspan(kEthernetHeaderBytes);
    const uint8_t* ip = packet.data();
    const size_t header_bytes = static_cast<size_t>(ip[0] & 0x0f) * 4;
    const size_t total_bytes = load_be16(ip + 2);
    // Bytes after total_length are Ethernet padding (Firecracker wants none; a padded frame is
    // still a valid packet). A packet longer than the frame is truncated: refused.
    if ((ip[0] >> 4) != 4 || header_bytes < kIpv4HeaderBytes || total_bytes < header_bytes
        || total_bytes > packet.size())
        return Ipv4Parse::Malformed;
    if (ip[9] != kIpProtocolTcp)
        return Ipv4Parse::NotTcp;
    // Firecracker parses each fragment as a whole packet; a fragment's bytes are not a TCP
    // segment we could answer, so we drop them. Guests set DF on TCP and never fragment here.
    const uint16_t fragment = load_be16(ip + 6);
    if ((fragment & 0x2000) || (fragment & 0x1fff))
        return Ipv4Parse::Fragment;

    const std::span<const uint8_t> segment = packet.subspan(header_bytes, total_bytes - header_bytes);
    if (segment.size() < kTcpHeaderBytes)
        return Ipv4Parse::Malformed;
    const uint8_t* tcp = segment.data();
    const size_t tcp_header_bytes = static_cast<size_t>(tcp[12] >> 4) * 4;
    if (tcp_header_bytes < kTcpHeaderBytes || tcp_header_bytes > segment.size())
        return Ipv4Parse::Malformed;

    std::memcpy(out.src_mac.data(), frame.data() + 6, 6);
    out.src_ip = ip_at(ip + 12);
    out.dst_ip = ip_at(ip + 16);
    out.src_port = load_be16(tcp);
    out.dst_port = load_be16(tcp + 2);
    out.seq = load_be32(tcp + 4);
    out.ack = load_be32(tcp + 8);
    out.flags = tcp[13];
    out.window = load_be16(tcp + 14);
    out.options = segment.subspan(kTcpHeaderBytes, tcp_header_bytes - kTcpHeaderBytes);
    out.payload = segment.subspan(tcp_header_bytes);
    return Ipv4Parse::Ok;
}

std::optional<uint16_t> parse_mss_option(std::span<const uint8_t> options)
{
    size_t i = 0;
    while (i < options.size()) {
        const uint8_t kind = options[i];
        if (kind == tcp::kOptionEnd)
            break;
        if (kind == tcp::kOptionNop) {
            ++i;
            continue;
        }
        if (i + 1 >= options.size() || options[i + 1] < 2 || i + options[i + 1] > options.size())
            return 0;
        const uint8_t length = options[i + 1];
        if (kind == tcp::kOptionMss) {
            if (length != 4)
                return 0;
            return load_be16(options.data() + i + 2);
        }
        i += length;
    }
    return std::nullopt;
}

size_t write_arp_reply(std::span<uint8_t> out, const Ipv4Address& mmds_ip, const ArpRequest& request)
{
    if (out.size() < kArpFrameBytes)
        return 0;
    uint8_t* p = out.data();
    std::memcpy(p, request.sender_mac.data(), 6);
    std::memcpy(p + 6, kMmdsMac.data(), 6);
    store_be16(p + 12, kEtherTypeArp);
    uint8_t* arp = p + kEthernetHeaderBytes;
    store_be16(arp, 1);
    store_be16(arp + 2, kEtherTypeIpv4);
    arp[4] = 6;
    arp[5] = 4;
    store_be16(arp + 6, kArpOperReply);
    std::memcpy(arp + 8, kMmdsMac.data(), 6);
    std::memcpy(arp + 14, mmds_ip.data(), 4);
    std::memcpy(arp + 18, request.sender_mac.data(), 6);
    std::memcpy(arp + 24, request.sender_ip.data(), 4);
    return kArpFrameBytes;
}

size_t write_tcp_frame(std::span<uint8_t> out, const TcpSegmentSpec& spec)
{
    const size_t tcp_header_bytes = kTcpHeaderBytes + (spec.mss_option ? 4 : 0);
    const size_t segment_bytes = tcp_header_bytes + spec.payload.size();
    const size_t total_bytes = kIpv4HeaderBytes + segment_bytes;
    if (total_bytes > 0xffff || out.size() < kEthernetHeaderBytes + total_bytes)
        return 0;

    uint8_t* p = out.data();
    std::memcpy(p, spec.dst_mac.data(), 6);
    std::memcpy(p + 6, kMmdsMac.data(), 6);
    store_be16(p + 12, kEtherTypeIpv4);

    // IPv4 as Firecracker writes it: no options, ID 0, no DF, TTL 1.
    uint8_t* ip = p + kEthernetHeaderBytes;
    ip[0] = 0x45;
    ip[1] = 0;
    store_be16(ip + 2, static_cast<uint16_t>(total_bytes));
    store_be16(ip + 4, 0);
    store_be16(ip + 6, 0);
    ip[8] = kReplyTtl;
    ip[9] = kIpProtocolTcp;
    store_be16(ip + 10, 0);
    std::memcpy(ip + 12, spec.src_ip.data(), 4);
    std::memcpy(ip + 16, spec.dst_ip.data(), 4);
    store_be16(ip + 10, checksum_finish(checksum_add(0, { ip, kIpv4HeaderBytes })));

    uint8_t* tcp = ip + kIpv4HeaderBytes;
    store_be16(tcp, spec.src_port);
    store_be16(tcp + 2, spec.dst_port);
    store_be32(tcp + 4, spec.seq);
    store_be32(tcp + 8, spec.ack);
    tcp[12] = static_cast<uint8_t>(tcp_header_bytes / 4 << 4);
    tcp[13] = spec.flags;
    store_be16(tcp + 14, spec.window);
    store_be16(tcp + 16, 0);
    store_be16(tcp + 18, 0);
    if (spec.mss_option) {
        tcp[20] = tcp::kOptionMss;
        tcp[21] = 4;
        store_be16(tcp + 22, *spec.mss_option);
    }
    if (!spec.payload.empty())
        std::memcpy(tcp + tcp_header_bytes, spec.payload.data(), spec.payload.size());
    store_be16(tcp + 16, tcp_checksum(spec.src_ip, spec.dst_ip, { tcp, segment_bytes }));
    return kEthernetHeaderBytes + total_bytes;
}

} // namespace vessel::mmds
