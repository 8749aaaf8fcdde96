// Snapshots of the soft irqchip's models (arch/x86/machine_state.h): a state saved from one model
// and restored into a fresh one saves back equal, and the two models then behave identically —
// PIT counts, outputs and IRQ0 deadlines continue, the PICs acknowledge the same vectors in the
// same order, the I/O APIC re-delivers after EOI as the original would.
#include <gtest/gtest.h>

#include <algorithm>
#include <vector>

#include "devices/irqchip/clock.h"
#include "devices/irqchip/pit.h"
#include "irqchip_test_support.h"

namespace vessel::irqchip_test {
namespace {

constexpr uint64_t kPitHz = Pit::kFrequencyHz;

uint64_t tick_ns(uint64_t ticks)
{
    return (ticks * 1'000'000'000 + kPitHz - 1) / kPitHz;
}

// A PIT on a manual clock with its IRQ0 edges counted. Not movable: the line captures `this`.
class PitRig {
public:
    PitRig()
        : pit(clock, IrqLine(0, [this](uint32_t, bool level) {
            if (level)
                ++edges;
        }))
    {
    }
    PitRig(const PitRig&) = delete;
    PitRig& operator=(const PitRig&) = delete;

    void out(uint16_t port, uint8_t value)
    {
        if (port == Pit::kSpeakerPort)
            pit.write_speaker_port(value);
        else
            pit.write(port - Pit::kPort, std::span(&value, 1));
    }
    uint8_t in(uint16_t port)
    {
        if (port == Pit::kSpeakerPort)
            return pit.read_speaker_port();
        uint8_t value = 0;
        pit.read(port - Pit::kPort, std::span(&value, 1));
        return value;
    }

    VirtualClock clock { VirtualClock::kDefaultTscKhz, VirtualClock::Source::Manual };
    int edges { 0 };
    Pit pit;
};

// Reads every observable of both PITs at the same guest time, in the same order (reads have side
// effects: latches and the LSB/MSB flip-flops), and compares them.
void expect_same_pit_reads(PitRig& a, PitRig& b, uint64_t now)
{
    a.clock.set_now(now);
    b.clock.set_now(now);
    EXPECT_EQ(a.pit.next_deadline_ns(), b.pit.next_deadline_ns()) << "at " << now;
    a.pit.run_timers(now);
    b.pit.run_timers(now);
    EXPECT_EQ(a.edges, b.edges) << "at " << now;
    for (uint16_t port : { 0x40, 0x40, 0x41, 0x41, 0x42, 0x42 })
        EXPECT_EQ(a.in(port), b.in(port)) << "port " << port << " at " << now;
    const uint8_t port61_a = a.in(Pit::kSpeakerPort), port61_b = b.in(Pit::kSpeakerPort);
    EXPECT_EQ(port61_a, port61_b) << "at " << now;
    // Read-back of every channel's status.
    a.out(0x43, 0xee);
    b.out(0x43, 0xee);
    for (uint16_t port : { 0x40, 0x41, 0x42 })
        EXPECT_EQ(a.in(port), b.in(port)) << "status of port " << port << " at " << now;
}

TEST(IrqchipSnapshot, PitRoundTripContinuesCounting)
{
    PitRig a;
    a.out(0x43, 0x34); // channel 0: mode 2, LSB then MSB (Linux's periodic tick)
    a.out(0x40, 1193 & 0xff);
    a.out(0x40, 1193 >> 8);
    a.out(0x43, 0x76); // channel 1: mode 3, LSB then MSB
    a.out(0x41, 0x10);
    a.out(0x41, 0x27);
    a.out(Pit::kSpeakerPort, 0x03); // channel 2's gate high, speaker data on
    a.out(0x43, 0xb0); // channel 2: mode 0, LSB then MSB
    a.out(0x42, 0x00);
    a.out(0x42, 0x50);

    a.clock.set_now(tick_ns(2500) + 7);
    a.pit.run_timers(a.clock.now_ns());
    EXPECT_EQ(a.edges, 1); // the tick at 1193 (2386 is dropped with it: one edge per call)
    a.out(0x43, 0x40); // latch channel 1's count, read half of it
    (void)a.in(0x41);
    a.out(0x42, 0x34); // channel 2: the LSB of a new count, the MSB still to come
    a.out(Pit::kSpeakerPort, 0x02); // channel 2's gate low: its count stops

    const PitState saved = a.pit.save();
    EXPECT_EQ(saved.channels[0].count, 1193u);
    EXPECT_EQ(saved.channels[0].mode, 2);
    EXPECT_EQ(saved.channels[1].count_latched, 2); // MSB of the latch next (KVM's RW_STATE_MSB)
    EXPECT_EQ(saved.channels[2].write_state, 4); // WORD1: the MSB comes next
    EXPECT_EQ(saved.channels[2].write_latch, 0x34);
    EXPECT_EQ(saved.channels[2].gate, 0);
    EXPECT_EQ(saved.speaker_data_on, 1);

    PitRig b;
    b.clock.set_now(a.clock.now_ns());
    b.pit.restore(saved);
    EXPECT_EQ(b.pit.save(), saved);
    b.edges = a.edges;

    for (uint64_t t : { tick_ns(2500) + 8, tick_ns(3579), tick_ns(3600), tick_ns(5000) + 1 })
        expect_same_pit_reads(a, b, t);
    // Channel 2's count resumes where it stopped when the gate rises, in both.
    a.out(Pit::kSpeakerPort, 0x03);
    b.out(Pit::kSpeakerPort, 0x03);
    a.out(0x42, 0x12); // the MSB: count 0x1234 loads
    b.out(0x42, 0x12);
    for (uint64_t t : { tick_ns(6000), tick_ns(6000 + 0x1234), tick_ns(12000), tick_ns(40000) + 3 })
        expect_same_pit_reads(a, b, t);
    EXPECT_GT(b.edges, 5);
}

TEST(IrqchipSnapshot, PitUnloadedAndGateTriggeredChannels)
{
    PitRig a;
    a.out(0x43, 0x30); // channel 0: mode 0, control word only (no count yet)
    a.out(Pit::kSpeakerPort, 0x00);
    a.out(0x43, 0xb2); // channel 2: mode 1 (hardware-retriggerable one-shot)
    a.out(0x42, 0x00);
    a.out(0x42, 0x10); // count 0x1000, waits for a gate edge
    a.out(0x43, 0x7a); // channel 1: mode 5, count 300
    a.out(0x41, 300 & 0xff);
    a.out(0x41, 300 >> 8);
    a.clock.set_now(tick_ns(100));

    const PitState before_trigger = a.pit.save();
    EXPECT_EQ(before_trigger.channels[0].count, 0u); // nothing written since the control word
    EXPECT_TRUE(before_trigger.channels[0].status & 0x40); // null count
    EXPECT_TRUE(before_trigger.channels[2].status & 0x40); // mode 1: not in the counter before the trigger
    PitRig b;
    b.clock.set_now(tick_ns(100));
    b.pit.restore(before_trigger);
    EXPECT_EQ(b.pit.save(), before_trigger);
    expect_same_pit_reads(a, b, tick_ns(150));

    // The trigger: channel 2 counts from here; a restore after it counts on.
    a.out(Pit::kSpeakerPort, 0x01);
    b.out(Pit::kSpeakerPort, 0x01);
    a.clock.set_now(tick_ns(900));
    const PitState triggered = a.pit.save();
    EXPECT_FALSE(triggered.channels[2].status & 0x40);
    PitRig c;
    c.clock.set_now(tick_ns(900));
    c.pit.restore(triggered);
    EXPECT_EQ(c.pit.save(), triggered);
    for (uint64_t t : { tick_ns(901), tick_ns(150 + 0x1000), tick_ns(5000) })
        expect_same_pit_reads(a, c, t);
}

TEST(IrqchipSnapshot, PicRoundTripAcknowledgesTheSame)
{
    ChipHarness a(1), b(1);
    a.init_pic_like_linux();
    a.outb(0x4d1, 0x0e); // ELCR: IRQ 9-11 level-triggered
    a.outb(0x21, 0x00); // unmask everything
    a.outb(0xa1, 0x00);
    a.chip.set_irq(1, true); // edge, latched
    a.chip.set_irq(4, true);
    a.chip.set_irq(4, false); // an edge that dropped stays latched
    a.chip.set_irq(10, true); // level
    a.chip.set_irq(12, true);
    EXPECT_EQ(a.chip.pic().acknowledge(), 0x31); // IRQ1 in service
    a.outb(0x20, 0x0b); // OCW3: read ISR
    a.outb(0xa0, 0xc4); // OCW2: set priority, slave IR4 (IRQ 12) lowest

    const auto saved = a.chip.pic().save();
    EXPECT_EQ(saved[0].irq_base, 0x30);
    EXPECT_EQ(saved[1].irq_base, 0x38);
    EXPECT_EQ(saved[0].isr, 0x02);
    EXPECT_EQ(saved[1].elcr, 0x0e & 0xde);
    EXPECT_EQ(saved[0].read_reg_select, 1);
    EXPECT_EQ(saved[1].priority_add, 5);
    b.chip.pic().restore(saved);
    EXPECT_EQ(b.chip.pic().save(), saved);
    EXPECT_EQ(b.chip.pic().interrupt_pending(), a.chip.pic().interrupt_pending());

    EXPECT_EQ(a.inb(0x20), b.inb(0x20)); // ISR
    EXPECT_EQ(a.inb(0xa0), b.inb(0xa0)); // IRR
    std::vector<int> va, vb;
    for (int i = 0; i < 6; ++i) {
        va.push_back(a.chip.pic().acknowledge());
        vb.push_back(b.chip.pic().acknowledge());
        for (auto* h : { &a, &b }) {
            h->outb(0xa0, 0x20); // non-specific EOI to both chips
            h->outb(0x20, 0x20);
        }
        if (i == 1) {
            a.chip.set_irq(10, false);
            b.chip.set_irq(10, false);
        }
    }
    EXPECT_EQ(va, vb);
    EXPECT_NE(std::count(va.begin(), va.end(), 0x3a), 0); // the level IRQ 10 while asserted
}

TEST(IrqchipSnapshot, PicOutputReachesTheRestoredBspLint0)
{
    ChipHarness a(1), b(1);
    a.init_pic_like_linux();
    a.outb(0x21, 0xfe); // only the timer
    a.chip.set_irq(0, true);
    ASSERT_TRUE(a.chip.pic().interrupt_pending());
    ASSERT_TRUE(a.lapic(0).has_pending_interrupt()); // ExtINT through LINT0
    EXPECT_FALSE(b.lapic(0).has_pending_interrupt());
    b.chip.pic().restore(a.chip.pic().save());
    EXPECT_TRUE(b.lapic(0).has_pending_interrupt());
    EXPECT_EQ(b.lapic(0).acknowledge(), 0x30);
}

TEST(IrqchipSnapshot, IoapicRoundTripKeepsRemoteIrr)
{
    ChipHarness a(2), b(2);
    a.enable_lapics();
    b.enable_lapics();
    a.route_pin(5, 0x00008041, 1); // vector 0x41, level, to APIC 1
    a.route_pin(7, 0x00000042, 0); // vector 0x42, edge, to APIC 0
    a.route_pin(9, 0x00010043, 0); // masked
    a.ioapic_write(IoApic::kRegId, 0x03000000);
    a.chip.set_irq(5, true);
    a.chip.set_irq(9, true);
    ASSERT_TRUE(a.irr(1, 0x41));
    ASSERT_TRUE(a.ioapic_read(IoApic::kRegRedirection + 10) & IoApic::kRteRemoteIrr);
    a.mmio_write32(layout::kIoapicBase + IoApic::kRegSel, IoApic::kRegRedirection + 14);

    const IoapicState saved = a.chip.ioapic().save();
    EXPECT_EQ(saved.id, 0x03000000u);
    EXPECT_EQ(saved.ioregsel, IoApic::kRegRedirection + 14u);
    EXPECT_EQ(saved.irr, (1u << 5) | (1u << 9));
    EXPECT_TRUE(saved.redirection[5] & IoApic::kRteRemoteIrr);
    b.chip.ioapic().restore(saved);
    EXPECT_EQ(b.chip.ioapic().save(), saved);
    EXPECT_FALSE(b.irr(1, 0x41)); // restoring delivers nothing (the LAPIC pages carry IRR)
    for (size_t i = 0; i < 2; ++i) { // the LAPIC pages, as the vCPUs' states restore them
        Lapic::RegisterPage page;
        a.lapic(i).save_regs(page);
        b.lapic(i).restore_regs(page);
    }
    EXPECT_EQ(
        b.mmio_read32(layout::kIoapicBase + IoApic::kWindow), a.mmio_read32(layout::kIoapicBase + IoApic::kWindow));

    // EOI with the line still high: both deliver vector 0x41 again.
    for (auto* h : { &a, &b }) {
        h->lapic(1).acknowledge();
        h->lapic(1).eoi();
    }
    EXPECT_TRUE(a.irr(1, 0x41));
    EXPECT_TRUE(b.irr(1, 0x41));
    // Unmasking the asserted edge pin 9 delivers nothing on either; an edge on pin 7 does.
    for (auto* h : { &a, &b }) {
        h->route_pin(9, 0x00000043, 0);
        h->chip.set_irq(7, true);
    }
    EXPECT_EQ(a.irr(0, 0x43), b.irr(0, 0x43));
    EXPECT_TRUE(a.irr(0, 0x42));
    EXPECT_TRUE(b.irr(0, 0x42));
    EXPECT_EQ(a.chip.ioapic().save(), b.chip.ioapic().save());
}

} // namespace
} // namespace vessel::irqchip_test
