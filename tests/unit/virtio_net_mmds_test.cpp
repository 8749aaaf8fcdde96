// The MMDS on a virtio-net device: the guest's frames for 169.254.169.254 are taken out of the
// transmit queue and answered in the receive queue, everything else still goes to the backend
// (one end of a SOCK_SEQPACKET socketpair, as in the other virtio-net tests) straight from guest
// RAM. Manual mode with fake clocks (the stack's milliseconds, the limiters' nanoseconds) gives
// exact runs; thread mode checks the I/O thread: buffers posted later, pause, and retransmissions
// that need no guest activity.
#include <gtest/gtest.h>

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "devices/rate_limiter.h"
#include "devices/virtio/net.h"
#include "devices/virtio/tap.h"
#include "memory/guest_memory.h"
#include "mmds/http_handler.h"
#include "mmds/stack.h"
#include "mmds_test_support.h"
#include "virtio_blk_test_support.h"

using namespace vessel;
using namespace vessel::virtio;
using namespace vessel::virtio::test;
using namespace std::chrono_literals;
using mmds_test::arp_request;
using mmds_test::kGuestIp;
using mmds_test::kGuestMac;
using mmds_test::kMmdsIp;
using mmds_test::mss_option;
using mmds_test::parse_segment;
using TcpSegment = mmds_test::Segment;
using mmds_test::tcp_frame;
using mmds_test::TcpOut;

namespace {

constexpr uint64_t kMs = 1'000'000;
constexpr std::array<uint8_t, 6> kDeviceMac { 0x52, 0x54, 0x00, 0x12, 0x34, 0x56 };
constexpr uint64_t kRxRing = 0x10000;
constexpr uint64_t kTxRing = 0x20000;
constexpr uint64_t kRxBuffers = 0x100000;
constexpr uint64_t kTxBuffers = 0x800000;
constexpr const char* kDocument = R"({"latest":{"meta-data":{"ami-id":"ami-12345678","reservation-id":"r-fea54097"}}})";

RateLimiterConfig ops(uint64_t size, uint64_t refill_ms)
{
    RateLimiterConfig c;
    c.ops = TokenBucketConfig { size, 0, refill_ms };
    return c;
}

class RecordingReport final : public MetricsReport {
public:
    void counter(std::string_view field, uint64_t total) override { counters[std::string(field)] += total; }
    void latency(std::string_view, const LatencyCounter&) override { }
    std::map<std::string, uint64_t> counters;
};

// A received frame: the virtio-net header as the guest sees it, then the frame.
struct Received {
    NetHeader header;
    std::vector<uint8_t> frame;
};

struct RigOptions {
    NetDevice::Mode mode { NetDevice::Mode::Manual };
    uint64_t features { 0 }; // beyond VERSION_1
    bool mmds { true };
    std::optional<RateLimiterConfig> rx_limiter;
    std::optional<RateLimiterConfig> tx_limiter;
    mmds::TcpTimings timings {};
    bool real_clock { false }; // the stack on the monotonic clock (thread-mode timer tests)
};

// A device with (by default) an MMDS stack on a fake clock, its queues laid out by hand.
class Rig {
public:
    explicit Rig(const RigOptions& options = {})
        : memory(GuestMemory::create(16 << 20).release_value())
        , rx_ring(memory, kRxRing, 256)
        , tx_ring(memory, kTxRing, 256)
        , m_mergeable(options.features & kNetFMrgRxbuf)
    {
        int sv[2];
        EXPECT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
        peer = sv[1];
        // Room for the largest frame in the peer's direction.
        int size = 1 << 20;
        EXPECT_EQ(::setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &size, sizeof(size)), 0);
        device = std::make_unique<NetDevice>(std::make_unique<SocketBackend>(sv[0], 0), kDeviceMac, options.mode,
            options.rx_limiter, options.tx_limiter, [this] { return limiter_ns.load(); });
        EXPECT_TRUE(store->put_json(kDocument).ok());
        if (options.mmds) {
            mmds::StackConfig config;
            config.isn_seed = 7;
            config.timings = options.timings;
            mmds::Clock clock
                = options.real_clock ? mmds::Clock(mmds::monotonic_ms) : mmds::Clock([this] { return mmds_ms.load(); });
            device->set_mmds(std::make_unique<mmds::Stack>(store, tokens, config, clock));
        }
        const uint64_t features = kFVersion1 | options.features;
        queues.assign(2, Queue(NetDevice::kQueueSize));
        EXPECT_TRUE(rx_ring.bind(queues[0], features).ok());
        EXPECT_TRUE(tx_ring.bind(queues[1], features).ok());
        ActivateContext ctx;
        ctx.memory = &memory;
        ctx.interrupt = &irq;
        ctx.features = features;
        ctx.queues = std::span<Queue>(queues);
        auto r = device->activate(ctx);
        EXPECT_TRUE(r.ok()) << r.error().message();
    }
    ~Rig()
    {
        device->shutdown();
        ::close(peer);
    }

    // Puts a frame (a zero header added) on the transmit queue, split into descriptors of
    // `pieces` bytes (header included; the rest in the last one), and notifies.
    void transmit(const std::vector<uint8_t>& frame, std::vector<uint32_t> pieces = {})
    {
        std::vector<uint8_t> bytes(kNetHeaderBytes, 0);
        bytes.insert(bytes.end(), frame.begin(), frame.end());
        std::vector<VirtioBlkBuf> bufs;
        size_t at = 0;
        for (size_t i = 0; at < bytes.size(); ++i) {
            const size_t len = i < pieces.size() ? pieces[i] : bytes.size() - at;
            EXPECT_TRUE(memory.write(m_tx_next, std::span(bytes).subspan(at, len)).ok());
            bufs.push_back({ m_tx_next, static_cast<uint32_t>(len), false });
            m_tx_next += (len + 63) & ~63ULL;
            at += len;
        }
        tx_ring.add_chain(bufs);
        device->notify(NetDevice::kTxQueue);
    }
    // Offers `n` receive chains of `size` bytes each.
    void post_rx(int n, uint32_t size = 2048, bool kick = true)
    {
        for (int i = 0; i < n; ++i) {
            const uint16_t head = rx_ring.add_chain({ { m_rx_next, size, true } });
            m_rx_gpa[head] = m_rx_next;
            m_rx_next += size;
        }
        if (kick)
            device->notify(NetDevice::kRxQueue);
    }
    // The frames the guest got since the last call (with MRG_RXBUF: reassembled by num_buffers).
    std::vector<Received> received()
    {
        std::vector<Received> out;
        const uint16_t used = rx_ring.used_idx();
        while (m_rx_seen != used) {
            Received r;
            std::vector<uint8_t> bytes = used_bytes(m_rx_seen++);
            EXPECT_GE(bytes.size(), kNetHeaderBytes);
            std::memcpy(&r.header, bytes.data(), kNetHeaderBytes);
            r.frame.assign(bytes.begin() + kNetHeaderBytes, bytes.end());
            for (uint16_t i = 1; m_mergeable && i < r.header.num_buffers && m_rx_seen != used; ++i) {
                std::vector<uint8_t> more = used_bytes(m_rx_seen++);
                r.frame.insert(r.frame.end(), more.begin(), more.end());
            }
            EXPECT_EQ(r.header.flags, 0) << "no offloads on MMDS frames";
            EXPECT_EQ(r.header.gso_type, kNetHdrGsoNone);
            if (!m_mergeable) {
                EXPECT_EQ(r.header.num_buffers, 1);
            }
            out.push_back(std::move(r));
        }
        return out;
    }
    // The TCP segments among received(), each with valid checksums.
    std::vector<TcpSegment> segments()
    {
        std::vector<TcpSegment> out;
        for (const Received& r : received()) {
            auto s = parse_segment(r.frame);
            EXPECT_TRUE(s) << "not a TCP frame";
            if (!s)
                continue;
            EXPECT_TRUE(s->ip_checksum_ok);
            EXPECT_TRUE(s->tcp_checksum_ok);
            out.push_back(*s);
        }
        return out;
    }
    std::optional<std::vector<uint8_t>> peer_recv(int ms = 0)
    {
        pollfd p { peer, POLLIN, 0 };
        if (::poll(&p, 1, ms) != 1)
            return std::nullopt;
        std::vector<uint8_t> buf(1 << 17);
        ssize_t n = ::recv(peer, buf.data(), buf.size(), MSG_DONTWAIT);
        if (n < 0)
            return std::nullopt;
        buf.resize(static_cast<size_t>(n));
        return buf;
    }
    void peer_send(const std::vector<uint8_t>& bytes)
    {
        ASSERT_EQ(::send(peer, bytes.data(), bytes.size(), 0), static_cast<ssize_t>(bytes.size()));
    }
    std::map<std::string, uint64_t> mmds_report() const
    {
        RecordingReport report;
        device->report_mmds_metrics(report);
        return report.counters;
    }

    std::atomic<uint64_t> limiter_ns { 7'000 * kMs };
    std::atomic<uint64_t> mmds_ms { 1'000'000 };
    std::shared_ptr<mmds::DataStore> store { std::make_shared<mmds::DataStore>() };
    std::shared_ptr<mmds::TokenAuthority> tokens { std::make_shared<mmds::TokenAuthority>(
        [this] { return mmds_ms.load(); }) };
    GuestMemory memory;
    VirtioBlkRing rx_ring, tx_ring;
    std::vector<Queue> queues;
    VirtioBlkCountingInterrupt irq;
    std::unique_ptr<NetDevice> device;
    int peer { -1 };

private:
    std::vector<uint8_t> used_bytes(uint16_t i)
    {
        auto e = rx_ring.used_elem(i);
        std::vector<uint8_t> bytes(e.len);
        EXPECT_TRUE(memory.read(m_rx_gpa.at(static_cast<uint16_t>(e.id)), bytes).ok());
        return bytes;
    }

    bool m_mergeable;
    uint64_t m_tx_next { kTxBuffers };
    uint64_t m_rx_next { kRxBuffers };
    std::map<uint16_t, uint64_t> m_rx_gpa; // receive chain head → its buffer
    uint16_t m_rx_seen { 0 };
};

// The guest's end of one TCP connection through the device, sequence numbers tracked.
struct GuestTcp {
    Rig& rig;
    uint16_t port { 40000 };
    uint32_t seq { 1000 };
    uint32_t ack { 0 };

    void send(uint8_t flags, std::string payload = {}, std::vector<uint8_t> options = {})
    {
        TcpOut s;
        s.src_port = port;
        s.seq = seq;
        s.ack = ack;
        s.flags = flags;
        s.options = std::move(options);
        s.payload = std::move(payload);
        rig.transmit(tcp_frame(s));
        seq += static_cast<uint32_t>(s.payload.size()) + ((flags & (mmds::tcp::kSyn | mmds::tcp::kFin)) ? 1 : 0);
    }
};

// A whole exchange: SYN, request, response, FIN both ways; returns the response bytes.
std::string exchange(Rig& rig, const std::string& request, uint16_t mss = 1460)
{
    GuestTcp guest { rig };
    guest.send(mmds::tcp::kSyn, {}, mss_option(mss));
    rig.device->poll();
    auto segments = rig.segments();
    EXPECT_EQ(segments.size(), 1u);
    if (segments.empty())
        return {};
    EXPECT_EQ(segments[0].flags, mmds::tcp::kSyn | mmds::tcp::kAck);
    EXPECT_EQ(segments[0].ack, 1001u);
    EXPECT_EQ(segments[0].dst_mac, kGuestMac);
    EXPECT_EQ(segments[0].src_mac, mmds::kMmdsMac);
    guest.ack = segments[0].seq + 1;

    guest.send(mmds::tcp::kAck | mmds::tcp::kPsh, request);
    const size_t expected_size = mmds::handle_request(request, *rig.store, *rig.tokens).size();
    std::string response;
    bool fin = false;
    for (int round = 0; round < 100 && !fin; ++round) {
        rig.device->poll();
        segments = rig.segments();
        if (segments.empty())
            break;
        for (const TcpSegment& s : segments) {
            EXPECT_EQ(s.dst_port, guest.port);
            if (s.seq == guest.ack && !s.payload.empty()) {
                response += s.payload;
                guest.ack += static_cast<uint32_t>(s.payload.size());
            }
            if (s.has(mmds::tcp::kFin) && static_cast<uint32_t>(s.seq + s.payload.size()) == guest.ack) {
                guest.ack += 1;
                fin = true;
            }
        }
        // Acknowledge what came; once the whole response is in, close our side.
        const bool complete = response.size() >= expected_size;
        guest.send(complete && !fin ? (mmds::tcp::kAck | mmds::tcp::kFin) : mmds::tcp::kAck);
    }
    EXPECT_TRUE(fin) << "the MMDS closes after the guest's FIN";
    rig.device->poll();
    EXPECT_TRUE(rig.segments().empty()) << "the last ACK draws nothing (no gratuitous RST)";
    return response;
}

} // namespace

TEST(VirtioNetMmds, ArpRequestIsAnsweredInTheReceiveQueue)
{
    Rig rig;
    rig.post_rx(4);
    rig.transmit(arp_request(kMmdsIp));
    rig.device->poll();
    EXPECT_EQ(rig.tx_ring.used_idx(), 1) << "the chain is completed";
    auto got = rig.received();
    ASSERT_EQ(got.size(), 1u);
    const std::vector<uint8_t> expected = {
        0x52, 0x54, 0x00, 0x12, 0x34, 0x56, // to the requester
        0x06, 0x01, 0x23, 0x45, 0x67, 0x01, // from the MMDS MAC
        0x08, 0x06, 0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x02, // ARP reply
        0x06, 0x01, 0x23, 0x45, 0x67, 0x01, 169, 254, 169, 254, // sender: the MMDS
        0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 192, 168, 0, 2, // target: the requester
    };
    EXPECT_EQ(got[0].frame, expected);
    EXPECT_FALSE(rig.peer_recv(50)) << "nothing reaches the backend";

    const NetMetrics& m = rig.device->metrics();
    EXPECT_EQ(m.tx_count.get(), 0u) << "not sent: not counted as sent";
    EXPECT_EQ(m.tx_packets_count.get(), 0u);
    EXPECT_EQ(m.rx_count.get(), 1u) << "the reply is a received frame, as Firecracker counts it";
    EXPECT_EQ(m.rx_bytes_count.get(), kNetHeaderBytes + 42);
    auto report = rig.mmds_report();
    EXPECT_EQ(report["rx_accepted"], 1u);
    EXPECT_EQ(report["tx_count"], 1u);
    EXPECT_EQ(report["tx_frames"], 1u);
    EXPECT_EQ(report["tx_bytes"], 42u);
    EXPECT_EQ(report["rx_bad_eth"], 0u);
    EXPECT_EQ(rig.device->mmds_metrics().frames_copied.get(), 1u);
}

TEST(VirtioNetMmds, FramesToOtherAddressesGoToTheBackendUntouched)
{
    Rig rig;
    rig.post_rx(4);
    TcpOut to_gateway;
    to_gateway.dst_ip = { 192, 168, 0, 1 };
    to_gateway.flags = mmds::tcp::kSyn;
    to_gateway.payload = std::string(200, 'x');
    // A VLAN-tagged frame to the MMDS address: the stack leaves tagged frames to the device.
    auto vlan = tcp_frame(TcpOut {});
    vlan.insert(vlan.begin() + 12, { 0x81, 0x00, 0x00, 0x05 });
    auto ipv6 = tcp_frame(TcpOut {});
    ipv6[12] = 0x86;
    ipv6[13] = 0xdd;
    // A frame of 60000 bytes in 4 KiB pieces, addressed elsewhere: must leave whole, from guest
    // RAM, without being copied for the stack.
    TcpOut big;
    big.dst_ip = { 10, 0, 0, 9 };
    big.payload.resize(60000 - 54);
    for (size_t i = 0; i < big.payload.size(); ++i)
        big.payload[i] = static_cast<char>(i * 13 + (i >> 9));
    const std::vector<std::vector<uint8_t>> frames = {
        arp_request({ 192, 168, 0, 1 }),
        tcp_frame(to_gateway),
        vlan,
        ipv6,
        { 0x01, 0x02, 0x03 }, // a runt
        tcp_frame(big),
    };
    for (size_t i = 0; i + 1 < frames.size(); ++i)
        rig.transmit(frames[i]);
    rig.transmit(frames.back(), std::vector<uint32_t>(14, 4096));
    rig.device->poll();
    EXPECT_EQ(rig.tx_ring.used_idx(), frames.size());
    for (size_t i = 0; i < frames.size(); ++i) {
        auto got = rig.peer_recv(1000);
        ASSERT_TRUE(got) << "frame " << i;
        ASSERT_EQ(got->size(), kNetHeaderBytes + frames[i].size()) << "frame " << i;
        EXPECT_TRUE(std::equal(frames[i].begin(), frames[i].end(), got->begin() + kNetHeaderBytes)) << "frame " << i;
    }
    EXPECT_FALSE(rig.peer_recv(0));
    EXPECT_TRUE(rig.received().empty());
    EXPECT_EQ(rig.device->mmds_metrics().frames_copied.get(), 0u) << "ordinary frames are only peeked at";
    EXPECT_EQ(rig.mmds_report()["rx_accepted"], 0u);
    EXPECT_EQ(rig.device->metrics().tx_count.get(), frames.size());
}

TEST(VirtioNetMmds, FrameSplitAcrossDescriptorsIsRecognised)
{
    // The decisive bytes spread over descriptors: header alone, then 20 bytes, then 5, then the rest.
    Rig rig;
    rig.post_rx(4);
    rig.transmit(arp_request(kMmdsIp), { kNetHeaderBytes, 20, 5 });
    rig.device->poll();
    EXPECT_EQ(rig.received().size(), 1u);
    EXPECT_FALSE(rig.peer_recv(0));
}

TEST(VirtioNetMmds, WithoutAStackTheMmdsAddressIsOrdinary)
{
    RigOptions options;
    options.mmds = false;
    Rig rig(options);
    rig.post_rx(4);
    rig.transmit(arp_request(kMmdsIp));
    rig.device->poll();
    auto got = rig.peer_recv(1000);
    ASSERT_TRUE(got);
    EXPECT_EQ(got->size(), kNetHeaderBytes + 42);
    EXPECT_TRUE(rig.received().empty());
    EXPECT_TRUE(rig.mmds_report().empty());
}

TEST(VirtioNetMmds, TcpExchangeReturnsTheStoresAnswer)
{
    Rig rig;
    rig.post_rx(64);
    const std::string request = "GET /latest/meta-data/ HTTP/1.1\r\nHost: 169.254.169.254\r\nUser-Agent: Wget\r\n\r\n";
    const std::string response = exchange(rig, request);
    EXPECT_EQ(response, mmds::handle_request(request, *rig.store, *rig.tokens));
    EXPECT_NE(response.find("\r\n\r\nami-id\nreservation-id"), std::string::npos) << response;
    EXPECT_FALSE(rig.peer_recv(0)) << "nothing of it reaches the backend";
    EXPECT_EQ(rig.device->mmds_stack()->connection_count(), 0u);

    auto report = rig.mmds_report();
    EXPECT_EQ(report["connections_created"], 1u);
    EXPECT_EQ(report["connections_destroyed"], 1u);
    EXPECT_EQ(report["rx_no_token"], 1u) << "a V1 GET without a token is served and counted";
    EXPECT_EQ(report["rx_accepted"], report["rx_count"]) << "every frame was a TCP segment to port 80";
    EXPECT_EQ(report["tx_count"], report["tx_frames"]);
    EXPECT_GE(report["tx_frames"], 3u);
    EXPECT_EQ(report["rx_accepted_err"], 0u);
}

TEST(VirtioNetMmds, LargeResponseThroughMergeableBuffers)
{
    // 512-byte buffers: each full segment (1514 bytes) spans four of them (num_buffers = 4).
    RigOptions options;
    options.features = kNetFMrgRxbuf;
    Rig rig(options);
    std::string value(5000, 'v');
    for (size_t i = 0; i < value.size(); ++i)
        value[i] = static_cast<char>('a' + i % 26);
    ASSERT_TRUE(rig.store->put_json(R"({"big":")" + value + R"("})").ok());
    rig.post_rx(200, 512);
    const std::string request = "GET /big HTTP/1.1\r\n\r\n";
    const std::string response = exchange(rig, request);
    EXPECT_EQ(response, mmds::handle_request(request, *rig.store, *rig.tokens));
    EXPECT_NE(response.find(value), std::string::npos);
}

TEST(VirtioNetMmds, SmallGuestMssGivesSmallSegments)
{
    Rig rig;
    rig.post_rx(64);
    const std::string request = "GET /latest/meta-data/ami-id HTTP/1.1\r\n\r\n";
    EXPECT_EQ(exchange(rig, request, 40), mmds::handle_request(request, *rig.store, *rig.tokens));
}

TEST(VirtioNetMmds, RepliesGoBeforeBackendFrames)
{
    Rig rig;
    std::vector<uint8_t> from_host(kNetHeaderBytes, 0);
    for (int i = 0; i < 100; ++i)
        from_host.push_back(static_cast<uint8_t>(i));
    rig.peer_send(from_host);
    rig.transmit(arp_request(kMmdsIp));
    rig.post_rx(4, 2048, false);
    rig.device->poll();
    auto got = rig.received();
    ASSERT_EQ(got.size(), 2u);
    EXPECT_EQ(got[0].frame.size(), 42u) << "the ARP reply first";
    EXPECT_EQ(got[1].frame, std::vector<uint8_t>(from_host.begin() + kNetHeaderBytes, from_host.end()));
}

TEST(VirtioNetMmds, RepliesWaitForReceiveBuffers)
{
    RigOptions options;
    options.mode = NetDevice::Mode::Thread;
    Rig rig(options);
    GuestTcp guest { rig };
    rig.transmit(arp_request(kMmdsIp));
    guest.send(mmds::tcp::kSyn, {}, mss_option(1460));
    ASSERT_TRUE(rig.tx_ring.wait_used(2));
    std::this_thread::sleep_for(50ms);
    EXPECT_EQ(rig.rx_ring.used_idx(), 0);
    EXPECT_FALSE(rig.peer_recv(0));

    rig.post_rx(8);
    ASSERT_TRUE(rig.rx_ring.wait_used(2));
    auto got = rig.received();
    ASSERT_EQ(got.size(), 2u);
    EXPECT_EQ(got[0].frame.size(), 42u);
    auto synack = parse_segment(got[1].frame);
    ASSERT_TRUE(synack);
    EXPECT_EQ(synack->flags, mmds::tcp::kSyn | mmds::tcp::kAck);
    EXPECT_EQ(synack->ack, 1001u);
    std::this_thread::sleep_for(50ms);
    EXPECT_EQ(rig.rx_ring.used_idx(), 2) << "each reply once";
}

TEST(VirtioNetMmds, RepliesWaitForBuffersLargeEnough)
{
    // Without MRG_RXBUF a reply must fit one chain: a 40-byte chain cannot take even an ARP
    // reply, so the reply waits (nothing lost) for the next, larger one.
    Rig rig;
    rig.post_rx(1, 40);
    rig.transmit(arp_request(kMmdsIp));
    rig.device->poll();
    EXPECT_EQ(rig.rx_ring.used_idx(), 0);
    EXPECT_EQ(rig.mmds_report()["tx_errors"], 1u);
    rig.device->poll();
    EXPECT_EQ(rig.mmds_report()["tx_errors"], 1u) << "not tried again before the buffers change";
    // A small frame from the backend still fits the small chain; the reply takes the next one.
    std::vector<uint8_t> from_host(kNetHeaderBytes + 8, 0);
    from_host.back() = 0x5a;
    rig.peer_send(from_host);
    rig.device->poll();
    EXPECT_EQ(rig.rx_ring.used_idx(), 1);
    rig.post_rx(1, 2048);
    rig.device->poll();
    auto got = rig.received();
    ASSERT_EQ(got.size(), 2u);
    EXPECT_EQ(got[0].frame.size(), 8u);
    EXPECT_EQ(got[1].frame.size(), 42u) << "the ARP reply, not lost";
}

TEST(VirtioNetMmds, PauseStopsRepliesUntilResume)
{
    RigOptions options;
    options.mode = NetDevice::Mode::Thread;
    options.real_clock = true;
    options.timings.rto_ms = 50;
    Rig rig(options);
    rig.post_rx(16);
    GuestTcp guest { rig };
    guest.send(mmds::tcp::kSyn, {}, mss_option(1460));
    ASSERT_TRUE(rig.rx_ring.wait_used(1));

    // The SYN-ACK is not acknowledged: the stack's timer resends it without any guest activity.
    ASSERT_TRUE(rig.rx_ring.wait_used(2, 2000ms)) << "retransmitted by the I/O thread's timer";

    rig.device->pause();
    const uint16_t before = rig.rx_ring.used_idx();
    rig.transmit(arp_request(kMmdsIp));
    std::this_thread::sleep_for(400ms); // several retransmission timeouts
    EXPECT_EQ(rig.rx_ring.used_idx(), before) << "no reply, no retransmission while paused";
    EXPECT_EQ(rig.tx_ring.used_idx(), 1) << "the transmit queue is not touched either";

    rig.device->resume();
    ASSERT_TRUE(rig.tx_ring.wait_used(2));
    ASSERT_TRUE(rig.rx_ring.wait_used(static_cast<uint16_t>(before + 2), 2000ms))
        << "the ARP reply and a retransmission";
    bool arp = false;
    for (const Received& r : rig.received())
        arp |= r.frame.size() == 42;
    EXPECT_TRUE(arp);
    EXPECT_FALSE(rig.irq.error_count.load());
}

TEST(VirtioNetMmds, RxLimiterChargesReplies)
{
    // One frame per second into the guest: the second reply is written but held until then.
    RigOptions options;
    options.rx_limiter = ops(1, 1000);
    Rig rig(options);
    rig.post_rx(4);
    rig.transmit(arp_request(kMmdsIp));
    rig.device->poll();
    EXPECT_EQ(rig.rx_ring.used_idx(), 1);
    EXPECT_EQ(rig.received().size(), 1u);

    GuestTcp guest { rig };
    guest.send(mmds::tcp::kSyn, {}, mss_option(1460));
    rig.device->poll();
    EXPECT_EQ(rig.rx_ring.used_idx(), 1) << "the SYN-ACK waits for the limiter";
    EXPECT_EQ(rig.device->metrics().rx_rate_limiter_throttled.get(), 1u);
    auto wait = rig.device->rx_rate_limiter().time_until_unblocked();
    ASSERT_GT(wait.count(), 0);
    rig.limiter_ns += 1000 * kMs;
    rig.device->poll();
    auto segments = rig.segments();
    ASSERT_EQ(segments.size(), 1u);
    EXPECT_EQ(segments[0].flags, mmds::tcp::kSyn | mmds::tcp::kAck);
    EXPECT_EQ(rig.device->metrics().rx_count.get(), 2u) << "counted when written, as backend frames";
}

TEST(VirtioNetMmds, TxLimiterHoldsMmdsFramesButDoesNotChargeThem)
{
    // One frame per second out: an MMDS frame queued behind an ordinary one waits for the
    // limiter like any frame, but is given its token back, so the next ordinary frame goes at once.
    RigOptions options;
    options.tx_limiter = ops(1, 1000);
    Rig rig(options);
    rig.post_rx(4);
    TcpOut a;
    a.dst_ip = { 10, 0, 0, 1 };
    TcpOut b = a;
    b.seq = 77;
    rig.transmit(tcp_frame(a));
    rig.transmit(arp_request(kMmdsIp));
    rig.transmit(tcp_frame(b));
    rig.device->poll();
    EXPECT_EQ(rig.tx_ring.used_idx(), 1);
    EXPECT_TRUE(rig.received().empty()) << "the ARP request waits in the ring";
    rig.limiter_ns += 1000 * kMs;
    rig.device->poll();
    EXPECT_EQ(rig.tx_ring.used_idx(), 3) << "the MMDS frame's token went to the next frame";
    EXPECT_EQ(rig.received().size(), 1u);
    ASSERT_TRUE(rig.peer_recv(1000));
    auto second = rig.peer_recv(1000);
    ASSERT_TRUE(second);
    EXPECT_EQ(second->size(), kNetHeaderBytes + tcp_frame(b).size());
    EXPECT_EQ(rig.device->metrics().tx_count.get(), 2u);
}

TEST(VirtioNetMmds, ResetForgetsConnections)
{
    Rig rig;
    rig.post_rx(4);
    GuestTcp guest { rig };
    guest.send(mmds::tcp::kSyn, {}, mss_option(1460));
    rig.device->poll();
    ASSERT_EQ(rig.device->mmds_stack()->connection_count(), 1u);
    rig.device->reset();
    EXPECT_EQ(rig.device->mmds_stack()->connection_count(), 0u);
    EXPECT_EQ(rig.mmds_report()["connections_destroyed"], 1u);
}

TEST(VirtioNetMmds, CountersFollowFirecrackersMmdsGroup)
{
    Rig rig;
    rig.post_rx(64);
    TcpOut icmp; // IPv4 to the MMDS, not TCP: unusual
    icmp.protocol = 1;
    TcpOut other_port; // TCP to another port: consumed, no answer
    other_port.dst_port = 8080;
    other_port.flags = mmds::tcp::kSyn;
    rig.transmit(tcp_frame(icmp));
    rig.transmit(tcp_frame(other_port));
    rig.transmit(arp_request(kMmdsIp, 0, kGuestMac, kGuestIp, 2)); // an ARP reply: nothing to say
    rig.device->poll();
    EXPECT_TRUE(rig.received().empty());
    EXPECT_FALSE(rig.peer_recv(0));
    auto report = rig.mmds_report();
    EXPECT_EQ(report["rx_accepted"], 3u);
    EXPECT_EQ(report["rx_accepted_unusual"], 1u);
    EXPECT_EQ(report["rx_accepted_err"], 2u);
    EXPECT_EQ(report["rx_count"], 0u);

    const std::string request = "GET /latest/meta-data/ami-id HTTP/1.1\r\nX-metadata-token: bogus\r\n\r\n";
    EXPECT_EQ(exchange(rig, request), mmds::handle_request(request, *rig.store, *rig.tokens));
    report = rig.mmds_report();
    EXPECT_EQ(report["rx_invalid_token"], 1u) << "V1 serves it, and counts it";
    EXPECT_EQ(report["rx_no_token"], 0u);
    EXPECT_EQ(report.size(), 13u) << "every field of Firecracker's mmds group";
}
