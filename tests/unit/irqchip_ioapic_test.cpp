#include <gtest/gtest.h>

#include "devices/irqchip/ioapic.h"
#include "irqchip_test_support.h"

using namespace vessel;
using namespace vessel::irqchip_test;

namespace {

constexpr uint32_t kLevel = 1u << 15;
constexpr uint32_t kMasked = 1u << 16;
constexpr uint32_t kLogical = 1u << 11;
constexpr uint32_t kRemoteIrr = 1u << 14;
constexpr uint32_t kLowestPriority = 1u << 8;
constexpr uint32_t kNmi = 4u << 8;

uint8_t redirection_low(unsigned pin)
{
    return static_cast<uint8_t>(IoApic::kRegRedirection + 2 * pin);
}

} // namespace

TEST(IoApic, IdentificationRegisters)
{
    ChipHarness h;
    EXPECT_EQ(h.ioapic_read(IoApic::kRegVersion), 0x00170020u); // 24 entries, version 0x20
    EXPECT_EQ(h.ioapic_read(IoApic::kRegId), 0u);
    h.ioapic_write(IoApic::kRegId, 0x02000000);
    EXPECT_EQ(h.ioapic_read(IoApic::kRegId), 0x02000000u);
    EXPECT_EQ(h.ioapic_read(IoApic::kRegArbitration), 0x02000000u);
    h.ioapic_write(IoApic::kRegVersion, 0);
    EXPECT_EQ(h.ioapic_read(IoApic::kRegVersion), 0x00170020u);
    // IOREGSEL reads back.
    h.mmio_write32(layout::kIoapicBase, 0x12);
    EXPECT_EQ(h.mmio_read32(layout::kIoapicBase), 0x12u);
}

TEST(IoApic, EntriesStartMaskedAndKeepOnlyWritableBits)
{
    ChipHarness h;
    for (unsigned pin = 0; pin < IoApic::kPins; ++pin)
        EXPECT_EQ(h.ioapic_read(redirection_low(pin)), kMasked) << pin;
    h.ioapic_write(redirection_low(5), 0xffffffff);
    EXPECT_EQ(h.ioapic_read(redirection_low(5)), 0x0001afffu); // no delivery status / remote IRR
    h.ioapic_write(redirection_low(5) + 1, 0xffffffff);
    EXPECT_EQ(h.ioapic_read(redirection_low(5) + 1), 0xff000000u);
}

TEST(IoApic, EdgeDeliveryToPhysicalDestination)
{
    ChipHarness h;
    h.enable_lapics();
    h.route_pin(4, 0x41, 1);
    h.chip.ioapic().set_irq(4, true);
    EXPECT_TRUE(h.irr(1, 0x41));
    EXPECT_FALSE(h.irr(0, 0x41));
    EXPECT_FALSE(h.tmr(1, 0x41));
    EXPECT_TRUE(h.lapic(1).has_pending_interrupt());
    EXPECT_GE(h.clients[1].kicks.load(), 1);
    // Holding the line high is not another edge.
    EXPECT_EQ(h.lapic(1).acknowledge(), 0x41);
    h.lapic(1).eoi();
    h.chip.ioapic().set_irq(4, true);
    EXPECT_FALSE(h.irr(1, 0x41));
    h.chip.ioapic().set_irq(4, false);
    h.chip.ioapic().set_irq(4, true);
    EXPECT_TRUE(h.irr(1, 0x41));
}

TEST(IoApic, EdgesOnAMaskedPinAreLost)
{
    ChipHarness h;
    h.enable_lapics();
    h.route_pin(3, kMasked | 0x42, 0);
    h.chip.ioapic().set_irq(3, true);
    h.chip.ioapic().set_irq(3, false);
    h.route_pin(3, 0x42, 0);
    EXPECT_FALSE(h.irr(0, 0x42));
}

TEST(IoApic, LevelTriggeredWithRemoteIrrAndEoi)
{
    ChipHarness h;
    h.enable_lapics();
    h.route_pin(10, kLevel | 0x50, 0);
    h.chip.ioapic().set_irq(10, true);
    EXPECT_TRUE(h.irr(0, 0x50));
    EXPECT_TRUE(h.tmr(0, 0x50));
    EXPECT_TRUE(h.ioapic_read(redirection_low(10)) & kRemoteIrr);

    // The vCPU takes it; while remote IRR is set nothing more is sent.
    EXPECT_EQ(h.lapic(0).acknowledge(), 0x50);
    h.chip.ioapic().set_irq(10, true);
    EXPECT_FALSE(h.irr(0, 0x50));

    // EOI with the line still asserted: remote IRR clears and the interrupt comes again.
    h.lapic(0).eoi();
    EXPECT_TRUE(h.irr(0, 0x50));
    EXPECT_TRUE(h.ioapic_read(redirection_low(10)) & kRemoteIrr);

    // The device deasserts before the second EOI: nothing more.
    EXPECT_EQ(h.lapic(0).acknowledge(), 0x50);
    h.chip.ioapic().set_irq(10, false);
    h.lapic(0).write_register(Lapic::kRegEoi, 0);
    EXPECT_FALSE(h.irr(0, 0x50));
    EXPECT_FALSE(h.ioapic_read(redirection_low(10)) & kRemoteIrr);
}

TEST(IoApic, EoiRegisterClearsRemoteIrr)
{
    ChipHarness h;
    h.enable_lapics();
    h.route_pin(11, kLevel | 0x51, 0);
    h.chip.ioapic().set_irq(11, true);
    h.chip.ioapic().set_irq(11, false);
    EXPECT_TRUE(h.ioapic_read(redirection_low(11)) & kRemoteIrr);
    h.mmio_write32(layout::kIoapicBase + IoApic::kEoi, 0x52); // another vector: no effect
    EXPECT_TRUE(h.ioapic_read(redirection_low(11)) & kRemoteIrr);
    h.mmio_write32(layout::kIoapicBase + IoApic::kEoi, 0x51);
    EXPECT_FALSE(h.ioapic_read(redirection_low(11)) & kRemoteIrr);
}

TEST(IoApic, SwitchingToEdgeClearsAStuckRemoteIrr)
{
    ChipHarness h;
    h.enable_lapics();
    h.route_pin(12, kLevel | 0x53, 0);
    h.chip.ioapic().set_irq(12, true);
    h.chip.ioapic().set_irq(12, false);
    h.route_pin(12, 0x53, 0); // edge
    h.route_pin(12, kLevel | 0x53, 0); // and back, as Linux's old-IOAPIC EOI does
    EXPECT_FALSE(h.ioapic_read(redirection_low(12)) & kRemoteIrr);
}

TEST(IoApic, UnmaskingAnAssertedLevelPinDelivers)
{
    ChipHarness h;
    h.enable_lapics();
    h.route_pin(9, kMasked | kLevel | 0x60, 0);
    h.chip.ioapic().set_irq(9, true);
    EXPECT_FALSE(h.irr(0, 0x60));
    h.route_pin(9, kLevel | 0x60, 0);
    EXPECT_TRUE(h.irr(0, 0x60));
}

TEST(IoApic, LogicalFlatDestinations)
{
    ChipHarness h(3);
    h.enable_lapics();
    for (size_t i = 0; i < 3; ++i)
        h.lapic(i).write_register(Lapic::kRegLdr, (1u << i) << 24);
    h.route_pin(5, kLogical | 0x61, 0x02);
    h.chip.ioapic().set_irq(5, true);
    EXPECT_FALSE(h.irr(0, 0x61));
    EXPECT_TRUE(h.irr(1, 0x61));
    EXPECT_FALSE(h.irr(2, 0x61));
    h.route_pin(6, kLogical | 0x62, 0x05);
    h.chip.ioapic().set_irq(6, true);
    EXPECT_TRUE(h.irr(0, 0x62));
    EXPECT_FALSE(h.irr(1, 0x62));
    EXPECT_TRUE(h.irr(2, 0x62));
}

TEST(IoApic, LowestPriorityPicksTheLowestTpr)
{
    ChipHarness h(3);
    h.enable_lapics();
    for (size_t i = 0; i < 3; ++i)
        h.lapic(i).write_register(Lapic::kRegLdr, (1u << i) << 24);
    h.lapic(0).set_tpr(3);
    h.lapic(1).set_tpr(1);
    h.lapic(2).set_tpr(2);
    h.route_pin(7, kLogical | kLowestPriority | 0x63, 0x07);
    h.chip.ioapic().set_irq(7, true);
    EXPECT_FALSE(h.irr(0, 0x63));
    EXPECT_TRUE(h.irr(1, 0x63));
    EXPECT_FALSE(h.irr(2, 0x63));
}

TEST(IoApic, NmiDelivery)
{
    ChipHarness h;
    h.route_pin(13, kNmi, 1);
    h.chip.ioapic().set_irq(13, true);
    EXPECT_TRUE(h.lapic(1).has_pending_nmi());
    EXPECT_FALSE(h.lapic(0).has_pending_nmi());
}
