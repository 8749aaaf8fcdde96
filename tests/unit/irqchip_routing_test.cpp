#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "irqchip_test_support.h"

using namespace vessel;
using namespace vessel::irqchip_test;

namespace {

constexpr uint32_t kMasked = 1u << 16;

} // namespace

TEST(Irqchip, RegistersLegacyPortsAndTheIoApic)
{
    ChipHarness h;
    for (uint16_t port : { 0x20, 0x21, 0xa0, 0xa1, 0x4d0, 0x4d1, 0x40, 0x41, 0x42, 0x43, 0x61 })
        EXPECT_NE(h.pio.find(port), nullptr) << port;
    // The i8042, RTC and POST ports in between stay free.
    for (uint16_t port : { 0x22, 0x44, 0x60, 0x64, 0x70, 0x80, 0x9f, 0xa2 })
        EXPECT_EQ(h.pio.find(port), nullptr) << port;
    const Bus::Entry* ioapic = h.mmio.find(layout::kIoapicBase);
    ASSERT_NE(ioapic, nullptr);
    EXPECT_EQ(ioapic->len, layout::kIoapicSize);
    EXPECT_EQ(h.mmio.find(layout::kLapicBase), nullptr); // the engine routes the LAPIC page
    // A second registration collides.
    EXPECT_FALSE(h.chip.register_devices(h.pio, h.mmio).ok());
}

TEST(Irqchip, LapicIdsAreChecked)
{
    ChipHarness h(1);
    RecordingClient extra;
    EXPECT_FALSE(h.chip.add_lapic(0, extra).ok());
    EXPECT_FALSE(h.chip.add_lapic(0xff, extra).ok());
    auto ap = h.chip.add_lapic(3, extra);
    ASSERT_TRUE(ap.ok());
    EXPECT_EQ(h.chip.lapic_by_id(3), ap.value());
    EXPECT_EQ(h.chip.lapic_by_id(2), nullptr);
    EXPECT_FALSE(ap.value()->is_bsp());
}

// The PIT's IRQ0 reaches I/O APIC pin 2 (the MADT's interrupt source override), not pin 0.
TEST(Irqchip, PitIrq0GoesToIoApicPin2)
{
    ChipHarness h;
    h.enable_lapics();
    h.route_pin(0, 0x31, 0);
    h.route_pin(2, 0x30, 0);
    h.outb(0x43, 0x34);
    h.outb(0x40, 0xa9); // 1193: 1 kHz
    h.outb(0x40, 0x04);
    const uint64_t deadline = h.chip.next_deadline_ns();
    ASSERT_NE(deadline, UINT64_MAX);
    h.chip.run_timers(deadline);
    EXPECT_TRUE(h.irr(0, 0x30));
    EXPECT_FALSE(h.irr(0, 0x31));
    EXPECT_FALSE(h.irr(1, 0x30));
    EXPECT_EQ(h.lapic(0).acknowledge(), 0x30);
    h.lapic(0).eoi();
    // Next period, edge again.
    h.chip.run_timers(h.chip.next_deadline_ns());
    EXPECT_TRUE(h.irr(0, 0x30));
}

// Before the I/O APIC is set up, Linux takes PIC interrupts through the BSP's LINT0 (ExtINT).
TEST(Irqchip, PicInterruptsReachTheBspThroughLint0)
{
    ChipHarness h;
    h.init_pic_like_linux();
    h.outb(0x21, 0xee); // IRQ0 and IRQ4
    const int kicks_before = h.clients[0].kicks.load();
    h.chip.set_irq(4, true);
    EXPECT_TRUE(h.lapic(0).has_pending_interrupt()); // even with the APIC software-disabled
    EXPECT_FALSE(h.lapic(1).has_pending_interrupt());
    EXPECT_GT(h.clients[0].kicks.load(), kicks_before);
    EXPECT_EQ(h.lapic(0).acknowledge(), 0x34);
    EXPECT_FALSE(h.lapic(0).has_pending_interrupt());
    h.outb(0x20, 0x20);
    h.chip.set_irq(4, false);

    // The PIT through the PIC: IRQ0 while the I/O APIC pin stays masked.
    h.outb(0x43, 0x34);
    h.outb(0x40, 0x00);
    h.outb(0x40, 0x10);
    h.chip.run_timers(h.chip.next_deadline_ns());
    EXPECT_TRUE(h.lapic(0).has_pending_interrupt());
    EXPECT_EQ(h.lapic(0).pending_vector(), -1); // ExtINT: the vector comes from the INTA
    EXPECT_EQ(h.lapic(0).acknowledge(), 0x30);
    h.outb(0x20, 0x20);

    // Linux masks LINT0 once the I/O APIC takes over: the PIC no longer reaches the CPU.
    h.lapic(0).write_register(Lapic::kRegSvr, 0x1ff);
    h.lapic(0).write_register(Lapic::kRegLvtLint0, kMasked | 0x700);
    h.chip.set_irq(4, true);
    EXPECT_TRUE(h.chip.pic().interrupt_pending());
    EXPECT_FALSE(h.lapic(0).has_pending_interrupt());
}

TEST(Irqchip, LegacyGsiDrivesPicAndIoApic)
{
    ChipHarness h;
    h.enable_lapics();
    h.init_pic_like_linux();
    h.outb(0x21, 0xfb);
    h.outb(0xa1, 0xfe); // IRQ8
    h.route_pin(8, 0x48, 1);
    h.chip.set_irq(8, true);
    EXPECT_TRUE(h.irr(1, 0x48));
    EXPECT_TRUE(h.chip.pic().interrupt_pending());
    EXPECT_EQ(h.lapic(0).acknowledge(), 0x38); // ExtINT path on the BSP
}

TEST(Irqchip, HighGsisOnlyReachTheIoApic)
{
    ChipHarness h;
    h.enable_lapics();
    h.init_pic_like_linux();
    h.outb(0x21, 0x00);
    h.outb(0xa1, 0x00);
    h.route_pin(20, (1u << 15) | 0x90, 0); // level, as virtio-mmio
    h.chip.set_irq(20, true);
    EXPECT_TRUE(h.irr(0, 0x90));
    EXPECT_FALSE(h.chip.pic().interrupt_pending());
    h.chip.set_irq(24, true); // beyond the pins: ignored
    h.chip.set_irq(2, true); // GSI 2 is an I/O APIC pin, never the PIC cascade
    EXPECT_FALSE(h.chip.pic().interrupt_pending());
}

TEST(Irqchip, LevelGsiEoiRoundTrip)
{
    ChipHarness h;
    h.enable_lapics();
    h.route_pin(16, (1u << 15) | 0xa0, 1);
    auto line = h.chip.irq_line(16);
    line.set_level(true);
    EXPECT_EQ(h.lapic(1).acknowledge(), 0xa0);
    line.set_level(false); // the guest's handler acknowledged the device
    h.lapic(1).eoi();
    EXPECT_FALSE(h.lapic(1).has_pending_interrupt());
    line.set_level(true);
    EXPECT_TRUE(h.lapic(1).has_pending_interrupt());
}

// Devices on one thread, the BSP taking PIC (ExtINT) and I/O APIC interrupts on another: no
// deadlock between the PIC -> LAPIC and I/O APIC -> LAPIC -> I/O APIC (EOI) paths, nothing lost
// for good.
TEST(Irqchip, ConcurrentDeviceAndVcpuTraffic)
{
    ChipHarness h;
    h.enable_lapics();
    h.init_pic_like_linux();
    h.outb(0x21, 0xef); // IRQ4 through the PIC
    h.route_pin(16, (1u << 15) | 0xa1, 0);
    std::atomic<bool> done { false };
    std::thread device([&] {
        for (int i = 0; i < 5000; ++i) {
            h.chip.set_irq(4, true);
            h.chip.set_irq(4, false);
            h.chip.set_irq(16, i % 2 == 0);
        }
        h.chip.set_irq(16, false);
        done = true;
    });
    Lapic& bsp = h.lapic(0);
    int extint = 0;
    int level = 0;
    while (!done.load() || bsp.has_pending_interrupt()) {
        if (!bsp.has_pending_interrupt())
            continue;
        const uint8_t vector = bsp.acknowledge();
        if (vector == 0x34) {
            ++extint;
            h.outb(0x20, 0x20);
        } else if (vector == 0xa1) {
            ++level;
            bsp.eoi();
        }
    }
    device.join();
    EXPECT_GT(extint, 0);
    EXPECT_GT(level, 0);
    // The level line ended low: its remote IRR is clear and nothing is left pending.
    EXPECT_FALSE(h.ioapic_read(IoApic::kRegRedirection + 32) & (1u << 14));
    EXPECT_FALSE(bsp.has_pending_interrupt());
}
