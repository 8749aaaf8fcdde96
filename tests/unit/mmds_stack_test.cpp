// The MMDS network stack driven with hand-built Ethernet frames: what it swallows, ARP, a full
// HTTP-over-TCP exchange as busybox wget and nc make it, V2 end to end, and malformed input.
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "mmds/http_handler.h"
#include "mmds/stack.h"
#include "mmds_test_support.h"

using namespace vessel;
using namespace vessel::mmds;
using namespace mmds_test;

namespace {

TEST(MmdsStack, ArpRequestGetsReply)
{
    Fixture f;
    ASSERT_TRUE(f.stack->handle_tx(arp_request(kMmdsIp)));
    ASSERT_TRUE(f.stack->has_rx());
    auto frames = drain(*f.stack);
    ASSERT_EQ(frames.size(), 1u);
    const std::vector<uint8_t>& r = frames[0];
    ASSERT_EQ(r.size(), 42u); // unpadded, as Firecracker
    const std::vector<uint8_t> expected = {
        0x52, 0x54, 0x00, 0x12, 0x34, 0x56, // to the requester
        0x06, 0x01, 0x23, 0x45, 0x67, 0x01, // from the MMDS MAC
        0x08, 0x06, // ARP
        0x00, 0x01, 0x08, 0x00, 6, 4, // Ethernet / IPv4
        0x00, 0x02, // reply
        0x06, 0x01, 0x23, 0x45, 0x67, 0x01, 169, 254, 169, 254, // sender: MMDS
        0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 192, 168, 0, 2, // target: the requester
    };
    EXPECT_EQ(r, expected);
    EXPECT_FALSE(f.stack->has_rx());
}

TEST(MmdsStack, PaddedArpRequestGetsReplyToo)
{
    Fixture f;
    ASSERT_TRUE(f.stack->handle_tx(arp_request(kMmdsIp, 60)));
    EXPECT_EQ(drain(*f.stack).size(), 1u);
}

TEST(MmdsStack, ArpRepliesAndOddArpAreSwallowedSilently)
{
    Fixture f;
    EXPECT_TRUE(f.stack->handle_tx(arp_request(kMmdsIp, 0, kGuestMac, kGuestIp, 2))); // a reply
    auto bad = arp_request(kMmdsIp);
    bad[14 + 4] = 8; // hlen
    EXPECT_TRUE(f.stack->handle_tx(bad));
    EXPECT_FALSE(f.stack->has_rx());
    EXPECT_EQ(f.stack->stats().rx_dropped, 2u);
}

TEST(MmdsStack, OneReplyPerRequesterIsKept)
{
    Fixture f;
    for (int i = 0; i < 5; ++i)
        ASSERT_TRUE(f.stack->handle_tx(arp_request(kMmdsIp)));
    const MacAddress other_mac { 0x52, 0x54, 0, 0, 0, 9 };
    ASSERT_TRUE(f.stack->handle_tx(arp_request(kMmdsIp, 0, other_mac, { 10, 0, 0, 9 })));
    EXPECT_EQ(drain(*f.stack).size(), 2u);
    for (uint8_t i = 0; i < 20; ++i)
        ASSERT_TRUE(f.stack->handle_tx(arp_request(kMmdsIp, 0, kGuestMac, { 10, 0, 1, i })));
    EXPECT_EQ(drain(*f.stack).size(), Stack::kMaxPendingArpReplies);
}

TEST(MmdsStack, OtherFramesAreNotConsumed)
{
    Fixture f;
    EXPECT_FALSE(f.stack->handle_tx(arp_request({ 192, 168, 0, 1 })));
    TcpOut to_gateway;
    to_gateway.dst_ip = { 192, 168, 0, 1 };
    to_gateway.flags = tcp::kSyn;
    EXPECT_FALSE(f.stack->handle_tx(tcp_frame(to_gateway)));
    // IPv6, a VLAN-tagged frame to the MMDS address, runts.
    auto ipv6 = tcp_frame(TcpOut {});
    ipv6[12] = 0x86;
    ipv6[13] = 0xdd;
    EXPECT_FALSE(f.stack->handle_tx(ipv6));
    auto vlan = tcp_frame(TcpOut {});
    vlan.insert(vlan.begin() + 12, { 0x81, 0x00, 0x00, 0x05 });
    EXPECT_FALSE(f.stack->handle_tx(vlan));
    EXPECT_FALSE(f.stack->handle_tx({}));
    auto frame = tcp_frame(TcpOut {});
    EXPECT_FALSE(f.stack->handle_tx(std::span(frame).first(13)));
    // Too short to hold the destination address: not recognisably ours.
    EXPECT_FALSE(f.stack->handle_tx(std::span(frame).first(14 + 19)));
    EXPECT_FALSE(f.stack->has_rx());
    EXPECT_EQ(f.stack->stats().rx_frames, 0u);
}

TEST(MmdsStack, FramesToTheMmdsAddressAreSwallowedEvenIfUseless)
{
    Fixture f;
    TcpOut other_port;
    other_port.dst_port = 8080;
    other_port.flags = tcp::kSyn;
    EXPECT_TRUE(f.stack->handle_tx(tcp_frame(other_port)));
    TcpOut icmp;
    icmp.protocol = 1;
    EXPECT_TRUE(f.stack->handle_tx(tcp_frame(icmp)));
    TcpOut fragment;
    fragment.flags = tcp::kSyn;
    fragment.fragment = 0x2000; // more fragments
    EXPECT_TRUE(f.stack->handle_tx(tcp_frame(fragment)));
    auto truncated = tcp_frame(TcpOut {});
    truncated.resize(14 + 20 + 10);
    EXPECT_TRUE(f.stack->handle_tx(truncated));
    // No RST for other ports, no ICMP: nothing at all.
    EXPECT_FALSE(f.stack->has_rx());
    EXPECT_EQ(f.stack->connection_count(), 0u);
    EXPECT_EQ(f.stack->stats().rx_dropped, 4u);
}

TEST(MmdsStack, FullExchange)
{
    Fixture f;
    Peer guest(*f.stack);
    TcpOut syn = guest.base(tcp::kSyn);
    syn.options = mss_option(100); // small, so the response takes several segments
    ASSERT_TRUE(f.stack->handle_tx(tcp_frame(syn)));
    auto segments = drain_segments(*f.stack);
    ASSERT_EQ(segments.size(), 1u);
    const Segment& synack = segments[0];
    EXPECT_EQ(synack.flags, tcp::kSyn | tcp::kAck);
    EXPECT_EQ(synack.ack, 1001u);
    EXPECT_EQ(synack.window, 2500);
    EXPECT_EQ(synack.options, mss_option(100)); // the guest's MSS echoed, nothing else
    EXPECT_EQ(synack.src_port, 80);
    EXPECT_EQ(synack.dst_port, 40000);
    EXPECT_EQ(synack.dst_mac, kGuestMac);
    EXPECT_EQ(synack.src_mac, kMmdsMac);
    EXPECT_EQ(synack.src_ip, kMmdsIp);
    EXPECT_EQ(synack.dst_ip, kGuestIp);
    EXPECT_EQ(synack.ttl, 1);
    EXPECT_EQ(synack.ip_id, 0);
    EXPECT_EQ(synack.ip_fragment, 0); // no DF
    guest.seq = 1001;
    guest.ack = synack.seq + 1;
    ASSERT_TRUE(guest.send(tcp::kAck));
    EXPECT_FALSE(f.stack->has_rx()); // nothing to say to a bare ACK

    // The request in two segments; the first alone is not a request yet (only an ACK comes back).
    const std::string request = "GET /latest/meta-data/ HTTP/1.1\r\nHost: 169.254.169.254\r\nUser-Agent: Wget\r\n"
                                "Connection: close\r\n\r\n";
    ASSERT_TRUE(guest.send(tcp::kAck, request.substr(0, 20)));
    guest.seq += 20;
    auto ack_only = guest.receive();
    ASSERT_EQ(ack_only.size(), 1u);
    EXPECT_EQ(ack_only[0].ack, guest.seq);
    EXPECT_EQ(ack_only[0].window, 2480);
    EXPECT_TRUE(ack_only[0].payload.empty());
    ASSERT_TRUE(guest.send(tcp::kAck | tcp::kPsh, request.substr(20)));
    guest.seq += static_cast<uint32_t>(request.size() - 20);

    // The response comes in MSS-sized segments and reassembles to the handler's bytes.
    auto response = guest.receive();
    const std::string expected = handle_request(request, *f.store, *f.tokens);
    EXPECT_EQ(guest.received, expected);
    ASSERT_GE(response.size(), 2u);
    for (const auto& s : response) {
        EXPECT_LE(s.payload.size(), 100u);
        EXPECT_TRUE(s.has(tcp::kAck));
        EXPECT_EQ(s.ack, guest.seq);
        EXPECT_EQ(s.window, 2500);
    }
    EXPECT_TRUE(response.back().has(tcp::kPsh));
    EXPECT_FALSE(guest.fin_received); // keep-alive: the MMDS never closes first

    // The guest acknowledges, then closes (wget after Content-Length bytes).
    ASSERT_TRUE(guest.send(tcp::kAck));
    EXPECT_FALSE(f.stack->has_rx());
    ASSERT_TRUE(guest.send(tcp::kAck | tcp::kFin));
    guest.seq += 1;
    auto fin = guest.receive();
    ASSERT_EQ(fin.size(), 1u);
    EXPECT_EQ(fin[0].flags, tcp::kFin | tcp::kAck);
    EXPECT_EQ(fin[0].ack, guest.seq);
    EXPECT_TRUE(guest.fin_received);
    EXPECT_EQ(f.stack->connection_count(), 1u); // waits for the ACK of its FIN
    // The guest's last ACK closes the connection and draws no RST (Firecracker sends one).
    ASSERT_TRUE(guest.send(tcp::kAck));
    EXPECT_EQ(f.stack->connection_count(), 0u);
    EXPECT_FALSE(f.stack->has_rx());
}

TEST(MmdsStack, DefaultMssIs536)
{
    Fixture f;
    ASSERT_TRUE(f.store->put_json(R"({"big":")" + std::string(3000, 'x') + R"("})").ok());
    Peer guest(*f.stack);
    Segment synack = guest.connect(0);
    EXPECT_EQ(synack.options, mss_option(536));
    ASSERT_TRUE(guest.send(tcp::kAck, "GET /big HTTP/1.1\r\n\r\n"));
    guest.seq += 21;
    auto segments = guest.receive();
    for (const auto& s : segments)
        EXPECT_LE(s.payload.size(), 536u);
    EXPECT_EQ(guest.received.size(), handle_request("GET /big HTTP/1.1\r\n\r\n", *f.store, *f.tokens).size());
}

TEST(MmdsStack, NcTokenRequestWithFinThenGetWithToken)
{
    Fixture f;
    f.store->set_version(Version::V2);
    // printf 'PUT ...' | nc: the request, then at stdin's EOF a FIN (maybe in the same segment).
    Peer nc(*f.stack, 40001);
    nc.connect();
    const std::string put = "PUT /latest/api/token HTTP/1.1\r\nX-metadata-token-ttl-seconds: 21600\r\n\r\n";
    ASSERT_TRUE(nc.send(tcp::kAck | tcp::kPsh | tcp::kFin, put));
    nc.seq += static_cast<uint32_t>(put.size()) + 1;
    auto segments = nc.receive();
    // The whole response, our FIN on its last segment.
    ASSERT_EQ(segments.size(), 1u);
    EXPECT_EQ(segments[0].flags, tcp::kAck | tcp::kPsh | tcp::kFin);
    EXPECT_TRUE(nc.fin_received);
    EXPECT_EQ(nc.received.rfind("HTTP/1.1 200 \r\n", 0), 0u);
    const std::string token = nc.received.substr(nc.received.size() - 48);
    ASSERT_TRUE(nc.send(tcp::kAck));
    EXPECT_EQ(f.stack->connection_count(), 0u);

    // wget --header "X-metadata-token: $TOKEN".
    Peer wget(*f.stack, 40002);
    wget.connect();
    const std::string get = "GET /latest/meta-data/ami-id HTTP/1.1\r\nHost: 169.254.169.254\r\nUser-Agent: Wget\r\n"
                            "Connection: close\r\nX-metadata-token: "
        + token + "\r\n\r\n";
    ASSERT_TRUE(wget.send(tcp::kAck | tcp::kPsh, get));
    wget.seq += static_cast<uint32_t>(get.size());
    wget.receive();
    EXPECT_EQ(wget.received,
        "HTTP/1.1 200 \r\nServer: Firecracker API\r\nConnection: keep-alive\r\nContent-Type: text/plain\r\n"
        "Content-Length: 12\r\n\r\nami-12345678");

    // Without the token: 401, and the connection stays usable (keep-alive).
    wget.received.clear();
    ASSERT_TRUE(wget.send(tcp::kAck | tcp::kPsh, "GET /latest HTTP/1.1\r\n\r\n"));
    wget.seq += 24;
    wget.receive();
    EXPECT_EQ(wget.received.rfind("HTTP/1.1 401 \r\n", 0), 0u);
}

TEST(MmdsStack, ConfigurableAddress)
{
    StackConfig config;
    config.ipv4 = { 169, 254, 170, 2 };
    Fixture f(config);
    EXPECT_FALSE(f.stack->handle_tx(arp_request(kMmdsIp)));
    EXPECT_TRUE(f.stack->handle_tx(arp_request({ 169, 254, 170, 2 })));
    auto frames = drain(*f.stack);
    ASSERT_EQ(frames.size(), 1u);
    EXPECT_EQ(std::vector<uint8_t>(frames[0].begin() + 28, frames[0].begin() + 32),
        (std::vector<uint8_t> { 169, 254, 170, 2 }));
    f.stack->set_ipv4(kMmdsIp);
    EXPECT_TRUE(f.stack->handle_tx(arp_request(kMmdsIp)));
    EXPECT_EQ(f.stack->save().ipv4, kMmdsIp);
    f.stack->restore({ { 169, 254, 1, 1 } });
    EXPECT_EQ(f.stack->ipv4(), (Ipv4Address { 169, 254, 1, 1 }));
    EXPECT_FALSE(f.stack->has_rx()); // restore starts empty
}

TEST(MmdsStack, PaddedSegmentsAreAccepted)
{
    Fixture f;
    Peer guest(*f.stack);
    TcpOut syn = guest.base(tcp::kSyn);
    syn.pad_to = 60;
    ASSERT_TRUE(f.stack->handle_tx(tcp_frame(syn)));
    EXPECT_EQ(drain_segments(*f.stack).size(), 1u);
    EXPECT_EQ(f.stack->connection_count(), 1u);
}

// Frames with random bytes, random truncations and random mutations of valid frames: the stack
// must neither crash nor produce a frame with a bad checksum.
TEST(MmdsStack, RandomizedFramesNeverCrash)
{
    Fixture f;
    std::mt19937 rng(1234);
    auto byte = [&] { return static_cast<uint8_t>(rng()); };
    std::vector<std::vector<uint8_t>> templates = { arp_request(kMmdsIp), tcp_frame(TcpOut {}) };
    TcpOut syn;
    syn.flags = tcp::kSyn;
    syn.options = mss_option(1460);
    templates.push_back(tcp_frame(syn));
    TcpOut data;
    data.flags = tcp::kAck | tcp::kPsh;
    data.payload = "GET / HTTP/1.1\r\n\r\n";
    templates.push_back(tcp_frame(data));
    for (int round = 0; round < 20000; ++round) {
        std::vector<uint8_t> frame;
        switch (rng() % 3) {
        case 0:
            frame.resize(rng() % 128);
            for (auto& b : frame)
                b = byte();
            if (frame.size() > 34 && rng() % 2) { // aim at the MMDS
                frame[12] = 0x08;
                frame[13] = rng() % 2 ? 0x00 : 0x06;
                std::copy(kMmdsIp.begin(), kMmdsIp.end(), frame.begin() + (frame[13] ? 38 : 30) % (frame.size() - 4));
            }
            break;
        case 1:
            frame = templates[rng() % templates.size()];
            frame.resize(rng() % (frame.size() + 1));
            break;
        default:
            frame = templates[rng() % templates.size()];
            for (int i = 0, n = 1 + static_cast<int>(rng() % 4); i < n; ++i)
                frame[14 + rng() % (frame.size() - 14)] = byte();
            // Keep the destination so that it reaches the stack's parsers.
            if (frame.size() >= 34 && frame[13] == 0x00)
                std::copy(kMmdsIp.begin(), kMmdsIp.end(), frame.begin() + 30);
            break;
        }
        (void)f.stack->handle_tx(frame);
        if (rng() % 4 == 0)
            f.clock.now += rng() % 2000;
        std::vector<uint8_t> buffer(rng() % 3 == 0 ? rng() % 200 : 1514);
        for (int i = 0; i < 4 && f.stack->has_rx(); ++i) {
            const size_t n = f.stack->pop_rx(buffer);
            ASSERT_LE(n, buffer.size());
            if (n >= 54 && buffer[12] == 0x08 && buffer[13] == 0x00) {
                auto s
                    = parse_segment(std::vector<uint8_t>(buffer.begin(), buffer.begin() + static_cast<ptrdiff_t>(n)));
                ASSERT_TRUE(s.has_value());
                EXPECT_TRUE(s->ip_checksum_ok);
                EXPECT_TRUE(s->tcp_checksum_ok);
            }
        }
        ASSERT_LE(f.stack->connection_count(), 30u);
    }
    EXPECT_GT(f.stack->stats().rx_frames, 0u);
}

} // namespace
