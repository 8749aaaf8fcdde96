// virtio-net under Firecracker's rx and tx rate limiters, and its Firecracker-named counters. The
// backend is one end of a SOCK_SEQPACKET socketpair (one frame per message, like a tap); the test
// plays the host network on the other end. Manual mode with a fake clock gives exact runs; the
// thread mode runs check that the I/O thread sleeps until the limiter's deadline by itself.
#include <gtest/gtest.h>

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

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
#include "virtio_blk_test_support.h"

using namespace vessel;
using namespace vessel::virtio;
using namespace vessel::virtio::test;
using namespace std::chrono_literals;

namespace {

constexpr uint64_t kMs = 1'000'000;
constexpr std::array<uint8_t, 6> kMac { 0x52, 0x54, 0x00, 0x12, 0x34, 0x56 };
constexpr uint64_t kRxRing = 0x10000;
constexpr uint64_t kTxRing = 0x20000;
constexpr uint64_t kRxBuffers = 0x100000;
constexpr uint64_t kTxBuffers = 0x800000;
constexpr uint32_t kRxChainBytes = 2048;

struct FakeClock {
    std::atomic<uint64_t> now { 7'000 * kMs };
    RateLimiterClock fn()
    {
        return [this] { return now.load(); };
    }
};

RateLimiterConfig ops(uint64_t size, uint64_t refill_ms)
{
    RateLimiterConfig c;
    c.ops = TokenBucketConfig { size, 0, refill_ms };
    return c;
}

RateLimiterConfig bandwidth(uint64_t size, uint64_t refill_ms)
{
    RateLimiterConfig c;
    c.bandwidth = TokenBucketConfig { size, 0, refill_ms };
    return c;
}

// A frame as it crosses the backend: a zero virtio-net header, then `len` bytes of payload.
std::vector<uint8_t> frame(uint32_t len, uint8_t seed)
{
    std::vector<uint8_t> f(kNetHeaderBytes + len, 0);
    for (uint32_t i = 0; i < len; ++i)
        f[kNetHeaderBytes + i] = static_cast<uint8_t>(seed * 31 + i);
    return f;
}

class RecordingReport final : public MetricsReport {
public:
    void counter(std::string_view field, uint64_t total) override { counters[std::string(field)] = total; }
    void latency(std::string_view field, const LatencyCounter& l) override
    {
        latencies[std::string(field)] = l.count();
    }
    std::map<std::string, uint64_t> counters;
    std::map<std::string, uint64_t> latencies;
};

// A device (features: VERSION_1 only, so each received frame takes one chain) on a socketpair.
class NetRig {
public:
    NetRig(NetDevice::Mode mode, std::optional<RateLimiterConfig> rx, std::optional<RateLimiterConfig> tx,
        RateLimiterClock clock = {})
        : memory(GuestMemory::create(16 << 20).release_value())
        , rx_ring(memory, kRxRing, 256)
        , tx_ring(memory, kTxRing, 256)
    {
        int sv[2];
        EXPECT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
        peer = sv[1];
        device = std::make_unique<NetDevice>(std::make_unique<SocketBackend>(sv[0], 0), kMac, mode, rx, tx, clock);
        queues.assign(2, Queue(NetDevice::kQueueSize));
        EXPECT_TRUE(rx_ring.bind(queues[0], kFVersion1).ok());
        EXPECT_TRUE(tx_ring.bind(queues[1], kFVersion1).ok());
        ActivateContext ctx;
        ctx.memory = &memory;
        ctx.interrupt = &irq;
        ctx.features = kFVersion1;
        ctx.queues = std::span<Queue>(queues);
        auto r = device->activate(ctx);
        EXPECT_TRUE(r.ok()) << r.error().message();
    }
    ~NetRig()
    {
        device->shutdown();
        ::close(peer);
    }

    // Puts a frame on the transmit queue (no notify).
    void queue_tx(const std::vector<uint8_t>& bytes)
    {
        uint64_t gpa = m_tx_next;
        m_tx_next += (bytes.size() + 63) & ~63ULL;
        EXPECT_TRUE(memory.write(gpa, bytes).ok());
        tx_ring.add_chain({ { gpa, static_cast<uint32_t>(bytes.size()), false } });
    }
    // Offers `n` receive chains of kRxChainBytes (no notify); returns the first one's gpa.
    void post_rx(int n)
    {
        for (int i = 0; i < n; ++i) {
            rx_gpas.push_back(m_rx_next);
            rx_ring.add_chain({ { m_rx_next, kRxChainBytes, true } });
            m_rx_next += kRxChainBytes;
        }
    }
    // The i-th received frame (header included) as the guest sees it.
    std::vector<uint8_t> received(uint16_t i)
    {
        auto e = rx_ring.used_elem(i);
        std::vector<uint8_t> out(e.len);
        EXPECT_TRUE(memory.read(rx_gpas.at(i), out).ok());
        return out;
    }
    void peer_send(const std::vector<uint8_t>& bytes)
    {
        ASSERT_EQ(::send(peer, bytes.data(), bytes.size(), 0), static_cast<ssize_t>(bytes.size()));
    }
    std::optional<std::vector<uint8_t>> peer_recv(int ms)
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

    GuestMemory memory;
    VirtioBlkRing rx_ring, tx_ring;
    std::vector<Queue> queues;
    VirtioBlkCountingInterrupt irq;
    std::unique_ptr<NetDevice> device;
    int peer { -1 };
    std::vector<uint64_t> rx_gpas;

private:
    uint64_t m_tx_next { kTxBuffers };
    uint64_t m_rx_next { kRxBuffers };
};

// Received frames keep their bytes (num_buffers is the device's: 1 without MRG_RXBUF).
void expect_frame(const std::vector<uint8_t>& got, const std::vector<uint8_t>& sent)
{
    ASSERT_EQ(got.size(), sent.size());
    std::vector<uint8_t> want = sent;
    uint16_t one = 1;
    std::memcpy(want.data() + offsetof(NetHeader, num_buffers), &one, 2);
    EXPECT_EQ(got, want);
}

} // namespace

TEST(VirtioNetRateLimit, TxFramesWaitInTheRingAndAllGoOut)
{
    // Two frames per second: 2 at once, then one each 500 ms.
    FakeClock clock;
    NetRig rig(NetDevice::Mode::Manual, std::nullopt, ops(2, 1000), clock.fn());
    std::vector<std::vector<uint8_t>> sent;
    for (int i = 0; i < 5; ++i) {
        sent.push_back(frame(100, static_cast<uint8_t>(i)));
        rig.queue_tx(sent.back());
    }
    const uint64_t start = clock.now;
    rig.device->notify(NetDevice::kTxQueue);
    rig.device->poll();
    EXPECT_EQ(rig.tx_ring.used_idx(), 2);
    int rounds = 0;
    while (rig.tx_ring.used_idx() < 5 && rounds++ < 100) {
        auto wait = rig.device->tx_rate_limiter().time_until_unblocked();
        ASSERT_GT(wait.count(), 0);
        clock.now += static_cast<uint64_t>(wait.count());
        rig.device->poll();
    }
    EXPECT_NEAR(double(clock.now - start) / 1e9, 1.5, 1.5 * 0.2);
    for (int i = 0; i < 5; ++i) {
        auto got = rig.peer_recv(1000);
        ASSERT_TRUE(got) << "frame " << i;
        EXPECT_EQ(*got, sent[i]);
    }
    EXPECT_FALSE(rig.peer_recv(0)) << "nothing more, nothing twice";

    const NetMetrics& m = rig.device->metrics();
    EXPECT_EQ(m.tx_packets_count.get(), 5u);
    EXPECT_EQ(m.tx_count.get(), 5u);
    EXPECT_EQ(m.tx_bytes_count.get(), 5u * (kNetHeaderBytes + 100)) << "the header is counted, as Firecracker";
    EXPECT_EQ(m.tx_rate_limiter_throttled.get(), uint64_t(rounds));
    EXPECT_EQ(m.tx_rate_limiter_event_count.get(), uint64_t(rounds));
    EXPECT_EQ(m.tap_write_agg.count(), 5u);
    EXPECT_EQ(m.tx_queue_event_count.get(), 1u);
}

TEST(VirtioNetRateLimit, RxFrameIsHeldNotDropped)
{
    // 2024 bytes per 100 ms: two 1012-byte frames (header included) per tick.
    FakeClock clock;
    NetRig rig(NetDevice::Mode::Manual, bandwidth(2024, 100), std::nullopt, clock.fn());
    rig.post_rx(8);
    std::vector<std::vector<uint8_t>> sent;
    for (int i = 0; i < 6; ++i) {
        sent.push_back(frame(1000, static_cast<uint8_t>(i + 10)));
        rig.peer_send(sent.back());
    }
    rig.device->notify(NetDevice::kRxQueue);
    rig.device->poll();
    EXPECT_EQ(rig.rx_ring.used_idx(), 2);
    EXPECT_EQ(rig.device->metrics().rx_packets_count.get(), 3u) << "the third is read, counted, and held";
    int rounds = 0;
    while (rig.rx_ring.used_idx() < 6 && rounds++ < 100) {
        auto wait = rig.device->rx_rate_limiter().time_until_unblocked();
        ASSERT_GT(wait.count(), 0);
        clock.now += static_cast<uint64_t>(wait.count());
        rig.device->poll();
    }
    ASSERT_EQ(rig.rx_ring.used_idx(), 6);
    for (uint16_t i = 0; i < 6; ++i)
        expect_frame(rig.received(i), sent[i]);
    EXPECT_EQ(rig.device->stats().rx_dropped.load(), 0u);
    const NetMetrics& m = rig.device->metrics();
    EXPECT_EQ(m.rx_packets_count.get(), 6u);
    EXPECT_EQ(m.rx_count.get(), 6u);
    EXPECT_EQ(m.rx_bytes_count.get(), 6u * 1012);
    EXPECT_EQ(m.rx_rate_limiter_throttled.get(), uint64_t(rounds));
    EXPECT_EQ(m.rx_event_rate_limiter_count.get(), uint64_t(rounds));
}

TEST(VirtioNetRateLimit, ThreadWaitsForBothLimiters)
{
    // 5 frames per 100 ms each way: 20 frames take 3 ticks after the first burst.
    NetRig rig(NetDevice::Mode::Thread, ops(5, 100), ops(5, 100));
    rig.post_rx(20);
    rig.device->notify(NetDevice::kRxQueue);
    std::vector<std::vector<uint8_t>> tx, rx;
    for (int i = 0; i < 20; ++i) {
        tx.push_back(frame(200, static_cast<uint8_t>(i)));
        rx.push_back(frame(300, static_cast<uint8_t>(100 + i)));
        rig.queue_tx(tx.back());
    }
    auto start = std::chrono::steady_clock::now();
    rig.device->notify(NetDevice::kTxQueue);
    for (auto& f : rx)
        rig.peer_send(f);
    for (int i = 0; i < 20; ++i) {
        auto got = rig.peer_recv(5000);
        ASSERT_TRUE(got) << "tx frame " << i;
        EXPECT_EQ(*got, tx[i]);
    }
    ASSERT_TRUE(rig.rx_ring.wait_used(20, 5s));
    double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    EXPECT_GE(seconds, 0.25) << "15 frames each way had to wait for 3 refills";
    EXPECT_LT(seconds, 2.0);
    for (uint16_t i = 0; i < 20; ++i)
        expect_frame(rig.received(i), rx[i]);
    EXPECT_EQ(rig.tx_ring.used_idx(), 20);
    EXPECT_GE(rig.device->metrics().tx_rate_limiter_event_count.get(), 3u);
    EXPECT_GE(rig.device->metrics().rx_event_rate_limiter_count.get(), 3u);
}

TEST(VirtioNetRateLimit, RaisingTheTxLimitLiveSpeedsItUpAndLeavesRxAlone)
{
    NetRig rig(NetDevice::Mode::Thread, bandwidth(1 << 20, 1000), ops(1, 10'000));
    for (int i = 0; i < 5; ++i)
        rig.queue_tx(frame(64, static_cast<uint8_t>(i)));
    rig.device->notify(NetDevice::kTxQueue);
    ASSERT_TRUE(rig.peer_recv(5000));
    EXPECT_FALSE(rig.peer_recv(300)) << "one frame per 10 s";
    auto start = std::chrono::steady_clock::now();
    rig.device->set_rate_limiters(std::nullopt, ops(1000, 1000));
    for (int i = 1; i < 5; ++i)
        ASSERT_TRUE(rig.peer_recv(2000)) << "frame " << i;
    EXPECT_LT(std::chrono::steady_clock::now() - start, 1s);
    EXPECT_EQ(rig.device->rx_rate_limiter().config().bandwidth, (TokenBucketConfig { 1 << 20, 0, 1000 }));
    EXPECT_EQ(rig.device->tx_rate_limiter().config().ops, (TokenBucketConfig { 1000, 0, 1000 }));
    // A size-0 bucket disables it.
    rig.device->set_rate_limiters(bandwidth(0, 0), std::nullopt);
    EXPECT_FALSE(rig.device->rx_rate_limiter().enabled());
}

TEST(VirtioNetMetrics, CountersCountWhatWasDone)
{
    NetRig rig(NetDevice::Mode::Manual, std::nullopt, std::nullopt);
    // A frame arrives before any receive buffer.
    auto f0 = frame(60, 1);
    rig.peer_send(f0);
    rig.device->poll();
    EXPECT_EQ(rig.device->metrics().no_rx_avail_buffer.get(), 1u);
    rig.post_rx(4);
    rig.device->notify(NetDevice::kRxQueue);
    rig.device->poll();
    ASSERT_EQ(rig.rx_ring.used_idx(), 1);
    // Two good frames and a chain too short for the header.
    rig.queue_tx(frame(100, 2));
    rig.queue_tx(frame(1400, 3));
    rig.queue_tx(std::vector<uint8_t>(6, 0));
    rig.device->notify(NetDevice::kTxQueue);
    rig.device->notify(NetDevice::kTxQueue);
    rig.device->poll();
    ASSERT_EQ(rig.tx_ring.used_idx(), 3);

    RecordingReport r;
    rig.device->report_metrics(r);
    EXPECT_EQ(r.counters["rx_count"], 1u);
    EXPECT_EQ(r.counters["rx_packets_count"], 1u);
    EXPECT_EQ(r.counters["rx_bytes_count"], f0.size());
    EXPECT_EQ(r.counters["tx_count"], 2u);
    EXPECT_EQ(r.counters["tx_packets_count"], 2u);
    EXPECT_EQ(r.counters["tx_bytes_count"], 2u * kNetHeaderBytes + 100 + 1400);
    EXPECT_EQ(r.counters["tx_malformed_frames"], 1u);
    EXPECT_EQ(r.counters["rx_queue_event_count"], 1u);
    EXPECT_EQ(r.counters["tx_queue_event_count"], 2u);
    EXPECT_EQ(r.counters["no_rx_avail_buffer"], 1u);
    EXPECT_EQ(r.counters["tap_read_fails"], 0u);
    EXPECT_EQ(r.counters["tap_write_fails"], 0u);
    EXPECT_EQ(r.counters["rx_rate_limiter_throttled"], 0u);
    EXPECT_EQ(r.counters["tx_rate_limiter_throttled"], 0u);
    EXPECT_EQ(r.counters.count("rx_tap_event_count"), 1u);
    EXPECT_EQ(r.counters.count("rx_event_rate_limiter_count"), 1u);
    EXPECT_EQ(r.counters.count("tx_rate_limiter_event_count"), 1u);
    EXPECT_EQ(r.latencies["tap_write_agg"], 2u);
}

TEST(VirtioNetMetrics, TapEventsAreCountedByTheThread)
{
    NetRig rig(NetDevice::Mode::Thread, std::nullopt, std::nullopt);
    rig.post_rx(4);
    rig.device->notify(NetDevice::kRxQueue);
    for (int i = 0; i < 3; ++i) {
        rig.peer_send(frame(80, static_cast<uint8_t>(i)));
        ASSERT_TRUE(rig.rx_ring.wait_used(static_cast<uint16_t>(i + 1), 5s));
    }
    EXPECT_GE(rig.device->metrics().rx_tap_event_count.get(), 1u);
    EXPECT_EQ(rig.device->metrics().rx_packets_count.get(), 3u);
}
