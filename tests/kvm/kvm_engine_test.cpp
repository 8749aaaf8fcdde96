// KVM engine tests against the real /dev/kvm. On hosts like ours (kvm_pvm) guest CPL0 code is
// emulated slowly, so the guests here are a handful of instructions.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>

#include "engine/kvm/kvm_engine.h"
#include "engine/probe.h"
#include "memory/guest_memory.h"

using namespace vessel;

namespace {

constexpr uint64_t kCodeAddr = 0x10000;

bool kvm_usable(std::string& why)
{
    HostProbe p = probe_host();
    if (!p.kvm_device) {
        why = p.reason;
        return false;
    }
    return true;
}

#define REQUIRE_KVM()                                                  \
    do {                                                               \
        std::string why;                                               \
        if (!kvm_usable(why))                                          \
            GTEST_SKIP() << "KVM is not usable here: " << why;        \
    } while (0)

class RecordingIo : public IoHandler {
public:
    void pio_read(uint16_t port, std::span<uint8_t> data) override
    {
        std::memset(data.data(), 0, data.size());
        data[0] = static_cast<uint8_t>(port);
    }
    void pio_write(uint16_t port, std::span<const uint8_t> data) override
    {
        uint64_t v = 0;
        std::memcpy(&v, data.data(), std::min<size_t>(data.size(), 8));
        std::lock_guard lock(mutex);
        pio.push_back({ port, v, data.size() });
        if (on_pio)
            on_pio(v);
    }
    void mmio_read(uint64_t gpa, std::span<uint8_t> data) override
    {
        std::lock_guard lock(mutex);
        mmio_reads.push_back(gpa);
        for (size_t i = 0; i < data.size(); ++i)
            data[i] = static_cast<uint8_t>(0xa0 + i);
    }
    void mmio_write(uint64_t gpa, std::span<const uint8_t> data) override
    {
        uint64_t v = 0;
        std::memcpy(&v, data.data(), std::min<size_t>(data.size(), 8));
        std::lock_guard lock(mutex);
        mmio.push_back({ gpa, v, data.size() });
    }
    struct Access {
        uint64_t addr;
        uint64_t value;
        size_t size;
    };
    std::mutex mutex;
    std::vector<Access> pio, mmio;
    std::vector<uint64_t> mmio_reads;
    std::function<void(uint64_t)> on_pio;
};

// 32-bit flat protected mode, paging off, at kCodeAddr.
CpuState protected_mode_state()
{
    CpuState s;
    SegmentReg code;
    code.base = 0;
    code.limit = 0xffffffff;
    code.selector = 0x08;
    code.type = 0xb;
    code.present = 1;
    code.s = 1;
    code.db = 1;
    code.g = 1;
    SegmentReg data = code;
    data.selector = 0x10;
    data.type = 0x3;
    s.cs = code;
    s.ds = s.es = s.fs = s.gs = s.ss = data;
    s.tr.type = 0xb;
    s.tr.present = 1;
    s.tr.limit = 0x67;
    s.ldtr.type = 0x2;
    s.ldtr.present = 1;
    s.ldtr.unusable = 1;
    s.cr0 = x86::kCr0Pe | x86::kCr0Et | x86::kCr0Ne;
    s.rip = kCodeAddr;
    s.gpr[RSP] = 0x8000;
    s.rflags = 0x2;
    return s;
}

struct Machine {
    explicit Machine(GuestMemory mem) : memory(std::move(mem)) { }
    std::unique_ptr<KvmEngine> engine;
    GuestMemory memory;
    RecordingIo io;
    std::unique_ptr<Vcpu> vcpu;
};

std::unique_ptr<Machine> make_machine(std::span<const uint8_t> code)
{
    auto m = std::make_unique<Machine>(GuestMemory::create(16 << 20).release_value());
    EXPECT_TRUE(m->memory.write(kCodeAddr, code).ok());
    auto engine = KvmEngine::create(EngineConfig { 1 });
    EXPECT_TRUE(engine.ok()) << engine.error().message();
    m->engine = engine.release_value();
    auto mapped = m->engine->map_memory(m->memory);
    EXPECT_TRUE(mapped.ok()) << mapped.error().message();
    auto vcpu = m->engine->create_vcpu(0, m->io);
    EXPECT_TRUE(vcpu.ok()) << vcpu.error().message();
    m->vcpu = vcpu.release_value();
    auto set = m->vcpu->set_state(protected_mode_state());
    EXPECT_TRUE(set.ok()) << set.error().message();
    return m;
}

} // namespace

TEST(KvmEngine, StateRoundTripsThroughSetAndGet)
{
    REQUIRE_KVM();
    const uint8_t code[] = { 0xeb, 0xfe };
    auto m = make_machine(code);
    ASSERT_TRUE(m->vcpu);

    CpuState s = protected_mode_state();
    for (unsigned i = 0; i < 16; ++i)
        s.gpr[i] = 0x1111111111111111ULL * (i + 1) & 0xffffffffULL; // 32-bit mode: upper halves kept anyway
    s.gpr[RSP] = 0x7ff0;
    s.rflags = 0x2 | (1u << 0) | (1u << 6); // CF, ZF
    s.cr2 = 0xdead000;
    s.msrs.star = 0x0023001000000000ULL;
    s.msrs.lstar = 0xffffffff81000000ULL;
    s.msrs.cstar = 0xffffffff81000040ULL;
    s.msrs.sfmask = 0x47700;
    s.msrs.kernel_gs_base = 0xffff888000001000ULL;
    s.msrs.sysenter_cs = 0x10;
    s.msrs.sysenter_esp = 0x1234000;
    s.msrs.sysenter_eip = 0x5678000;
    s.msrs.tsc_aux = 7;
    s.msrs.pat = 0x0007010600070106ULL;
    // FXSAVE image: FCW 0x37f, MXCSR 0x1f80 with DAZ, XMM0 = pattern.
    s.xsave[0] = 0x7f;
    s.xsave[1] = 0x03;
    uint32_t mxcsr = 0x1fc0;
    std::memcpy(&s.xsave[24], &mxcsr, 4);
    for (int i = 0; i < 16; ++i)
        s.xsave[160 + i] = static_cast<uint8_t>(0x10 + i);
    s.xsave[512] = 0x3; // XSTATE_BV: x87 | SSE
    s.xcr0 = 0x3;
    s.dr[0] = 0x1000;
    s.dr7 = 0x401;
    s.tsc = 1'000'000'000ULL;

    auto got0 = m->vcpu->get_state();
    ASSERT_TRUE(got0.ok()) << got0.error().message();
    s.lapic = got0->lapic;
    uint32_t tpr = 0x20;
    std::memcpy(&s.lapic[0x80], &tpr, 4);

    auto set = m->vcpu->set_state(s);
    ASSERT_TRUE(set.ok()) << set.error().message();
    auto got = m->vcpu->get_state();
    ASSERT_TRUE(got.ok()) << got.error().message();
    const CpuState& g = got.value();

    EXPECT_EQ(g.gpr, s.gpr);
    EXPECT_EQ(g.rip, s.rip);
    EXPECT_EQ(g.rflags, s.rflags);
    EXPECT_EQ(g.cs, s.cs);
    EXPECT_EQ(g.ss.base, s.ss.base);
    EXPECT_EQ(g.ss.limit, s.ss.limit);
    EXPECT_EQ(g.cr0 & 0xffff, s.cr0 & 0xffff);
    EXPECT_EQ(g.cr2, s.cr2);
    EXPECT_EQ(g.msrs.star, s.msrs.star);
    EXPECT_EQ(g.msrs.lstar, s.msrs.lstar);
    EXPECT_EQ(g.msrs.cstar, s.msrs.cstar);
    EXPECT_EQ(g.msrs.sfmask, s.msrs.sfmask);
    EXPECT_EQ(g.msrs.kernel_gs_base, s.msrs.kernel_gs_base);
    EXPECT_EQ(g.msrs.sysenter_cs, s.msrs.sysenter_cs);
    EXPECT_EQ(g.msrs.sysenter_esp, s.msrs.sysenter_esp);
    EXPECT_EQ(g.msrs.sysenter_eip, s.msrs.sysenter_eip);
    EXPECT_EQ(g.msrs.tsc_aux, s.msrs.tsc_aux);
    EXPECT_EQ(g.msrs.pat, s.msrs.pat);
    EXPECT_EQ(0, std::memcmp(&g.xsave[160], &s.xsave[160], 16)) << "XMM0";
    uint32_t got_mxcsr;
    std::memcpy(&got_mxcsr, &g.xsave[24], 4);
    EXPECT_EQ(got_mxcsr, mxcsr);
    EXPECT_EQ(g.xcr0 & 3, 3u);
    EXPECT_EQ(g.dr[0], s.dr[0]);
    EXPECT_EQ(g.dr7 & 0xff, s.dr7 & 0xff);
    uint32_t got_tpr;
    std::memcpy(&got_tpr, &g.lapic[0x80], 4);
    EXPECT_EQ(got_tpr, tpr);
    // The TSC keeps counting; it must have been moved to near the value we wrote. kvm_pvm
    // cannot offset the TSC (guest user mode reads the host's counter natively) and ignores it.
    if (probe_host().kvm_pvm) {
        std::printf("note: kvm_pvm ignores TSC writes; TSC round trip not checked on this host\n");
    } else {
        EXPECT_GE(g.tsc, s.tsc);
        EXPECT_LT(g.tsc - s.tsc, 100'000'000'000ULL);
    }
}

TEST(KvmEngine, PortIoExitsReachTheHandlerAndKickStopsTheVcpu)
{
    REQUIRE_KVM();
    // loop: inc ebx; mov eax, ebx; out 0x80, eax; jmp loop
    const uint8_t code[] = { 0x43, 0x89, 0xd8, 0xe7, 0x80, 0xeb, 0xf9 };
    auto m = make_machine(code);
    ASSERT_TRUE(m->vcpu);
    Vcpu* vcpu = m->vcpu.get();
    m->io.on_pio = [&](uint64_t value) {
        if (value == 5)
            vcpu->kick();
    };
    auto exit = vcpu->run();
    ASSERT_TRUE(exit.ok()) << exit.error().message();
    EXPECT_EQ(exit->kind, VcpuExitKind::Kicked);
    ASSERT_EQ(m->io.pio.size(), 5u);
    for (size_t i = 0; i < 5; ++i) {
        EXPECT_EQ(m->io.pio[i].addr, 0x80u);
        EXPECT_EQ(m->io.pio[i].size, 4u);
        EXPECT_EQ(m->io.pio[i].value, i + 1);
    }
}

TEST(KvmEngine, GuestContinuesIdenticallyAfterStateRoundTripMidRun)
{
    REQUIRE_KVM();
    const uint8_t code[] = { 0x43, 0x89, 0xd8, 0xe7, 0x80, 0xeb, 0xf9 };
    auto m = make_machine(code);
    ASSERT_TRUE(m->vcpu);
    Vcpu* vcpu = m->vcpu.get();
    uint64_t stop_at = 3;
    m->io.on_pio = [&](uint64_t value) {
        if (value == stop_at)
            vcpu->kick();
    };
    ASSERT_TRUE(vcpu->run().ok());
    auto state = vcpu->get_state();
    ASSERT_TRUE(state.ok()) << state.error().message();
    EXPECT_EQ(state->gpr[RBX], 3u);
    EXPECT_EQ(state->rip, kCodeAddr + 5) << "stopped right after the OUT";

    // Scribble over the registers, then restore: the guest must not notice.
    CpuState scribble = state.value();
    scribble.gpr[RBX] = 1000;
    scribble.rip = kCodeAddr;
    ASSERT_TRUE(vcpu->set_state(scribble).ok());
    ASSERT_TRUE(vcpu->set_state(state.value()).ok());

    stop_at = 6;
    auto exit = vcpu->run();
    ASSERT_TRUE(exit.ok()) << exit.error().message();
    ASSERT_EQ(m->io.pio.size(), 6u);
    for (size_t i = 0; i < 6; ++i)
        EXPECT_EQ(m->io.pio[i].value, i + 1) << "write " << i;
}

TEST(KvmEngine, MmioExitsCarryAddressDataAndWidth)
{
    REQUIRE_KVM();
    // mov dword [0xd0000000], 0xdeadbeef; mov eax, [0xd0000010]; out 0x80, eax; jmp $
    const uint8_t code[] = { 0xc7, 0x05, 0x00, 0x00, 0x00, 0xd0, 0xef, 0xbe, 0xad, 0xde, 0xa1, 0x10, 0x00,
                             0x00, 0xd0, 0xe7, 0x80, 0xeb, 0xfe };
    auto m = make_machine(code);
    ASSERT_TRUE(m->vcpu);
    Vcpu* vcpu = m->vcpu.get();
    m->io.on_pio = [&](uint64_t) { vcpu->kick(); };
    auto exit = vcpu->run();
    ASSERT_TRUE(exit.ok()) << exit.error().message();
    ASSERT_EQ(m->io.mmio.size(), 1u);
    EXPECT_EQ(m->io.mmio[0].addr, 0xd0000000u);
    EXPECT_EQ(m->io.mmio[0].value, 0xdeadbeefu);
    EXPECT_EQ(m->io.mmio[0].size, 4u);
    ASSERT_EQ(m->io.mmio_reads.size(), 1u);
    EXPECT_EQ(m->io.mmio_reads[0], 0xd0000010u);
    ASSERT_EQ(m->io.pio.size(), 1u);
    EXPECT_EQ(m->io.pio[0].value, 0xa3a2a1a0u) << "the MMIO read result reached EAX";
}

TEST(KvmEngine, KickFromAnotherThreadStopsASpinningGuest)
{
    REQUIRE_KVM();
    const uint8_t code[] = { 0xeb, 0xfe }; // jmp $
    auto m = make_machine(code);
    ASSERT_TRUE(m->vcpu);
    Vcpu* vcpu = m->vcpu.get();
    std::thread kicker([&] {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        vcpu->kick();
    });
    auto exit = vcpu->run();
    kicker.join();
    ASSERT_TRUE(exit.ok()) << exit.error().message();
    EXPECT_EQ(exit->kind, VcpuExitKind::Kicked);
    auto state = vcpu->get_state();
    ASSERT_TRUE(state.ok());
    EXPECT_EQ(state->rip, kCodeAddr);
}

TEST(KvmEngine, RefusesTooManyVcpus)
{
    REQUIRE_KVM();
    auto engine = KvmEngine::create(EngineConfig { 100000 });
    ASSERT_FALSE(engine.ok());
    EXPECT_NE(engine.error().message().find("vCPUs"), std::string::npos);
}
