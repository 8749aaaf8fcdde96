// Test support for the KVM snapshot tests: a one-vCPU KvmEngine VM over guest RAM, a port-write
// log, running a guest until a given port write (with a watchdog), and the CPU states and tables
// (flat 32-bit protected mode; 64-bit mode over an identity map) the small test guests start in.
#pragma once

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "arch/x86/layout.h"
#include "engine/kvm/kvm_engine.h"
#include "engine/probe.h"
#include "memory/guest_memory.h"

namespace vessel::kvm_snapshot_test {

// Guest-physical layout of the test guests.
constexpr uint64_t kGdt = 0x500;
constexpr uint64_t kIdt = 0x1000;
constexpr uint64_t kStackTop = 0x8000;
constexpr uint64_t kPml4 = 0x9000; // long mode: PML4, PDPT at 0xa000, five PDs at 0xb000-0xf000
constexpr uint64_t kCode = 0x10000;
constexpr uint64_t kData = 0x18000; // the guest's input
constexpr uint64_t kResults = 0x19000; // the guest's output
constexpr uint64_t kRamSize = 16 * layout::MiB;

// Ports the guests write to (each write exits to the test).
constexpr uint16_t kPortProgress = 0x80; // compute phase: iteration number
constexpr uint16_t kPortTicks = 0x81; // timer phase: timer interrupts handled so far
constexpr uint16_t kPortDone = 0x84;
constexpr uint16_t kPortFault = 0x86; // an exception reached the guest's IDT
constexpr uint16_t kPortPit0 = 0x88;
constexpr uint16_t kPortPit2 = 0x89;

// Why these tests cannot use KVM here ("" if they can), worked out once.
inline const std::string& kvm_unusable_reason()
{
    static const std::string reason = [] {
        HostProbe p = probe_host();
        if (!p.kvm_device)
            return p.reason.empty() ? std::string("/dev/kvm is missing or unusable") : p.reason;
        auto engine = KvmEngine::create(EngineConfig {});
        if (!engine.ok())
            return "creating a KVM VM failed: " + engine.error().message();
        return std::string();
    }();
    return reason;
}

#define REQUIRE_KVM()                                                                                                  \
    do {                                                                                                               \
        if (!kvm_unusable_reason().empty())                                                                            \
            GTEST_SKIP() << "KVM is not usable here: " << kvm_unusable_reason();                                       \
    } while (0)

#define ASSERT_OK(expr)                                                                                                \
    do {                                                                                                               \
        auto _r = (expr);                                                                                              \
        ASSERT_TRUE(_r.ok()) << #expr << ": " << _r.error().message();                                                 \
    } while (0)

// Records every port write; reads of unknown ports see 0xff.
class PortLog : public IoHandler {
public:
    void pio_read(uint16_t, std::span<uint8_t> data) override { std::memset(data.data(), 0xff, data.size()); }
    void pio_write(uint16_t port, std::span<const uint8_t> data) override
    {
        uint64_t value = 0;
        std::memcpy(&value, data.data(), std::min<size_t>(data.size(), sizeof(value)));
        std::function<void(uint16_t, uint64_t)> callback;
        {
            std::lock_guard lock(m_mutex);
            m_writes.push_back({ port, value });
            callback = on_write;
        }
        if (callback)
            callback(port, value);
    }
    void mmio_read(uint64_t, std::span<uint8_t> data) override { std::memset(data.data(), 0xff, data.size()); }
    void mmio_write(uint64_t, std::span<const uint8_t>) override { }

    std::vector<uint64_t> values(uint16_t port)
    {
        std::lock_guard lock(m_mutex);
        std::vector<uint64_t> out;
        for (const auto& [p, v] : m_writes)
            if (p == port)
                out.push_back(v);
        return out;
    }

    std::function<void(uint16_t, uint64_t)> on_write; // set while the vCPU is stopped

private:
    std::mutex m_mutex;
    std::vector<std::pair<uint16_t, uint64_t>> m_writes;
};

// One VM with one vCPU. Members go in reverse: the vCPU before its engine, the engine before RAM.
struct Machine {
    explicit Machine(GuestMemory mem)
        : memory(std::move(mem))
    {
    }
    GuestMemory memory;
    std::unique_ptr<KvmEngine> engine;
    PortLog io;
    std::unique_ptr<Vcpu> vcpu;
};

inline Result<std::unique_ptr<Machine>> make_machine(GuestMemory memory, EngineConfig config = {})
{
    auto m = std::make_unique<Machine>(std::move(memory));
    m->engine = TRY(KvmEngine::create(config));
    TRY(m->engine->map_memory(m->memory));
    m->vcpu = TRY(m->engine->create_vcpu(0, m->io));
    return m;
}

// Runs the vCPU until `stop` accepts a port write (the vCPU is kicked there) or `timeout`
// passes. False on timeout or an unexpected exit.
inline bool run_until(
    Machine& m, const std::function<bool(uint16_t, uint64_t)>& stop, std::chrono::milliseconds timeout)
{
    std::atomic<bool> hit { false };
    Vcpu* vcpu = m.vcpu.get();
    m.io.on_write = [&](uint16_t port, uint64_t value) {
        if (!hit.load() && stop(port, value)) {
            hit = true;
            vcpu->kick();
        }
    };
    std::mutex mutex;
    std::condition_variable cv;
    bool finished = false;
    std::thread watchdog([&] {
        std::unique_lock lock(mutex);
        if (!cv.wait_for(lock, timeout, [&] { return finished; }))
            vcpu->kick();
    });
    auto exit = vcpu->run();
    {
        std::lock_guard lock(mutex);
        finished = true;
    }
    cv.notify_all();
    watchdog.join();
    m.io.on_write = nullptr;
    if (exit.ok() && !hit.load()) {
        auto state = m.vcpu->get_state();
        std::string writes;
        for (uint16_t port : { kPortProgress, kPortTicks, kPortDone, kPortFault, kPortPit0, kPortPit2 }) {
            auto values = m.io.values(port);
            if (!values.empty())
                writes += fmt::format(" port {:#x}: {} writes, last {:#x};", port, values.size(), values.back());
        }
        ADD_FAILURE() << "timed out after " << timeout.count() << " ms at RIP "
                      << (state.ok() ? fmt::format("{:#x}", state->rip) : state.error().message()) << ";" << writes;
    }
    EXPECT_TRUE(exit.ok()) << exit.error().message();
    if (exit.ok()) {
        EXPECT_EQ(exit->kind, VcpuExitKind::Kicked) << exit->message;
    }
    return exit.ok() && exit->kind == VcpuExitKind::Kicked && hit.load();
}

inline bool done_or_fault(uint16_t port, uint64_t)
{
    return port == kPortDone || port == kPortFault;
}

inline SegmentReg flat_segment(uint16_t selector, uint8_t type)
{
    SegmentReg s;
    s.limit = 0xffffffff;
    s.selector = selector;
    s.type = type;
    s.present = 1;
    s.s = 1;
    s.db = 1;
    s.g = 1;
    return s;
}

// 32-bit flat protected mode at CPL0, paging off, SSE enabled.
inline CpuState flat32_state(uint64_t rip)
{
    CpuState s;
    s.cs = flat_segment(0x08, 0xb);
    s.ds = s.es = s.fs = s.gs = s.ss = flat_segment(0x10, 0x3);
    s.tr.type = 0xb;
    s.tr.present = 1;
    s.tr.limit = 0x67;
    s.ldtr.type = 0x2;
    s.ldtr.present = 1;
    s.ldtr.unusable = 1;
    s.cr0 = x86::kCr0Pe | x86::kCr0Mp | x86::kCr0Et | x86::kCr0Ne;
    s.cr4 = x86::kCr4Osfxsr | x86::kCr4Osxmmexcpt;
    s.rip = rip;
    s.gpr[RSP] = kStackTop;
    s.rflags = x86::kRflagsFixed;
    return s;
}

// 64-bit mode at CPL0 over write_identity_map's tables, with write_tables' GDT and IDT.
inline CpuState long_mode_state(uint64_t rip)
{
    CpuState s = flat32_state(rip);
    s.gdt = { kGdt, 3 * 8 - 1 };
    s.idt = { kIdt, 256 * 16 - 1 };
    s.cs.l = 1;
    s.cs.db = 0;
    s.cr0 |= x86::kCr0Pg;
    s.cr3 = kPml4;
    s.cr4 |= x86::kCr4Pae;
    s.efer = x86::kEferLme | x86::kEferLma;
    return s;
}

// A GDT (64-bit code 0x08, data 0x10; accessed bits preset) and an IDT whose 256 interrupt gates
// go to `fault`, except vector 0x20 (`isr`) and 0x21-0x2f (`spurious`); offsets from kCode.
inline void write_tables(GuestMemory& memory, uint32_t isr, uint32_t spurious, uint32_t fault)
{
    const uint64_t gdt[3] = { 0, 0x00af9b000000ffffULL, 0x00cf93000000ffffULL };
    ASSERT_TRUE(memory.write(kGdt, std::span(reinterpret_cast<const uint8_t*>(gdt), sizeof(gdt))).ok());
    std::vector<uint64_t> idt(256 * 2);
    for (size_t v = 0; v < 256; ++v) {
        uint64_t offset = kCode + (v == 0x20 ? isr : (v > 0x20 && v < 0x30) ? spurious : fault);
        idt[v * 2] = (offset & 0xffff) | (0x08ULL << 16) | (0x8eULL << 40) | ((offset >> 16 & 0xffff) << 48);
        idt[v * 2 + 1] = offset >> 32;
    }
    ASSERT_TRUE(memory.write(kIdt, std::span(reinterpret_cast<const uint8_t*>(idt.data()), idt.size() * 8)).ok());
}

// Identity map of the first 5 GiB in 2 MiB pages, accessed and dirty bits preset so that the
// CPU's page walks write nothing.
inline void write_identity_map(GuestMemory& memory)
{
    constexpr uint64_t kTable = 0x23; // present, writable, accessed
    constexpr uint64_t kLarge = 0xe3; // present, writable, accessed, dirty, 2 MiB
    ASSERT_TRUE(memory.write_obj<uint64_t>(kPml4, (kPml4 + 0x1000) | kTable).ok());
    for (uint64_t i = 0; i < 5; ++i) {
        uint64_t pd = kPml4 + 0x2000 + i * 0x1000;
        ASSERT_TRUE(memory.write_obj<uint64_t>(kPml4 + 0x1000 + i * 8, pd | kTable).ok());
        for (uint64_t j = 0; j < 512; ++j)
            ASSERT_TRUE(memory.write_obj<uint64_t>(pd + j * 8, ((i * 512 + j) << 21) | kLarge).ok());
    }
}

inline std::vector<uint8_t> read_ram(const GuestMemory& memory)
{
    std::vector<uint8_t> ram(memory.size());
    EXPECT_TRUE(memory.read(0, ram).ok());
    return ram;
}

} // namespace vessel::kvm_snapshot_test
