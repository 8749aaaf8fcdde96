// Differential CPU tests: the guest machine every case runs in, on any Engine.
//
// One guest image per runner: 4-level identity paging of the first 1 GiB (2 MiB pages, user,
// writable), a GDT with 64-bit kernel/user code and data and a 64-bit TSS whose I/O bitmap lets
// CPL3 write the "done" port, an IDT whose 256 gates lead to CPL0 stubs that report the vector
// on the fault port. All of it is written before the engine maps the memory (kvm_pvm does not
// see page-table writes made from outside afterwards); per case only the code slot and the
// compared window (data, constants, flag trace, stack) are rewritten, and those are no tables.
//
// A case starts at CPL3 through set_state (GPRs, RFLAGS, XMM0-15, MXCSR from the case) and ends
// with `out kDonePort, al; jmp $`; the I/O handler kicks the vCPU there.
#pragma once

#include <array>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "engine/engine.h"
#include "memory/guest_memory.h"

namespace vessel::difftest {

// Guest-physical (= linear) layout.
constexpr uint64_t kPml4 = 0x1000, kPdpt = 0x2000, kPd = 0x3000;
constexpr uint64_t kGdt = 0x4000;
constexpr uint64_t kIdt = 0x5000;
constexpr uint64_t kFaultStubs = 0x6000; // 8 bytes per vector
constexpr uint64_t kTss = 0x8000;        // 0x68 bytes, then the I/O bitmap and its 0xff terminator
constexpr uint64_t kTssLimit = 0x68 + 8192;
constexpr uint64_t kKernelStackTop = 0xc000;
constexpr uint64_t kPt = 0xe000;         // 4 KiB pages for 0x200000..0x3fffff (the window's 2 MiB)
constexpr uint64_t kCodeBase = 0x100000;
constexpr uint64_t kCodeSlotSize = 0x2000; // code starts anywhere in the first page of its slot
constexpr uint32_t kCodeSlots = 128;
// The compared window: data buffer, constant pool, flag trace, stack.
constexpr uint64_t kWindowBase = 0x200000;
constexpr uint64_t kDataBase = 0x200000, kDataSize = 0x2000;
constexpr uint64_t kConstBase = 0x202000, kConstSize = 0x100; // read-only by convention
constexpr uint64_t kTraceBase = 0x203000, kTraceSlots = 256;
constexpr uint64_t kStackLow = 0x204000, kStackInit = 0x205f00, kStackHigh = 0x206000;
constexpr uint64_t kWindowSize = kStackHigh - kWindowBase;
// Pages right after the window that fault: not present, read-only, supervisor-only.
constexpr uint64_t kNotPresentPage = 0x206000, kReadOnlyPage = 0x207000, kSupervisorPage = 0x208000;
constexpr uint64_t kGuestMemBytes = 16 << 20; // GuestMemory's minimum

constexpr uint16_t kDonePort = 0xe0;
constexpr uint16_t kFaultPort = 0xe1;

// Selectors.
constexpr uint16_t kKernelCs = 0x08, kUserDs = 0x1b, kUserCs = 0x23, kTssSel = 0x28;

// The part of a case the runner needs (the generator fills it; see differential_gen.h).
struct CaseInput {
    uint64_t code_addr { kCodeBase };
    std::vector<uint8_t> code;
    std::vector<uint8_t> window; // kWindowSize bytes at kWindowBase
    std::array<uint64_t, 16> gpr {};
    uint64_t rflags { 0x2 };
    uint32_t mxcsr { 0x1f80 };
    std::array<uint8_t, 256> xmm {}; // XMM0..15, 16 bytes each
    uint64_t fs_base { 0 }, gs_base { 0 };
};

// An exception the case ran into: the CPL0 stub reported `vector`; the rest is the frame the
// CPU pushed on the TSS.RSP0 stack (RFLAGS masked to the compared flags by the comparison).
struct FaultInfo {
    int vector { -1 };
    uint64_t error_code { 0 }; // for vectors that push one
    uint64_t rip { 0 }, rsp { 0 }, rflags { 0 };
    uint64_t cr2 { 0 };        // #PF only
    bool operator==(const FaultInfo&) const = default;
};

bool pushes_error_code(int vector);

// What one engine left behind.
struct Observed {
    std::string error; // the case did not finish normally (timeout, engine error, stray I/O)
    FaultInfo fault;   // vector -1: the case reached its done port
    std::array<uint64_t, 16> gpr {};
    uint64_t rip { 0 };
    uint64_t rflags { 0 };
    uint32_t mxcsr { 0 };
    std::array<uint8_t, 256> xmm {};
    std::vector<uint8_t> window;
};

using EngineFactory = std::function<Result<std::unique_ptr<Engine>>()>;

// Runs cases one after the other on one engine. The engine and its vCPU are rebuilt when a case
// wants a code slot that already ran code under the current engine, so no engine ever sees code
// change under an address it executed (the soft engine's block cache only notices guest writes).
class CaseRunner : public IoHandler {
public:
    static Result<std::unique_ptr<CaseRunner>> create(std::string name, EngineFactory factory);
    ~CaseRunner() override;

    Result<Observed> run(const CaseInput& input);
    const std::string& name() const { return m_name; }
    uint64_t engines_built() const { return m_engines_built; }

    // IoHandler
    void pio_read(uint16_t port, std::span<uint8_t> data) override;
    void pio_write(uint16_t port, std::span<const uint8_t> data) override;
    void mmio_read(uint64_t gpa, std::span<uint8_t> data) override;
    void mmio_write(uint64_t gpa, std::span<const uint8_t> data) override;

private:
    CaseRunner(std::string name, EngineFactory factory, GuestMemory memory);
    Result<void> build_engine();
    CpuState initial_state(const CaseInput& input) const;
    void watchdog();

    std::string m_name;
    EngineFactory m_factory;
    GuestMemory m_memory;
    std::unique_ptr<Engine> m_engine;
    std::unique_ptr<Vcpu> m_vcpu;
    CpuState m_base;
    std::vector<bool> m_slot_used;
    uint64_t m_engines_built { 0 };

    // Per run: what the guest reported.
    bool m_done { false };
    int m_fault_vector { -1 };
    std::string m_unexpected;

    // Watchdog: kicks a run that takes longer than kTimeout.
    std::mutex m_watch_mutex;
    std::condition_variable m_watch_cv;
    uint64_t m_run_id { 0 };   // odd while a run is in progress
    bool m_timed_out { false };
    bool m_stop { false };
    std::thread m_watchdog;
};

// Writes the static image (tables, GDT, TSS, IDT, fault stubs) into `memory`.
Result<void> write_static_image(GuestMemory& memory);

} // namespace vessel::difftest
