#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "devices/irqchip/clock.h"

using namespace vessel;
using namespace std::chrono_literals;

TEST(IrqchipClock, ManualClockMovesOnlyWhenSet)
{
    VirtualClock clock(VirtualClock::kDefaultTscKhz, VirtualClock::Source::Manual);
    EXPECT_EQ(clock.now_ns(), 0u);
    std::this_thread::sleep_for(1ms);
    EXPECT_EQ(clock.now_ns(), 0u);
    clock.set_now(123'456);
    EXPECT_EQ(clock.now_ns(), 123'456u);
    clock.pause();
    clock.resume();
    EXPECT_EQ(clock.now_ns(), 123'456u);
    EXPECT_FALSE(clock.paused());
}

TEST(IrqchipClock, HostClockAdvancesAndPauses)
{
    VirtualClock clock;
    const uint64_t t0 = clock.now_ns();
    EXPECT_LT(t0, 1'000'000'000u); // starts near zero
    std::this_thread::sleep_for(2ms);
    const uint64_t t1 = clock.now_ns();
    EXPECT_GE(t1 - t0, 2'000'000u);

    clock.pause();
    EXPECT_TRUE(clock.paused());
    const uint64_t frozen = clock.now_ns();
    std::this_thread::sleep_for(60ms);
    EXPECT_EQ(clock.now_ns(), frozen);
    clock.resume();
    EXPECT_FALSE(clock.paused());
    const uint64_t t2 = clock.now_ns();
    EXPECT_GE(t2, frozen);
    EXPECT_LT(t2 - frozen, 30'000'000u); // the paused 60 ms did not count (with slack for a busy host)

    clock.set_now(10'000'000'000);
    EXPECT_GE(clock.now_ns(), 10'000'000'000u);
    EXPECT_LT(clock.now_ns(), 10'100'000'000u);
}

TEST(IrqchipClock, TscConversions)
{
    VirtualClock ghz;
    EXPECT_EQ(ghz.tsc_khz(), 1'000'000u);
    EXPECT_EQ(ghz.tsc(1000), 1000u);
    EXPECT_EQ(ghz.ns_from_tsc(1000), 1000u);

    VirtualClock clock(2'500'000, VirtualClock::Source::Manual); // 2.5 GHz
    EXPECT_EQ(clock.tsc(1000), 2500u);
    EXPECT_EQ(clock.ns_from_tsc(2500), 1000u);
    EXPECT_EQ(clock.ns_from_tsc(2501), 1001u); // rounded up
    for (uint64_t tsc : { 0ull, 1ull, 7ull, 999'999ull, 123'456'789'012ull }) {
        EXPECT_GE(clock.tsc(clock.ns_from_tsc(tsc)), tsc) << tsc;
        if (clock.ns_from_tsc(tsc) > 0) {
            EXPECT_LT(clock.tsc(clock.ns_from_tsc(tsc) - 1), tsc) << tsc;
        }
    }
    // No overflow for years of guest time.
    const uint64_t ten_years = 10ull * 365 * 24 * 3600 * 1'000'000'000;
    EXPECT_EQ(clock.tsc(ten_years), ten_years / 2 * 5);
}
