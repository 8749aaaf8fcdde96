// Snapshots on the KVM engine. A guest stopped mid-run is saved (its CpuState, the engine's
// MachineState and its RAM), restored into a fresh KvmEngine and VM, and finishes exactly as an
// uninterrupted run does; MachineState round-trips through KVM's irqchip, PIT and clock; the
// engine's CPUID table is what the guest's CPUID returns; the dirty log names the pages the guest
// wrote. On kvm_pvm (HOST.md) guest CPL0 code is emulated, so the guests are a few hundred
// instructions each. Every test that needs /dev/kvm skips with the reason where it is unusable.
#include "kvm_snapshot_test_support.h"

#include <cstring>
#include <set>
#include <string>
#include <vector>

#include "engine/kvm/kvm_machine.h"
#include "memory/dirty_bitmap.h"

using namespace vessel;
using namespace vessel::kvm_snapshot_test;
using namespace std::chrono_literals;

namespace {

// 64-bit mode, CPL0 (kvm_pvm emulates no protected-mode IRET). Phase 1: 32 rounds of an LCG in EDX, each pushed on the
// stack (port 0x80 = round). Phase 2: programs both 8259s (IRQ0 only, vectors 0x20/0x28) and PIT channel 0 (mode 2,
// 1193 = 1 kHz), then HLTs; the ISR hashes 40 ticks into [0x3004] (port 0x81 = ticks). Finally EAX = hash ^ EDX ^ XMM1
// (set by the test: kvm_pvm's CPL0 emulator knows no SSE arithmetic, only moves) ^ the 32 stack values, out to 0x84.
// Registers, SSE state, the stack, RAM, the PICs and the PIT all have to survive a restore.
constexpr uint8_t kSnapshotGuest[] = {
    0xba, 0x78, 0x56, 0x34, 0x12, // 0x00: mov $0x12345678,%edx
    0xb9, 0x01, 0x00, 0x00, 0x00, // 0x05: mov $0x1,%ecx
    0x69, 0xd2, 0x6d, 0x4e, 0xc6, 0x41, // 0x0a: imul $0x41c64e6d,%edx,%edx
    0x81, 0xc2, 0x39, 0x30, 0x00, 0x00, // 0x10: add $0x3039,%edx
    0x52, // 0x16: push %rdx
    0x89, 0xc8, // 0x17: mov %ecx,%eax
    0xe7, 0x80, // 0x19: out %eax,$0x80
    0xff, 0xc1, // 0x1b: inc %ecx
    0x83, 0xf9, 0x21, // 0x1d: cmp $0x21,%ecx
    0x75, 0xe8, // 0x20: jne a
    0xb0, 0x11, // 0x22: mov $0x11,%al
    0xe6, 0x20, // 0x24: out %al,$0x20
    0xb0, 0x20, // 0x26: mov $0x20,%al
    0xe6, 0x21, // 0x28: out %al,$0x21
    0xb0, 0x04, // 0x2a: mov $0x4,%al
    0xe6, 0x21, // 0x2c: out %al,$0x21
    0xb0, 0x01, // 0x2e: mov $0x1,%al
    0xe6, 0x21, // 0x30: out %al,$0x21
    0xb0, 0x11, // 0x32: mov $0x11,%al
    0xe6, 0xa0, // 0x34: out %al,$0xa0
    0xb0, 0x28, // 0x36: mov $0x28,%al
    0xe6, 0xa1, // 0x38: out %al,$0xa1
    0xb0, 0x02, // 0x3a: mov $0x2,%al
    0xe6, 0xa1, // 0x3c: out %al,$0xa1
    0xb0, 0x01, // 0x3e: mov $0x1,%al
    0xe6, 0xa1, // 0x40: out %al,$0xa1
    0xb0, 0xfe, // 0x42: mov $0xfe,%al
    0xe6, 0x21, // 0x44: out %al,$0x21
    0xb0, 0xff, // 0x46: mov $0xff,%al
    0xe6, 0xa1, // 0x48: out %al,$0xa1
    0xb0, 0x34, // 0x4a: mov $0x34,%al
    0xe6, 0x43, // 0x4c: out %al,$0x43
    0xb0, 0xa9, // 0x4e: mov $0xa9,%al
    0xe6, 0x40, // 0x50: out %al,$0x40
    0xb0, 0x04, // 0x52: mov $0x4,%al
    0xe6, 0x40, // 0x54: out %al,$0x40
    0xfb, // 0x56: sti
    0xf4, // 0x57: hlt
    0x8b, 0x04, 0x25, 0x00, 0x30, 0x00, 0x00, // 0x58: mov 0x3000,%eax
    0xe7, 0x81, // 0x5f: out %eax,$0x81
    0x83, 0xf8, 0x28, // 0x61: cmp $0x28,%eax
    0x72, 0xf1, // 0x64: jb 57
    0xfa, // 0x66: cli
    0x8b, 0x04, 0x25, 0x04, 0x30, 0x00, 0x00, // 0x67: mov 0x3004,%eax
    0x31, 0xd0, // 0x6e: xor %edx,%eax
    0xf3, 0x0f, 0x7f, 0x0c, 0x25, 0x10, 0x30, // 0x70: movdqu %xmm1,0x3010
    0x00, 0x00, // 0x77:
    0x33, 0x04, 0x25, 0x10, 0x30, 0x00, 0x00, // 0x79: xor 0x3010,%eax
    0x03, 0x04, 0x25, 0x1c, 0x30, 0x00, 0x00, // 0x80: add 0x301c,%eax
    0xb9, 0x20, 0x00, 0x00, 0x00, // 0x87: mov $0x20,%ecx
    0x5b, // 0x8c: pop %rbx
    0xc1, 0xc0, 0x03, // 0x8d: rol $0x3,%eax
    0x31, 0xd8, // 0x90: xor %ebx,%eax
    0xe2, 0xf8, // 0x92: loop 8c
    0xe7, 0x84, // 0x94: out %eax,$0x84
    0xeb, 0xfe, // 0x96: jmp 96
    // isr:
    0x50, // 0x98: push %rax
    0x83, 0x3c, 0x25, 0x00, 0x30, 0x00, 0x00, // 0x99: cmpl $0x28,0x3000
    0x28, // 0xa0:
    0x73, 0x22, // 0xa1: jae c5
    0x8b, 0x04, 0x25, 0x04, 0x30, 0x00, 0x00, // 0xa3: mov 0x3004,%eax
    0x6b, 0xc0, 0x1f, // 0xaa: imul $0x1f,%eax,%eax
    0x03, 0x04, 0x25, 0x00, 0x30, 0x00, 0x00, // 0xad: add 0x3000,%eax
    0x83, 0xc0, 0x07, // 0xb4: add $0x7,%eax
    0x89, 0x04, 0x25, 0x04, 0x30, 0x00, 0x00, // 0xb7: mov %eax,0x3004
    0xff, 0x04, 0x25, 0x00, 0x30, 0x00, 0x00, // 0xbe: incl 0x3000
    0xb0, 0x20, // 0xc5: mov $0x20,%al
    0xe6, 0x20, // 0xc7: out %al,$0x20
    0x58, // 0xc9: pop %rax
    0x48, 0xcf, // 0xca: iretq
    // spurious:
    0x48, 0xcf, // 0xcc: iretq
    // fault:
    0xb8, 0xad, 0xde, 0x00, 0x00, // 0xce: mov $0xdead,%eax
    0xe7, 0x86, // 0xd3: out %eax,$0x86
    0xeb, 0xfe, // 0xd5: jmp d5
};
constexpr uint32_t kSnapshotIsr = 0x98;
constexpr uint32_t kSnapshotSpurious = 0xcc;
constexpr uint32_t kSnapshotFault = 0xce;
constexpr uint64_t kSnapshotTicks = 40;

// 32-bit CPL0: for each (leaf, subleaf) pair at 0x18000 (up to leaf 0xffffffff), CPUID's four
// registers go to 0x19000 + 16 * i; then port 0x84.
constexpr uint8_t kCpuidGuest[] = {
    0xbe, 0x00, 0x80, 0x01, 0x00, // 0x00: mov $0x18000,%esi
    0xbf, 0x00, 0x90, 0x01, 0x00, // 0x05: mov $0x19000,%edi
    0x8b, 0x06, // 0x0a: mov (%esi),%eax
    0x83, 0xf8, 0xff, // 0x0c: cmp $0xffffffff,%eax
    0x74, 0x18, // 0x0f: je 0x29
    0x8b, 0x4e, 0x04, // 0x11: mov 0x4(%esi),%ecx
    0x0f, 0xa2, // 0x14: cpuid
    0x89, 0x07, // 0x16: mov %eax,(%edi)
    0x89, 0x5f, 0x04, // 0x18: mov %ebx,0x4(%edi)
    0x89, 0x4f, 0x08, // 0x1b: mov %ecx,0x8(%edi)
    0x89, 0x57, 0x0c, // 0x1e: mov %edx,0xc(%edi)
    0x83, 0xc6, 0x08, // 0x21: add $0x8,%esi
    0x83, 0xc7, 0x10, // 0x24: add $0x10,%edi
    0xeb, 0xe1, // 0x27: jmp 0xa
    0xe6, 0x84, // 0x29: out %al,$0x84
    0xeb, 0xfe, // 0x2b: jmp 0x2b
};

// 64-bit CPL0: writes each 8-byte address of the list at RSI to itself; a 0 entry means "out 0x84"
// (the test collects the dirty log there) and the walk goes on.
constexpr uint8_t kDirtyGuest[] = {
    0x48, 0x8b, 0x3e, // 0x00: mov (%rsi),%rdi
    0x48, 0x83, 0xc6, 0x08, // 0x03: add $0x8,%rsi
    0x48, 0x85, 0xff, // 0x07: test %rdi,%rdi
    0x74, 0x05, // 0x0a: je 0x11
    0x48, 0x89, 0x3f, // 0x0c: mov %rdi,(%rdi)
    0xeb, 0xef, // 0x0f: jmp 0x0
    0xe6, 0x84, // 0x11: out %al,$0x84
    0xeb, 0xeb, // 0x13: jmp 0x0
};

// 32-bit CPL0: twice, latches PIT channels 0 and 2 and sends their counts to ports 0x88/0x89,
// then spins ~2000 iterations; then port 0x84.
constexpr uint8_t kPitGuest[] = {
    0xbf, 0x02, 0x00, 0x00, 0x00, // 0x00: mov $0x2,%edi
    0xb0, 0x00, // 0x05: mov $0x0,%al
    0xe6, 0x43, // 0x07: out %al,$0x43
    0xe4, 0x40, // 0x09: in $0x40,%al
    0x88, 0xc3, // 0x0b: mov %al,%bl
    0xe4, 0x40, // 0x0d: in $0x40,%al
    0x88, 0xc7, // 0x0f: mov %al,%bh
    0xb0, 0x80, // 0x11: mov $0x80,%al
    0xe6, 0x43, // 0x13: out %al,$0x43
    0xe4, 0x42, // 0x15: in $0x42,%al
    0x88, 0xc1, // 0x17: mov %al,%cl
    0xe4, 0x42, // 0x19: in $0x42,%al
    0x88, 0xc5, // 0x1b: mov %al,%ch
    0x0f, 0xb7, 0xc3, // 0x1d: movzwl %bx,%eax
    0xe7, 0x88, // 0x20: out %eax,$0x88
    0x0f, 0xb7, 0xc1, // 0x22: movzwl %cx,%eax
    0xe7, 0x89, // 0x25: out %eax,$0x89
    0xbe, 0xd0, 0x07, 0x00, 0x00, // 0x27: mov $0x7d0,%esi
    0x4e, // 0x2c: dec %esi
    0x75, 0xfd, // 0x2d: jne 0x2c
    0x4f, // 0x2f: dec %edi
    0x75, 0xd3, // 0x30: jne 0x5
    0xe6, 0x84, // 0x32: out %al,$0x84
    0xeb, 0xfe, // 0x34: jmp 0x34
};

// A machine loaded with the snapshot guest, its vCPU at the first instruction.
Result<std::unique_ptr<Machine>> snapshot_guest()
{
    auto memory = TRY(GuestMemory::create(kRamSize));
    TRY(memory.write(kCode, kSnapshotGuest));
    auto m = TRY(make_machine(std::move(memory)));
    write_tables(m->memory, kSnapshotIsr, kSnapshotSpurious, kSnapshotFault);
    write_identity_map(m->memory);
    CpuState s = long_mode_state(kCode);
    // The LAPIC as KVM reset it (LINT0 = ExtINT, so the 8259 reaches the vCPU).
    s.lapic = TRY(m->vcpu->get_state()).lapic;
    // XMM1 = 0x00112233...ff (FXSAVE layout: XMM0 at 160), MXCSR at its reset value, the SSE
    // component marked live in XSTATE_BV.
    for (int i = 0; i < 16; ++i)
        s.xsave[176 + i] = static_cast<uint8_t>(0x11 * i);
    const uint32_t mxcsr = 0x1f80;
    std::memcpy(&s.xsave[24], &mxcsr, sizeof(mxcsr));
    s.xsave[512] = 0x2;
    TRY(m->vcpu->set_state(s));
    return m;
}

} // namespace

// --- Conversions (no /dev/kvm needed) ------------------------------------------------------------

TEST(KvmMachineConversion, PitLoadTimesMoveFromTheHostClockToTheGuestClockAndBack)
{
    kvm_pit_state2 kvm {};
    constexpr int64_t kHostNow = 100'000'000'000; // host CLOCK_MONOTONIC at the save
    constexpr uint64_t kGuestNow = 7'000'000'000; // the guest's clock at that moment
    kvm.channels[0].count = 1193;
    kvm.channels[0].mode = 2;
    kvm.channels[0].rw_mode = 3;
    kvm.channels[0].gate = 1;
    kvm.channels[0].count_load_time = kHostNow - 3'000'000; // loaded 3 ms ago
    kvm.channels[2].count = 0x10000;
    kvm.channels[2].latched_count = 0x1234;
    kvm.channels[2].count_latched = 1;
    kvm.channels[2].status = 0xb6;
    kvm.channels[2].status_latched = 1;
    kvm.channels[2].count_load_time = kHostNow - 50'000'000;
    kvm.flags = KVM_PIT_FLAGS_SPEAKER_DATA_ON;

    PitState pit = pit_from_kvm(kvm, kHostNow, kGuestNow);
    EXPECT_EQ(pit.channels[0].count_load_time_ns, 7'000'000'000 - 3'000'000);
    EXPECT_EQ(pit.channels[2].count_load_time_ns, 7'000'000'000 - 50'000'000);
    EXPECT_EQ(pit.channels[0].count, 1193u);
    EXPECT_EQ(pit.channels[0].mode, 2);
    EXPECT_EQ(pit.channels[2].count, 0x10000u);
    EXPECT_EQ(pit.channels[2].latched_count, 0x1234);
    EXPECT_EQ(pit.channels[2].status, 0xb6);
    EXPECT_EQ(pit.speaker_data_on, 1);

    // Restored on another host whose clock reads 5 s, with the guest's clock set back to 7 s: the
    // channels were loaded as long before "now" as they were when saved.
    kvm_pit_state2 back = pit_to_kvm(pit, 5'000'000'000, kGuestNow);
    EXPECT_EQ(back.channels[0].count_load_time, 5'000'000'000 - 3'000'000);
    EXPECT_EQ(back.channels[2].count_load_time, 5'000'000'000 - 50'000'000);
    EXPECT_EQ(back.flags, static_cast<uint32_t>(KVM_PIT_FLAGS_SPEAKER_DATA_ON));
    EXPECT_EQ(std::memcmp(&back.channels[2], &kvm.channels[2], offsetof(kvm_pit_channel_state, count_load_time)), 0);
}

TEST(KvmMachineConversion, AChannelWithNoCountStaysUnprogrammed)
{
    // KVM's reset state of a channel: mode 0xff, count 0x10000. Neutral (and the soft PIT's): count 0.
    kvm_pit_state2 kvm {};
    kvm.channels[1].mode = 0xff;
    kvm.channels[1].count = 0x10000;
    kvm.channels[1].gate = 1;
    kvm.channels[0].mode = 2;
    kvm.channels[0].count = 0x10000; // a guest-loaded 0
    PitState pit = pit_from_kvm(kvm, 0, 0);
    EXPECT_EQ(pit.channels[1].count, 0u);
    EXPECT_EQ(pit.channels[0].count, 0x10000u);
    // A soft-engine channel with no count (its mode reads 0) must not start a KVM timer.
    pit.channels[1].mode = 0;
    kvm_pit_state2 back = pit_to_kvm(pit, 0, 0);
    EXPECT_EQ(back.channels[1].mode, 0xff);
    EXPECT_EQ(back.channels[0].mode, 2);
    EXPECT_EQ(back.channels[0].count, 0x10000u);
}

TEST(KvmMachineConversion, IoapicIdBecomesTheIdRegisterAndTheBaseAddressStaysKvms)
{
    kvm_ioapic_state kvm {};
    kvm.base_address = 0xfec00000;
    kvm.id = 5;
    kvm.ioregsel = 0x12;
    kvm.irr = 0x8004;
    for (unsigned pin = 0; pin < KVM_IOAPIC_NUM_PINS; ++pin)
        kvm.redirtbl[pin].bits = 0x0100000000010030ULL + pin;
    IoapicState s = ioapic_from_kvm(kvm);
    EXPECT_EQ(s.id, 5u << 24);
    EXPECT_EQ(s.ioregsel, 0x12u);
    EXPECT_EQ(s.irr, 0x8004u);
    EXPECT_EQ(s.redirection[23], 0x0100000000010030ULL + 23);

    kvm_ioapic_state back {};
    back.base_address = 0xfec00000;
    ioapic_to_kvm(s, back);
    EXPECT_EQ(std::memcmp(&back, &kvm, sizeof(kvm)), 0);
}

TEST(KvmMachineConversion, PicFieldsMapOneToOne)
{
    kvm_pic_state kvm {};
    auto* bytes = reinterpret_cast<uint8_t*>(&kvm);
    for (size_t i = 0; i < sizeof(kvm); ++i)
        bytes[i] = static_cast<uint8_t>(0x11 * (i + 1));
    PicChipState s = pic_from_kvm(kvm);
    EXPECT_EQ(s.last_irr, 0x11);
    EXPECT_EQ(s.irq_base, 0x66);
    EXPECT_EQ(s.elcr, 0xff);
    kvm_pic_state back = pic_to_kvm(s);
    EXPECT_EQ(std::memcmp(&back, &kvm, sizeof(kvm)), 0);
}

TEST(KvmMachineConversion, TscFrequenciesWithinKvmsToleranceCountAsOne)
{
    EXPECT_TRUE(tsc_khz_compatible(2'596'154, 2'596'154));
    EXPECT_TRUE(tsc_khz_compatible(2'596'154 + 600, 2'596'154)); // 231 ppm
    EXPECT_FALSE(tsc_khz_compatible(2'596'154 + 700, 2'596'154)); // 270 ppm
    EXPECT_FALSE(tsc_khz_compatible(1'000'000, 2'596'154));
}

// --- Save on one VM, restore on a fresh one --------------------------------------------------------

struct StopPoint {
    uint16_t port;
    uint64_t value;
    const char* name;
};

class KvmSnapshotRestore : public ::testing::TestWithParam<StopPoint> { };

TEST_P(KvmSnapshotRestore, GuestFinishesInAFreshVmAsIfNeverStopped)
{
    REQUIRE_KVM();
    const StopPoint stop = GetParam();

    // The reference: one uninterrupted run.
    uint64_t expected = 0;
    {
        auto made = snapshot_guest();
        ASSERT_TRUE(made.ok()) << made.error().message();
        auto& m = *made.value();
        ASSERT_TRUE(run_until(m, done_or_fault, 20s)) << "the uninterrupted guest did not finish";
        ASSERT_TRUE(m.io.values(kPortFault).empty()) << "the guest took an exception";
        ASSERT_EQ(m.io.values(kPortDone).size(), 1u);
        expected = m.io.values(kPortDone)[0];
        ASSERT_GE(m.io.values(kPortTicks).back(), kSnapshotTicks);
    }

    // Run to the stop point; save the vCPU, the machine and RAM; throw the VM away.
    CpuState cpu;
    MachineState machine;
    std::vector<uint8_t> ram;
    uint64_t stopped_at = 0;
    {
        auto made = snapshot_guest();
        ASSERT_TRUE(made.ok()) << made.error().message();
        auto& m = *made.value();
        ASSERT_TRUE(run_until(
            m,
            [&](uint16_t port, uint64_t value) {
                return port == kPortFault || (port == stop.port && value >= stop.value);
            },
            20s));
        ASSERT_TRUE(m.io.values(kPortFault).empty()) << "the guest took an exception";
        stopped_at = m.io.values(stop.port).back();
        auto state = m.vcpu->get_state();
        ASSERT_TRUE(state.ok()) << state.error().message();
        cpu = state.value();
        auto saved = m.engine->save_machine();
        ASSERT_TRUE(saved.ok()) << saved.error().message();
        machine = saved.value();
        ram = read_ram(m.memory);
        EXPECT_GT(machine.tsc_khz, 0u);
        EXPECT_GT(machine.guest_time_ns, 0u);
        if (stop.port == kPortTicks) {
            // What the guest programmed, in the neutral form.
            EXPECT_EQ(machine.pic[0].irq_base, 0x20);
            EXPECT_EQ(machine.pic[1].irq_base, 0x28);
            EXPECT_EQ(machine.pic[0].imr, 0xfe);
            EXPECT_EQ(machine.pic[1].imr, 0xff);
            EXPECT_EQ(machine.pit.channels[0].mode, 2);
            EXPECT_EQ(machine.pit.channels[0].count, 1193u);
            EXPECT_LE(machine.pit.channels[0].count_load_time_ns, static_cast<int64_t>(machine.guest_time_ns));
            EXPECT_TRUE(cpu.rflags & x86::kRflagsIf);
        }
    }

    // A fresh engine and VM: RAM, then the vCPU, then the machine.
    auto memory = GuestMemory::create(kRamSize);
    ASSERT_TRUE(memory.ok());
    ASSERT_OK(memory->write(0, ram));
    auto made = make_machine(memory.release_value(), EngineConfig { 1, machine.tsc_khz });
    ASSERT_TRUE(made.ok()) << made.error().message();
    auto& m = *made.value();
    ASSERT_OK(m.vcpu->set_state(cpu));
    ASSERT_OK(m.engine->restore_machine(machine));
    ASSERT_TRUE(run_until(m, done_or_fault, 20s))
        << "the restored guest did not finish (a lost timer or interrupt controller leaves it halted)";
    ASSERT_TRUE(m.io.values(kPortFault).empty()) << "the restored guest took an exception";
    ASSERT_EQ(m.io.values(kPortDone).size(), 1u);
    EXPECT_EQ(m.io.values(kPortDone)[0], expected) << "stopped at " << stop.name << " " << stopped_at;

    // It went on from where it stopped: no step repeated, none skipped.
    auto progress = m.io.values(stop.port);
    ASSERT_FALSE(progress.empty());
    if (stop.port == kPortProgress)
        EXPECT_EQ(progress.front(), stopped_at + 1);
    else
        EXPECT_GT(progress.front(), stopped_at);
    std::printf("stopped at %s %llu; the restored guest finished with %#llx\n", stop.name,
        static_cast<unsigned long long>(stopped_at), static_cast<unsigned long long>(expected));
}

INSTANTIATE_TEST_SUITE_P(StopPoints, KvmSnapshotRestore,
    ::testing::Values(StopPoint { kPortProgress, 10, "compute" }, StopPoint { kPortTicks, 10, "timer" }),
    [](const ::testing::TestParamInfo<StopPoint>& info) { return std::string(info.param.name); });

namespace {

// A machine state as a guest leaves it: both PICs initialised, the IOAPIC's pins programmed
// (masked, with latched requests), PIT channels 0 and 2 counting, the speaker on.
MachineState programmed_machine(MachineState base)
{
    MachineState s = base;
    s.guest_time_ns = 5'000'000'000;
    auto& master = s.pic[0];
    master.irq_base = 0x20;
    master.imr = 0xfb; // the cascade only
    master.irr = 0x20; // IRQ5 requested, masked
    master.read_reg_select = 1;
    master.init4 = 1;
    master.elcr = 0x20;
    auto& slave = s.pic[1];
    slave.irq_base = 0x28;
    slave.imr = 0xff;
    slave.init4 = 1;
    slave.special_mask = 1;
    slave.elcr = 0x0c;
    s.ioapic.id = 3u << 24;
    s.ioapic.ioregsel = 0x10;
    s.ioapic.irr = (1u << 5) | (1u << 9);
    for (unsigned pin = 0; pin < IoapicState::kPins; ++pin)
        s.ioapic.redirection[pin]
            = (1ULL << 16) | (0x30 + pin) | (pin % 2 ? 1ULL << 15 : 0) | (uint64_t(pin % 4) << 56);
    for (unsigned i : { 0u, 2u }) {
        auto& c = s.pit.channels[i];
        c.count = i == 0 ? 0xffff : 0x1234;
        c.mode = i == 0 ? 2 : 3;
        c.rw_mode = 3;
        c.read_state = 3;
        c.write_state = 3;
        c.gate = 1;
        c.count_load_time_ns = static_cast<int64_t>(s.guest_time_ns) - 1'000'000;
    }
    s.pit.speaker_data_on = 1;
    return s;
}

} // namespace

TEST(KvmSnapshot, MachineStateRoundTripsThroughAFreshVm)
{
    REQUIRE_KVM();
    auto a = make_machine(GuestMemory::create(kRamSize).release_value());
    ASSERT_TRUE(a.ok()) << a.error().message();
    auto base = a.value()->engine->save_machine();
    ASSERT_TRUE(base.ok()) << base.error().message();
    EXPECT_EQ(base->ioapic.redirection[0] & (1ULL << 16), 1ULL << 16) << "pins start masked";
    const MachineState want = programmed_machine(base.value());

    auto b = make_machine(GuestMemory::create(kRamSize).release_value());
    ASSERT_TRUE(b.ok()) << b.error().message();
    ASSERT_OK(b.value()->engine->restore_machine(want));
    auto saved = b.value()->engine->save_machine();
    ASSERT_TRUE(saved.ok()) << saved.error().message();
    MachineState got = saved.value();

    // The clock went on from the restored time.
    EXPECT_GE(got.guest_time_ns, want.guest_time_ns);
    EXPECT_LT(got.guest_time_ns, want.guest_time_ns + 2'000'000'000);
    // KVM_SET_PIT2 reloads every count at the restore (see KvmEngine::restore_machine): the load
    // times lie between the saved ones and now (1 ms of slack for reading two clocks).
    for (size_t i = 0; i < 3; ++i) {
        EXPECT_GE(got.pit.channels[i].count_load_time_ns, want.pit.channels[i].count_load_time_ns - 1'000'000) << i;
        EXPECT_LE(got.pit.channels[i].count_load_time_ns, static_cast<int64_t>(got.guest_time_ns) + 1'000'000) << i;
    }
    // Everything else as restored. Channel 0 may have fired IRQ0 in between: it only latches in
    // the masked PIC line and IOAPIC pin 2.
    MachineState norm = got;
    MachineState ref = want;
    norm.guest_time_ns = ref.guest_time_ns;
    for (size_t i = 0; i < 3; ++i)
        norm.pit.channels[i].count_load_time_ns = ref.pit.channels[i].count_load_time_ns;
    for (auto* s : { &norm, &ref }) {
        s->pic[0].irr &= ~1u;
        s->pic[0].last_irr &= ~1u;
        s->ioapic.irr &= ~(1u << 2);
    }
    EXPECT_TRUE(norm.pic[0] == ref.pic[0]);
    EXPECT_TRUE(norm.pic[1] == ref.pic[1]);
    EXPECT_EQ(norm.ioapic.id, ref.ioapic.id);
    EXPECT_EQ(norm.ioapic.ioregsel, ref.ioapic.ioregsel);
    EXPECT_EQ(norm.ioapic.irr, ref.ioapic.irr);
    for (unsigned pin = 0; pin < IoapicState::kPins; ++pin)
        EXPECT_EQ(norm.ioapic.redirection[pin], ref.ioapic.redirection[pin]) << "pin " << pin;
    for (size_t i = 0; i < 3; ++i)
        EXPECT_TRUE(norm.pit.channels[i] == ref.pit.channels[i]) << "PIT channel " << i;
    EXPECT_EQ(norm.pit.speaker_data_on, 1);
    EXPECT_EQ(norm.tsc_khz, ref.tsc_khz);
    EXPECT_TRUE(norm == ref);
}

TEST(KvmSnapshot, PitCountingContinuesAfterRestore)
{
    REQUIRE_KVM();
    auto a = make_machine(GuestMemory::create(kRamSize).release_value());
    ASSERT_TRUE(a.ok()) << a.error().message();
    auto base = a.value()->engine->save_machine();
    ASSERT_TRUE(base.ok()) << base.error().message();
    MachineState state = programmed_machine(base.value());
    a.value().reset(); // the state moves to a fresh VM

    auto memory = GuestMemory::create(kRamSize);
    ASSERT_TRUE(memory.ok());
    ASSERT_OK(memory->write(kCode, kPitGuest));
    auto b = make_machine(memory.release_value());
    ASSERT_TRUE(b.ok()) << b.error().message();
    auto& m = *b.value();
    ASSERT_OK(m.vcpu->set_state(flat32_state(kCode)));
    ASSERT_OK(m.engine->restore_machine(state));
    ASSERT_TRUE(run_until(m, done_or_fault, 20s));

    // Each channel counts down from its restored reload value: both reads in range, and moving.
    for (auto [port, channel] : { std::pair { kPortPit0, 0 }, std::pair { kPortPit2, 2 } }) {
        auto counts = m.io.values(port);
        ASSERT_EQ(counts.size(), 2u) << "channel " << channel;
        uint32_t reload = state.pit.channels[channel].count;
        for (uint64_t c : counts)
            EXPECT_LE(c, reload) << "channel " << channel;
        EXPECT_NE(counts[0], counts[1]) << "channel " << channel << " does not count";
        std::printf("PIT channel %d (reload %#x) read %#llx, then %#llx\n", channel, reload,
            static_cast<unsigned long long>(counts[0]), static_cast<unsigned long long>(counts[1]));
    }
    auto after = m.engine->save_machine();
    ASSERT_TRUE(after.ok());
    EXPECT_EQ(after->pit.channels[0].mode, 2);
    EXPECT_EQ(after->pit.channels[0].count, 0xffffu);
    EXPECT_EQ(after->pit.channels[2].mode, 3);
    EXPECT_EQ(after->pit.channels[2].count, 0x1234u);
}

// --- CPUID -----------------------------------------------------------------------------------------

TEST(KvmSnapshot, CpuidTableIsWhatTheGuestReads)
{
    REQUIRE_KVM();
    const std::vector<std::pair<uint32_t, uint32_t>> queries { { 0, 0 }, { 1, 0 }, { 4, 0 }, { 7, 0 }, { 0xb, 0 },
        { 0xb, 1 }, { 0xd, 0 }, { 0xd, 1 }, { 0x40000000, 0 }, { 0x40000001, 0 }, { 0x80000000, 0 }, { 0x80000001, 0 },
        { 0x80000007, 0 }, { 0x80000008, 0 } };
    auto memory = GuestMemory::create(kRamSize);
    ASSERT_TRUE(memory.ok());
    ASSERT_OK(memory->write(kCode, kCpuidGuest));
    std::vector<uint32_t> input;
    for (auto [leaf, subleaf] : queries) {
        input.push_back(leaf);
        input.push_back(subleaf);
    }
    input.push_back(0xffffffff);
    ASSERT_OK(memory->write(kData, std::span(reinterpret_cast<const uint8_t*>(input.data()), input.size() * 4)));
    auto made = make_machine(memory.release_value());
    ASSERT_TRUE(made.ok()) << made.error().message();
    auto& m = *made.value();
    ASSERT_OK(m.vcpu->set_state(flat32_state(kCode)));
    ASSERT_TRUE(run_until(m, done_or_fault, 20s));

    auto table = m.engine->cpuid_table(0);
    ASSERT_TRUE(table.ok()) << table.error().message();
    ASSERT_FALSE(table->empty());
    size_t compared = 0;
    for (size_t i = 0; i < queries.size(); ++i) {
        auto [leaf, subleaf] = queries[i];
        const CpuidEntry* entry = nullptr;
        for (const auto& e : table.value())
            if (e.function == leaf && (!e.significant_index || e.index == subleaf))
                entry = &e;
        if (!entry)
            continue; // a leaf this host's KVM does not have
        uint32_t regs[4];
        ASSERT_OK(m.memory.read(kResults + i * 16, std::span(reinterpret_cast<uint8_t*>(regs), sizeof(regs))));
        EXPECT_EQ(regs[0], entry->eax) << std::hex << "leaf " << leaf << "." << subleaf;
        EXPECT_EQ(regs[1], entry->ebx) << std::hex << "leaf " << leaf << "." << subleaf;
        EXPECT_EQ(regs[2], entry->ecx) << std::hex << "leaf " << leaf << "." << subleaf;
        EXPECT_EQ(regs[3], entry->edx) << std::hex << "leaf " << leaf << "." << subleaf;
        ++compared;
    }
    EXPECT_GE(compared, 8u);
    std::printf("%zu CPUID entries; %zu leaves compared with the guest's CPUID\n", table->size(), compared);
    EXPECT_FALSE(m.engine->cpuid_table(1).ok()) << "there is no vCPU 1";
}

// --- vCPU state into a fresh VM ----------------------------------------------------------------------

// Beyond registers a restored guest needs its pending events (an NMI held back by NMI blocking,
// the MOV SS/STI interrupt shadow), the MP state, debug registers, kvmclock's MSRs and the LAPIC
// with its timer armed: here a TSC-deadline timer, which KVM takes only after the LAPIC says so.
TEST(KvmSnapshot, VcpuEventsClocksAndTimersReachAFreshVm)
{
    REQUIRE_KVM();
    auto a = make_machine(GuestMemory::create(kRamSize).release_value());
    ASSERT_TRUE(a.ok()) << a.error().message();
    auto initial = a.value()->vcpu->get_state();
    ASSERT_TRUE(initial.ok()) << initial.error().message();
    const uint64_t khz = a.value()->engine->save_machine()->tsc_khz;

    CpuState s = long_mode_state(kCode);
    s.lapic = initial->lapic;
    auto put32 = [&](size_t offset, uint32_t value) { std::memcpy(&s.lapic[offset], &value, 4); };
    put32(0xf0, 0x1ff); // SVR: APIC enabled, spurious vector 0xff
    put32(0x320, 0x40 | (2u << 17)); // LVT timer: TSC-deadline mode, vector 0x40
    s.tsc = initial->tsc;
    s.msrs.tsc_deadline = initial->tsc + khz * 1000 * 1000; // 1000 s ahead: still armed when read
    s.msrs.kvm_system_time = 0x5001; // enabled, at 0x5000
    s.msrs.kvm_wall_clock = 0x6000;
    s.dr = { 0x1000, 0x2000, 0x3000, 0x4000 };
    s.dr7 = 0x400 | 0x3;
    s.events.nmi_masked = 1;
    s.events.nmi_pending = 1;
    s.events.interrupt_shadow = KVM_X86_SHADOW_INT_MOV_SS;
    s.mp_state = MpState::Halted;
    ASSERT_OK(a.value()->vcpu->set_state(s));
    auto saved = a.value()->vcpu->get_state();
    ASSERT_TRUE(saved.ok()) << saved.error().message();
    a.value().reset();

    auto b = make_machine(GuestMemory::create(kRamSize).release_value());
    ASSERT_TRUE(b.ok()) << b.error().message();
    ASSERT_OK(b.value()->vcpu->set_state(saved.value()));
    auto got = b.value()->vcpu->get_state();
    ASSERT_TRUE(got.ok()) << got.error().message();
    for (const CpuState* g : { &saved.value(), &got.value() }) {
        const char* which = g == &saved.value() ? "saved" : "restored";
        EXPECT_EQ(g->events.nmi_masked, 1) << which;
        EXPECT_EQ(g->events.nmi_pending, 1) << which;
        EXPECT_EQ(g->events.interrupt_shadow, KVM_X86_SHADOW_INT_MOV_SS) << which;
        EXPECT_EQ(g->mp_state, MpState::Halted) << which;
        EXPECT_EQ(g->dr, s.dr) << which;
        EXPECT_EQ(g->dr7, s.dr7) << which;
        EXPECT_EQ(g->msrs.kvm_system_time, s.msrs.kvm_system_time) << which;
        EXPECT_EQ(g->msrs.kvm_wall_clock, s.msrs.kvm_wall_clock) << which;
        EXPECT_EQ(g->msrs.tsc_deadline, s.msrs.tsc_deadline) << which;
        EXPECT_EQ(std::memcmp(&g->lapic[0x320], &s.lapic[0x320], 4), 0) << which << ": LVT timer";
        EXPECT_EQ(std::memcmp(&g->lapic[0xf0], &s.lapic[0xf0], 4), 0) << which << ": SVR";
    }
    EXPECT_TRUE(got->events == saved->events);
    EXPECT_TRUE(got->msrs == saved->msrs);
}

// --- The TSC ---------------------------------------------------------------------------------------

TEST(KvmSnapshot, TscFrequencyIsReportedAndAnUnpresentableOneRefused)
{
    REQUIRE_KVM();
    auto a = make_machine(GuestMemory::create(kRamSize).release_value());
    ASSERT_TRUE(a.ok()) << a.error().message();
    auto& engine = *a.value()->engine;
    auto state = engine.save_machine();
    ASSERT_TRUE(state.ok()) << state.error().message();
    const uint64_t host = state->tsc_khz;
    ASSERT_GT(host, 0u) << "KVM_GET_TSC_KHZ";

    // Asking for the host's own frequency always works.
    auto same = make_machine(GuestMemory::create(kRamSize).release_value(), EngineConfig { 1, host });
    ASSERT_TRUE(same.ok()) << same.error().message();
    EXPECT_EQ(same.value()->engine->save_machine()->tsc_khz, host);

    // Half of it needs TSC scaling (KVM_CAP_TSC_CONTROL); without it the error names both.
    const uint64_t half = host / 2;
    auto expect_refusal = [&](const Error& error) {
        EXPECT_NE(error.message().find(std::to_string(half)), std::string::npos) << error.message();
        EXPECT_NE(error.message().find(std::to_string(host)), std::string::npos) << error.message();
        std::printf("refused as expected: %s\n", error.message().c_str());
    };
    auto other = make_machine(GuestMemory::create(kRamSize).release_value(), EngineConfig { 1, half });
    MachineState foreign = state.value();
    foreign.tsc_khz = half;
    auto restored = engine.restore_machine(foreign);
    if (engine.has_tsc_control()) {
        ASSERT_TRUE(other.ok()) << other.error().message();
        EXPECT_EQ(other.value()->engine->save_machine()->tsc_khz, half);
        ASSERT_TRUE(restored.ok()) << restored.error().message();
        EXPECT_EQ(engine.save_machine()->tsc_khz, half);
    } else {
        std::printf("note: no KVM_CAP_TSC_CONTROL here: only the host's %llu kHz can be presented\n",
            static_cast<unsigned long long>(host));
        ASSERT_FALSE(other.ok());
        expect_refusal(other.error());
        ASSERT_FALSE(restored.ok());
        expect_refusal(restored.error());
        EXPECT_EQ(engine.save_machine()->tsc_khz, host) << "a refused restore changes nothing";
    }
}

TEST(KvmSnapshot, RestoredTscContinuesFromTheSavedValue)
{
    REQUIRE_KVM();
    auto a = make_machine(GuestMemory::create(kRamSize).release_value());
    ASSERT_TRUE(a.ok()) << a.error().message();
    auto& src = *a.value();
    const uint64_t khz = src.engine->save_machine()->tsc_khz;
    ASSERT_GT(khz, 0u);
    const uint64_t two_seconds = khz * 1000 * 2;

    CpuState s = flat32_state(kCode);
    s.tsc = 1'000'000'000'000ULL; // far from the host's counter
    ASSERT_OK(src.vcpu->set_state(s));
    auto written = src.vcpu->get_state();
    ASSERT_TRUE(written.ok()) << written.error().message();
    if (written->tsc < s.tsc || written->tsc - s.tsc > two_seconds)
        GTEST_SKIP() << "this KVM ignores the VMM's writes to the guest TSC (kvm_pvm: guest user mode reads the "
                        "host's counter natively): wrote "
                     << s.tsc << ", read back " << written->tsc;

    const CpuState saved = written.value();
    auto b = make_machine(GuestMemory::create(kRamSize).release_value(), EngineConfig { 1, khz });
    ASSERT_TRUE(b.ok()) << b.error().message();
    ASSERT_OK(b.value()->vcpu->set_state(saved));
    auto restored = b.value()->vcpu->get_state();
    ASSERT_TRUE(restored.ok());
    EXPECT_GE(restored->tsc, saved.tsc);
    EXPECT_LT(restored->tsc - saved.tsc, two_seconds) << "the TSC in the fresh VM went on from the saved value";
}

// --- Dirty log -------------------------------------------------------------------------------------

namespace {

std::set<uint64_t> dirty_pages(DirtyBitmap& bitmap)
{
    std::set<uint64_t> pages;
    auto words = bitmap.take();
    for (uint64_t w = 0; w < words.size(); ++w)
        for (uint64_t v = words[w]; v; v &= v - 1)
            pages.insert(w * 64 + static_cast<uint64_t>(__builtin_ctzll(v)));
    return pages;
}

std::string page_list(const std::set<uint64_t>& pages)
{
    std::string out;
    for (uint64_t p : pages)
        out += fmt::format(" {:#x}", p << DirtyBitmap::kPageShift);
    return out.empty() ? " none" : out;
}

} // namespace

// Guest RAM of 3 GiB + 16 MiB: the last 16 MiB lie above the MMIO hole, at 4 GiB. Before tracking
// starts the guest writes some pages (KVM then holds writable mappings of them); once it starts,
// the guest writes one set of pages (those among them), the test collects; then another set (one
// page of the first again), and the second collect names only those; the same after a stop and
// a new start. With the page tables' accessed and dirty bits preset
// and no stack, interrupts or paravirtual clocks, the CPU writes nothing of its own; were it to
// (page-table A/D bits), only those pages may appear besides the guest's.
TEST(KvmSnapshot, DirtyLogNamesThePagesTheGuestWrote)
{
    REQUIRE_KVM();
    const uint64_t size = layout::kMmioHoleStart + kRamSize;
    const std::vector<uint64_t> first { 0x200000, 0x201000, 0x3ff000, 0x1234000, layout::kMmioHoleStart - 0x1000,
        layout::k4GiB, layout::k4GiB + kRamSize - 0x1000 };
    const std::vector<uint64_t> untracked { 0x200000, layout::k4GiB, 0x205000 }; // before the start
    const std::vector<uint64_t> second { 0x202000, 0x201000, layout::k4GiB + 0x1000 };
    const std::vector<uint64_t> third { 0x203000 }; // while not tracking
    const std::vector<uint64_t> fourth { 0x204000, 0x200000 }; // tracking again

    auto memory = GuestMemory::create(size);
    ASSERT_TRUE(memory.ok()) << memory.error().message();
    ASSERT_EQ(memory->regions().size(), 2u);
    ASSERT_OK(memory->write(kCode, kDirtyGuest));
    write_identity_map(memory.value());
    std::vector<uint64_t> list;
    for (const auto* round : { &untracked, &first, &second, &third, &fourth }) {
        list.insert(list.end(), round->begin(), round->end());
        list.push_back(0);
    }
    ASSERT_OK(memory->write(kData, std::span(reinterpret_cast<const uint8_t*>(list.data()), list.size() * 8)));
    const uint64_t end = memory->end_address();
    auto made = make_machine(memory.release_value());
    ASSERT_TRUE(made.ok()) << made.error().message();
    auto& m = *made.value();
    CpuState s = long_mode_state(kCode);
    s.gpr[RSI] = kData;
    ASSERT_OK(m.vcpu->set_state(s));

    std::set<uint64_t> cpu_pages; // pages the CPU itself may write: the page tables
    for (uint64_t p = kPml4; p < kPml4 + 7 * 0x1000; p += 0x1000)
        cpu_pages.insert(p >> DirtyBitmap::kPageShift);
    auto check = [&](const std::set<uint64_t>& got, const std::vector<uint64_t>& wrote, const char* round) {
        std::set<uint64_t> want;
        for (uint64_t gpa : wrote)
            want.insert(gpa >> DirtyBitmap::kPageShift);
        std::set<uint64_t> missing, extra;
        for (uint64_t p : want)
            if (!got.count(p))
                missing.insert(p);
        for (uint64_t p : got)
            if (!want.count(p) && !cpu_pages.count(p))
                extra.insert(p);
        EXPECT_TRUE(missing.empty()) << round << ": written but not marked:" << page_list(missing);
        EXPECT_TRUE(extra.empty()) << round << ": marked but never written:" << page_list(extra);
        std::printf("%s collect: marked%s\n", round, page_list(got).c_str());
    };

    ASSERT_TRUE(run_until(m, done_or_fault, 20s)); // untracked writes
    DirtyBitmap bitmap(end);
    ASSERT_OK(m.engine->start_dirty_tracking(bitmap));
    ASSERT_OK(m.engine->collect_dirty(bitmap));
    EXPECT_EQ(bitmap.count(), 0u) << "nothing written yet:" << page_list(dirty_pages(bitmap));

    ASSERT_TRUE(run_until(m, done_or_fault, 20s));
    ASSERT_OK(m.engine->collect_dirty(bitmap));
    check(dirty_pages(bitmap), first, "first");

    ASSERT_TRUE(run_until(m, done_or_fault, 20s));
    ASSERT_OK(m.engine->collect_dirty(bitmap));
    check(dirty_pages(bitmap), second, "second");

    ASSERT_OK(m.engine->collect_dirty(bitmap));
    EXPECT_EQ(bitmap.count(), 0u) << "a collect with no writes since the last";

    // Off (every slot re-registered without the log): the guest runs on, nothing to collect.
    m.engine->stop_dirty_tracking();
    EXPECT_FALSE(m.engine->collect_dirty(bitmap).ok()) << "collect after stop";
    ASSERT_TRUE(run_until(m, done_or_fault, 20s));
    // On again: a fresh log.
    ASSERT_OK(m.engine->start_dirty_tracking(bitmap));
    ASSERT_TRUE(run_until(m, done_or_fault, 20s));
    ASSERT_OK(m.engine->collect_dirty(bitmap));
    check(dirty_pages(bitmap), fourth, "restarted");
    m.engine->stop_dirty_tracking();

    for (uint64_t gpa :
        { layout::k4GiB + 0x1000, uint64_t { 0x203000 }, uint64_t { 0x204000 }, uint64_t { 0x205000 } }) {
        uint64_t value = 0;
        ASSERT_OK(m.memory.read(gpa, std::span(reinterpret_cast<uint8_t*>(&value), 8)));
        EXPECT_EQ(value, gpa) << "the guest's write reached RAM";
    }
}
