// Snapshots on the soft engine, through the Engine / Vcpu interface a VMM uses: the machine state
// (PIC, I/O APIC, PIT, guest clock) and every vCPU's CpuState saved from one engine and restored
// into a fresh one continue identically (a long-mode program ends in the same registers and RAM;
// a halted AP and an AP waiting for its SIPI resume), the TSC continues exactly, cpuid_table()
// lists what CPUID returns, and dirty tracking marks exactly the pages the guest writes — through
// the interpreter and through translated code, by plain, string, atomic, FXSAVE/XSAVE stores, the
// page walker's accessed/dirty bits and the kvm-clock structure — and, after collect_dirty(), only
// the pages written since.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <functional>
#include <memory>
#include <set>
#include <span>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <xbyak/xbyak.h>

#include "bus/bus.h"
#include "devices/irqchip/lapic.h"
#include "engine/soft/block_cache.h"
#include "engine/soft/interpreter.h"
#include "engine/soft/soft_engine.h"
#include "engine/soft/soft_vcpu.h"
#include "memory/dirty_bitmap.h"
#include "memory/guest_memory.h"

namespace vessel::soft {
namespace {

using Xbyak::CodeGenerator;
using namespace Xbyak::util;

// Guest-physical layout: identity-mapped long mode. 2 MiB pages (accessed and dirty preset, so
// the page walker writes nothing there) except two regions mapped by 4 KiB page tables whose
// entries start with accessed/dirty clear; a 1 GiB page at 3 GiB for the LAPIC.
constexpr uint64_t kRamBytes = 16 << 20;
constexpr uint64_t kGdt = 0x500, kPml4 = 0x1000, kPdpt = 0x2000, kPd = 0x3000;
constexpr uint64_t kPtWritten = 0x4000; // maps 0x600000-0x7fffff
constexpr uint64_t kPtRead = 0x5000; // maps 0x800000-0x9fffff
constexpr uint64_t kIdt = 0x6000, kTss = 0x6800, kMarks = 0x7000, kSipiCode = 0x9000;
constexpr uint64_t kCode = 0x100000, kApCode = 0x110000, kHandler = 0x120000, kData = 0x200000;
constexpr uint64_t kStack = 0x300000, kApStack = 0x2f0000;
constexpr uint64_t kApicBase = 0xfee00000;

std::vector<uint8_t> bytes_of(const CodeGenerator& g)
{
    return { g.getCode(), g.getCode() + g.getSize() };
}

// Port I/O and MMIO reach the buses the engine put its devices on.
class BusIo final : public IoHandler {
public:
    void pio_read(uint16_t port, std::span<uint8_t> data) override
    {
        if (!pio.read(port, data))
            std::memset(data.data(), 0xff, data.size());
    }
    void pio_write(uint16_t port, std::span<const uint8_t> data) override { (void)pio.write(port, data); }
    void mmio_read(uint64_t gpa, std::span<uint8_t> data) override
    {
        if (!mmio.read(gpa, data))
            std::memset(data.data(), 0xff, data.size());
    }
    void mmio_write(uint64_t gpa, std::span<const uint8_t> data) override { (void)mmio.write(gpa, data); }

    Bus pio { "pio" };
    Bus mmio { "mmio" };
};

// A soft engine over its own RAM with the tables above and its vCPUs, the guest clock paused (as
// the VMM keeps it while it saves or restores) at kStartNs. Not movable.
class Machine {
public:
    static constexpr uint64_t kStartNs = 1'000'000'000;

    explicit Machine(uint32_t count = 1, JitMode jit = jit_mode_from_env(), uint64_t tsc_khz = 0)
        : memory(GuestMemory::create(kRamBytes).release_value())
    {
        auto created = SoftEngine::create(EngineConfig { count, tsc_khz });
        EXPECT_TRUE(created.ok()) << (created.ok() ? "" : created.error().message());
        engine = created.release_value();
        EXPECT_TRUE(engine->map_memory(memory).ok());
        EXPECT_TRUE(engine->register_devices(io.pio, io.mmio).ok());
        engine->pause_clock(true);
        clock().set_now(kStartNs);
        for (uint32_t i = 0; i < count; ++i) {
            vcpus.push_back(SoftVcpu::create(*engine, i, io).release_value());
            caches.push_back(std::make_unique<BlockCache>(engine->machine(), jit));
        }
        write_tables();
    }
    Machine(const Machine&) = delete;
    Machine& operator=(const Machine&) = delete;

    VirtualClock& clock() { return engine->irqchip().clock(); }
    SoftVcpu& vcpu(uint32_t i) { return *vcpus[i]; }
    Cpu& cpu(uint32_t i) { return vcpus[i]->cpu(); }

    template<typename T>
    T read(uint64_t gpa)
    {
        return memory.read_obj<T>(gpa).value();
    }
    template<typename T>
    void write(uint64_t gpa, T value)
    {
        EXPECT_TRUE(memory.write_obj<T>(gpa, value).ok());
    }
    // A word other threads (running vCPUs) write.
    uint64_t read_shared(uint64_t gpa)
    {
        return __atomic_load_n(reinterpret_cast<const uint64_t*>(memory.host_ptr(gpa, 8)), __ATOMIC_ACQUIRE);
    }
    void load(uint64_t gpa, const std::vector<uint8_t>& code) { EXPECT_TRUE(memory.write(gpa, code).ok()); }
    void load(uint64_t gpa, const CodeGenerator& g) { load(gpa, bytes_of(g)); }
    std::vector<uint8_t> ram()
    {
        std::vector<uint8_t> out(memory.size());
        EXPECT_TRUE(memory.read(0, out).ok());
        return out;
    }
    void set_ram(const std::vector<uint8_t>& bytes) { EXPECT_TRUE(memory.write(0, bytes).ok()); }

    // vCPU i in 64-bit mode at CPL 0 at `rip`, its LAPIC as it is now.
    CpuState long_mode_state(uint32_t i, uint64_t rip, uint64_t rsp)
    {
        CpuState s = vcpu(i).get_state().value();
        SegmentReg data { 0, 0xffffffff, 0x10, 3, 1, 0, 1, 1, 0, 1, 0, 0 };
        s.cs = SegmentReg { 0, 0xffffffff, 0x08, 0xb, 1, 0, 0, 1, 1, 1, 0, 0 };
        s.ds = s.es = s.fs = s.gs = s.ss = data;
        s.tr = SegmentReg { kTss, 0x67, 0x38, 0xb, 1, 0, 0, 0, 0, 0, 0, 0 };
        s.ldtr = SegmentReg { 0, 0xffff, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1 };
        s.gdt = { kGdt, 0x47 };
        s.idt = { kIdt, 0xfff };
        s.cr0 = 0x80050033; // PG WP NE ET MP PE
        s.cr3 = kPml4;
        s.cr4 = x86::kCr4Pae | x86::kCr4Osfxsr | x86::kCr4Osxmmexcpt;
        s.efer = x86::kEferLme | x86::kEferLma | x86::kEferSce | x86::kEferNxe;
        s.rip = rip;
        s.gpr = {};
        s.gpr[RSP] = rsp;
        s.rflags = x86::kRflagsFixed;
        s.xsave = {};
        const uint16_t fcw = 0x37f;
        const uint32_t mxcsr = 0x1f80;
        const uint64_t xstate_bv = 3;
        std::memcpy(&s.xsave[0], &fcw, 2);
        std::memcpy(&s.xsave[24], &mxcsr, 4);
        std::memcpy(&s.xsave[512], &xstate_bv, 8);
        s.mp_state = MpState::Runnable;
        return s;
    }

    // Runs vCPU i's instructions on this thread (execute(): the vCPU's run loop, which takes
    // interrupts, timers and INIT/SIPI, is not involved) until it halts or `budget` ran.
    uint64_t step(uint32_t i, uint64_t budget = 1'000'000)
    {
        Cpu& c = cpu(i);
        uint64_t done = 0;
        while (done < budget && !c.halted) {
            c.attention.store(false);
            done += execute(c, *caches[i], budget - done);
        }
        return done;
    }
    // Resumes vCPU i at `rip` as it is (its TLB kept, unlike set_state()).
    void jump(uint32_t i, uint64_t rip)
    {
        cpu(i).rip = rip;
        cpu(i).halted = false;
    }

    // Runs every vCPU's own loop (SoftVcpu::run) on a thread until `done()` holds or 10 s passed,
    // then kicks them all back. True if `done()` held.
    bool run_threads_until(const std::function<bool()>& done)
    {
        std::vector<std::thread> threads;
        std::vector<VcpuExitKind> exits(vcpus.size(), VcpuExitKind::InternalError);
        for (size_t i = 0; i < vcpus.size(); ++i) {
            threads.emplace_back([this, i, &exits] {
                auto exit = vcpus[i]->run();
                EXPECT_TRUE(exit.ok());
                if (exit.ok()) {
                    exits[i] = exit.value().kind;
                    EXPECT_EQ(exit.value().kind, VcpuExitKind::Kicked) << exit.value().message;
                }
            });
        }
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
        bool held = false;
        while (!(held = done()) && std::chrono::steady_clock::now() < deadline)
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        for (auto& vcpu : vcpus)
            vcpu->kick();
        for (auto& thread : threads)
            thread.join();
        return held;
    }

    void gate(uint8_t vector, uint64_t handler)
    {
        write<uint64_t>(kIdt + vector * 16u,
            (handler & 0xffff) | (0x08ULL << 16) | (0xeULL << 40) | (1ULL << 47) | (((handler >> 16) & 0xffff) << 48));
        write<uint64_t>(kIdt + vector * 16u + 8, handler >> 32);
    }

    GuestMemory memory; // first: outlives the engine
    BusIo io;
    std::unique_ptr<SoftEngine> engine;
    std::vector<std::unique_ptr<SoftVcpu>> vcpus;
    std::vector<std::unique_ptr<BlockCache>> caches;

private:
    void write_tables()
    {
        const uint64_t gdt[] = { 0, 0x00af9b000000ffffULL, 0x00cf93000000ffffULL, 0x00cf9b000000ffffULL, 0, 0, 0,
            0x67 | ((kTss & 0xffffff) << 16) | (0x9ULL << 40) | (1ULL << 47), 0 };
        for (size_t i = 0; i < std::size(gdt); ++i)
            write<uint64_t>(kGdt + i * 8, gdt[i]);
        constexpr uint64_t kTable = 0x27; // present, writable, user, accessed
        constexpr uint64_t kLarge = 0xe7; // ... dirty, 2 MiB / 1 GiB page
        write<uint64_t>(kPml4, kPdpt | kTable);
        write<uint64_t>(kPdpt, kPd | kTable);
        write<uint64_t>(kPdpt + 3 * 8, 0xc0000000ULL | kLarge | 0x18); // uncached: the LAPIC
        for (uint64_t i = 0; i < 512; ++i)
            write<uint64_t>(kPd + i * 8, (i << 21) | kLarge);
        write<uint64_t>(kPd + 3 * 8, kPtWritten | kTable);
        write<uint64_t>(kPd + 4 * 8, kPtRead | kTable);
        for (uint64_t i = 0; i < 512; ++i) {
            write<uint64_t>(kPtWritten + i * 8, (0x600000 + (i << 12)) | 7);
            write<uint64_t>(kPtRead + i * 8, (0x800000 + (i << 12)) | 7);
        }
    }
};

// Everything a snapshot holds, taken from `m` the way a VMM takes it (vCPUs stopped, clock paused).
struct Snapshot {
    std::vector<CpuState> cpus;
    MachineState machine;
    std::vector<uint8_t> ram;
};

Snapshot take_snapshot(Machine& m)
{
    Snapshot s;
    for (uint32_t i = 0; i < m.vcpus.size(); ++i)
        s.cpus.push_back(m.vcpu(i).get_state().value());
    auto machine = m.engine->save_machine();
    EXPECT_TRUE(machine.ok());
    s.machine = machine.value();
    s.ram = m.ram();
    return s;
}

// Restores `s` into a fresh machine in the VMM's order: machine, RAM, then each vCPU.
void restore_snapshot(Machine& m, const Snapshot& s)
{
    auto restored = m.engine->restore_machine(s.machine);
    ASSERT_TRUE(restored.ok()) << restored.error().message();
    m.set_ram(s.ram);
    for (uint32_t i = 0; i < s.cpus.size(); ++i) {
        auto set = m.vcpu(i).set_state(s.cpus[i]);
        ASSERT_TRUE(set.ok()) << set.error().message();
    }
}

// --- Machine state -------------------------------------------------------------------------------

void outb(Machine& m, uint16_t port, uint8_t value)
{
    m.io.pio_write(port, std::span(&value, 1));
}
uint8_t inb(Machine& m, uint16_t port)
{
    uint8_t value = 0;
    m.io.pio_read(port, std::span(&value, 1));
    return value;
}

TEST(SoftSnapshot, MachineStateRestoresIntoAPausedClock)
{
    Machine a;
    outb(a, 0x43, 0x34); // PIT channel 0: periodic, 1 ms
    outb(a, 0x40, 1193 & 0xff);
    outb(a, 0x40, 1193 >> 8);
    outb(a, 0x20, 0x11); // PIC master: ICW1-4, vectors 0x20
    outb(a, 0x21, 0x20);
    outb(a, 0x21, 0x04);
    outb(a, 0x21, 0x01);
    outb(a, 0x21, 0xfa); // IRQ 0 and 2 unmasked
    a.clock().set_now(Machine::kStartNs + 2'500'000);

    auto saved = a.engine->save_machine();
    ASSERT_TRUE(saved.ok());
    const MachineState& ms = saved.value();
    EXPECT_EQ(ms.guest_time_ns, Machine::kStartNs + 2'500'000);
    EXPECT_EQ(ms.tsc_khz, VirtualClock::kDefaultTscKhz);
    EXPECT_EQ(ms.pic[0].irq_base, 0x20);
    EXPECT_EQ(ms.pit.channels[0].count, 1193u);
    EXPECT_EQ(ms.pit.channels[0].count_load_time_ns, static_cast<int64_t>(Machine::kStartNs));
    // The IRQ0 edge due at 2 ms was raised while saving: the PIC holds it.
    EXPECT_EQ(ms.pic[0].irr & 1, 1);

    Machine b;
    ASSERT_TRUE(b.engine->restore_machine(ms).ok());
    EXPECT_TRUE(b.clock().paused());
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    EXPECT_EQ(b.clock().now_ns(), ms.guest_time_ns); // paused at the saved time
    EXPECT_EQ(b.engine->save_machine().value(), ms);
    EXPECT_EQ(b.engine->irqchip().next_deadline_ns(), a.engine->irqchip().next_deadline_ns());
    EXPECT_TRUE(b.engine->irqchip().lapic(0).has_pending_interrupt()); // PIC output on LINT0

    // Both PITs count on alike.
    for (uint64_t t : { 2'700'000, 3'100'000, 9'999'999 }) {
        a.clock().set_now(Machine::kStartNs + t);
        b.clock().set_now(Machine::kStartNs + t);
        outb(a, 0x43, 0x00); // latch channel 0
        outb(b, 0x43, 0x00);
        EXPECT_EQ(inb(a, 0x40), inb(b, 0x40));
        EXPECT_EQ(inb(a, 0x40), inb(b, 0x40));
    }
    // Resuming runs the guest clock on from the saved time.
    b.clock().set_now(ms.guest_time_ns);
    b.engine->pause_clock(false);
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    EXPECT_GT(b.clock().now_ns(), ms.guest_time_ns + 1'000'000);
    EXPECT_LT(b.clock().now_ns(), ms.guest_time_ns + 5'000'000'000);
}

TEST(SoftSnapshot, RestoreRefusesAnotherTscFrequency)
{
    Machine a;
    MachineState ms = a.engine->save_machine().value();
    Machine b(1, JitMode::Off, 2'000'000);
    auto restored = b.engine->restore_machine(ms);
    ASSERT_FALSE(restored.ok());
    EXPECT_NE(restored.error().message().find("1000000 kHz"), std::string::npos) << restored.error().message();
    EXPECT_NE(restored.error().message().find("2000000 kHz"), std::string::npos) << restored.error().message();
    EXPECT_FALSE(SoftEngine::create(EngineConfig { 1, 10 }).ok());
}

TEST(SoftSnapshot, TscFrequencyFromConfig)
{
    Machine m(1, JitMode::Off, 2'500'000);
    m.clock().set_now(2'000'000'000);
    EXPECT_EQ(m.vcpu(0).get_state().value().tsc, 5'000'000'000u);
    EXPECT_EQ(m.engine->save_machine().value().tsc_khz, 2'500'000u);
    auto table = m.engine->cpuid_table(0).value();
    auto leaf = [&](uint32_t function) {
        auto it = std::find_if(table.begin(), table.end(), [&](const CpuidEntry& e) { return e.function == function; });
        EXPECT_NE(it, table.end()) << std::hex << function;
        return it == table.end() ? CpuidEntry {} : *it;
    };
    EXPECT_EQ(leaf(0x16).eax, 2500u);
    EXPECT_EQ(leaf(0x40000010).eax, 2'500'000u);
    const CpuidEntry l15 = leaf(0x15);
    EXPECT_EQ(static_cast<uint64_t>(l15.ecx) * l15.ebx / l15.eax, 2'500'000'000u);
}

// --- vCPU state ----------------------------------------------------------------------------------

// The bit for `vector` in the LAPIC page's ISR / TMR / IRR at `base`.
bool lapic_bit(const CpuState& s, uint32_t base, uint8_t vector)
{
    uint32_t word;
    std::memcpy(&word, &s.lapic[base + 16 * (vector / 32)], 4);
    return (word >> (vector % 32)) & 1;
}

// A loop over what a vCPU's state must carry: GPRs and lazy flags, SSE and x87 registers, the
// stack, a string instruction, RDTSC; before it, the LAPIC timer is armed and kvm-clock enabled.
std::vector<uint8_t> workload()
{
    CodeGenerator g(4096, Xbyak::AutoGrow);
    Xbyak::Label top, func;
    g.mov(rbx, kApicBase);
    g.mov(dword[rbx + 0xf0], 0x1ff); // SVR: enabled
    g.mov(dword[rbx + 0x3e0], 0xb); // divide by 1
    g.mov(dword[rbx + 0x320], 0x30); // LVT timer: one-shot, vector 0x30
    g.mov(dword[rbx + 0x380], 1'000'000'000); // 1 s
    g.mov(ecx, 0x4b564d01); // MSR_KVM_SYSTEM_TIME_NEW
    g.mov(eax, static_cast<uint32_t>(kData + 0x20000) | 1);
    g.xor_(edx, edx);
    g.wrmsr();
    g.mov(r12, kData);
    g.mov(ecx, 400);
    g.fld1();
    g.fldz();
    g.L(top);
    g.mov(rdx, 6364136223846793005ULL);
    g.imul(rax, rdx);
    g.mov(r8, 1442695040888963407ULL);
    g.add(rax, r8);
    g.adc(r9, 0);
    g.mov(ptr[r12 + rcx * 8], rax);
    g.movq(xmm0, rax);
    g.paddq(xmm1, xmm0);
    g.pshufd(xmm2, xmm1, 0x1b);
    g.pxor(xmm3, xmm2);
    g.fadd(st0, st1);
    g.push(rax);
    g.pop(r10);
    g.call(func);
    g.mov(r13, rax);
    g.rdtsc();
    g.shl(rdx, 32);
    g.or_(rax, rdx);
    g.xor_(r11, rax);
    g.mov(rax, r13);
    g.push(rcx);
    g.lea(rsi, ptr[r12 + rcx * 8]);
    g.lea(rdi, ptr[r12 + rcx * 8 + 0x8000]);
    g.mov(ecx, 8);
    g.rep();
    g.movsb();
    g.pop(rcx);
    g.cmp(rax, r10);
    g.setb(r15b);
    g.dec(rcx);
    g.jnz(top, Xbyak::CodeGenerator::T_NEAR);
    g.fstp(qword[r12 + 0x10000]);
    g.hlt();
    g.L(func);
    g.xor_(r14, rcx);
    g.rol(r14, 3);
    g.ret();
    g.ready();
    return bytes_of(g);
}

class SoftSnapshotProgram : public ::testing::TestWithParam<JitMode> { };

TEST_P(SoftSnapshotProgram, ContinuesIdenticallyInAFreshEngine)
{
    Machine a(1, GetParam());
    a.load(kCode, workload());
    ASSERT_TRUE(a.vcpu(0).set_state(a.long_mode_state(0, kCode, kStack)).ok());
    a.step(0, 3000);
    ASSERT_FALSE(a.cpu(0).halted);
    a.clock().set_now(Machine::kStartNs + 123'456); // the LAPIC timer has counted meanwhile

    const Snapshot s = take_snapshot(a);
    const CpuState& st = s.cpus[0];
    EXPECT_EQ(st.msrs.kvm_system_time, (kData + 0x20000) | 1);
    EXPECT_EQ(st.tsc, Machine::kStartNs + 123'456); // 1 GHz, offset 0
    uint32_t current;
    std::memcpy(&current, &st.lapic[Lapic::kRegTimerCurrent], 4);
    EXPECT_EQ(current, 1'000'000'000u - 123'456);
    EXPECT_EQ(st.mp_state, MpState::Runnable);

    Machine b(1, GetParam());
    restore_snapshot(b, s);
    EXPECT_EQ(b.vcpu(0).get_state().value(), st); // get_state(set_state(x)) == x
    EXPECT_TRUE(b.ram() == s.ram);
    // B tracks dirty pages from here: every page that changes must be marked.
    DirtyBitmap dirty(b.memory.end_address());
    ASSERT_TRUE(b.engine->start_dirty_tracking(dirty).ok());

    a.step(0);
    b.step(0);
    ASSERT_TRUE(a.cpu(0).halted);
    ASSERT_TRUE(b.cpu(0).halted);
    const CpuState end_a = a.vcpu(0).get_state().value();
    const CpuState end_b = b.vcpu(0).get_state().value();
    EXPECT_EQ(end_a.gpr, end_b.gpr);
    EXPECT_EQ(end_a.rip, end_b.rip);
    EXPECT_EQ(end_a.xsave, end_b.xsave);
    EXPECT_EQ(end_a.lapic, end_b.lapic);
    EXPECT_EQ(end_a, end_b);
    EXPECT_EQ(end_a.mp_state, MpState::Halted);
    const std::vector<uint8_t> end_ram = b.ram();
    EXPECT_TRUE(a.ram() == end_ram);
    EXPECT_EQ(a.read<uint64_t>(kData + 8), b.read<uint64_t>(kData + 8));
    size_t changed = 0;
    for (uint64_t page = 0; page < end_ram.size(); page += 4096) {
        if (std::memcmp(&end_ram[page], &s.ram[page], 4096) != 0) {
            ++changed;
            EXPECT_TRUE(dirty.test(page >> 12)) << "page " << std::hex << page << " changed but is not dirty";
        }
    }
    EXPECT_GE(changed, 3u); // the data array, its copy, the stack
    b.engine->stop_dirty_tracking();
}

INSTANTIATE_TEST_SUITE_P(Soft, SoftSnapshotProgram, ::testing::Values(JitMode::Off, JitMode::Eager),
    [](const auto& info) { return info.param == JitMode::Off ? "Interpreter" : "Translated"; });

TEST(SoftSnapshot, TscContinuesExactlyOnEveryVcpu)
{
    Machine a(2);
    a.clock().set_now(5'000'000'000);
    CpuState s0 = a.vcpu(0).get_state().value();
    s0.tsc = 123'456'789'000; // as if the guest wrote IA32_TSC
    ASSERT_TRUE(a.vcpu(0).set_state(s0).ok());
    EXPECT_EQ(a.vcpu(0).get_state().value().tsc, 123'456'789'000u);
    CpuState s1 = a.vcpu(1).get_state().value();
    s1.tsc = 123'456'789'000 + 500; // within a second: matched to vCPU 0's offset
    ASSERT_TRUE(a.vcpu(1).set_state(s1).ok());
    EXPECT_EQ(a.cpu(1).tsc_offset, a.cpu(0).tsc_offset);
    a.clock().set_now(5'000'000'777);
    const Snapshot s = take_snapshot(a);
    EXPECT_EQ(s.cpus[0].tsc, 123'456'789'777u);
    EXPECT_EQ(s.cpus[1].tsc, s.cpus[0].tsc);

    Machine b(2);
    restore_snapshot(b, s);
    EXPECT_EQ(b.vcpu(0).get_state().value().tsc, s.cpus[0].tsc);
    EXPECT_EQ(b.vcpu(1).get_state().value().tsc, s.cpus[0].tsc);
    b.clock().set_now(5'000'001'000);
    EXPECT_EQ(b.vcpu(1).get_state().value().tsc, 123'456'790'000u);
}

TEST(SoftSnapshot, LapicTscDeadlineAndPendingEventsRoundTrip)
{
    Machine a;
    Lapic& lapic = *a.cpu(0).lapic;
    lapic.write_register(Lapic::kRegSvr, 0x1ff);
    lapic.write_register(Lapic::kRegLvtTimer, Lapic::kLvtTimerTscDeadline | 0x31);
    ASSERT_TRUE(lapic.write_msr(Lapic::kMsrTscDeadline, Machine::kStartNs + 5000));
    lapic.accept(ApicMessage { 0, false, ApicDeliveryMode::Fixed, 0x50, true, false, ApicShorthand::None, 1 });
    lapic.accept(ApicMessage { 0, false, ApicDeliveryMode::Nmi, 0, true, false, ApicShorthand::None, 1 });
    CpuState st = a.vcpu(0).get_state().value();
    st.events.interrupt_shadow = 1;
    st.events.nmi_masked = 1;
    st.mp_state = MpState::Halted;
    ASSERT_TRUE(a.vcpu(0).set_state(st).ok());
    const Snapshot s = take_snapshot(a);
    const CpuState& saved = s.cpus[0];
    EXPECT_EQ(saved.msrs.tsc_deadline, Machine::kStartNs + 5000);
    EXPECT_EQ(saved.events.nmi_pending, 1);
    EXPECT_EQ(saved.events.nmi_masked, 1);
    EXPECT_EQ(saved.events.interrupt_shadow, 1);
    EXPECT_EQ(saved.mp_state, MpState::Halted);
    EXPECT_TRUE(lapic_bit(saved, Lapic::kRegIrr, 0x50));

    Machine b;
    restore_snapshot(b, s);
    EXPECT_EQ(b.vcpu(0).get_state().value(), saved);
    Lapic& restored = *b.cpu(0).lapic;
    EXPECT_TRUE(restored.has_pending_nmi());
    EXPECT_EQ(restored.pending_vector(), 0x50);
    // The deadline fires at its time, on both.
    for (Machine* m : { &a, &b }) {
        m->clock().set_now(Machine::kStartNs + 5000);
        const CpuState after = m->vcpu(0).get_state().value();
        EXPECT_EQ(after.msrs.tsc_deadline, 0u);
        EXPECT_TRUE(lapic_bit(after, Lapic::kRegIrr, 0x31));
    }
}

TEST(SoftSnapshot, InjectedExceptionIsDeliveredOnResume)
{
    Machine m;
    CodeGenerator handler;
    handler.xor_(esi, esi);
    handler.mov(byte[rsi + static_cast<int>(kMarks)], 0x6);
    handler.cli();
    handler.hlt();
    m.load(kHandler, handler);
    m.gate(6, kHandler);
    CpuState st = m.long_mode_state(0, kCode, kStack);
    st.events.exception_injected = 1;
    st.events.exception_nr = 6;
    ASSERT_TRUE(m.vcpu(0).set_state(st).ok());
    EXPECT_EQ(m.vcpu(0).get_state().value().events.exception_injected, 1); // held until it runs
    ASSERT_TRUE(m.run_threads_until([&] { return m.read_shared(kMarks) == 6; }));
    const CpuState after = m.vcpu(0).get_state().value();
    EXPECT_EQ(after.events.exception_injected, 0);
    EXPECT_EQ(m.read<uint64_t>(kStack - 40), kCode); // the #UD frame's RIP (below SS, RSP, RFLAGS, CS)
}

// BSP program for engine B of the AP tests: sends `icr` to APIC 1, marks kMarks + 0x100.
std::vector<uint8_t> send_ipi(uint32_t icr)
{
    CodeGenerator g;
    g.xor_(esi, esi); // [rsi + x]: absolute addresses
    g.mov(rbx, kApicBase);
    g.mov(dword[rbx + 0xf0], 0x1ff);
    g.mov(dword[rbx + 0x310], 1u << 24);
    g.mov(dword[rbx + 0x300], icr);
    g.mov(byte[rsi + static_cast<int>(kMarks + 0x100)], 1);
    g.cli();
    g.hlt();
    return bytes_of(g);
}

TEST(SoftSnapshot, HaltedApResumesInAFreshEngine)
{
    Machine a(2);
    CodeGenerator ap;
    Xbyak::Label again;
    ap.L(again);
    ap.sti();
    ap.hlt();
    ap.jmp(again);
    a.load(kApCode, ap);
    CodeGenerator handler; // counts, EOIs, returns to the halt loop
    handler.xor_(esi, esi);
    handler.inc(qword[rsi + static_cast<int>(kMarks)]);
    handler.mov(rax, kApicBase);
    handler.mov(dword[rax + 0xb0], 0);
    handler.db(0x48); // IRETQ
    handler.db(0xcf);
    a.load(kHandler, handler);
    a.gate(0x40, kHandler);
    CpuState ap_state = a.long_mode_state(1, kApCode, kApStack);
    const uint32_t svr = 0x1ff;
    std::memcpy(&ap_state.lapic[Lapic::kRegSvr], &svr, 4);
    ASSERT_TRUE(a.vcpu(1).set_state(ap_state).ok());
    a.step(1);
    ASSERT_TRUE(a.cpu(1).halted);

    const Snapshot s = take_snapshot(a);
    EXPECT_EQ(s.cpus[1].mp_state, MpState::Halted);
    EXPECT_TRUE(s.cpus[1].rflags & x86::kRflagsIf);
    EXPECT_EQ(s.cpus[0].mp_state, MpState::Runnable);

    Machine b(2);
    restore_snapshot(b, s);
    b.load(kCode, send_ipi(0x4040)); // fixed, vector 0x40
    ASSERT_TRUE(b.vcpu(0).set_state(b.long_mode_state(0, kCode, kStack)).ok());
    ASSERT_TRUE(b.run_threads_until([&] { return b.read_shared(kMarks) == 1; }))
        << "the restored AP did not take the IPI";
    EXPECT_EQ(b.read<uint8_t>(kMarks + 0x100), 1);
    const CpuState after = b.vcpu(1).get_state().value();
    EXPECT_EQ(after.mp_state, MpState::Halted);
    EXPECT_GE(after.rip, kApCode);
    EXPECT_LT(after.rip, kApCode + 8);
}

TEST(SoftSnapshot, ApWaitingForSipiStartsInAFreshEngine)
{
    Machine a(2);
    a.load(kCode, send_ipi(0x4500)); // INIT, assert
    ASSERT_TRUE(a.vcpu(0).set_state(a.long_mode_state(0, kCode, kStack)).ok());
    a.step(0);
    ASSERT_TRUE(a.cpu(0).halted);
    const Snapshot s = take_snapshot(a);
    EXPECT_EQ(s.cpus[1].mp_state, MpState::InitReceived);

    Machine b(2);
    restore_snapshot(b, s);
    EXPECT_EQ(b.vcpu(1).get_state().value().mp_state, MpState::InitReceived);
    // Real-mode start-up code at vector 9 (0x9000): marks, halts.
    const uint8_t sipi_code[] = { 0xc6, 0x06, 0x00, 0x72, 0x5a, 0xfa, 0xf4 }; // mov byte [0x7200], 0x5a; cli; hlt
    ASSERT_TRUE(b.memory.write(kSipiCode, sipi_code).ok());
    b.load(kCode, send_ipi(0x4609)); // SIPI, vector 9
    ASSERT_TRUE(b.vcpu(0).set_state(b.long_mode_state(0, kCode, kStack)).ok());
    ASSERT_TRUE(b.run_threads_until([&] { return (b.read_shared(kMarks + 0x200) & 0xff) == 0x5a; }))
        << "the restored AP did not start on the SIPI";
    EXPECT_EQ(b.vcpu(1).get_state().value().mp_state, MpState::Halted);
}

// --- CPUID ---------------------------------------------------------------------------------------

TEST(SoftSnapshot, CpuidTableMatchesTheCpuidInstruction)
{
    Machine m(2);
    auto table = m.engine->cpuid_table(1);
    ASSERT_TRUE(table.ok());
    EXPECT_FALSE(m.engine->cpuid_table(2).ok());
    auto find = [&](uint32_t function, uint32_t index) -> const CpuidEntry* {
        for (const CpuidEntry& e : table.value())
            if (e.function == function && (!e.significant_index || e.index == index))
                return &e;
        return nullptr;
    };
    const std::pair<uint32_t, uint32_t> probes[]
        = { { 0, 0 }, { 1, 0 }, { 4, 0 }, { 4, 3 }, { 4, 4 }, { 6, 0 }, { 7, 0 }, { 7, 2 }, { 0xb, 0 }, { 0xb, 1 },
              { 0xb, 2 }, { 0xd, 0 }, { 0xd, 1 }, { 0x15, 0 }, { 0x16, 0 }, { 0x40000000, 0 }, { 0x40000001, 0 },
              { 0x40000010, 0 }, { 0x80000000, 0 }, { 0x80000001, 0 }, { 0x80000004, 0 }, { 0x80000008, 0 } };
    CodeGenerator g;
    g.cpuid();
    g.hlt();
    m.load(kCode, g);
    ASSERT_TRUE(m.vcpu(1).set_state(m.long_mode_state(1, kCode, kStack)).ok());
    for (auto [function, index] : probes) {
        const CpuidEntry* e = find(function, index);
        ASSERT_NE(e, nullptr) << std::hex << function << "." << index;
        Cpu& c = m.cpu(1);
        c.gpr[RAX] = function;
        c.gpr[RCX] = index;
        m.jump(1, kCode);
        m.step(1);
        EXPECT_EQ(c.gpr[RAX], e->eax) << std::hex << function << "." << index;
        EXPECT_EQ(c.gpr[RBX], e->ebx) << std::hex << function << "." << index;
        EXPECT_EQ(c.gpr[RCX], e->ecx) << std::hex << function << "." << index;
        EXPECT_EQ(c.gpr[RDX], e->edx) << std::hex << function << "." << index;
    }
    EXPECT_TRUE(find(4, 3)->significant_index);
    EXPECT_EQ(find(4, 4)->eax & 0x1f, 0u); // the terminating invalid cache level is listed
    EXPECT_EQ(find(0xb, 1)->edx, 1u); // x2APIC id of vCPU 1
    EXPECT_FALSE(find(0x80000002, 0)->significant_index);
    const size_t leaves_4 = std::count_if(
        table.value().begin(), table.value().end(), [](const CpuidEntry& e) { return e.function == 4; });
    EXPECT_EQ(leaves_4, 5u);
}

// --- Dirty tracking ------------------------------------------------------------------------------

std::set<uint64_t> dirty_pages(DirtyBitmap& bitmap)
{
    std::set<uint64_t> pages;
    auto words = bitmap.take();
    for (uint64_t w = 0; w < words.size(); ++w)
        for (unsigned b = 0; b < 64; ++b)
            if (words[w] >> b & 1)
                pages.insert((w * 64 + b) << DirtyBitmap::kPageShift);
    return pages;
}

class SoftSnapshotDirty : public ::testing::TestWithParam<JitMode> { };

TEST_P(SoftSnapshotDirty, MarksExactlyThePagesWritten)
{
    Machine m(1, GetParam());
    constexpr uint64_t kPvclock = 0x218000;
    CodeGenerator g(4096, Xbyak::AutoGrow);
    g.xor_(esi, esi); // [rsi + x]: absolute addresses
    g.mov(rax, 0x1122334455667788ULL);
    g.mov(qword[rsi + 0x210010], rax); // plain store
    g.mov(rdi, 0x211ff0); // REP STOSB across 0x211000 / 0x212000
    g.mov(ecx, 0x30);
    g.mov(al, 0xab);
    g.rep();
    g.stosb();
    g.mov(qword[rsi + 0x213ffc], rax); // a store crossing 0x213000 / 0x214000
    g.lock();
    g.add(qword[rsi + 0x215008], rax); // atomic
    for (uint8_t b : { 0x0f, 0xae, 0x04, 0x25, 0x00, 0x60, 0x21, 0x00 }) // FXSAVE [0x216000]
        g.db(b);
    g.xor_(edx, edx);
    g.mov(eax, 3);
    for (uint8_t b : { 0x0f, 0xae, 0x24, 0x25, 0x00, 0x70, 0x21, 0x00 }) // XSAVE [0x217000]
        g.db(b);
    g.mov(rbx, qword[rsi + 0x801000]); // a read: sets the accessed bit in kPtRead
    g.mov(qword[rsi + 0x602000], rax); // sets accessed and dirty in kPtWritten
    g.mov(ecx, 0x4b564d01); // kvm-clock: the engine writes the structure
    g.mov(eax, static_cast<uint32_t>(kPvclock) | 1);
    g.xor_(edx, edx);
    g.wrmsr();
    g.hlt();
    g.ready();
    m.load(kCode, g);
    // The same page again, a new one, and one read before it is written, in a loop hot enough to
    // translate.
    CodeGenerator again;
    Xbyak::Label loop;
    again.xor_(esi, esi);
    again.mov(ecx, 20);
    again.L(loop);
    again.mov(qword[rsi + 0x210018], rcx);
    again.mov(qword[rsi + 0x219000], rcx);
    again.mov(rax, qword[rsi + 0x21a000]);
    again.mov(qword[rsi + 0x21a008], rax);
    again.dec(ecx);
    again.jnz(loop);
    again.hlt();
    m.load(kCode + 0x1000, again);

    CpuState st = m.long_mode_state(0, kCode, kStack);
    st.cr4 |= 1ULL << 18; // OSXSAVE
    st.xcr0 = 3;
    ASSERT_TRUE(m.vcpu(0).set_state(st).ok());
    DirtyBitmap bitmap(m.memory.end_address());
    ASSERT_TRUE(m.engine->start_dirty_tracking(bitmap).ok());
    DirtyBitmap other(m.memory.end_address());
    EXPECT_FALSE(m.engine->start_dirty_tracking(other).ok());
    EXPECT_FALSE(m.engine->collect_dirty(other).ok());

    m.step(0);
    ASSERT_TRUE(m.cpu(0).halted);
    const std::set<uint64_t> expected { 0x210000, 0x211000, 0x212000, 0x213000, 0x214000, 0x215000, 0x216000, 0x217000,
        kPvclock, 0x602000, kPtWritten, kPtRead };
    EXPECT_EQ(dirty_pages(bitmap), expected);
    EXPECT_EQ(m.read<uint64_t>(kPtWritten + 2 * 8) & 0x60, 0x60u); // A and D set by the walker
    EXPECT_EQ(m.read<uint64_t>(kPtRead + 1 * 8) & 0x60, 0x20u); // A only

    // After collect_dirty(), only what is written from then on.
    ASSERT_TRUE(m.engine->collect_dirty(bitmap).ok());
    m.jump(0, kCode + 0x1000);
    m.step(0);
    EXPECT_EQ(dirty_pages(bitmap), (std::set<uint64_t> { 0x210000, 0x219000, 0x21a000 }));
    // Without collect_dirty() the same stores take the TLB's write entries and mark nothing:
    // the VMM must call it after each take().
    m.jump(0, kCode + 0x1000);
    m.step(0);
    EXPECT_TRUE(dirty_pages(bitmap).empty());
    ASSERT_TRUE(m.engine->collect_dirty(bitmap).ok());
    m.jump(0, kCode + 0x1000);
    m.step(0);
    EXPECT_EQ(dirty_pages(bitmap), (std::set<uint64_t> { 0x210000, 0x219000, 0x21a000 }));

    m.engine->stop_dirty_tracking();
    EXPECT_FALSE(m.engine->collect_dirty(bitmap).ok());
    m.jump(0, kCode + 0x1000);
    m.step(0);
    EXPECT_EQ(bitmap.count(), 0u);
}

INSTANTIATE_TEST_SUITE_P(Soft, SoftSnapshotDirty, ::testing::Values(JitMode::Off, JitMode::Eager),
    [](const auto& info) { return info.param == JitMode::Off ? "Interpreter" : "Translated"; });

TEST(SoftSnapshot, DirtyTrackingSeesWritesFromSeveralVcpusAtOnce)
{
    Machine m(2);
    // Each vCPU fills its own 64 pages, one store per page, then halts.
    for (uint32_t i = 0; i < 2; ++i) {
        CodeGenerator g;
        Xbyak::Label loop;
        g.xor_(esi, esi);
        g.mov(rdi, kData + i * 0x100000);
        g.mov(ecx, 64);
        g.L(loop);
        g.mov(qword[rdi], rcx);
        g.add(rdi, 0x1000);
        g.dec(ecx);
        g.jnz(loop);
        g.mov(byte[rsi + static_cast<int>(kMarks + i)], 1);
        g.cli();
        g.hlt();
        m.load(kCode + i * 0x1000, g);
        ASSERT_TRUE(m.vcpu(i).set_state(m.long_mode_state(i, kCode + i * 0x1000, kStack - i * 0x10000)).ok());
    }
    DirtyBitmap bitmap(m.memory.end_address());
    ASSERT_TRUE(m.engine->start_dirty_tracking(bitmap).ok());
    ASSERT_TRUE(m.run_threads_until([&] { return (m.read_shared(kMarks) & 0xffff) == 0x0101; }));
    std::set<uint64_t> expected { kMarks };
    for (uint64_t p = 0; p < 64; ++p) {
        expected.insert(kData + p * 0x1000);
        expected.insert(kData + 0x100000 + p * 0x1000);
    }
    EXPECT_EQ(dirty_pages(bitmap), expected);
    m.engine->stop_dirty_tracking();
}

} // namespace
} // namespace vessel::soft
