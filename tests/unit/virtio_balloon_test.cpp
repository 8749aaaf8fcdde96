#include <gtest/gtest.h>

#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "cli/options.h"
#include "devices/virtio/balloon.h"
#include "memory/guest_memory.h"

using namespace vessel;
using namespace vessel::virtio;

namespace {

constexpr uint16_t kRingSize = 16;
constexpr uint64_t kRamSize = 16 << 20;
constexpr uint64_t kPage = 4096;
constexpr uint64_t kData = 0x100000; // PFN arrays and stats buffers
constexpr uint64_t kPayload = 0x400000; // pages the guest fills and then inflates

// The driver's side of one split virtqueue in guest memory (desc table, avail ring, used ring in
// three pages).
class DriverRing {
public:
    struct Buf {
        uint64_t gpa;
        uint32_t len;
        bool writable;
    };

    DriverRing(GuestMemory& memory, uint64_t base)
        : m_memory(&memory)
        , m_base(base)
    {
    }

    void bind(Queue& q) const
    {
        q.set_size(kRingSize);
        q.set_desc_addr(m_base);
        q.set_avail_addr(m_base + 0x1000);
        q.set_used_addr(m_base + 0x2000);
        q.set_ready(true);
    }
    uint16_t post(const std::vector<Buf>& bufs)
    {
        uint16_t head = m_next_desc;
        for (size_t i = 0; i < bufs.size(); ++i) {
            uint16_t index = static_cast<uint16_t>((m_next_desc + i) % kRingSize);
            uint64_t at = m_base + 16ULL * index;
            uint16_t flags = (bufs[i].writable ? 2 : 0) | (i + 1 < bufs.size() ? 1 : 0);
            uint16_t next = static_cast<uint16_t>((index + 1) % kRingSize);
            EXPECT_TRUE(m_memory->write_obj(at, bufs[i].gpa).ok());
            EXPECT_TRUE(m_memory->write_obj(at + 8, bufs[i].len).ok());
            EXPECT_TRUE(m_memory->write_obj(at + 12, flags).ok());
            EXPECT_TRUE(m_memory->write_obj(at + 14, next).ok());
        }
        m_next_desc = static_cast<uint16_t>((m_next_desc + bufs.size()) % kRingSize);
        uint64_t avail = m_base + 0x1000;
        EXPECT_TRUE(m_memory->write_obj<uint16_t>(avail + 4 + 2ULL * (m_avail_idx % kRingSize), head).ok());
        ++m_avail_idx;
        EXPECT_TRUE(m_memory->write_obj<uint16_t>(avail + 2, m_avail_idx).ok());
        return head;
    }
    uint16_t used_idx() const { return m_memory->read_obj<uint16_t>(m_base + 0x2000 + 2).value(); }
    uint32_t used_id(uint16_t i) const
    {
        return m_memory->read_obj<uint32_t>(m_base + 0x2000 + 4 + 8ULL * (i % kRingSize)).value();
    }

private:
    GuestMemory* m_memory;
    uint64_t m_base;
    uint16_t m_next_desc { 0 };
    uint16_t m_avail_idx { 0 };
};

class RecordingInterrupt final : public VirtioInterrupt {
public:
    void signal_queue(uint16_t queue) override { ++queue_signals[queue]; }
    void signal_config() override { ++config_signals; }
    void device_error(std::string_view why) override
    {
        ++errors;
        last_error = std::string(why);
    }
    int queue_signals[3] {};
    int config_signals { 0 };
    int errors { 0 };
    std::string last_error;
};

struct Written {
    uint64_t gpa, len;
};

class BalloonHarness {
public:
    explicit BalloonHarness(uint64_t target = 0)
        : memory(GuestMemory::create(kRamSize).release_value())
        , inflate(memory, 0x10000)
        , deflate(memory, 0x20000)
        , statsq(memory, 0x30000)
        , balloon(target)
    {
        // The rings' pages are allocated up front so that they do not count in st_blocks checks.
        EXPECT_TRUE(memory.fill(0x10000, 0, 0x30000).ok());
        memory.set_write_observer([this](uint64_t gpa, uint64_t len) { written.push_back({ gpa, len }); });
    }

    void activate(uint64_t features = BalloonDevice::kFStatsVq | BalloonDevice::kFDeflateOnOom)
    {
        queues.clear();
        for (int i = 0; i < 3; ++i)
            queues.emplace_back(kRingSize);
        inflate.bind(queues[0]);
        deflate.bind(queues[1]);
        statsq.bind(queues[2]);
        for (auto& q : queues)
            ASSERT_TRUE(q.activate(memory, kFVersion1 | features).ok());
        ActivateContext ctx;
        ctx.memory = &memory;
        ctx.interrupt = &interrupt;
        ctx.features = kFVersion1 | features;
        ctx.queues = std::span<Queue>(queues);
        ASSERT_TRUE(balloon.activate(ctx).ok());
    }

    // Writes a PFN array at kData + slot pages and returns its buffer.
    DriverRing::Buf pfns(const std::vector<uint32_t>& list, unsigned slot = 0)
    {
        uint64_t gpa = kData + slot * kPage;
        EXPECT_TRUE(memory.write(gpa, std::span(reinterpret_cast<const uint8_t*>(list.data()), list.size() * 4)).ok());
        return { gpa, static_cast<uint32_t>(list.size() * 4), false };
    }

    uint64_t file_offset(uint64_t gpa) const
    {
        for (auto& r : memory.regions())
            if (gpa >= r.guest_base && gpa < r.guest_base + r.size)
                return r.file_offset + (gpa - r.guest_base);
        ADD_FAILURE() << "no region for " << gpa;
        return 0;
    }
    // Is the memfd page behind `gpa` a hole (no host memory)?
    bool is_hole(uint64_t gpa) const
    {
        off_t off = static_cast<off_t>(file_offset(gpa));
        return ::lseek(memory.fd(), off, SEEK_HOLE) == off;
    }
    int64_t blocks() const
    {
        struct stat st { };
        EXPECT_EQ(::fstat(memory.fd(), &st), 0);
        return st.st_blocks;
    }
    uint32_t config_u32(uint64_t offset)
    {
        uint32_t v = 0;
        balloon.read_config(offset, std::span(reinterpret_cast<uint8_t*>(&v), 4));
        return v;
    }
    void write_actual(uint32_t pages)
    {
        balloon.write_config(4, std::span(reinterpret_cast<const uint8_t*>(&pages), 4));
    }

    GuestMemory memory;
    DriverRing inflate, deflate, statsq;
    std::vector<Queue> queues;
    RecordingInterrupt interrupt;
    std::vector<Written> written;
    BalloonDevice balloon;
};

std::vector<uint8_t> stats_entries(const std::vector<std::pair<uint16_t, uint64_t>>& entries)
{
    std::vector<uint8_t> out;
    for (auto [tag, value] : entries) {
        uint8_t e[10];
        std::memcpy(e, &tag, 2);
        std::memcpy(e + 2, &value, 8);
        out.insert(out.end(), e, e + 10);
    }
    return out;
}

} // namespace

TEST(VirtioBalloon, DeviceShape)
{
    BalloonDevice b;
    EXPECT_EQ(b.type(), DeviceType::Balloon);
    EXPECT_EQ(b.queue_max_sizes().size(), 3u);
    EXPECT_EQ(b.features(), BalloonDevice::kFStatsVq | BalloonDevice::kFDeflateOnOom);
}

TEST(VirtioBalloon, InflatePunchesHolesInGuestRam)
{
    BalloonHarness h;
    // The guest has used 16 pages: they are backed by host memory.
    ASSERT_TRUE(h.memory.fill(kPayload, 0xab, 16 * kPage).ok());
    for (uint64_t i = 0; i < 16; ++i)
        ASSERT_FALSE(h.is_hole(kPayload + i * kPage));
    h.activate();

    // Pages 2, 3, 4 (a run), 7 and 10 go into the balloon.
    uint32_t first = static_cast<uint32_t>(kPayload / kPage);
    h.inflate.post({ h.pfns({ first + 2, first + 3, first + 4, first + 7, first + 10 }) });
    int64_t blocks_before = h.blocks();
    h.written.clear();
    h.balloon.notify(BalloonDevice::kInflateQueue);

    // (Measured before anything reads the pages: a read of a hole in shared memory allocates.)
    EXPECT_EQ(blocks_before - h.blocks(), static_cast<int64_t>(5 * kPage / 512));
    ASSERT_EQ(h.inflate.used_idx(), 1);
    EXPECT_EQ(h.interrupt.queue_signals[0], 1);
    for (uint64_t i = 0; i < 16; ++i) {
        bool ballooned = i == 2 || i == 3 || i == 4 || i == 7 || i == 10;
        EXPECT_EQ(h.is_hole(kPayload + i * kPage), ballooned) << "page " << i;
    }
    // The guest finds zeros where it ballooned pages, its data elsewhere.
    for (uint64_t i = 0; i < 16; ++i) {
        bool ballooned = i == 2 || i == 3 || i == 4 || i == 7 || i == 10;
        uint8_t byte = h.memory.read_obj<uint8_t>(kPayload + i * kPage + 100).value();
        EXPECT_EQ(byte, ballooned ? 0x00 : 0xab) << "page " << i;
    }
    auto c = h.balloon.counters();
    EXPECT_EQ(c.inflated_pages, 5u);
    EXPECT_EQ(c.released_bytes, 5 * kPage);
    EXPECT_EQ(c.bad_pfns, 0u);
    EXPECT_EQ(c.release_failures, 0u);
    // The engine hears that the contents changed: the run as one range, the others alone (the
    // rest of what it hears is the queue's used ring).
    std::vector<decltype(h.written)::value_type> payload;
    for (const auto& w : h.written)
        if (w.gpa >= kPayload)
            payload.push_back(w);
    ASSERT_EQ(payload.size(), 3u);
    EXPECT_EQ(payload[0].gpa, kPayload + 2 * kPage);
    EXPECT_EQ(payload[0].len, 3 * kPage);
    EXPECT_EQ(payload[1].gpa, kPayload + 7 * kPage);
    EXPECT_EQ(payload[2].gpa, kPayload + 10 * kPage);
}

TEST(VirtioBalloon, BadPfnsAreIgnoredAndCounted)
{
    BalloonHarness h;
    ASSERT_TRUE(h.memory.fill(kPayload, 0xcd, 2 * kPage).ok());
    h.activate();
    uint32_t good = static_cast<uint32_t>(kPayload / kPage);
    uint32_t beyond_ram = static_cast<uint32_t>(kRamSize / kPage); // first page past RAM
    uint32_t mmio_hole = static_cast<uint32_t>((3ULL << 30) / kPage); // the 32-bit hole
    h.inflate.post({ h.pfns({ beyond_ram, good, 0xffffffffu, mmio_hole, good + 1 }) });
    h.balloon.notify(BalloonDevice::kInflateQueue);
    ASSERT_EQ(h.inflate.used_idx(), 1);
    auto c = h.balloon.counters();
    EXPECT_EQ(c.bad_pfns, 3u);
    EXPECT_EQ(c.inflated_pages, 2u);
    EXPECT_EQ(c.released_bytes, 2 * kPage);
    EXPECT_TRUE(h.is_hole(kPayload));
    EXPECT_TRUE(h.is_hole(kPayload + kPage));
    EXPECT_EQ(h.interrupt.errors, 0); // a bad PFN is not a protocol error
}

TEST(VirtioBalloon, RunsStopAtRegionEnds)
{
    // Two PFNs that are consecutive numbers but the last page of RAM and the first past it.
    BalloonHarness h;
    uint64_t last = kRamSize - kPage;
    ASSERT_TRUE(h.memory.fill(last, 0x11, kPage).ok());
    h.activate();
    h.inflate.post({ h.pfns({ static_cast<uint32_t>(last / kPage), static_cast<uint32_t>(kRamSize / kPage) }) });
    h.balloon.notify(BalloonDevice::kInflateQueue);
    auto c = h.balloon.counters();
    EXPECT_EQ(c.released_bytes, kPage);
    EXPECT_EQ(c.bad_pfns, 1u);
    EXPECT_TRUE(h.is_hole(last));
    struct stat st { };
    ASSERT_EQ(::fstat(h.memory.fd(), &st), 0);
    EXPECT_EQ(static_cast<uint64_t>(st.st_size), kRamSize); // KEEP_SIZE: the file is not shortened
}

TEST(VirtioBalloon, DeflateReturnsBuffersAndTouchesNothing)
{
    BalloonHarness h;
    ASSERT_TRUE(h.memory.fill(kPayload, 0x5a, kPage).ok());
    h.activate();
    uint32_t pfn = static_cast<uint32_t>(kPayload / kPage);
    h.deflate.post({ h.pfns({ pfn, pfn + 1, pfn + 2 }) });
    h.balloon.notify(BalloonDevice::kDeflateQueue);
    ASSERT_EQ(h.deflate.used_idx(), 1);
    EXPECT_EQ(h.interrupt.queue_signals[1], 1);
    EXPECT_EQ(h.balloon.counters().deflated_pages, 3u);
    EXPECT_EQ(h.balloon.counters().released_bytes, 0u);
    EXPECT_FALSE(h.is_hole(kPayload));
}

TEST(VirtioBalloon, ConfigSpace)
{
    BalloonHarness h(64ULL << 20);
    EXPECT_EQ(h.config_u32(0), (64u << 20) / kPage); // num_pages
    EXPECT_EQ(h.config_u32(4), 0u); // actual
    EXPECT_EQ(h.config_u32(8), 0u); // beyond the offered features
    h.activate();
    h.write_actual(1000);
    EXPECT_EQ(h.config_u32(4), 1000u);
    EXPECT_EQ(h.balloon.actual_pages(), 1000u);
    // num_pages is the host's: a driver write is ignored.
    uint32_t bogus = 5;
    h.balloon.write_config(0, std::span(reinterpret_cast<const uint8_t*>(&bogus), 4));
    EXPECT_EQ(h.config_u32(0), (64u << 20) / kPage);
    // A byte-wide write to actual's second byte.
    uint8_t b = 0x01;
    h.balloon.write_config(5, std::span(&b, 1));
    EXPECT_EQ(h.balloon.actual_pages(), (1000u & 0xffff00ffu) | 0x100u);
    // Unaligned 2-byte read across num_pages and actual.
    uint16_t mid = 0;
    h.balloon.read_config(3, std::span(reinterpret_cast<uint8_t*>(&mid), 2));
    EXPECT_EQ(mid, static_cast<uint16_t>((((64u << 20) / kPage) >> 24) | ((h.balloon.actual_pages() & 0xff) << 8)));
    // A new target from the host raises a configuration change.
    h.balloon.set_target(32ULL << 20);
    EXPECT_EQ(h.config_u32(0), (32u << 20) / kPage);
    EXPECT_EQ(h.interrupt.config_signals, 1);
    h.balloon.set_target(32ULL << 20); // unchanged: no interrupt
    EXPECT_EQ(h.interrupt.config_signals, 1);
    // A reset empties the balloon from the device's point of view.
    h.balloon.reset();
    EXPECT_EQ(h.balloon.actual_pages(), 0u);
}

TEST(VirtioBalloon, StatisticsAreParsedAndRequestedAgain)
{
    BalloonHarness h;
    h.activate();
    auto buf = stats_entries({ { BalloonDevice::kStatFreeMemory, 100ULL << 20 },
        { BalloonDevice::kStatTotalMemory, 250ULL << 20 }, { 77, 12345 }, // unknown tag: skipped
        { BalloonDevice::kStatMajorFaults, 42 } });
    buf.push_back(0xee); // a trailing partial entry is ignored
    ASSERT_TRUE(h.memory.write(kData, buf).ok());
    h.statsq.post({ { kData, static_cast<uint32_t>(buf.size()), false } });
    h.balloon.notify(BalloonDevice::kStatsQueue);

    // The device keeps the buffer until it wants fresh values.
    EXPECT_EQ(h.statsq.used_idx(), 0);
    auto s = h.balloon.stats();
    EXPECT_EQ(s.updates, 1u);
    EXPECT_EQ(s.values[BalloonDevice::kStatFreeMemory], 100ULL << 20);
    EXPECT_EQ(s.values[BalloonDevice::kStatTotalMemory], 250ULL << 20);
    EXPECT_EQ(s.values[BalloonDevice::kStatMajorFaults], 42u);
    EXPECT_FALSE(s.values[BalloonDevice::kStatSwapIn].has_value());

    EXPECT_TRUE(h.balloon.request_stats());
    ASSERT_EQ(h.statsq.used_idx(), 1);
    EXPECT_EQ(h.interrupt.queue_signals[2], 1);
    EXPECT_FALSE(h.balloon.request_stats()); // nothing held: the guest has the buffer

    // The guest answers with new values; tags it no longer sends are forgotten.
    auto again = stats_entries({ { BalloonDevice::kStatFreeMemory, 90ULL << 20 } });
    ASSERT_TRUE(h.memory.write(kData + kPage, again).ok());
    h.statsq.post({ { kData + kPage, static_cast<uint32_t>(again.size()), false } });
    h.balloon.notify(BalloonDevice::kStatsQueue);
    s = h.balloon.stats();
    EXPECT_EQ(s.updates, 2u);
    EXPECT_EQ(s.values[BalloonDevice::kStatFreeMemory], 90ULL << 20);
    EXPECT_FALSE(s.values[BalloonDevice::kStatTotalMemory].has_value());
}

TEST(VirtioBalloon, StatsBufferPrimedBeforeDriverOk)
{
    // Linux adds its first statistics buffer during probe, before DRIVER_OK.
    BalloonHarness h;
    auto buf = stats_entries({ { BalloonDevice::kStatAvailableMemory, 7ULL << 20 } });
    ASSERT_TRUE(h.memory.write(kData, buf).ok());
    h.statsq.post({ { kData, static_cast<uint32_t>(buf.size()), false } });
    h.activate();
    EXPECT_EQ(h.balloon.stats().updates, 1u);
    EXPECT_EQ(h.balloon.stats().values[BalloonDevice::kStatAvailableMemory], 7ULL << 20);
}

TEST(VirtioBalloon, ReachingTheTargetRequestsFreshStatistics)
{
    BalloonHarness h(8 * kPage);
    h.activate();
    auto buf = stats_entries({ { BalloonDevice::kStatFreeMemory, 1 } });
    ASSERT_TRUE(h.memory.write(kData, buf).ok());
    h.statsq.post({ { kData, static_cast<uint32_t>(buf.size()), false } });
    h.balloon.notify(BalloonDevice::kStatsQueue);
    h.write_actual(4);
    EXPECT_EQ(h.statsq.used_idx(), 0);
    h.write_actual(8);
    EXPECT_EQ(h.statsq.used_idx(), 1);
}

TEST(VirtioBalloon, NoStatisticsWithoutTheFeature)
{
    BalloonHarness h;
    auto buf = stats_entries({ { BalloonDevice::kStatFreeMemory, 1 } });
    ASSERT_TRUE(h.memory.write(kData, buf).ok());
    h.statsq.post({ { kData, static_cast<uint32_t>(buf.size()), false } });
    h.activate(/*features=*/0);
    h.balloon.notify(BalloonDevice::kStatsQueue);
    EXPECT_EQ(h.balloon.stats().updates, 0u);
    EXPECT_FALSE(h.balloon.request_stats());
}

TEST(VirtioBalloon, MalformedChainStopsTheDevice)
{
    BalloonHarness h;
    ASSERT_TRUE(h.memory.fill(kPayload, 0x77, kPage).ok());
    h.activate();
    h.inflate.post({ { kRamSize - 8, 64, false } }); // the PFN array runs past the end of RAM
    h.balloon.notify(BalloonDevice::kInflateQueue);
    EXPECT_EQ(h.interrupt.errors, 1);
    EXPECT_EQ(h.inflate.used_idx(), 0);
    // Stopped until reset: further buffers are left alone.
    h.inflate.post({ h.pfns({ static_cast<uint32_t>(kPayload / kPage) }) });
    h.balloon.notify(BalloonDevice::kInflateQueue);
    EXPECT_EQ(h.inflate.used_idx(), 0);
    EXPECT_FALSE(h.is_hole(kPayload));
}

TEST(VirtioBalloon, OddLengthPfnArray)
{
    // 4 PFNs and 3 stray bytes: the 4 are taken, the stray bytes ignored.
    BalloonHarness h;
    ASSERT_TRUE(h.memory.fill(kPayload, 0x31, 4 * kPage).ok());
    h.activate();
    uint32_t pfn = static_cast<uint32_t>(kPayload / kPage);
    auto buf = h.pfns({ pfn, pfn + 1, pfn + 2, pfn + 3 });
    buf.len += 3;
    h.inflate.post({ buf });
    h.balloon.notify(BalloonDevice::kInflateQueue);
    EXPECT_EQ(h.balloon.counters().inflated_pages, 4u);
    EXPECT_EQ(h.balloon.counters().released_bytes, 4 * kPage);
}

// --balloon-target / "balloon_target" (src/cli/options.cpp).
TEST(VirtioBalloon, TargetOption)
{
    const char* argv[] = { "vessel", "run", "--kernel", "k", "--mem", "256M", "--balloon-target", "64M" };
    auto r = parse_command_line(8, argv);
    ASSERT_TRUE(r.ok()) << r.error().message();
    EXPECT_TRUE(r.value().vm.balloon); // implied
    EXPECT_EQ(r.value().vm.balloon_target_bytes, 64ULL << 20);
    EXPECT_TRUE(validate_config(r.value().vm, 1).ok());

    const char* bad[] = { "vessel", "run", "--kernel", "k", "--balloon-target", "lots" };
    auto e = parse_command_line(6, bad);
    ASSERT_FALSE(e.ok());
    EXPECT_NE(e.error().message().find("--balloon-target"), std::string::npos);

    VmConfig config;
    config.kernel = "k";
    ASSERT_TRUE(apply_json_config(config, R"({"balloon_target": "32M"})", "vm.json", ".").ok());
    EXPECT_TRUE(config.balloon);
    EXPECT_EQ(config.balloon_target_bytes, 32ULL << 20);
    EXPECT_FALSE(apply_json_config(config, R"({"balloon_target": true})", "vm.json", ".").ok());

    // The target must leave the guest some memory, in whole pages.
    config.balloon_target_bytes = config.mem_bytes;
    auto v = validate_config(config, 1);
    ASSERT_FALSE(v.ok());
    EXPECT_NE(v.error().message().find("--balloon-target"), std::string::npos);
    config.balloon_target_bytes = 4097;
    EXPECT_FALSE(validate_config(config, 1).ok());
}

TEST(VirtioBalloon, OneBufferInflatesAtMostTheLimit)
{
    // A buffer of 1024 + 10 PFNs: the first 1024 are taken, the rest ignored and counted.
    BalloonHarness h;
    h.activate();
    uint32_t first = static_cast<uint32_t>(kPayload / kPage);
    std::vector<uint32_t> list;
    for (uint32_t i = 0; i < BalloonDevice::kMaxPfnsPerBuffer + 10; ++i)
        list.push_back(first + i);
    h.inflate.post({ h.pfns(list) });
    h.balloon.notify(BalloonDevice::kInflateQueue);
    ASSERT_EQ(h.inflate.used_idx(), 1);
    auto c = h.balloon.counters();
    EXPECT_EQ(c.inflated_pages, BalloonDevice::kMaxPfnsPerBuffer);
    EXPECT_EQ(c.excess_pfns, 10u);
    EXPECT_EQ(c.released_bytes, BalloonDevice::kMaxPfnsPerBuffer * kPage);
}

TEST(VirtioBalloon, CountersUnderFirecrackerNames)
{
    // Firecracker counts queue events (inflate_count, deflate_count) and statistics buffers.
    BalloonHarness h;
    h.activate();
    uint32_t first = static_cast<uint32_t>(kPayload / kPage);
    h.inflate.post({ h.pfns({ first, first + 1 }) });
    h.balloon.notify(BalloonDevice::kInflateQueue);
    h.balloon.notify(BalloonDevice::kInflateQueue); // nothing new: still an event
    h.deflate.post({ h.pfns({ first }, 1) });
    h.balloon.notify(BalloonDevice::kDeflateQueue);
    auto good = stats_entries({ { BalloonDevice::kStatFreeMemory, 1 } });
    ASSERT_TRUE(h.memory.write(kData + 2 * kPage, good).ok());
    h.statsq.post({ { kData + 2 * kPage, static_cast<uint32_t>(good.size()), false } });
    h.balloon.notify(BalloonDevice::kStatsQueue);
    ASSERT_TRUE(h.balloon.request_stats());
    auto odd = stats_entries({ { BalloonDevice::kStatFreeMemory, 2 }, { 99, 3 } }); // unknown tag
    ASSERT_TRUE(h.memory.write(kData + 3 * kPage, odd).ok());
    h.statsq.post({ { kData + 3 * kPage, static_cast<uint32_t>(odd.size()), false } });
    h.balloon.notify(BalloonDevice::kStatsQueue);

    const BalloonMetrics& m = h.balloon.metrics();
    EXPECT_EQ(m.inflate_count.get(), 2u);
    EXPECT_EQ(m.deflate_count.get(), 1u);
    EXPECT_EQ(m.stats_updates_count.get(), 2u);
    EXPECT_EQ(m.stats_update_fails.get(), 1u);
    struct Report final : MetricsReport {
        void counter(std::string_view field, uint64_t total) override { fields[std::string(field)] = total; }
        void latency(std::string_view, const LatencyCounter&) override { }
        std::map<std::string, uint64_t> fields;
    } r;
    h.balloon.report_metrics(r);
    EXPECT_EQ(r.fields,
        (std::map<std::string, uint64_t> { { "inflate_count", 2 }, { "deflate_count", 1 }, { "stats_updates_count", 2 },
            { "stats_update_fails", 1 } }));
}
