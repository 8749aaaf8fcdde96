// virtio-blk and virtio-rng under Firecracker's rate limiter, and the counters they report under
// Firecracker's field names. Deterministic runs use IoMode::Inline and a fake clock (the test
// advances time to the limiter's deadline and calls the device again); short real-time runs check
// that the I/O threads (io_uring, synchronous) and rng's retry thread wait for the deadline by
// themselves and lose nothing.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "devices/rate_limiter.h"
#include "devices/virtio/blk.h"
#include "devices/virtio/rng.h"
#include "memory/guest_memory.h"
#include "virtio_blk_test_support.h"
#include "vmm/vm_config.h"

using namespace vessel;
using namespace vessel::virtio;
using namespace vessel::virtio::blk;
using namespace vessel::virtio::test;
using IoMode = BlkDevice::IoMode;
using namespace std::chrono_literals;

namespace {

constexpr uint64_t kMs = 1'000'000;
constexpr uint64_t kRingBase = 0x10000;
constexpr uint64_t kBufBase = 0x100000;
constexpr uint64_t kImageBytes = 4 << 20;
constexpr uint32_t kChunk = 64 * 1024;

uint8_t pattern(uint64_t offset)
{
    return static_cast<uint8_t>(offset * 7 + offset / 512 + 1);
}

struct FakeClock {
    std::atomic<uint64_t> now { 5'000 * kMs };
    RateLimiterClock fn()
    {
        return [this] { return now.load(); };
    }
};

class TempImage {
public:
    TempImage()
    {
        std::string tmpl = (std::getenv("TMPDIR") ? std::string(std::getenv("TMPDIR")) : "/tmp") + "/vessel-rl-XXXXXX";
        m_dir = ::mkdtemp(tmpl.data()) ? tmpl : "";
        path = m_dir + "/disk.img";
        std::vector<uint8_t> data(kImageBytes);
        for (uint64_t i = 0; i < kImageBytes; ++i)
            data[i] = pattern(i);
        std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(data.data()), kImageBytes);
    }
    ~TempImage()
    {
        ::unlink(path.c_str());
        ::rmdir(m_dir.c_str());
    }
    std::string path;

private:
    std::string m_dir;
};

RateLimiterConfig bandwidth(uint64_t size, uint64_t refill_ms)
{
    RateLimiterConfig c;
    c.bandwidth = TokenBucketConfig { size, 0, refill_ms };
    return c;
}

// Collects what report_metrics() says, by field name.
class RecordingReport final : public MetricsReport {
public:
    void counter(std::string_view field, uint64_t total) override { counters[std::string(field)] = total; }
    void latency(std::string_view field, const LatencyCounter& l) override
    {
        latencies[std::string(field)] = { l.count(), l.sum_us() };
    }
    std::map<std::string, uint64_t> counters;
    std::map<std::string, std::pair<uint64_t, uint64_t>> latencies;
};

struct Req {
    uint16_t head;
    uint64_t status_gpa;
    uint64_t data_gpa;
    uint64_t sector;
    uint32_t len;
};

// A blk device on a 4 MiB image, a 64-entry queue in 32 MiB of guest RAM.
class BlkRig {
public:
    BlkRig(const DiskConfig& disk, IoMode mode, RateLimiterClock clock = {})
        : memory(GuestMemory::create(32 << 20).release_value())
        , ring(memory, kRingBase, 64)
    {
        auto dev = BlkDevice::open(disk, mode, std::move(clock));
        EXPECT_TRUE(dev.ok()) << dev.error().message();
        if (!dev.ok())
            return;
        device = dev.release_value();
        uint64_t features = kFVersion1 | device->features();
        EXPECT_TRUE(ring.bind(queue, features).ok());
        ActivateContext ctx;
        ctx.memory = &memory;
        ctx.interrupt = &irq;
        ctx.features = features;
        ctx.queues = std::span<Queue>(&queue, 1);
        EXPECT_TRUE(device->activate(ctx).ok());
    }
    ~BlkRig()
    {
        if (device)
            device->reset();
    }

    uint64_t alloc(uint64_t len, uint64_t align = 512)
    {
        m_next = (m_next + align - 1) & ~(align - 1);
        uint64_t at = m_next;
        m_next += len;
        return at;
    }
    Req request(uint32_t type, uint64_t sector, uint32_t len, bool writable)
    {
        uint64_t hdr = alloc(kHeaderSize, 16);
        uint8_t h[kHeaderSize] = {};
        std::memcpy(h, &type, 4);
        std::memcpy(h + 8, &sector, 8);
        EXPECT_TRUE(memory.write(hdr, h).ok());
        uint64_t data = len ? alloc(len) : 0;
        uint64_t status = alloc(1, 1);
        EXPECT_TRUE(memory.write_obj<uint8_t>(status, 0xee).ok());
        std::vector<VirtioBlkBuf> bufs { { hdr, kHeaderSize, false } };
        if (len)
            bufs.push_back({ data, len, writable });
        bufs.push_back({ status, 1, true });
        return { ring.add_chain(bufs), status, data, sector, len };
    }
    Req read(uint64_t sector, uint32_t len) { return request(kTIn, sector, len, true); }
    uint8_t status(const Req& r) { return memory.read_obj<uint8_t>(r.status_gpa).value(); }
    bool data_ok(const Req& r)
    {
        std::vector<uint8_t> got(r.len);
        EXPECT_TRUE(memory.read(r.data_gpa, got).ok());
        for (uint32_t i = 0; i < r.len; ++i)
            if (got[i] != pattern(r.sector * 512 + i))
                return false;
        return true;
    }
    // Every request used exactly once, OK, with the image's bytes.
    void expect_all_served(const std::vector<Req>& reqs)
    {
        ASSERT_EQ(ring.used_idx(), reqs.size());
        std::multiset<uint32_t> heads;
        for (uint16_t i = 0; i < ring.used_idx(); ++i)
            heads.insert(ring.used_elem(i).id);
        for (const Req& r : reqs) {
            EXPECT_EQ(heads.count(r.head), 1u) << "head " << r.head;
            EXPECT_EQ(status(r), kSOk);
            if (r.len) {
                EXPECT_TRUE(data_ok(r)) << "sector " << r.sector;
            }
        }
    }

    GuestMemory memory;
    VirtioBlkRing ring;
    Queue queue { BlkDevice::kQueueSize };
    VirtioBlkCountingInterrupt irq;
    std::unique_ptr<BlkDevice> device;

private:
    uint64_t m_next { kBufBase };
};

DiskConfig disk_of(const TempImage& image, std::optional<RateLimiterConfig> limiter = std::nullopt)
{
    DiskConfig d;
    d.path = image.path;
    d.rate_limiter = std::move(limiter);
    return d;
}

} // namespace

// --- virtio-blk -------------------------------------------------------------------------------

TEST(VirtioBlkRateLimit, OneMiBPerSecondWithAFakeClock)
{
    // 1 MiB/s with a 256 KiB bucket: 16 reads of 64 KiB (1 MiB) take (1 MiB - 256 KiB) / 1 MiB/s
    // = 0.75 s; the 100 ms retry ticks make it 0.8 s.
    TempImage image;
    FakeClock clock;
    BlkRig rig(disk_of(image, bandwidth(256 * 1024, 250)), IoMode::Inline, clock.fn());
    ASSERT_TRUE(rig.device);
    std::vector<Req> reqs;
    for (uint64_t i = 0; i < 16; ++i)
        reqs.push_back(rig.read(i * kChunk / 512, kChunk));
    const uint64_t start = clock.now;
    rig.device->notify(0);
    EXPECT_EQ(rig.ring.used_idx(), 4) << "the full bucket lets 256 KiB through at once";
    EXPECT_TRUE(rig.device->rate_limiter().is_blocked());
    int rounds = 0;
    while (rig.ring.used_idx() < reqs.size() && rounds++ < 100) {
        auto wait = rig.device->rate_limiter().time_until_unblocked();
        ASSERT_GT(wait.count(), 0) << "work left, so the limiter must be blocking";
        clock.now += static_cast<uint64_t>(wait.count());
        rig.device->process_queue_inline();
    }
    double seconds = double(clock.now - start) / 1e9;
    EXPECT_NEAR(seconds, 0.75, 0.75 * 0.2);
    rig.expect_all_served(reqs);

    const BlkMetrics& m = rig.device->metrics();
    EXPECT_EQ(m.read_count.get(), 16u);
    EXPECT_EQ(m.read_bytes.get(), 16u * kChunk);
    EXPECT_EQ(m.read_agg.count(), 16u);
    EXPECT_EQ(m.queue_event_count.get(), 1u);
    EXPECT_EQ(m.rate_limiter_throttled_events.get(), uint64_t(rounds)) << "one deferral per pass";
    EXPECT_EQ(m.rate_limiter_event_count.get(), uint64_t(rounds)) << "one retry per unblock";
}

TEST(VirtioBlkRateLimit, OverConsumptionPassesThenBlocksForTheExcess)
{
    TempImage image;
    FakeClock clock;
    // 128 KiB per 125 ms; one read of 512 KiB is 3 buckets beyond: it passes, then 375 ms blocked.
    BlkRig rig(disk_of(image, bandwidth(128 * 1024, 125)), IoMode::Inline, clock.fn());
    ASSERT_TRUE(rig.device);
    Req big = rig.read(0, 512 * 1024);
    Req small = rig.read(2048, 4096);
    rig.device->notify(0);
    EXPECT_EQ(rig.ring.used_idx(), 1);
    EXPECT_EQ(rig.status(big), kSOk);
    EXPECT_EQ(rig.device->rate_limiter().time_until_unblocked(), 375ms);
    clock.now += 374 * kMs;
    rig.device->process_queue_inline();
    EXPECT_EQ(rig.ring.used_idx(), 1);
    clock.now += 1 * kMs;
    rig.device->process_queue_inline();
    rig.expect_all_served({ big, small });
}

TEST(VirtioBlkRateLimit, OpsBucketChargesEveryWellFormedRequest)
{
    TempImage image;
    FakeClock clock;
    RateLimiterConfig ops;
    ops.ops = TokenBucketConfig { 4, 0, 1000 }; // 4 requests, then one every 250 ms
    BlkRig rig(disk_of(image, ops), IoMode::Inline, clock.fn());
    ASSERT_TRUE(rig.device);
    rig.request(kTFlush, 0, 0, false);
    rig.request(kTGetId, 0, 20, true);
    Req bad = rig.read(0, 100); // not whole sectors: malformed, completes with IOERR, free
    rig.read(8, 4096);
    rig.request(77, 0, 0, false); // unknown type: parses (UNSUPP), costs an op
    Req last = rig.read(16, 512);
    rig.device->notify(0);
    EXPECT_EQ(rig.ring.used_idx(), 5);
    EXPECT_EQ(rig.status(bad), kSIoErr);
    EXPECT_EQ(rig.status(last), 0xee) << "still in the ring";
    clock.now += 250 * kMs;
    rig.device->process_queue_inline();
    EXPECT_EQ(rig.ring.used_idx(), 6);
    EXPECT_EQ(rig.status(last), kSOk);
    EXPECT_EQ(rig.device->metrics().execute_fails.get(), 1u);
    EXPECT_EQ(rig.device->metrics().invalid_reqs_count.get(), 1u) << "the UNSUPP one";
}

namespace {

// Real time: the I/O thread must sleep until the deadline and then serve the rest by itself.
void threaded_bandwidth(IoMode mode)
{
    TempImage image;
    BlkRig rig(disk_of(image, bandwidth(256 * 1024, 250)), mode);
    ASSERT_TRUE(rig.device);
    std::vector<Req> reqs;
    for (uint64_t i = 0; i < 16; ++i)
        reqs.push_back(rig.read(i * kChunk / 512, kChunk));
    auto start = std::chrono::steady_clock::now();
    rig.device->notify(0);
    ASSERT_TRUE(rig.ring.wait_used(16, 10s)) << "used " << rig.ring.used_idx();
    double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    // 0.75 s in theory, 0.8 s with the 100 ms retry ticks.
    EXPECT_NEAR(seconds, 0.75, 0.75 * 0.2);
    rig.expect_all_served(reqs);
    EXPECT_EQ(rig.device->metrics().read_bytes.get(), 16u * kChunk);
    EXPECT_GE(rig.device->metrics().rate_limiter_event_count.get(), 5u);
}

} // namespace

TEST(VirtioBlkRateLimit, IoUringThreadWaitsForTheLimiter)
{
    threaded_bandwidth(IoMode::Auto);
}

TEST(VirtioBlkRateLimit, SyncThreadWaitsForTheLimiter)
{
    threaded_bandwidth(IoMode::Sync);
}

TEST(VirtioBlkRateLimit, RaisingTheLimitLiveSpeedsItUp)
{
    // 64 KiB per second: 8 reads of 64 KiB would take 7 s. After the first one, the limit goes
    // up; the rest complete as soon as the running 100 ms block ends.
    TempImage image;
    BlkRig rig(disk_of(image, bandwidth(kChunk, 1000)), IoMode::Auto);
    ASSERT_TRUE(rig.device);
    std::vector<Req> reqs;
    for (uint64_t i = 0; i < 8; ++i)
        reqs.push_back(rig.read(i * kChunk / 512, kChunk));
    rig.device->notify(0);
    ASSERT_TRUE(rig.ring.wait_used(1, 5s));
    std::this_thread::sleep_for(50ms);
    EXPECT_EQ(rig.ring.used_idx(), 1) << "throttled";
    auto start = std::chrono::steady_clock::now();
    rig.device->set_rate_limiter(bandwidth(64 << 20, 1000));
    ASSERT_TRUE(rig.ring.wait_used(8, 5s));
    EXPECT_LT(std::chrono::steady_clock::now() - start, 1s);
    rig.expect_all_served(reqs);
    EXPECT_EQ(rig.device->rate_limiter().config().bandwidth, (TokenBucketConfig { 64 << 20, 0, 1000 }));

    // And lowering it again (ops only: bandwidth stays) throttles the next requests.
    RateLimiterConfig ops;
    ops.ops = TokenBucketConfig { 1, 0, 60'000 };
    rig.device->set_rate_limiter(ops);
    reqs.push_back(rig.read(0, 4096));
    reqs.push_back(rig.read(8, 4096));
    rig.device->notify(0);
    ASSERT_TRUE(rig.ring.wait_used(9, 5s));
    std::this_thread::sleep_for(300ms);
    EXPECT_EQ(rig.ring.used_idx(), 9);
    EXPECT_TRUE(rig.device->rate_limiter().config().bandwidth.has_value());
    // Disabling the ops bucket lets the last one through once the current block ends.
    rig.device->set_rate_limiter(RateLimiterConfig { std::nullopt, TokenBucketConfig {} });
    ASSERT_TRUE(rig.ring.wait_used(10, 5s));
    rig.expect_all_served(reqs);
}

TEST(VirtioBlkRateLimit, ThrottledRequestsSurvivePauseAndResume)
{
    TempImage image;
    BlkRig rig(disk_of(image, bandwidth(kChunk, 200)), IoMode::Sync);
    ASSERT_TRUE(rig.device);
    std::vector<Req> reqs;
    for (uint64_t i = 0; i < 4; ++i)
        reqs.push_back(rig.read(i * kChunk / 512, kChunk));
    rig.device->notify(0);
    ASSERT_TRUE(rig.ring.wait_used(1, 5s));
    rig.device->pause();
    uint16_t used = rig.ring.used_idx();
    std::this_thread::sleep_for(450ms);
    EXPECT_EQ(rig.ring.used_idx(), used) << "nothing moves while paused";
    rig.device->resume();
    ASSERT_TRUE(rig.ring.wait_used(4, 5s));
    rig.expect_all_served(reqs);
}

TEST(VirtioBlkMetrics, CountersCountWhatWasDone)
{
    TempImage image;
    BlkRig rig(disk_of(image), IoMode::Inline);
    ASSERT_TRUE(rig.device);
    rig.read(0, 4096);
    rig.read(8, 8192);
    rig.read(100, 512);
    Req w1 = rig.request(kTOut, 200, 4096, false);
    Req w2 = rig.request(kTOut, 300, 1024, false);
    rig.request(kTFlush, 0, 0, false);
    rig.request(kTGetId, 0, 20, true);
    rig.request(77, 0, 0, false); // UNSUPP
    rig.read(0, 100); // bad length
    rig.read(kImageBytes / 512, 512); // beyond the disk
    rig.device->notify(0);
    ASSERT_EQ(rig.ring.used_idx(), 10);
    EXPECT_EQ(rig.status(w1), kSOk);
    EXPECT_EQ(rig.status(w2), kSOk);
    rig.device->notify(0); // nothing available

    const BlkMetrics& m = rig.device->metrics();
    EXPECT_EQ(m.read_count.get(), 3u);
    EXPECT_EQ(m.read_bytes.get(), 4096u + 8192 + 512);
    EXPECT_EQ(m.write_count.get(), 2u);
    EXPECT_EQ(m.write_bytes.get(), 4096u + 1024);
    EXPECT_EQ(m.flush_count.get(), 1u);
    EXPECT_EQ(m.invalid_reqs_count.get(), 1u);
    EXPECT_EQ(m.execute_fails.get(), 2u);
    EXPECT_EQ(m.queue_event_count.get(), 2u);
    EXPECT_EQ(m.no_avail_buffer.get(), 1u);
    EXPECT_EQ(m.rate_limiter_throttled_events.get(), 0u);
    EXPECT_EQ(m.read_agg.count(), 3u);
    EXPECT_EQ(m.write_agg.count(), 2u);

    RecordingReport r;
    rig.device->report_metrics(r);
    EXPECT_EQ(r.counters["read_bytes"], 4096u + 8192 + 512);
    EXPECT_EQ(r.counters["write_bytes"], 4096u + 1024);
    EXPECT_EQ(r.counters["read_count"], 3u);
    EXPECT_EQ(r.counters["write_count"], 2u);
    EXPECT_EQ(r.counters["flush_count"], 1u);
    EXPECT_EQ(r.counters["queue_event_count"], 2u);
    EXPECT_EQ(r.counters["invalid_reqs_count"], 1u);
    EXPECT_EQ(r.counters["execute_fails"], 2u);
    EXPECT_EQ(r.counters["no_avail_buffer"], 1u);
    EXPECT_EQ(r.counters.count("rate_limiter_throttled_events"), 1u);
    EXPECT_EQ(r.counters.count("rate_limiter_event_count"), 1u);
    EXPECT_EQ(r.latencies["read_agg"].first, 3u);
    EXPECT_EQ(r.latencies["write_agg"].first, 2u);
}

// --- virtio-rng -------------------------------------------------------------------------------

namespace {

class RngRig {
public:
    explicit RngRig(std::optional<RateLimiterConfig> limiter)
        : memory(GuestMemory::create(16 << 20).release_value())
        , ring(memory, kRingBase, 64)
        , device(std::move(limiter))
    {
        EXPECT_TRUE(ring.bind(queue, kFVersion1).ok());
        ActivateContext ctx;
        ctx.memory = &memory;
        ctx.interrupt = &irq;
        ctx.features = kFVersion1;
        ctx.queues = std::span<Queue>(&queue, 1);
        EXPECT_TRUE(device.activate(ctx).ok());
    }
    ~RngRig() { device.reset(); }

    void post(uint32_t len)
    {
        ring.add_chain({ { m_next, len, true } });
        m_next += (len + 63) & ~63u;
    }

    GuestMemory memory;
    VirtioBlkRing ring;
    Queue queue { 256 };
    VirtioBlkCountingInterrupt irq;
    RngDevice device;

private:
    uint64_t m_next { kBufBase };
};

} // namespace

TEST(VirtioRngRateLimit, RequestsBeyondTheLimitWaitAndAllComplete)
{
    // 64 bytes per 100 ms (the bucket holds exactly one request): one request per 100 ms tick.
    RngRig rig(bandwidth(64, 100));
    for (int i = 0; i < 5; ++i)
        rig.post(64);
    auto start = std::chrono::steady_clock::now();
    rig.device.notify(0);
    EXPECT_EQ(rig.ring.used_idx(), 1);
    ASSERT_TRUE(rig.ring.wait_used(5, 5s));
    double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    EXPECT_NEAR(seconds, 0.4, 0.4 * 0.2);
    for (uint16_t i = 0; i < 5; ++i)
        EXPECT_EQ(rig.ring.used_elem(i).len, 64u);
    const RngMetrics& m = rig.device.metrics();
    EXPECT_EQ(m.entropy_bytes.get(), 5u * 64);
    EXPECT_EQ(m.entropy_rate_limiter_throttled.get(), 4u);
    EXPECT_EQ(m.rate_limiter_event_count.get(), 4u);
    EXPECT_EQ(m.entropy_event_count.get(), 5u + 4) << "a deferred request counts again when retried";
    EXPECT_GE(rig.irq.queue_signals.load(), 1u);
}

TEST(VirtioRngRateLimit, PausedDeviceDoesNotServeUntilResumed)
{
    RngRig rig(bandwidth(64, 100));
    for (int i = 0; i < 3; ++i)
        rig.post(64);
    rig.device.notify(0);
    EXPECT_EQ(rig.ring.used_idx(), 1);
    rig.device.pause();
    std::this_thread::sleep_for(350ms);
    EXPECT_EQ(rig.ring.used_idx(), 1) << "the retry thread leaves a paused device alone";
    rig.device.resume();
    ASSERT_TRUE(rig.ring.wait_used(3, 5s));
}

TEST(VirtioRngMetrics, CountersWithoutALimiter)
{
    RngRig rig(std::nullopt);
    rig.post(16);
    rig.post(100);
    rig.post(4096);
    rig.device.notify(0);
    ASSERT_EQ(rig.ring.used_idx(), 3);
    RecordingReport r;
    rig.device.report_metrics(r);
    EXPECT_EQ(r.counters["entropy_event_count"], 3u);
    EXPECT_EQ(r.counters["entropy_bytes"], 16u + 100 + 4096);
    EXPECT_EQ(r.counters["host_rng_fails"], 0u);
    EXPECT_EQ(r.counters["entropy_rate_limiter_throttled"], 0u);
    EXPECT_EQ(r.counters["rate_limiter_event_count"], 0u);
    EXPECT_EQ(rig.device.bytes_served(), 16u + 100 + 4096);
}
