// The MMDS's TCP under the things a real guest does: retransmitted SYNs and data, delayed and
// duplicate ACKs, small and zero windows, RSTs, a full connection table, scarce receive buffers.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "mmds/http_handler.h"
#include "mmds/stack.h"
#include "mmds_test_support.h"

using namespace vessel;
using namespace vessel::mmds;
using namespace mmds_test;

namespace {

const std::string kRequest = "GET /latest/meta-data/ami-id HTTP/1.1\r\n\r\n";

std::string expected_response(Fixture& f, const std::string& request = kRequest)
{
    return handle_request(request, *f.store, *f.tokens);
}

// A connected guest that sent kRequest; its MSS is small so responses span segments.
Peer requesting(Fixture& f, uint16_t port = 40000, uint16_t mss = 1460)
{
    Peer guest(*f.stack, port);
    guest.connect(mss);
    EXPECT_TRUE(guest.send(tcp::kAck | tcp::kPsh, kRequest));
    guest.seq += static_cast<uint32_t>(kRequest.size());
    return guest;
}

TEST(MmdsTcp, SynRetransmittedBeforeSynAckGoesOut)
{
    Fixture f;
    Peer guest(*f.stack);
    TcpOut syn = guest.base(tcp::kSyn);
    ASSERT_TRUE(f.stack->handle_tx(tcp_frame(syn)));
    ASSERT_TRUE(f.stack->handle_tx(tcp_frame(syn))); // the guest's receive ring was full for a while
    auto segments = drain_segments(*f.stack);
    ASSERT_EQ(segments.size(), 1u);
    EXPECT_EQ(segments[0].flags, tcp::kSyn | tcp::kAck);
    EXPECT_EQ(f.stack->connection_count(), 1u);
}

TEST(MmdsTcp, SynRetransmittedAfterSynAckGetsItAgain)
{
    Fixture f;
    Peer guest(*f.stack);
    TcpOut syn = guest.base(tcp::kSyn);
    ASSERT_TRUE(f.stack->handle_tx(tcp_frame(syn)));
    auto first = drain_segments(*f.stack);
    ASSERT_TRUE(f.stack->handle_tx(tcp_frame(syn)));
    auto second = drain_segments(*f.stack);
    ASSERT_EQ(first.size(), 1u);
    ASSERT_EQ(second.size(), 1u);
    EXPECT_EQ(first[0].seq, second[0].seq);
    EXPECT_EQ(second[0].flags, tcp::kSyn | tcp::kAck);
    // The ACK of the first copy establishes the connection, even with a resend pending.
    ASSERT_TRUE(f.stack->handle_tx(tcp_frame(syn)));
    guest.seq += 1;
    guest.ack = first[0].seq + 1;
    ASSERT_TRUE(guest.send(tcp::kAck | tcp::kPsh, kRequest));
    guest.seq += static_cast<uint32_t>(kRequest.size());
    guest.receive();
    EXPECT_EQ(guest.received, expected_response(f));
}

TEST(MmdsTcp, SynOnEstablishedConnectionGetsChallengeAck)
{
    Fixture f;
    Peer guest(*f.stack);
    Segment synack = guest.connect();
    TcpOut stale_syn = guest.base(tcp::kSyn);
    stale_syn.seq = 1000; // the opening SYN, again
    ASSERT_TRUE(f.stack->handle_tx(tcp_frame(stale_syn)));
    auto reply = drain_segments(*f.stack);
    ASSERT_EQ(reply.size(), 1u);
    EXPECT_EQ(reply[0].flags, tcp::kAck);
    EXPECT_EQ(reply[0].seq, synack.seq + 1);
    EXPECT_EQ(reply[0].ack, 1001u);
    // The connection goes on.
    ASSERT_TRUE(guest.send(tcp::kAck | tcp::kPsh, kRequest));
    guest.seq += static_cast<uint32_t>(kRequest.size());
    guest.receive();
    EXPECT_EQ(guest.received, expected_response(f));
    // A guest that really started over answers the challenge ACK with a RST, freeing the port.
    TcpOut rst = guest.base(tcp::kRst);
    ASSERT_TRUE(f.stack->handle_tx(tcp_frame(rst)));
    EXPECT_EQ(f.stack->connection_count(), 0u);
}

TEST(MmdsTcp, NewSynReplacesUnestablishedConnection)
{
    Fixture f;
    Peer guest(*f.stack);
    TcpOut syn = guest.base(tcp::kSyn);
    ASSERT_TRUE(f.stack->handle_tx(tcp_frame(syn)));
    drain(*f.stack);
    syn.seq = 777777;
    ASSERT_TRUE(f.stack->handle_tx(tcp_frame(syn)));
    auto segments = drain_segments(*f.stack);
    ASSERT_EQ(segments.size(), 1u);
    EXPECT_EQ(segments[0].ack, 777778u);
    EXPECT_EQ(f.stack->connection_count(), 1u);
}

TEST(MmdsTcp, StaleAckBeforeEstablishedGetsRstButConnectionStays)
{
    Fixture f;
    Peer guest(*f.stack);
    ASSERT_TRUE(f.stack->handle_tx(tcp_frame(guest.base(tcp::kSyn))));
    auto synack = drain_segments(*f.stack);
    ASSERT_EQ(synack.size(), 1u);
    TcpOut stale = guest.base(tcp::kAck);
    stale.seq = 1001;
    stale.ack = synack[0].seq + 500;
    ASSERT_TRUE(f.stack->handle_tx(tcp_frame(stale)));
    auto rst = drain_segments(*f.stack);
    ASSERT_EQ(rst.size(), 1u);
    EXPECT_EQ(rst[0].flags, tcp::kRst);
    EXPECT_EQ(rst[0].seq, synack[0].seq + 500);
    guest.seq = 1001;
    guest.ack = synack[0].seq + 1;
    ASSERT_TRUE(guest.send(tcp::kAck | tcp::kPsh, kRequest));
    guest.seq += static_cast<uint32_t>(kRequest.size());
    guest.receive();
    EXPECT_EQ(guest.received, expected_response(f));
}

TEST(MmdsTcp, RetransmittedRequestIsAnsweredOnce)
{
    Fixture f;
    Peer guest = requesting(f);
    // Our ACK was slow: the guest sends the request again.
    TcpOut again = guest.base(tcp::kAck | tcp::kPsh);
    again.seq = guest.seq - static_cast<uint32_t>(kRequest.size());
    again.payload = kRequest;
    ASSERT_TRUE(f.stack->handle_tx(tcp_frame(again)));
    guest.receive();
    EXPECT_EQ(guest.received, expected_response(f));
    ASSERT_TRUE(guest.send(tcp::kAck));
    EXPECT_FALSE(f.stack->has_rx());
}

TEST(MmdsTcp, OverlappingRetransmissionIsTrimmed)
{
    Fixture f;
    Peer guest(*f.stack);
    guest.connect();
    ASSERT_TRUE(guest.send(tcp::kAck, kRequest.substr(0, 10)));
    guest.receive();
    // Bytes 0..30 again (a resegmented retransmission), then the rest.
    ASSERT_TRUE(guest.send(tcp::kAck, kRequest.substr(0, 30)));
    guest.seq += 30;
    ASSERT_TRUE(guest.send(tcp::kAck, kRequest.substr(30)));
    guest.seq += static_cast<uint32_t>(kRequest.size() - 30);
    guest.receive();
    EXPECT_EQ(guest.received, expected_response(f));
}

TEST(MmdsTcp, OutOfOrderSegmentIsDroppedAndAcked)
{
    Fixture f;
    Peer guest(*f.stack);
    guest.connect();
    TcpOut ahead = guest.base(tcp::kAck);
    ahead.seq += 10;
    ahead.payload = kRequest.substr(10);
    ASSERT_TRUE(f.stack->handle_tx(tcp_frame(ahead)));
    auto acks = drain_segments(*f.stack);
    ASSERT_EQ(acks.size(), 1u);
    EXPECT_EQ(acks[0].ack, guest.seq); // still waiting for byte 0
    ASSERT_TRUE(guest.send(tcp::kAck | tcp::kPsh, kRequest));
    guest.seq += static_cast<uint32_t>(kRequest.size());
    guest.receive();
    EXPECT_EQ(guest.received, expected_response(f));
}

TEST(MmdsTcp, PipelinedRequestsAreAnsweredInOrder)
{
    Fixture f;
    Peer guest(*f.stack);
    guest.connect();
    const std::string second = "GET /name/first HTTP/1.1\r\n\r\n";
    ASSERT_TRUE(guest.send(tcp::kAck | tcp::kPsh, kRequest + second));
    guest.seq += static_cast<uint32_t>(kRequest.size() + second.size());
    guest.receive();
    EXPECT_EQ(guest.received, expected_response(f)); // one response in flight at a time
    ASSERT_TRUE(guest.send(tcp::kAck)); // its ACK releases the next one
    guest.receive();
    EXPECT_EQ(guest.received, expected_response(f) + expected_response(f, second));
}

TEST(MmdsTcp, RetransmitsAfterTimeoutWithBackoff)
{
    Fixture f;
    Peer guest = requesting(f);
    auto first = guest.receive();
    ASSERT_EQ(first.size(), 1u);
    EXPECT_FALSE(f.stack->has_rx());
    ASSERT_TRUE(f.stack->next_deadline().has_value());
    EXPECT_EQ(*f.stack->next_deadline(), f.clock.now + 300);
    f.clock.now += 299;
    EXPECT_FALSE(f.stack->has_rx());
    f.clock.now += 1;
    auto again = drain_segments(*f.stack);
    ASSERT_EQ(again.size(), 1u);
    EXPECT_EQ(again[0].seq, first[0].seq);
    EXPECT_EQ(again[0].payload, first[0].payload);
    // Doubled: nothing at +300, again at +600.
    f.clock.now += 300;
    EXPECT_FALSE(f.stack->has_rx());
    f.clock.now += 300;
    EXPECT_EQ(drain_segments(*f.stack).size(), 1u);
    // The ACK ends it.
    ASSERT_TRUE(guest.send(tcp::kAck));
    f.clock.now += 100000;
    EXPECT_FALSE(f.stack->has_rx());
    EXPECT_FALSE(f.stack->next_deadline().has_value());
}

TEST(MmdsTcp, ResetsAfterTooManyRetransmissions)
{
    Fixture f;
    Peer guest = requesting(f);
    guest.receive();
    std::vector<Segment> last;
    for (int i = 0; i < 40 && f.stack->connection_count(); ++i) {
        f.clock.now += 10000;
        last = drain_segments(*f.stack);
    }
    EXPECT_EQ(f.stack->connection_count(), 0u);
    ASSERT_EQ(last.size(), 1u);
    EXPECT_TRUE(last[0].has(tcp::kRst));
}

TEST(MmdsTcp, SynAckIsRetransmitted)
{
    Fixture f;
    ASSERT_TRUE(f.stack->handle_tx(tcp_frame(Peer(*f.stack).base(tcp::kSyn))));
    auto first = drain_segments(*f.stack);
    f.clock.now += 300;
    auto second = drain_segments(*f.stack);
    ASSERT_EQ(second.size(), 1u);
    EXPECT_EQ(second[0].flags, tcp::kSyn | tcp::kAck);
    EXPECT_EQ(second[0].seq, first[0].seq);
}

TEST(MmdsTcp, DuplicateAckTriggersOneFastRetransmission)
{
    Fixture f;
    ASSERT_TRUE(f.store->put_json(R"({"big":")" + std::string(1000, 'x') + R"("})").ok());
    Peer guest(*f.stack);
    guest.connect(100);
    ASSERT_TRUE(guest.send(tcp::kAck, "GET /big HTTP/1.1\r\n\r\n"));
    guest.seq += 21;
    auto segments = drain_segments(*f.stack);
    ASSERT_GE(segments.size(), 5u);
    // The guest got the first segment only (the second was lost in the guest), then dup-ACKs.
    guest.ack = segments[0].seq + static_cast<uint32_t>(segments[0].payload.size());
    ASSERT_TRUE(guest.send(tcp::kAck));
    EXPECT_FALSE(f.stack->has_rx());
    ASSERT_TRUE(guest.send(tcp::kAck));
    auto retransmitted = drain_segments(*f.stack);
    ASSERT_EQ(retransmitted.size(), 1u);
    EXPECT_EQ(retransmitted[0].seq, segments[1].seq);
    EXPECT_EQ(retransmitted[0].payload, segments[1].payload);
    // More duplicates for the same loss send nothing more.
    ASSERT_TRUE(guest.send(tcp::kAck));
    ASSERT_TRUE(guest.send(tcp::kAck));
    EXPECT_FALSE(f.stack->has_rx());
    // A window update with the same ACK number is not a duplicate ACK.
    guest.window -= 1000;
    ASSERT_TRUE(guest.send(tcp::kAck));
    EXPECT_FALSE(f.stack->has_rx());
}

TEST(MmdsTcp, PeerWindowLimitsSending)
{
    Fixture f;
    ASSERT_TRUE(f.store->put_json(R"({"big":")" + std::string(1000, 'x') + R"("})").ok());
    Peer guest(*f.stack);
    guest.window = 250;
    guest.connect(100);
    ASSERT_TRUE(guest.send(tcp::kAck, "GET /big HTTP/1.1\r\n\r\n"));
    guest.seq += 21;
    auto segments = guest.receive();
    ASSERT_EQ(segments.size(), 3u); // 100 + 100 + 50
    EXPECT_EQ(guest.received.size(), 250u);
    // Acknowledging opens the window again, and so on to the end.
    while (guest.received.size() < expected_response(f, "GET /big HTTP/1.1\r\n\r\n").size()) {
        ASSERT_TRUE(guest.send(tcp::kAck));
        ASSERT_FALSE(guest.receive().empty());
    }
    EXPECT_EQ(guest.received, expected_response(f, "GET /big HTTP/1.1\r\n\r\n"));
}

TEST(MmdsTcp, ZeroWindowIsProbed)
{
    Fixture f;
    ASSERT_TRUE(f.store->put_json(R"({"big":")" + std::string(1000, 'x') + R"("})").ok());
    Peer guest(*f.stack);
    guest.window = 100;
    guest.connect(100);
    ASSERT_TRUE(guest.send(tcp::kAck, "GET /big HTTP/1.1\r\n\r\n"));
    guest.seq += 21;
    ASSERT_EQ(guest.receive().size(), 1u);
    guest.window = 0; // the application is not reading
    ASSERT_TRUE(guest.send(tcp::kAck));
    EXPECT_FALSE(f.stack->has_rx());
    f.clock.now += 300;
    auto probe = drain_segments(*f.stack);
    ASSERT_EQ(probe.size(), 1u);
    EXPECT_EQ(probe[0].seq, guest.ack - 1); // an old sequence number: the guest must answer
    EXPECT_TRUE(probe[0].payload.empty());
    guest.window = 1000;
    ASSERT_TRUE(guest.send(tcp::kAck));
    EXPECT_FALSE(guest.receive().empty());
}

TEST(MmdsTcp, StraySegmentsGetRfc793Resets)
{
    Fixture f;
    TcpOut ack;
    ack.flags = tcp::kAck;
    ack.seq = 5000;
    ack.ack = 123456;
    ASSERT_TRUE(f.stack->handle_tx(tcp_frame(ack)));
    TcpOut fin;
    fin.flags = tcp::kFin;
    fin.seq = 7000;
    fin.payload = "abc";
    ASSERT_TRUE(f.stack->handle_tx(tcp_frame(fin)));
    TcpOut rst;
    rst.flags = tcp::kRst;
    ASSERT_TRUE(f.stack->handle_tx(tcp_frame(rst))); // never answered
    auto resets = drain_segments(*f.stack);
    ASSERT_EQ(resets.size(), 2u);
    EXPECT_EQ(resets[0].flags, tcp::kRst);
    EXPECT_EQ(resets[0].seq, 123456u);
    EXPECT_EQ(resets[1].flags, tcp::kRst | tcp::kAck);
    EXPECT_EQ(resets[1].seq, 0u);
    EXPECT_EQ(resets[1].ack, 7000u + 3 + 1); // payload and FIN
}

TEST(MmdsTcp, GuestRstClosesOnlyWhenInWindow)
{
    Fixture f;
    Peer guest(*f.stack);
    guest.connect();
    TcpOut stale = guest.base(tcp::kRst);
    stale.seq += 100000;
    ASSERT_TRUE(f.stack->handle_tx(tcp_frame(stale)));
    EXPECT_EQ(f.stack->connection_count(), 1u);
    ASSERT_TRUE(guest.send(tcp::kRst | tcp::kAck));
    EXPECT_EQ(f.stack->connection_count(), 0u);
    EXPECT_FALSE(f.stack->has_rx());
}

TEST(MmdsTcp, FullTableRefusesThenEvictsIdleConnections)
{
    StackConfig config;
    config.max_connections = 3;
    Fixture f(config);
    for (uint16_t port = 1; port <= 3; ++port)
        Peer(*f.stack, port).connect();
    EXPECT_EQ(f.stack->connection_count(), 3u);
    Peer late(*f.stack, 4);
    ASSERT_TRUE(f.stack->handle_tx(tcp_frame(late.base(tcp::kSyn))));
    auto refused = drain_segments(*f.stack);
    ASSERT_EQ(refused.size(), 1u);
    EXPECT_EQ(refused[0].flags, tcp::kRst | tcp::kAck);
    EXPECT_EQ(refused[0].ack, late.seq + 1); // acknowledges the SYN: connect() fails at once
    EXPECT_EQ(f.stack->stats().connections_refused, 1u);
    // After 10 s of silence the first connection gives way (and its peer gets a RST).
    f.clock.now += 10001;
    ASSERT_TRUE(f.stack->handle_tx(tcp_frame(late.base(tcp::kSyn))));
    auto segments = drain_segments(*f.stack);
    ASSERT_EQ(segments.size(), 2u);
    EXPECT_TRUE(segments[0].has(tcp::kRst));
    EXPECT_EQ(segments[0].dst_port, 1);
    EXPECT_EQ(segments[1].flags, tcp::kSyn | tcp::kAck);
    EXPECT_EQ(segments[1].dst_port, 4);
    EXPECT_EQ(f.stack->connection_count(), 3u);
}

TEST(MmdsTcp, OversizedRequestResets)
{
    Fixture f;
    Peer guest(*f.stack);
    guest.connect();
    const std::string chunk(1250, 'a');
    ASSERT_TRUE(guest.send(tcp::kAck, chunk));
    guest.seq += 1250;
    auto ack = guest.receive();
    ASSERT_EQ(ack.size(), 1u);
    EXPECT_EQ(ack[0].window, 1250);
    ASSERT_TRUE(guest.send(tcp::kAck, chunk));
    auto rst = guest.receive();
    ASSERT_EQ(rst.size(), 1u);
    EXPECT_TRUE(rst[0].has(tcp::kRst));
    EXPECT_EQ(f.stack->connection_count(), 0u);
}

TEST(MmdsTcp, NothingIsLostWhileReceiveBuffersAreScarce)
{
    Fixture f;
    ASSERT_TRUE(f.store->put_json(R"({"big":")" + std::string(5000, 'x') + R"("})").ok());
    Peer guest(*f.stack);
    guest.connect(1460);
    ASSERT_TRUE(guest.send(tcp::kAck, "GET /big HTTP/1.1\r\n\r\n"));
    guest.seq += 21;
    // The device holds off (no buffers) while more guest frames arrive.
    ASSERT_TRUE(f.stack->handle_tx(arp_request(kMmdsIp)));
    EXPECT_TRUE(f.stack->has_rx());
    std::vector<uint8_t> tiny(40);
    EXPECT_EQ(f.stack->pop_rx(tiny), 0u);
    // Small buffers get small segments.
    std::vector<uint8_t> small(300);
    size_t n = f.stack->pop_rx(small);
    EXPECT_EQ(n, 42u); // the ARP reply first
    n = f.stack->pop_rx(small);
    auto s = parse_segment(std::vector<uint8_t>(small.begin(), small.begin() + static_cast<ptrdiff_t>(n)));
    ASSERT_TRUE(s.has_value());
    EXPECT_EQ(s->payload.size(), 300u - 54u);
    guest.received = s->payload;
    guest.ack += static_cast<uint32_t>(s->payload.size());
    guest.receive(1514);
    EXPECT_EQ(guest.received, expected_response(f, "GET /big HTTP/1.1\r\n\r\n"));
}

TEST(MmdsTcp, ConnectionsTakeTurns)
{
    Fixture f;
    ASSERT_TRUE(f.store->put_json(R"({"big":")" + std::string(3000, 'x') + R"("})").ok());
    Peer a(*f.stack, 1), b(*f.stack, 2);
    a.connect(500);
    b.connect(500);
    ASSERT_TRUE(a.send(tcp::kAck, "GET /big HTTP/1.1\r\n\r\n"));
    ASSERT_TRUE(b.send(tcp::kAck, "GET /big HTTP/1.1\r\n\r\n"));
    auto segments = drain_segments(*f.stack);
    ASSERT_GE(segments.size(), 4u);
    EXPECT_NE(segments[0].dst_port, segments[1].dst_port);
    EXPECT_NE(segments[1].dst_port, segments[2].dst_port);
}

TEST(MmdsTcp, EcnSynIsAcceptedWithoutEcn)
{
    Fixture f;
    Peer guest(*f.stack);
    TcpOut syn = guest.base(tcp::kSyn | tcp::kEce | tcp::kCwr);
    ASSERT_TRUE(f.stack->handle_tx(tcp_frame(syn)));
    auto segments = drain_segments(*f.stack);
    ASSERT_EQ(segments.size(), 1u);
    EXPECT_EQ(segments[0].flags, tcp::kSyn | tcp::kAck); // no ECE: ECN stays off
}

TEST(MmdsTcp, MalformedMssOptionIsDropped)
{
    Fixture f;
    for (std::vector<uint8_t> options : { std::vector<uint8_t> { 2, 3, 5, 0 }, std::vector<uint8_t> { 2, 4, 0, 0 },
             std::vector<uint8_t> { 8, 0, 0, 0 } }) {
        TcpOut syn;
        syn.flags = tcp::kSyn;
        syn.options = options;
        ASSERT_TRUE(f.stack->handle_tx(tcp_frame(syn)));
    }
    EXPECT_FALSE(f.stack->has_rx());
    EXPECT_EQ(f.stack->connection_count(), 0u);
    // NOPs and other options around a good MSS are fine.
    TcpOut syn;
    syn.flags = tcp::kSyn;
    syn.options = { 1, 1, 4, 2, 2, 4, 0x01, 0x00, 3, 3, 7, 0 };
    ASSERT_TRUE(f.stack->handle_tx(tcp_frame(syn)));
    auto segments = drain_segments(*f.stack);
    ASSERT_EQ(segments.size(), 1u);
    EXPECT_EQ(segments[0].options, mss_option(256));
}

TEST(MmdsTcp, FinIsRetransmittedUntilAcked)
{
    Fixture f;
    Peer guest = requesting(f);
    guest.receive();
    ASSERT_TRUE(guest.send(tcp::kAck | tcp::kFin));
    guest.seq += 1;
    auto fin = guest.receive();
    ASSERT_EQ(fin.size(), 1u);
    EXPECT_TRUE(fin[0].has(tcp::kFin));
    f.clock.now += 300;
    auto again = drain_segments(*f.stack);
    ASSERT_EQ(again.size(), 1u);
    EXPECT_EQ(again[0].flags, tcp::kFin | tcp::kAck);
    EXPECT_EQ(again[0].seq, fin[0].seq);
    // A retransmitted FIN from the guest is acknowledged again.
    TcpOut guest_fin = guest.base(tcp::kAck | tcp::kFin);
    guest_fin.seq -= 1;
    guest_fin.ack -= 1;
    ASSERT_TRUE(f.stack->handle_tx(tcp_frame(guest_fin)));
    EXPECT_EQ(drain_segments(*f.stack).size(), 1u);
    ASSERT_TRUE(guest.send(tcp::kAck));
    EXPECT_EQ(f.stack->connection_count(), 0u);
}

} // namespace
