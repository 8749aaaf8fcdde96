#include <gtest/gtest.h>

#include <vector>

#include "arch/x86/layout.h"
#include "devices/acpi_pm.h"

using namespace vessel;

namespace {

struct AcpiPmHarness {
    std::vector<StopRequest> stops;
    AcpiPm pm { [this](StopRequest request) { stops.push_back(request); } };

    void out(uint64_t offset, uint8_t value) { pm.write(offset, std::span(&value, 1)); }
    uint8_t in(uint64_t offset)
    {
        uint8_t value = 0;
        pm.read(offset, std::span(&value, 1));
        return value;
    }
};

constexpr uint8_t sleep_value(uint8_t type, bool enable)
{
    return static_cast<uint8_t>((type << AcpiPm::kSlpTypShift) | (enable ? AcpiPm::kSlpEn : 0));
}

} // namespace

TEST(AcpiPm, OffsetsMatchTheLayout)
{
    EXPECT_EQ(layout::kAcpiSleepControlPort + AcpiPm::kSleepControlOffset, layout::kAcpiSleepControlPort);
    EXPECT_EQ(layout::kAcpiSleepControlPort + AcpiPm::kSleepStatusOffset, layout::kAcpiSleepStatusPort);
    EXPECT_EQ(layout::kAcpiSleepControlPort + AcpiPm::kResetOffset, layout::kAcpiResetPort);
}

TEST(AcpiPm, S5PowersOff)
{
    AcpiPmHarness h;
    h.out(AcpiPm::kSleepControlOffset, sleep_value(layout::kAcpiSlpTypS5, true));
    ASSERT_EQ(h.stops.size(), 1u);
    EXPECT_EQ(h.stops[0].reason, StopReason::PowerOff);
}

TEST(AcpiPm, OtherSleepTypesAndMissingSlpEnAreIgnored)
{
    AcpiPmHarness h;
    h.out(AcpiPm::kSleepControlOffset, sleep_value(layout::kAcpiSlpTypS5, false));
    for (uint8_t type = 0; type < 8; ++type) {
        if (type != layout::kAcpiSlpTypS5)
            h.out(AcpiPm::kSleepControlOffset, sleep_value(type, true));
    }
    EXPECT_TRUE(h.stops.empty());
    EXPECT_EQ(h.in(AcpiPm::kSleepControlOffset), 0);
}

TEST(AcpiPm, ResetRegister)
{
    AcpiPmHarness h;
    h.out(AcpiPm::kResetOffset, 0x02);
    h.out(AcpiPm::kResetOffset, 0x00);
    EXPECT_TRUE(h.stops.empty());
    h.out(AcpiPm::kResetOffset, layout::kAcpiResetValue);
    ASSERT_EQ(h.stops.size(), 1u);
    EXPECT_EQ(h.stops[0].reason, StopReason::Reset);
    EXPECT_EQ(h.in(AcpiPm::kResetOffset), 0);
}

TEST(AcpiPm, SleepStatusIsWriteOneToClear)
{
    AcpiPmHarness h;
    EXPECT_EQ(h.in(AcpiPm::kSleepStatusOffset), 0);
    h.pm.restore(AcpiPm::State { AcpiPm::kWakSts });
    EXPECT_EQ(h.in(AcpiPm::kSleepStatusOffset), AcpiPm::kWakSts);
    h.out(AcpiPm::kSleepStatusOffset, 0x7f); // writing 0 to WAK_STS leaves it
    EXPECT_EQ(h.in(AcpiPm::kSleepStatusOffset), AcpiPm::kWakSts);
    h.out(AcpiPm::kSleepStatusOffset, AcpiPm::kWakSts);
    EXPECT_EQ(h.in(AcpiPm::kSleepStatusOffset), 0);
    h.out(AcpiPm::kSleepStatusOffset, 0xff); // writing 1 to a clear bit does not set it
    EXPECT_EQ(h.in(AcpiPm::kSleepStatusOffset), 0);
}

TEST(AcpiPm, WideAccessCoversConsecutiveRegisters)
{
    AcpiPmHarness h;
    h.pm.restore(AcpiPm::State { AcpiPm::kWakSts });
    uint8_t data[4] = {};
    h.pm.read(0, data);
    EXPECT_EQ(data[0], 0);
    EXPECT_EQ(data[1], AcpiPm::kWakSts);
    EXPECT_EQ(data[3], 0xff);
    const uint8_t reset_and_status[2] = { AcpiPm::kWakSts, layout::kAcpiResetValue };
    h.pm.write(1, reset_and_status);
    EXPECT_EQ(h.in(AcpiPm::kSleepStatusOffset), 0);
    ASSERT_EQ(h.stops.size(), 1u);
    EXPECT_EQ(h.stops[0].reason, StopReason::Reset);
}

TEST(AcpiPm, SaveRestoreIdenticalBehaviour)
{
    AcpiPmHarness a;
    a.pm.restore(AcpiPm::State { AcpiPm::kWakSts });
    AcpiPmHarness b;
    b.pm.restore(a.pm.save());
    EXPECT_EQ(a.pm.save(), b.pm.save());
    for (AcpiPmHarness* h : { &a, &b }) {
        h->out(AcpiPm::kSleepControlOffset, sleep_value(3, true));
        h->out(AcpiPm::kSleepStatusOffset, 0x01);
        h->out(AcpiPm::kSleepControlOffset, sleep_value(layout::kAcpiSlpTypS5, true));
    }
    EXPECT_EQ(a.in(AcpiPm::kSleepStatusOffset), b.in(AcpiPm::kSleepStatusOffset));
    ASSERT_EQ(a.stops.size(), b.stops.size());
    for (size_t i = 0; i < a.stops.size(); ++i) {
        EXPECT_EQ(a.stops[i].reason, b.stops[i].reason);
        EXPECT_EQ(a.stops[i].exit_status, b.stops[i].exit_status);
    }
    EXPECT_EQ(a.pm.save(), b.pm.save());
}
