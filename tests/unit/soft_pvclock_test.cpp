// KVM's paravirtual clock on the soft engine: the scale, the MSRs, the structures in guest RAM,
// and that the guest's kvm-clock arithmetic gives guest time exactly, on a manual VM clock.
#include <time.h>

#include <cstring>
#include <utility>
#include <vector>

#include "devices/irqchip/clock.h"
#include "engine/soft/msr.h"
#include "engine/soft/pvclock.h"
#include "engine/soft/state.h"
#include "soft_sys_test_support.h"

namespace vessel::soft::systest {
namespace {

constexpr uint64_t kNs = 1'000'000'000;
constexpr uint64_t kRam = 16 << 20;
constexpr uint64_t kTimeInfo = 0x5000, kWallClock = 0x6000;

struct TimeInfo {
    uint32_t version;
    uint32_t pad0;
    uint64_t tsc_timestamp;
    uint64_t system_time;
    uint32_t mul;
    int8_t shift;
    uint8_t flags;
    uint8_t pad[2];
};
static_assert(sizeof(TimeInfo) == 32);

struct WallClock {
    uint32_t version, sec, nsec;
};

// What Linux's pvclock_clocksource_read computes from the structure and a TSC reading.
uint64_t guest_kvmclock(const TimeInfo& t, uint64_t tsc)
{
    return t.system_time + pvclock_scale_delta(tsc - t.tsc_timestamp, { t.mul, t.shift });
}

// Linux's pvclock_tsc_khz: the TSC frequency the guest derives from the scale.
uint64_t guest_tsc_khz_from(PvclockScale s)
{
    uint64_t khz = (1'000'000ULL << 32) / s.mul;
    return s.shift < 0 ? khz << -s.shift : khz >> s.shift;
}

class SoftPvclock : public SoftSysTest {
protected:
    SoftPvclock() { c.clock = &clock; }

    TimeInfo time_info(uint64_t gpa = kTimeInfo) { return peek<TimeInfo>(gpa); }

    VirtualClock clock { VirtualClock::kDefaultTscKhz, VirtualClock::Source::Manual };
};

TEST_F(SoftPvclock, ScaleIsExactAtOneGigahertz)
{
    PvclockScale s = pvclock_scale(1'000'000);
    EXPECT_EQ(s.mul, 0x80000000u);
    EXPECT_EQ(s.shift, 1);
    for (uint64_t delta : { 0ULL, 1ULL, 999ULL, 123'456'789ULL, 86'400ULL * kNs, (1ULL << 62) - 1 })
        EXPECT_EQ(pvclock_scale_delta(delta, s), delta);
    EXPECT_EQ(guest_tsc_khz_from(s), 1'000'000u);
}

TEST_F(SoftPvclock, ScaleForOtherFrequencies)
{
    for (uint64_t khz : { 100'000ULL, 1'234'567ULL, 2'500'000ULL, 3'000'000ULL, 5'000'000ULL }) {
        SCOPED_TRACE(khz);
        PvclockScale s = pvclock_scale(khz);
        EXPECT_GE(s.mul, 0x80000000u); // full precision
        // One second of ticks is one second, to the nanosecond.
        uint64_t ns = pvclock_scale_delta(khz * 1000, s);
        EXPECT_NEAR(static_cast<double>(ns), 1e9, 1.0);
        EXPECT_NEAR(static_cast<double>(guest_tsc_khz_from(s)), static_cast<double>(khz), 1.0);
    }
}

TEST_F(SoftPvclock, EnablingWritesTheTimeInfo)
{
    clock.set_now(5 * kNs);
    write_msr(c, msr::kKvmSystemTimeNew, kTimeInfo | 1);
    EXPECT_EQ(read_msr(c, msr::kKvmSystemTimeNew), kTimeInfo | 1);
    TimeInfo t = time_info();
    EXPECT_NE(t.version, 0u);
    EXPECT_EQ(t.version % 2, 0u); // even: not being updated
    EXPECT_EQ(t.tsc_timestamp, guest_tsc(c));
    EXPECT_EQ(t.system_time, 5 * kNs);
    EXPECT_EQ(t.mul, 0x80000000u);
    EXPECT_EQ(t.shift, 1);
    EXPECT_EQ(t.flags, kPvclockTscStableBit);
}

TEST_F(SoftPvclock, KvmclockIsGuestTimeLaterAndOnEveryVcpu)
{
    clock.set_now(2 * kNs);
    write_msr(c, msr::kKvmSystemTimeNew, kTimeInfo | 1);
    Cpu c2;
    c2.machine = c.machine;
    c2.clock = &clock;
    write_msr(c2, msr::kKvmSystemTimeNew, (kTimeInfo + 64) | 1);
    for (uint64_t now : { 2 * kNs + 1, 3 * kNs, 3600 * kNs + 12345 }) {
        clock.set_now(now);
        EXPECT_EQ(guest_kvmclock(time_info(), guest_tsc(c)), now);
        EXPECT_EQ(guest_kvmclock(time_info(kTimeInfo + 64), guest_tsc(c2)), now);
        // vDSO style (stable bit): vCPU 0's structure with the other vCPU's TSC.
        EXPECT_EQ(guest_kvmclock(time_info(), guest_tsc(c2)), now);
    }
}

TEST_F(SoftPvclock, WritingTheTscRewritesTheTimeInfo)
{
    clock.set_now(kNs);
    write_msr(c, msr::kKvmSystemTimeNew, kTimeInfo | 1);
    uint32_t version = time_info().version;
    write_msr(c, msr::kTsc, 42); // a new TSC offset
    TimeInfo t = time_info();
    EXPECT_EQ(t.version, version + 2);
    EXPECT_EQ(t.tsc_timestamp, 42u);
    EXPECT_EQ(t.system_time, kNs);
    // kvm-clock is guest time, whatever the TSC says.
    clock.set_now(7 * kNs);
    EXPECT_EQ(guest_kvmclock(time_info(), guest_tsc(c)), 7 * kNs);
}

TEST_F(SoftPvclock, VersionMovesOnFromWhatTheGuestLeft)
{
    poke<uint32_t>(kTimeInfo, 7); // odd garbage
    write_msr(c, msr::kKvmSystemTimeNew, kTimeInfo | 1);
    uint32_t v = time_info().version;
    EXPECT_EQ(v % 2, 0u);
    EXPECT_GT(v, 7u);
}

TEST_F(SoftPvclock, DisabledTimeInfoIsNotWritten)
{
    std::vector<uint8_t> before(32, 0xaa);
    ASSERT_TRUE(m_mem.write(kTimeInfo, before).ok());
    write_msr(c, msr::kKvmSystemTimeNew, kTimeInfo); // bit 0 clear
    EXPECT_EQ(read_msr(c, msr::kKvmSystemTimeNew), kTimeInfo);
    write_msr(c, msr::kTsc, 1234);
    std::vector<uint8_t> after(32);
    ASSERT_TRUE(m_mem.read(kTimeInfo, after).ok());
    EXPECT_EQ(after, before);
}

TEST_F(SoftPvclock, StructuresOutsideRamAreIgnored)
{
    std::vector<uint8_t> tail(16, 0x55);
    ASSERT_TRUE(m_mem.write(kRam - 16, tail).ok());
    // Straddling the end of RAM, beyond it, in the MMIO hole: never written, never a crash.
    for (uint64_t gpa : { kRam - 8, kRam, uint64_t { 0xfee00000 }, uint64_t { 0xfffffffffffff000 } }) {
        write_msr(c, msr::kKvmSystemTimeNew, gpa | 1);
        EXPECT_EQ(read_msr(c, msr::kKvmSystemTimeNew), gpa | 1);
        write_msr(c, msr::kKvmWallClockNew, gpa);
        EXPECT_EQ(read_msr(c, msr::kKvmWallClockNew), gpa);
    }
    std::vector<uint8_t> after(16);
    ASSERT_TRUE(m_mem.read(kRam - 16, after).ok());
    EXPECT_EQ(after, tail);
}

TEST_F(SoftPvclock, LegacyMsrsAreTheSameRegisters)
{
    write_msr(c, msr::kKvmSystemTime, kTimeInfo | 1);
    EXPECT_EQ(read_msr(c, msr::kKvmSystemTimeNew), kTimeInfo | 1);
    EXPECT_EQ(time_info().flags, kPvclockTscStableBit);
    write_msr(c, msr::kKvmWallClock, kWallClock);
    EXPECT_EQ(read_msr(c, msr::kKvmWallClockNew), kWallClock);
}

TEST_F(SoftPvclock, WallClockIsHostTimeAtGuestTimeZero)
{
    clock.set_now(10 * kNs);
    timespec ts {};
    ::clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t before = static_cast<uint64_t>(ts.tv_sec) * kNs + static_cast<uint64_t>(ts.tv_nsec);
    write_msr(c, msr::kKvmWallClockNew, kWallClock);
    ::clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t after = static_cast<uint64_t>(ts.tv_sec) * kNs + static_cast<uint64_t>(ts.tv_nsec);
    WallClock w = peek<WallClock>(kWallClock);
    EXPECT_EQ(w.version % 2, 0u);
    EXPECT_NE(w.version, 0u);
    EXPECT_LT(w.nsec, kNs);
    // The guest's time of day: the wall clock plus kvm-clock (10 s).
    uint64_t guest_now = uint64_t { w.sec } * kNs + w.nsec + 10 * kNs;
    EXPECT_GE(guest_now, before);
    EXPECT_LE(guest_now, after);
}

TEST_F(SoftPvclock, WritesAreReportedToTheWriteObserver)
{
    std::vector<std::pair<uint64_t, uint64_t>> writes;
    m_mem.set_write_observer([&](uint64_t gpa, uint64_t len) { writes.emplace_back(gpa, len); });
    write_msr(c, msr::kKvmSystemTimeNew, kTimeInfo | 1);
    write_msr(c, msr::kKvmWallClockNew, kWallClock);
    m_mem.set_write_observer(nullptr);
    std::vector<std::pair<uint64_t, uint64_t>> want { { kTimeInfo, 32 }, { kWallClock, 12 } };
    EXPECT_EQ(writes, want);
}

TEST_F(SoftPvclock, CpuStateCarriesTheMsrs)
{
    write_msr(c, msr::kKvmSystemTimeNew, kTimeInfo | 1);
    write_msr(c, msr::kKvmWallClockNew, kWallClock);
    CpuState s = state_from_cpu(c);
    EXPECT_EQ(s.msrs.kvm_system_time, kTimeInfo | 1);
    EXPECT_EQ(s.msrs.kvm_wall_clock, kWallClock);
    Cpu c2;
    c2.machine = c.machine;
    cpu_from_state(c2, s);
    EXPECT_EQ(read_msr(c2, msr::kKvmSystemTimeNew), kTimeInfo | 1);
    EXPECT_EQ(read_msr(c2, msr::kKvmWallClockNew), kWallClock);
}

} // namespace
} // namespace vessel::soft::systest
