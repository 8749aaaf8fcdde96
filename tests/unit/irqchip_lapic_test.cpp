#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "devices/irqchip/lapic.h"
#include "irqchip_test_support.h"

using namespace vessel;
using namespace vessel::irqchip_test;

namespace {

constexpr uint32_t kIcrLogical = 1u << 11;
constexpr uint32_t kIcrAssert = 1u << 14;
constexpr uint32_t kIcrLevel = 1u << 15;
constexpr uint32_t kIcrNmi = 4u << 8;
constexpr uint32_t kIcrInit = 5u << 8;
constexpr uint32_t kIcrStartup = 6u << 8;
constexpr uint32_t kIcrSelf = 1u << 18;
constexpr uint32_t kIcrAllIncludingSelf = 2u << 18;
constexpr uint32_t kIcrAllExcludingSelf = 3u << 18;

void send_ipi(Lapic& from, uint8_t dest, uint32_t low)
{
    from.write_register(Lapic::kRegIcrHigh, static_cast<uint32_t>(dest) << 24);
    from.write_register(Lapic::kRegIcrLow, low);
}

ApicMessage fixed(uint8_t vector, bool level = false)
{
    ApicMessage m;
    m.vector = vector;
    m.trigger_level = level;
    return m;
}

} // namespace

TEST(Lapic, PowerOnValues)
{
    ChipHarness h;
    Lapic& bsp = h.lapic(0);
    Lapic& ap = h.lapic(1);
    EXPECT_EQ(bsp.read_register(Lapic::kRegId), 0u);
    EXPECT_EQ(ap.read_register(Lapic::kRegId), 0x01000000u);
    EXPECT_EQ(bsp.read_register(Lapic::kRegVersion), 0x00050014u);
    EXPECT_EQ(bsp.read_register(Lapic::kRegDfr), 0xffffffffu);
    EXPECT_EQ(bsp.read_register(Lapic::kRegSvr), 0xffu);
    EXPECT_EQ(bsp.read_register(Lapic::kRegLvtTimer), 0x10000u);
    EXPECT_EQ(bsp.read_register(Lapic::kRegLvtError), 0x10000u);
    // The PC-BIOS wiring the Irqchip sets up.
    EXPECT_EQ(bsp.read_register(Lapic::kRegLvtLint0), 0x700u);
    EXPECT_EQ(bsp.read_register(Lapic::kRegLvtLint1), 0x400u);
    uint64_t base = 0;
    EXPECT_TRUE(bsp.read_msr(Lapic::kMsrApicBase, base));
    EXPECT_EQ(base, 0xfee00900u);
    EXPECT_TRUE(ap.read_msr(Lapic::kMsrApicBase, base));
    EXPECT_EQ(base, 0xfee00800u);
    EXPECT_FALSE(bsp.read_msr(0x10, base));
    EXPECT_FALSE(bsp.has_pending_event());
}

TEST(Lapic, RegistersReadBackWhatWasWritten)
{
    ChipHarness h;
    Lapic& l = h.lapic(1);
    l.write_register(Lapic::kRegSvr, 0x1ff);
    EXPECT_EQ(l.read_register(Lapic::kRegSvr), 0x1ffu);
    l.write_register(Lapic::kRegTpr, 0x47);
    EXPECT_EQ(l.read_register(Lapic::kRegTpr), 0x47u);
    EXPECT_EQ(l.get_tpr(), 4);
    l.write_register(Lapic::kRegLdr, 0x12345678);
    EXPECT_EQ(l.read_register(Lapic::kRegLdr), 0x12000000u);
    l.write_register(Lapic::kRegDfr, 0x00000000);
    EXPECT_EQ(l.read_register(Lapic::kRegDfr), 0x0fffffffu);
    l.write_register(Lapic::kRegIcrHigh, 0xffffffff);
    EXPECT_EQ(l.read_register(Lapic::kRegIcrHigh), 0xff000000u);
    l.write_register(Lapic::kRegLvtTimer, 0xffffffff);
    EXPECT_EQ(l.read_register(Lapic::kRegLvtTimer), 0x000700ffu);
    l.write_register(Lapic::kRegLvtLint0, 0xffffffff);
    EXPECT_EQ(l.read_register(Lapic::kRegLvtLint0), 0x0001a7ffu);
    l.write_register(Lapic::kRegLvtError, 0x000000fe);
    EXPECT_EQ(l.read_register(Lapic::kRegLvtError), 0xfeu);
    l.write_register(Lapic::kRegTimerDivide, 0xffffffff);
    EXPECT_EQ(l.read_register(Lapic::kRegTimerDivide), 0xbu);
    // Read-only registers ignore writes.
    l.write_register(Lapic::kRegVersion, 0);
    EXPECT_EQ(l.read_register(Lapic::kRegVersion), 0x00050014u);
    // Byte-wide MMIO reads see the register's bytes.
    uint8_t byte = 0;
    l.mmio_read(Lapic::kRegId + 3, std::span(&byte, 1));
    EXPECT_EQ(byte, 1);
    uint32_t value = 0x30;
    l.mmio_write(Lapic::kRegTpr, std::span(reinterpret_cast<const uint8_t*>(&value), 4));
    EXPECT_EQ(l.get_tpr(), 3);
    l.mmio_write(Lapic::kRegTpr, std::span(reinterpret_cast<const uint8_t*>(&value), 2)); // ignored
}

TEST(Lapic, SoftwareDisabledKeepsLvtsMasked)
{
    ChipHarness h;
    Lapic& l = h.lapic(1);
    l.write_register(Lapic::kRegLvtTimer, 0x20);
    EXPECT_EQ(l.read_register(Lapic::kRegLvtTimer), 0x10020u);
    l.write_register(Lapic::kRegSvr, 0x1ff);
    l.write_register(Lapic::kRegLvtTimer, 0x20);
    EXPECT_EQ(l.read_register(Lapic::kRegLvtTimer), 0x20u);
    l.write_register(Lapic::kRegSvr, 0xff); // disabling masks every LVT
    EXPECT_EQ(l.read_register(Lapic::kRegLvtTimer), 0x10020u);
    // A software-disabled APIC drops fixed interrupts but still takes NMIs.
    l.accept(fixed(0x40));
    EXPECT_FALSE(h.irr(1, 0x40));
    ApicMessage nmi;
    nmi.delivery_mode = ApicDeliveryMode::Nmi;
    l.accept(nmi);
    EXPECT_TRUE(l.has_pending_nmi());
    EXPECT_TRUE(l.acknowledge_nmi());
    EXPECT_FALSE(l.has_pending_nmi());
    EXPECT_FALSE(l.acknowledge_nmi());
}

TEST(Lapic, TaskPriorityGatesDelivery)
{
    ChipHarness h;
    h.enable_lapics();
    Lapic& l = h.lapic(0);
    l.write_register(Lapic::kRegTpr, 0x50);
    l.accept(fixed(0x51));
    EXPECT_TRUE(h.irr(0, 0x51));
    EXPECT_FALSE(l.has_pending_interrupt()); // same priority class as the TPR
    EXPECT_EQ(l.pending_vector(), -1);
    EXPECT_EQ(l.acknowledge(), 0xff); // an INTA now sees the spurious vector
    EXPECT_TRUE(h.irr(0, 0x51));
    l.set_tpr(4); // CR8 = 4 -> TPR 0x40
    EXPECT_EQ(l.read_register(Lapic::kRegTpr), 0x40u);
    EXPECT_TRUE(l.has_pending_interrupt());
    EXPECT_EQ(l.pending_vector(), 0x51);
    l.set_tpr(6);
    EXPECT_FALSE(l.has_pending_interrupt());
    EXPECT_EQ(l.read_register(Lapic::kRegPpr), 0x60u);
}

TEST(Lapic, NestedVectorsAcknowledgeAndEoiInPriorityOrder)
{
    ChipHarness h;
    h.enable_lapics();
    Lapic& l = h.lapic(0);
    l.accept(fixed(0x40));
    EXPECT_EQ(l.acknowledge(), 0x40);
    EXPECT_TRUE(h.isr(0, 0x40));
    EXPECT_EQ(l.read_register(Lapic::kRegPpr), 0x40u);
    l.accept(fixed(0x45)); // same class as the one in service: waits
    EXPECT_FALSE(l.has_pending_interrupt());
    l.accept(fixed(0x60)); // higher class: nests
    EXPECT_TRUE(l.has_pending_interrupt());
    EXPECT_EQ(l.pending_vector(), 0x60);
    EXPECT_EQ(l.acknowledge(), 0x60);
    EXPECT_EQ(l.read_register(Lapic::kRegPpr), 0x60u);
    EXPECT_FALSE(l.has_pending_interrupt());
    l.eoi(); // ends 0x60, the highest in service
    EXPECT_FALSE(h.isr(0, 0x60));
    EXPECT_TRUE(h.isr(0, 0x40));
    EXPECT_FALSE(l.has_pending_interrupt());
    l.eoi();
    EXPECT_EQ(l.read_register(Lapic::kRegPpr), 0u);
    EXPECT_TRUE(l.has_pending_interrupt());
    EXPECT_EQ(l.acknowledge(), 0x45);
    l.eoi();
    EXPECT_FALSE(l.has_pending_event());
    l.eoi(); // nothing in service: harmless
}

TEST(Lapic, ProcessorPriorityAndArbitrationPriority)
{
    ChipHarness h;
    h.enable_lapics();
    Lapic& l = h.lapic(0);
    l.write_register(Lapic::kRegTpr, 0x35);
    EXPECT_EQ(l.read_register(Lapic::kRegPpr), 0x35u);
    l.accept(fixed(0x80));
    EXPECT_EQ(l.read_register(Lapic::kRegApr), 0x80u);
    EXPECT_EQ(l.acknowledge(), 0x80);
    EXPECT_EQ(l.read_register(Lapic::kRegPpr), 0x80u);
}

TEST(Lapic, OneShotTimer)
{
    ChipHarness h;
    h.enable_lapics();
    Lapic& l = h.lapic(0);
    l.write_register(Lapic::kRegTimerDivide, 0xb); // divide by 1: one tick per ns at 1 GHz
    l.write_register(Lapic::kRegLvtTimer, 0x30);
    h.set_now(10'000);
    l.write_register(Lapic::kRegTimerInitial, 1000);
    EXPECT_EQ(l.next_deadline_ns(), 11'000u);
    h.set_now(10'400);
    EXPECT_EQ(l.read_register(Lapic::kRegTimerCurrent), 600u);
    l.run_timers(10'999);
    EXPECT_FALSE(h.irr(0, 0x30));
    l.run_timers(11'000);
    EXPECT_TRUE(h.irr(0, 0x30));
    EXPECT_TRUE(l.has_pending_interrupt());
    EXPECT_EQ(l.next_deadline_ns(), UINT64_MAX);
    h.set_now(11'500);
    EXPECT_EQ(l.read_register(Lapic::kRegTimerCurrent), 0u);
    EXPECT_EQ(l.read_register(Lapic::kRegTimerInitial), 1000u);
    EXPECT_GE(h.clients[0].kicks.load(), 1);
    // Writing zero stops a running timer.
    l.write_register(Lapic::kRegTimerInitial, 500);
    EXPECT_EQ(l.next_deadline_ns(), 12'000u);
    l.write_register(Lapic::kRegTimerInitial, 0);
    EXPECT_EQ(l.next_deadline_ns(), UINT64_MAX);
}

TEST(Lapic, TimerDivideConfiguration)
{
    const std::pair<uint32_t, uint64_t> table[]
        = { { 0x0, 2 }, { 0x1, 4 }, { 0x2, 8 }, { 0x3, 16 }, { 0x8, 32 }, { 0x9, 64 }, { 0xa, 128 }, { 0xb, 1 } };
    for (auto [dcr, divisor] : table) {
        ChipHarness h;
        h.enable_lapics();
        Lapic& l = h.lapic(0);
        l.write_register(Lapic::kRegTimerDivide, dcr);
        l.write_register(Lapic::kRegLvtTimer, 0x30);
        l.write_register(Lapic::kRegTimerInitial, 100);
        EXPECT_EQ(l.next_deadline_ns(), 100 * divisor) << dcr;
        h.set_now(50 * divisor);
        EXPECT_EQ(l.read_register(Lapic::kRegTimerCurrent), 50u) << dcr;
    }
}

TEST(Lapic, DivideChangeWhileCountingContinuesFromTheCurrentCount)
{
    ChipHarness h;
    h.enable_lapics();
    Lapic& l = h.lapic(0);
    l.write_register(Lapic::kRegTimerDivide, 0xb);
    l.write_register(Lapic::kRegLvtTimer, 0x30);
    l.write_register(Lapic::kRegTimerInitial, 1000);
    h.set_now(400);
    l.write_register(Lapic::kRegTimerDivide, 0x0); // divide by 2 for the remaining 600 counts
    EXPECT_EQ(l.read_register(Lapic::kRegTimerCurrent), 600u);
    EXPECT_EQ(l.next_deadline_ns(), 400u + 1200u);
}

TEST(Lapic, PeriodicTimer)
{
    ChipHarness h;
    h.enable_lapics();
    Lapic& l = h.lapic(0);
    l.write_register(Lapic::kRegTimerDivide, 0xb);
    l.write_register(Lapic::kRegLvtTimer, Lapic::kLvtTimerPeriodic | 0x31);
    l.write_register(Lapic::kRegTimerInitial, 100);
    l.run_timers(100);
    EXPECT_EQ(l.acknowledge(), 0x31);
    l.eoi();
    EXPECT_EQ(l.next_deadline_ns(), 200u);
    // Far behind: one interrupt, the next deadline is the next period boundary.
    l.run_timers(350);
    EXPECT_TRUE(h.irr(0, 0x31));
    EXPECT_EQ(l.next_deadline_ns(), 400u);
    h.set_now(350);
    EXPECT_EQ(l.read_register(Lapic::kRegTimerCurrent), 50u);
    h.set_now(400);
    EXPECT_EQ(l.read_register(Lapic::kRegTimerCurrent), 100u); // reloaded
}

TEST(Lapic, MaskedTimerCountsButDoesNotInterrupt)
{
    ChipHarness h;
    h.enable_lapics();
    Lapic& l = h.lapic(0);
    l.write_register(Lapic::kRegTimerDivide, 0xb);
    l.write_register(Lapic::kRegLvtTimer, Lapic::kLvtMasked | 0x30);
    l.write_register(Lapic::kRegTimerInitial, 0xffffffff); // Linux's calibration countdown
    h.set_now(1'000'000);
    EXPECT_EQ(l.read_register(Lapic::kRegTimerCurrent), 0xffffffffu - 1'000'000u);
    l.run_timers(0x1'0000'0000ull);
    EXPECT_FALSE(h.irr(0, 0x30));
    EXPECT_EQ(l.next_deadline_ns(), UINT64_MAX);
}

TEST(Lapic, TscDeadlineTimer)
{
    ChipHarness h;
    h.enable_lapics();
    Lapic& l = h.lapic(0);
    // Outside TSC-deadline mode the MSR reads 0 and writes are ignored.
    EXPECT_TRUE(l.write_msr(Lapic::kMsrTscDeadline, 5000));
    uint64_t value = 1;
    EXPECT_TRUE(l.read_msr(Lapic::kMsrTscDeadline, value));
    EXPECT_EQ(value, 0u);

    l.write_register(Lapic::kRegLvtTimer, Lapic::kLvtTimerTscDeadline | 0x32);
    l.write_register(Lapic::kRegTimerInitial, 100); // ignored in this mode
    EXPECT_EQ(l.read_register(Lapic::kRegTimerInitial), 0u);
    l.set_tsc_offset(1000); // guest TSC = 1 GHz clock + 1000
    EXPECT_TRUE(l.write_msr(Lapic::kMsrTscDeadline, 6000));
    EXPECT_TRUE(l.read_msr(Lapic::kMsrTscDeadline, value));
    EXPECT_EQ(value, 6000u);
    EXPECT_EQ(l.next_deadline_ns(), 5000u);
    l.run_timers(4999);
    EXPECT_FALSE(h.irr(0, 0x32));
    l.run_timers(5000);
    EXPECT_TRUE(h.irr(0, 0x32));
    EXPECT_TRUE(l.read_msr(Lapic::kMsrTscDeadline, value));
    EXPECT_EQ(value, 0u); // cleared once it fired
    EXPECT_EQ(l.next_deadline_ns(), UINT64_MAX);

    // A deadline in the past fires at the next poll; zero disarms.
    EXPECT_TRUE(l.write_msr(Lapic::kMsrTscDeadline, 10));
    EXPECT_EQ(l.next_deadline_ns(), 0u);
    EXPECT_TRUE(l.write_msr(Lapic::kMsrTscDeadline, 0));
    EXPECT_EQ(l.next_deadline_ns(), UINT64_MAX);

    // Changing the timer mode disarms it.
    EXPECT_TRUE(l.write_msr(Lapic::kMsrTscDeadline, 90'000));
    l.write_register(Lapic::kRegLvtTimer, 0x32);
    EXPECT_EQ(l.next_deadline_ns(), UINT64_MAX);
}

TEST(Lapic, TscDeadlineAtAnotherTscFrequency)
{
    Irqchip::Options options = manual_options();
    options.tsc_khz = 2'500'000; // 2.5 GHz
    ChipHarness h(1, options);
    h.enable_lapics();
    Lapic& l = h.lapic(0);
    l.write_register(Lapic::kRegLvtTimer, Lapic::kLvtTimerTscDeadline | 0x33);
    EXPECT_TRUE(l.write_msr(Lapic::kMsrTscDeadline, 2501));
    EXPECT_EQ(l.next_deadline_ns(), 1001u); // rounded up: TSC 2501 is reached at 1000.4 ns
}

TEST(Lapic, FixedIpiPhysicalAndLogical)
{
    ChipHarness h(3);
    h.enable_lapics();
    send_ipi(h.lapic(0), 2, 0x70);
    EXPECT_TRUE(h.irr(2, 0x70));
    EXPECT_FALSE(h.irr(1, 0x70));
    EXPECT_FALSE(h.irr(0, 0x70));
    EXPECT_EQ(h.lapic(0).read_register(Lapic::kRegIcrLow), 0x70u); // delivery status idle
    EXPECT_EQ(h.lapic(0).read_register(Lapic::kRegIcrHigh), 0x02000000u);

    // Physical broadcast.
    send_ipi(h.lapic(0), 0xff, 0x71);
    for (size_t i = 0; i < 3; ++i)
        EXPECT_TRUE(h.irr(i, 0x71)) << i;

    // Flat logical.
    for (size_t i = 0; i < 3; ++i)
        h.lapic(i).write_register(Lapic::kRegLdr, (1u << i) << 24);
    send_ipi(h.lapic(0), 0x06, kIcrLogical | 0x72);
    EXPECT_FALSE(h.irr(0, 0x72));
    EXPECT_TRUE(h.irr(1, 0x72));
    EXPECT_TRUE(h.irr(2, 0x72));
    send_ipi(h.lapic(0), 0x00, kIcrLogical | 0x73);
    for (size_t i = 0; i < 3; ++i)
        EXPECT_FALSE(h.irr(i, 0x73)) << i;
}

TEST(Lapic, ClusterLogicalDestinations)
{
    ChipHarness h(3);
    h.enable_lapics();
    // Cluster 1 member 0, cluster 1 member 1, cluster 2 member 0.
    const uint32_t ldr[] = { 0x11, 0x12, 0x21 };
    for (size_t i = 0; i < 3; ++i) {
        h.lapic(i).write_register(Lapic::kRegDfr, 0x0fffffff);
        h.lapic(i).write_register(Lapic::kRegLdr, ldr[i] << 24);
    }
    send_ipi(h.lapic(0), 0x13, kIcrLogical | 0x74);
    EXPECT_TRUE(h.irr(0, 0x74));
    EXPECT_TRUE(h.irr(1, 0x74));
    EXPECT_FALSE(h.irr(2, 0x74));
    send_ipi(h.lapic(0), 0x21, kIcrLogical | 0x75);
    EXPECT_FALSE(h.irr(0, 0x75));
    EXPECT_FALSE(h.irr(1, 0x75));
    EXPECT_TRUE(h.irr(2, 0x75));
    send_ipi(h.lapic(0), 0xff, kIcrLogical | 0x76);
    for (size_t i = 0; i < 3; ++i)
        EXPECT_TRUE(h.irr(i, 0x76)) << i;
}

TEST(Lapic, IpiShorthands)
{
    ChipHarness h(3);
    h.enable_lapics();
    send_ipi(h.lapic(1), 0, kIcrSelf | 0x80);
    EXPECT_FALSE(h.irr(0, 0x80));
    EXPECT_TRUE(h.irr(1, 0x80));
    EXPECT_FALSE(h.irr(2, 0x80));
    send_ipi(h.lapic(1), 0, kIcrAllIncludingSelf | 0x81);
    for (size_t i = 0; i < 3; ++i)
        EXPECT_TRUE(h.irr(i, 0x81)) << i;
    send_ipi(h.lapic(1), 0, kIcrAllExcludingSelf | 0x82);
    EXPECT_TRUE(h.irr(0, 0x82));
    EXPECT_FALSE(h.irr(1, 0x82));
    EXPECT_TRUE(h.irr(2, 0x82));
    // The destination field is ignored with a shorthand.
    send_ipi(h.lapic(1), 2, kIcrSelf | 0x83);
    EXPECT_TRUE(h.irr(1, 0x83));
    EXPECT_FALSE(h.irr(2, 0x83));
}

TEST(Lapic, NmiIpi)
{
    ChipHarness h;
    send_ipi(h.lapic(0), 0, kIcrAllExcludingSelf | kIcrNmi);
    EXPECT_TRUE(h.lapic(1).has_pending_nmi());
    EXPECT_FALSE(h.lapic(0).has_pending_nmi());
    EXPECT_GE(h.clients[1].kicks.load(), 1);
}

TEST(Lapic, InitAndStartupReachTheClient)
{
    ChipHarness h;
    h.enable_lapics();
    Lapic& ap = h.lapic(1);
    ap.write_register(Lapic::kRegTpr, 0x20);
    ap.write_register(Lapic::kRegLdr, 0x02000000);
    ap.accept(fixed(0x90));
    // Linux's wakeup_secondary_cpu_via_init: INIT assert, INIT de-assert, then two SIPIs.
    send_ipi(h.lapic(0), 1, kIcrLevel | kIcrAssert | kIcrInit);
    EXPECT_EQ(h.clients[1].inits, 1);
    EXPECT_EQ(h.clients[0].inits, 0);
    send_ipi(h.lapic(0), 1, kIcrLevel | kIcrInit);
    EXPECT_EQ(h.clients[1].inits, 1); // de-assert is ignored
    // INIT reset everything but the ID and IA32_APIC_BASE.
    EXPECT_EQ(ap.read_register(Lapic::kRegTpr), 0u);
    EXPECT_EQ(ap.read_register(Lapic::kRegLdr), 0u);
    EXPECT_EQ(ap.read_register(Lapic::kRegSvr), 0xffu);
    EXPECT_EQ(ap.read_register(Lapic::kRegLvtLint0), 0x10000u);
    EXPECT_FALSE(h.irr(1, 0x90));
    EXPECT_EQ(ap.apic_id(), 1u);
    EXPECT_EQ(ap.apic_base_msr(), 0xfee00800u);
    send_ipi(h.lapic(0), 1, kIcrStartup | 0x9a);
    send_ipi(h.lapic(0), 1, kIcrStartup | 0x9a);
    EXPECT_EQ(h.clients[1].sipis, (std::vector<uint8_t> { 0x9a, 0x9a }));
    EXPECT_TRUE(h.clients[0].sipis.empty());
}

TEST(Lapic, IllegalVectorsSetEsr)
{
    ChipHarness h;
    h.enable_lapics();
    Lapic& l = h.lapic(0);
    l.write_register(Lapic::kRegLvtError, 0xfe);
    send_ipi(l, 1, 0x05);
    EXPECT_FALSE(h.irr(1, 0x05));
    EXPECT_EQ(l.read_register(Lapic::kRegEsr), 0u); // write-before-read
    l.write_register(Lapic::kRegEsr, 0);
    EXPECT_EQ(l.read_register(Lapic::kRegEsr), Lapic::kEsrSendIllegalVector);
    EXPECT_TRUE(h.irr(0, 0xfe)); // through the error LVT
    l.write_register(Lapic::kRegEsr, 0);
    EXPECT_EQ(l.read_register(Lapic::kRegEsr), 0u);
    h.lapic(1).accept(fixed(0x03));
    h.lapic(1).write_register(Lapic::kRegEsr, 0);
    EXPECT_EQ(h.lapic(1).read_register(Lapic::kRegEsr), Lapic::kEsrReceiveIllegalVector);
}

TEST(Lapic, LintPins)
{
    ChipHarness h;
    Lapic& ap = h.lapic(1);
    // LINT1 = NMI: on the rising edge only.
    ap.set_lint(1, true);
    EXPECT_TRUE(ap.has_pending_nmi());
    EXPECT_TRUE(ap.acknowledge_nmi());
    ap.set_lint(1, true);
    EXPECT_FALSE(ap.has_pending_nmi());
    ap.set_lint(1, false);
    // LINT0 as a fixed edge-triggered input.
    h.enable_lapics();
    ap.write_register(Lapic::kRegLvtLint0, 0x55);
    ap.set_lint(0, true);
    EXPECT_TRUE(h.irr(1, 0x55));
    // Masked: nothing.
    ap.write_register(Lapic::kRegLvtLint1, Lapic::kLvtMasked | 0x400);
    ap.set_lint(1, true);
    EXPECT_FALSE(ap.has_pending_nmi());
}

TEST(Lapic, ApicBaseMsr)
{
    ChipHarness h;
    Lapic& l = h.lapic(0);
    EXPECT_FALSE(l.write_msr(Lapic::kMsrApicBase, 0xfee00900 | Lapic::kApicBaseExtd)); // no x2APIC
    EXPECT_FALSE(l.write_msr(Lapic::kMsrApicBase, 0xfee00901)); // reserved bit
    EXPECT_TRUE(l.write_msr(Lapic::kMsrApicBase, 0xfed00900));
    EXPECT_EQ(l.base_address(), 0xfed00000u);
    EXPECT_TRUE(l.is_bsp());
    h.enable_lapics();
    l.accept(fixed(0x40));
    EXPECT_TRUE(l.has_pending_interrupt());
    // Globally disabling loses the state and refuses messages.
    EXPECT_TRUE(l.write_msr(Lapic::kMsrApicBase, 0xfee00100));
    EXPECT_FALSE(l.hardware_enabled());
    EXPECT_FALSE(l.has_pending_interrupt());
    l.accept(fixed(0x41));
    EXPECT_TRUE(l.write_msr(Lapic::kMsrApicBase, 0xfee00900));
    EXPECT_FALSE(h.irr(0, 0x41));
    EXPECT_EQ(l.read_register(Lapic::kRegSvr), 0xffu);
}

TEST(Lapic, SaveRestoreRoundTrip)
{
    ChipHarness a;
    a.enable_lapics();
    Lapic& src = a.lapic(1);
    src.write_register(Lapic::kRegTpr, 0x20);
    src.write_register(Lapic::kRegLdr, 0x02000000);
    src.write_register(Lapic::kRegDfr, 0x0fffffff);
    src.write_register(Lapic::kRegLvtLint0, 0x10700);
    src.write_register(Lapic::kRegLvtError, 0xfe);
    src.write_register(Lapic::kRegIcrHigh, 0x03000000);
    src.write_register(Lapic::kRegTimerDivide, 0x3); // /16
    src.write_register(Lapic::kRegLvtTimer, Lapic::kLvtTimerPeriodic | 0xec);
    a.set_now(1000);
    src.write_register(Lapic::kRegTimerInitial, 10'000); // period 160 us
    src.accept(fixed(0x61, true));
    src.accept(fixed(0x35));
    EXPECT_EQ(src.acknowledge(), 0x61);
    src.accept(fixed(0xa0));
    a.set_now(1000 + 16 * 2500); // 2500 counts done
    Lapic::RegisterPage page {};
    src.save_regs(page);
    uint32_t current;
    std::memcpy(&current, page.data() + Lapic::kRegTimerCurrent, 4);
    EXPECT_EQ(current, 7500u);
    uint32_t id;
    std::memcpy(&id, page.data() + Lapic::kRegId, 4);
    EXPECT_EQ(id, 0x01000000u);

    // Onto another machine at a different guest time: state and the timer phase carry over.
    ChipHarness b;
    b.set_now(5'000'000);
    Lapic& dst = b.lapic(1);
    dst.restore_regs(page);
    Lapic::RegisterPage again {};
    dst.save_regs(again);
    EXPECT_EQ(page, again);
    EXPECT_TRUE(b.isr(1, 0x61));
    EXPECT_TRUE(b.tmr(1, 0x61));
    EXPECT_TRUE(b.irr(1, 0xa0));
    EXPECT_TRUE(b.irr(1, 0x35));
    EXPECT_TRUE(dst.has_pending_interrupt());
    EXPECT_EQ(dst.pending_vector(), 0xa0);
    EXPECT_EQ(dst.next_deadline_ns(), 5'000'000u + 16 * 7500);
    dst.run_timers(5'000'000u + 16 * 7500);
    EXPECT_TRUE(b.irr(1, 0xec));
    // EOI of the level vector reaches the I/O APIC path (nothing waits on it here).
    EXPECT_EQ(dst.acknowledge(), 0xec);
    dst.eoi();
    dst.eoi();
    EXPECT_FALSE(b.isr(1, 0x61));
}

TEST(Lapic, RestoreOfAnExpiredOneShotDoesNotRefire)
{
    ChipHarness a;
    a.enable_lapics();
    a.lapic(0).write_register(Lapic::kRegLvtTimer, 0x30);
    a.lapic(0).write_register(Lapic::kRegTimerInitial, 100);
    a.set_now(1000);
    Lapic::RegisterPage page {};
    a.lapic(0).save_regs(page);
    ChipHarness b;
    b.lapic(0).restore_regs(page);
    EXPECT_EQ(b.lapic(0).next_deadline_ns(), UINT64_MAX);
    EXPECT_EQ(b.lapic(0).read_register(Lapic::kRegTimerInitial), 100u);
}

TEST(Lapic, ConcurrentSendersAndOwner)
{
    ChipHarness h;
    h.enable_lapics();
    Lapic& l = h.lapic(0);
    std::atomic<bool> stop { false };
    std::thread sender([&] {
        for (int i = 0; i < 20000; ++i)
            send_ipi(h.lapic(1), 0, static_cast<uint32_t>(0x40 + i % 64));
        stop = true;
    });
    int taken = 0;
    while (!stop.load() || l.has_pending_interrupt()) {
        if (l.has_pending_interrupt()) {
            const uint8_t v = l.acknowledge();
            if (v != 0xff) {
                ++taken;
                l.eoi();
            }
        }
    }
    sender.join();
    EXPECT_GT(taken, 0);
    EXPECT_FALSE(l.has_pending_event());
    for (unsigned v = 0x40; v < 0x80; ++v)
        EXPECT_FALSE(h.irr(0, static_cast<uint8_t>(v)));
}
