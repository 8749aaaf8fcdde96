#include <gtest/gtest.h>

#include <chrono>
#include <vector>

#include "arch/x86/layout.h"
#include "devices/rtc.h"

using namespace vessel;
using namespace std::chrono;
using namespace std::chrono_literals;

namespace {

// 2024-02-29 13:45:30 UTC, a Thursday.
const system_clock::time_point kFixedTime = sys_days { 2024y / February / 29 } + 13h + 45min + 30s;

// An RTC on a hand-driven clock. Not movable: the clock captures `this`.
class RtcHarness {
public:
    explicit RtcHarness(uint64_t ram_size = 512 * layout::MiB)
        : rtc(ram_size, [this] { return now; })
    {
    }
    RtcHarness(const RtcHarness&) = delete;
    RtcHarness& operator=(const RtcHarness&) = delete;

    uint8_t get(uint8_t index)
    {
        rtc.write(Rtc::kIndexOffset, std::span(&index, 1));
        uint8_t value = 0;
        rtc.read(Rtc::kDataOffset, std::span(&value, 1));
        return value;
    }
    void set(uint8_t index, uint8_t value)
    {
        rtc.write(Rtc::kIndexOffset, std::span(&index, 1));
        rtc.write(Rtc::kDataOffset, std::span(&value, 1));
    }
    std::vector<uint8_t> time_registers()
    {
        return { get(Rtc::kSeconds), get(Rtc::kMinutes), get(Rtc::kHours),  get(Rtc::kDayOfWeek),
                 get(Rtc::kDayOfMonth), get(Rtc::kMonth), get(Rtc::kYear), get(Rtc::kCentury) };
    }

    system_clock::time_point now { kFixedTime };
    Rtc rtc;
};

using Bytes = std::vector<uint8_t>;

} // namespace

TEST(Rtc, PowerOnRegisters)
{
    RtcHarness h;
    EXPECT_EQ(h.get(Rtc::kRegA), 0x26);
    EXPECT_EQ(h.get(Rtc::kRegB), 0x02);
    EXPECT_EQ(h.get(Rtc::kRegC), 0x00);
    EXPECT_EQ(h.get(Rtc::kRegD), 0x80);
}

TEST(Rtc, BcdTimeAtFixedClock)
{
    RtcHarness h;
    EXPECT_EQ(h.time_registers(), (Bytes { 0x30, 0x45, 0x13, 5, 0x29, 0x02, 0x24, 0x20 }));
}

TEST(Rtc, BinaryTimeAtFixedClock)
{
    RtcHarness h;
    h.set(Rtc::kRegB, 0x06);
    EXPECT_EQ(h.time_registers(), (Bytes { 30, 45, 13, 5, 29, 2, 24, 20 }));
}

TEST(Rtc, TwelveHourModeSetsPmBit)
{
    RtcHarness h;
    h.set(Rtc::kRegB, 0x00); // BCD, 12-hour
    EXPECT_EQ(h.get(Rtc::kHours), 0x81);
    h.set(Rtc::kRegB, 0x04); // binary, 12-hour
    EXPECT_EQ(h.get(Rtc::kHours), 0x81);
    h.now = sys_days { 2024y / February / 29 } + 30min; // 00:30 is 12 AM
    h.set(Rtc::kRegB, 0x00);
    EXPECT_EQ(h.get(Rtc::kHours), 0x12);
    h.now = sys_days { 2024y / February / 29 } + 12h + 30min; // 12 PM
    EXPECT_EQ(h.get(Rtc::kHours), 0x92);
    h.set(Rtc::kRegB, 0x04);
    EXPECT_EQ(h.get(Rtc::kHours), 12 | 0x80);
}

TEST(Rtc, SettingTheTimeMovesTheOffset)
{
    RtcHarness h;
    h.set(Rtc::kRegB, 0x82); // SET
    EXPECT_EQ(h.get(Rtc::kSeconds), 0x30) << "frozen at the moment SET was raised";
    h.set(Rtc::kSeconds, 0x00);
    h.set(Rtc::kMinutes, 0x00);
    h.set(Rtc::kHours, 0x08);
    h.set(Rtc::kDayOfMonth, 0x15);
    h.set(Rtc::kMonth, 0x01);
    h.set(Rtc::kYear, 0x30);
    h.set(Rtc::kCentury, 0x20);
    h.now += 5s;
    EXPECT_EQ(h.get(Rtc::kSeconds), 0x00) << "no updates while SET";
    EXPECT_EQ(h.get(Rtc::kRegA) & 0x80, 0) << "no update in progress while SET";
    h.set(Rtc::kRegB, 0x02);
    EXPECT_EQ(h.time_registers(), (Bytes { 0x00, 0x00, 0x08, 3, 0x15, 0x01, 0x30, 0x20 }));
    h.now += 61s;
    EXPECT_EQ(h.time_registers(), (Bytes { 0x01, 0x01, 0x08, 3, 0x15, 0x01, 0x30, 0x20 }));
}

TEST(Rtc, SettingTheTimeInTwelveHourBinary)
{
    RtcHarness h;
    h.set(Rtc::kRegB, 0x84); // SET, binary, 12-hour
    h.set(Rtc::kHours, 7 | 0x80);  // 7 PM
    h.set(Rtc::kRegB, 0x04);
    h.set(Rtc::kRegB, 0x02);
    EXPECT_EQ(h.get(Rtc::kHours), 0x19);
    EXPECT_EQ(h.get(Rtc::kMinutes), 0x45);
}

TEST(Rtc, CenturyRollover)
{
    RtcHarness h;
    h.set(Rtc::kRegB, 0x82);
    h.set(Rtc::kSeconds, 0x59);
    h.set(Rtc::kMinutes, 0x59);
    h.set(Rtc::kHours, 0x23);
    h.set(Rtc::kDayOfMonth, 0x31);
    h.set(Rtc::kMonth, 0x12);
    h.set(Rtc::kYear, 0x99);
    h.set(Rtc::kCentury, 0x19);
    h.set(Rtc::kRegB, 0x02);
    EXPECT_EQ(h.time_registers(), (Bytes { 0x59, 0x59, 0x23, 6, 0x31, 0x12, 0x99, 0x19 }));
    h.now += 1s;
    EXPECT_EQ(h.time_registers(), (Bytes { 0x00, 0x00, 0x00, 7, 0x01, 0x01, 0x00, 0x20 }));
}

TEST(Rtc, TimeWriteWithoutSetTakesEffectAtOnce)
{
    RtcHarness h;
    h.set(Rtc::kMinutes, 0x10);
    EXPECT_EQ(h.get(Rtc::kMinutes), 0x10);
    EXPECT_EQ(h.get(Rtc::kSeconds), 0x30);
    h.now += 10s;
    EXPECT_EQ(h.get(Rtc::kSeconds), 0x40);
    EXPECT_EQ(h.get(Rtc::kHours), 0x13);
}

TEST(Rtc, RegisterCClearsOnRead)
{
    RtcHarness h;
    h.set(Rtc::kRegA, 0x20); // no periodic rate
    EXPECT_EQ(h.get(Rtc::kRegC), 0x00);
    h.now += 1s;
    EXPECT_EQ(h.get(Rtc::kRegC), 0x10) << "update-ended flag";
    EXPECT_EQ(h.get(Rtc::kRegC), 0x00) << "cleared by the read";
    h.set(Rtc::kRegB, 0x12); // UIE
    h.now += 1s;
    EXPECT_EQ(h.get(Rtc::kRegC), 0x90) << "IRQF follows an enabled flag";
    h.set(Rtc::kRegB, 0x02);
    h.set(Rtc::kRegA, 0x26); // 1024 Hz
    h.now += 1ms;
    EXPECT_EQ(h.get(Rtc::kRegC), 0x40) << "periodic flag";
    EXPECT_EQ(h.get(Rtc::kRegC), 0x00);
    h.set(Rtc::kRegA, 0x20);
    // Alarm at xx:45:35, any hour.
    h.set(Rtc::kSecondsAlarm, 0x35);
    h.set(Rtc::kMinutesAlarm, 0x45);
    h.set(Rtc::kHoursAlarm, 0xc0);
    h.now = kFixedTime + 3s; // 13:45:33
    EXPECT_EQ(h.get(Rtc::kRegC), 0x10);
    h.now = kFixedTime + 7s; // passes 13:45:35
    EXPECT_EQ(h.get(Rtc::kRegC), 0x30);
    h.set(Rtc::kRegC, 0xff); // read-only
    EXPECT_EQ(h.get(Rtc::kRegC), 0x00);
}

TEST(Rtc, UpdateInProgressBeforeEachSecond)
{
    RtcHarness h;
    h.now = kFixedTime + 999'900us;
    EXPECT_EQ(h.get(Rtc::kRegA), 0xa6);
    h.now = kFixedTime + 500ms;
    EXPECT_EQ(h.get(Rtc::kRegA), 0x26);
    h.set(Rtc::kRegA, 0xff); // UIP is read-only
    EXPECT_EQ(h.get(Rtc::kRegA), 0x7f);
}

TEST(Rtc, IndexPortMasksNmiBitAndIsWriteOnly)
{
    RtcHarness h;
    const uint8_t index = 0x80 | Rtc::kRegD;
    h.rtc.write(Rtc::kIndexOffset, std::span(&index, 1));
    uint8_t value = 0;
    h.rtc.read(Rtc::kDataOffset, std::span(&value, 1));
    EXPECT_EQ(value, 0x80);
    h.rtc.read(Rtc::kIndexOffset, std::span(&value, 1));
    EXPECT_EQ(value, 0xff);
    h.set(Rtc::kRegD, 0x00);
    EXPECT_EQ(h.get(Rtc::kRegD), 0x80);
}

TEST(Rtc, CmosRam)
{
    RtcHarness h;
    h.set(0x40, 0x5a);
    h.set(0x7f, 0xa5);
    EXPECT_EQ(h.get(0x40), 0x5a);
    EXPECT_EQ(h.get(0x7f), 0xa5);
}

TEST(Rtc, MemorySizeBytes)
{
    RtcHarness small(512 * layout::MiB);
    EXPECT_EQ(small.get(0x15), 0x80); // 640 KiB base memory
    EXPECT_EQ(small.get(0x16), 0x02);
    EXPECT_EQ(small.get(0x30), 0x00); // 63 MiB (capped) from 1 MiB
    EXPECT_EQ(small.get(0x31), 0xfc);
    EXPECT_EQ(small.get(0x34), 0x00); // (512 - 16) MiB / 64 KiB = 0x1f00
    EXPECT_EQ(small.get(0x35), 0x1f);
    EXPECT_EQ(small.get(0x5b), 0x00);
    EXPECT_EQ(small.get(0x5c), 0x00);
    EXPECT_EQ(small.get(0x5d), 0x00);

    RtcHarness big(6 * layout::GiB);
    EXPECT_EQ(big.get(0x34), 0x00); // (3 GiB - 16 MiB) / 64 KiB = 0xbf00
    EXPECT_EQ(big.get(0x35), 0xbf);
    EXPECT_EQ(big.get(0x5b), 0x00); // 3 GiB above 4 GiB / 64 KiB = 0xc000
    EXPECT_EQ(big.get(0x5c), 0xc0);
    EXPECT_EQ(big.get(0x5d), 0x00);

    RtcHarness tiny(16 * layout::MiB);
    EXPECT_EQ(tiny.get(0x30), 0x00); // 15 MiB = 0x3c00 KiB
    EXPECT_EQ(tiny.get(0x31), 0x3c);
    EXPECT_EQ(tiny.get(0x34), 0x00);
    EXPECT_EQ(tiny.get(0x35), 0x00);
}

TEST(Rtc, GarbageTimeWritesStayBounded)
{
    RtcHarness h;
    h.set(Rtc::kRegB, 0x86); // SET, binary
    for (uint8_t reg : { Rtc::kSeconds, Rtc::kMinutes, Rtc::kHours, Rtc::kDayOfMonth, Rtc::kMonth, Rtc::kYear,
                         Rtc::kCentury })
        h.set(reg, 0xff);
    h.set(Rtc::kRegB, 0x06);
    const uint8_t century = h.get(Rtc::kCentury);
    EXPECT_GE(century, 19);
    EXPECT_LE(century, 22);
    h.set(Rtc::kRegB, 0x02);
    h.set(Rtc::kYear, 0xff); // with SET clear
    h.get(Rtc::kRegC);
}

namespace {

std::vector<int> exercise(RtcHarness& h)
{
    std::vector<int> seen;
    for (int round = 0; round < 3; ++round) {
        for (int index = 0; index < 128; ++index)
            seen.push_back(h.get(static_cast<uint8_t>(index)));
        h.now += 1500ms;
    }
    h.set(Rtc::kRegB, 0x80);
    h.set(Rtc::kHours, 0x11);
    h.set(Rtc::kRegB, 0x00);
    h.now += 999'800us;
    for (int index = 0; index < 128; ++index)
        seen.push_back(h.get(static_cast<uint8_t>(index)));
    uint8_t index_read = 0;
    h.rtc.read(Rtc::kIndexOffset, std::span(&index_read, 1));
    seen.push_back(index_read);
    return seen;
}

} // namespace

TEST(Rtc, SaveRestoreIdenticalBehaviour)
{
    RtcHarness a;
    a.set(Rtc::kRegB, 0x86);
    a.set(Rtc::kYear, 33);
    a.set(Rtc::kMonth, 7);
    a.set(Rtc::kRegB, 0x16); // binary, UIE
    a.set(Rtc::kRegA, 0x2f);
    a.set(0x50, 0x42);
    a.set(Rtc::kSecondsAlarm, 0xc0);
    a.now += 250ms;
    const uint8_t index = 0x80 | 0x50;
    a.rtc.write(Rtc::kIndexOffset, std::span(&index, 1));

    const Rtc::State state = a.rtc.save();
    RtcHarness b(64 * layout::MiB); // memory sizes come from the state
    b.now = a.now;
    b.rtc.restore(state);
    EXPECT_EQ(b.rtc.save(), state);
    uint8_t value = 0;
    b.rtc.read(Rtc::kDataOffset, std::span(&value, 1));
    EXPECT_EQ(value, 0x42) << "the index survives";

    EXPECT_EQ(exercise(a), exercise(b));
    EXPECT_EQ(a.rtc.save(), b.rtc.save());
}
