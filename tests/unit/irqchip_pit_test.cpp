#include <gtest/gtest.h>

#include <vector>

#include "devices/irqchip/clock.h"
#include "devices/irqchip/pit.h"

using namespace vessel;

namespace {

constexpr uint64_t kHz = Pit::kFrequencyHz;

// Guest time at which `ticks` PIT clocks have elapsed since time 0.
uint64_t tick_ns(uint64_t ticks)
{
    return (ticks * 1'000'000'000 + kHz - 1) / kHz;
}

// A PIT on a manual clock with IRQ0 recorded. Not movable: the line captures `this`.
class PitHarness {
public:
    PitHarness()
        : pit(clock, IrqLine(0, [this](uint32_t gsi, bool level) {
            EXPECT_EQ(gsi, 0u);
            levels.push_back(level);
        }))
    {
    }
    PitHarness(const PitHarness&) = delete;
    PitHarness& operator=(const PitHarness&) = delete;

    void set_now(uint64_t ns) { clock.set_now(ns); }
    void out(uint16_t port, uint8_t value) { pit.write(port - Pit::kPort, std::span(&value, 1)); }
    uint8_t in(uint16_t port)
    {
        uint8_t value = 0;
        pit.read(port - Pit::kPort, std::span(&value, 1));
        return value;
    }
    void load(uint16_t port, uint16_t count)
    {
        out(port, static_cast<uint8_t>(count));
        out(port, static_cast<uint8_t>(count >> 8));
    }
    uint16_t read16(uint16_t port)
    {
        const uint8_t lsb = in(port);
        return static_cast<uint16_t>(lsb | in(port) << 8);
    }
    int edges() const
    {
        int n = 0;
        for (size_t i = 0; i + 1 < levels.size(); ++i)
            n += levels[i] && !levels[i + 1];
        return n;
    }

    VirtualClock clock { VirtualClock::kDefaultTscKhz, VirtualClock::Source::Manual };
    std::vector<bool> levels;
    Pit pit;
};

} // namespace

TEST(Pit, NoInterruptsBeforeProgramming)
{
    PitHarness h;
    EXPECT_EQ(h.pit.next_deadline_ns(), UINT64_MAX);
    h.pit.run_timers(1'000'000'000);
    EXPECT_TRUE(h.levels.empty());
}

TEST(Pit, Mode2PeriodicIrq0)
{
    PitHarness h;
    h.out(0x43, 0x34); // channel 0, LSB then MSB, mode 2: Linux's periodic PIT
    h.load(0x40, 1193);
    EXPECT_EQ(h.pit.next_deadline_ns(), tick_ns(1193));
    h.pit.run_timers(tick_ns(1193) - 1);
    EXPECT_TRUE(h.levels.empty());
    h.pit.run_timers(tick_ns(1193));
    EXPECT_EQ(h.levels, (std::vector<bool> { true, false }));
    EXPECT_EQ(h.pit.next_deadline_ns(), tick_ns(2 * 1193));
    // Ten periods late: one edge, not ten; the next deadline is the next period boundary.
    h.pit.run_timers(tick_ns(11 * 1193) + 5);
    EXPECT_EQ(h.edges(), 2);
    EXPECT_EQ(h.pit.next_deadline_ns(), tick_ns(12 * 1193));
    h.pit.run_timers(tick_ns(11 * 1193) + 6);
    EXPECT_EQ(h.edges(), 2);
}

TEST(Pit, Mode3SquareWave)
{
    PitHarness h;
    h.out(0x43, 0x36);
    h.load(0x40, 1000);
    auto out0 = [&] {
        h.out(0x43, 0xe2); // read-back: status of channel 0
        return (h.in(0x40) & 0x80) != 0;
    };
    h.set_now(tick_ns(100));
    EXPECT_TRUE(out0());
    EXPECT_EQ(h.read16(0x40), 1000 - 200); // counts by two
    h.set_now(tick_ns(600));
    EXPECT_FALSE(out0());
    h.set_now(tick_ns(1000));
    EXPECT_TRUE(out0());
    EXPECT_EQ(h.pit.next_deadline_ns(), tick_ns(1000));
    h.pit.run_timers(tick_ns(1000));
    EXPECT_EQ(h.edges(), 1);
    EXPECT_EQ(h.pit.next_deadline_ns(), tick_ns(2000));
}

TEST(Pit, Mode0OneShotOnChannel0)
{
    PitHarness h;
    h.out(0x43, 0x30);
    h.load(0x40, 500);
    h.pit.run_timers(tick_ns(500));
    EXPECT_EQ(h.edges(), 1);
    EXPECT_EQ(h.pit.next_deadline_ns(), UINT64_MAX);
    h.pit.run_timers(tick_ns(100'000));
    EXPECT_EQ(h.edges(), 1);
    // The counter wraps on after the terminal count.
    h.set_now(tick_ns(510));
    EXPECT_EQ(h.read16(0x40), 0x10000 - 10);
}

TEST(Pit, Mode4SoftwareStrobe)
{
    PitHarness h;
    h.set_now(1'000'000);
    h.out(0x43, 0x38); // Linux's one-shot clockevent
    h.load(0x40, 100);
    EXPECT_EQ(h.pit.next_deadline_ns(), 1'000'000 + tick_ns(100));
    h.pit.run_timers(1'000'000 + tick_ns(100));
    EXPECT_EQ(h.edges(), 1);
    EXPECT_EQ(h.pit.next_deadline_ns(), UINT64_MAX);
    // Reprogramming rearms.
    h.set_now(2'000'000);
    h.load(0x40, 200);
    EXPECT_EQ(h.pit.next_deadline_ns(), 2'000'000 + tick_ns(200));
}

TEST(Pit, CounterLatch)
{
    PitHarness h;
    h.out(0x43, 0x34);
    h.load(0x40, 10000);
    h.set_now(tick_ns(1000));
    h.out(0x43, 0x00); // latch channel 0
    h.set_now(tick_ns(3000));
    EXPECT_EQ(h.read16(0x40), 9000);
    // Unlatched again: live value.
    EXPECT_EQ(h.read16(0x40), 7000);
    // A second latch command before the first is read is ignored.
    h.out(0x43, 0x00);
    h.set_now(tick_ns(4000));
    h.out(0x43, 0x00);
    EXPECT_EQ(h.read16(0x40), 7000);
}

TEST(Pit, ReadBackStatusAndCount)
{
    PitHarness h;
    h.out(0x43, 0x34);
    h.out(0x43, 0xe2); // status only
    EXPECT_EQ(h.in(0x40), 0xf4); // OUT high, null count, LSB/MSB, mode 2
    h.load(0x40, 0x1234);
    h.set_now(tick_ns(0x34));
    h.out(0x43, 0xc2); // count and status
    h.set_now(tick_ns(0x200));
    EXPECT_EQ(h.in(0x40), 0xb4); // status first, count loaded
    EXPECT_EQ(h.read16(0x40), 0x1200);
    // Read-back of several channels at once.
    h.out(0x43, 0x96); // channel 2, LSB only, mode 3
    h.out(0x43, 0xee); // status of channels 0, 1 and 2
    EXPECT_EQ(h.in(0x42), 0xd6); // OUT high (mode 3), null count, LSB, mode 3
    EXPECT_EQ(h.in(0x40) & 0x3f, 0x34);
}

TEST(Pit, AccessModes)
{
    PitHarness h;
    h.out(0x43, 0x14); // channel 0, LSB only, mode 2
    h.out(0x40, 200);
    h.set_now(tick_ns(50));
    EXPECT_EQ(h.in(0x40), 150);
    EXPECT_EQ(h.in(0x40), 150);
    h.out(0x43, 0x24); // MSB only
    h.set_now(tick_ns(100));
    h.out(0x40, 0x02); // count 0x200
    h.set_now(tick_ns(100 + 0x100));
    EXPECT_EQ(h.in(0x40), 0x01);
}

TEST(Pit, BcdCounting)
{
    PitHarness h;
    h.out(0x43, 0x35); // mode 2, BCD
    h.load(0x40, 0x1000);
    h.set_now(tick_ns(250));
    EXPECT_EQ(h.read16(0x40), 0x0750);
    EXPECT_EQ(h.pit.next_deadline_ns(), tick_ns(1000));
}

// Linux's pit_calibrate_tsc(): gate channel 2 on through port 0x61 with the speaker off, mode 0,
// then poll port 0x61 bit 5 (OUT2) until the count expires.
TEST(Pit, Channel2GateAndOut2LikeLinuxCalibration)
{
    PitHarness h;
    EXPECT_EQ(h.pit.read_speaker_port() & 0x21, 0x00);
    h.set_now(5'000'000);
    h.pit.write_speaker_port((h.pit.read_speaker_port() & ~0x02) | 0x01);
    EXPECT_EQ(h.pit.read_speaker_port() & 0x0f, 0x01);
    h.out(0x43, 0xb0);
    h.load(0x42, 11931); // 10 ms
    EXPECT_EQ(h.pit.read_speaker_port() & 0x20, 0);
    h.set_now(5'000'000 + tick_ns(11930));
    EXPECT_EQ(h.pit.read_speaker_port() & 0x20, 0);
    h.set_now(5'000'000 + tick_ns(11931));
    EXPECT_EQ(h.pit.read_speaker_port() & 0x20, 0x20);
    // Channel 2 never raises IRQ0.
    h.pit.run_timers(UINT64_MAX - 1);
    EXPECT_TRUE(h.levels.empty());
}

// Linux's quick_pit_calibrate(): mode 0 from 0xffff, reading LSB then MSB of the live count.
TEST(Pit, Channel2LiveCountForQuickCalibration)
{
    PitHarness h;
    h.pit.write_speaker_port(0x01);
    h.out(0x43, 0xb0);
    h.load(0x42, 0xffff);
    for (uint64_t step = 0; step < 8; ++step) {
        h.set_now(tick_ns(256 * step + 10));
        h.in(0x42);
        EXPECT_EQ(h.in(0x42), 0xff - step);
    }
}

TEST(Pit, Channel2GateLowPausesMode0)
{
    PitHarness h;
    h.out(0x43, 0xb0);
    h.load(0x42, 1000); // gate still low: not counting
    h.set_now(1'000'000);
    EXPECT_EQ(h.read16(0x42), 1000);
    h.pit.write_speaker_port(0x01);
    h.set_now(1'000'000 + tick_ns(400));
    EXPECT_EQ(h.read16(0x42), 600);
    h.pit.write_speaker_port(0x00); // pause
    h.set_now(9'000'000);
    EXPECT_EQ(h.read16(0x42), 600);
    EXPECT_EQ(h.pit.read_speaker_port() & 0x20, 0);
    h.pit.write_speaker_port(0x01);
    h.set_now(9'000'000 + tick_ns(600) - 3);
    EXPECT_EQ(h.pit.read_speaker_port() & 0x20, 0);
    h.set_now(9'000'000 + tick_ns(600));
    EXPECT_EQ(h.pit.read_speaker_port() & 0x20, 0x20);
}

TEST(Pit, Channel2Mode1TriggeredByTheGate)
{
    PitHarness h;
    h.out(0x43, 0xb2); // channel 2, mode 1
    h.load(0x42, 100);
    EXPECT_EQ(h.pit.read_speaker_port() & 0x20, 0x20); // OUT high until triggered
    h.set_now(1000);
    h.pit.write_speaker_port(0x01);
    EXPECT_EQ(h.pit.read_speaker_port() & 0x20, 0);
    h.set_now(1000 + tick_ns(100));
    EXPECT_EQ(h.pit.read_speaker_port() & 0x20, 0x20);
}

TEST(Pit, RefreshBitToggles)
{
    PitHarness h;
    const uint8_t a = h.pit.read_speaker_port() & 0x10;
    h.set_now(15'085);
    const uint8_t b = h.pit.read_speaker_port() & 0x10;
    EXPECT_NE(a, b);
}

TEST(Pit, PitSpeakerPortDevice)
{
    PitHarness h;
    auto shared = std::shared_ptr<Pit>(&h.pit, [](Pit*) {});
    PitSpeakerPort port(shared);
    uint8_t value = 0x03;
    port.write(0, std::span(&value, 1));
    value = 0;
    port.read(0, std::span(&value, 1));
    EXPECT_EQ(value & 0x0f, 0x03);
}
