// The software engine's vCPU: the architectural state the interpreter executes on, plus the
// software TLB. Design notes:
// - One host thread per vCPU (like KVM): guest atomics (LOCK prefix, XCHG, CMPXCHG*) map onto
//   host atomics on guest RAM, and x86-on-x86 keeps the guest's TSO memory order for free. A
//   deterministic round-robin scheduler would make record/replay easier but serialises SMP
//   guests on a host that has the cores; replay will log the few non-deterministic inputs instead.
// - Architectural exceptions (#PF, #GP, ...) are thrown as GuestFault from the access that
//   detects them and caught at the block loop, which rewinds RIP and delivers the exception.
//   They are guest control flow, not VMM errors, and are rare next to instructions (a C++ throw
//   costs ~1 µs; Linux takes well under 10^5 faults while booting).
// - Arithmetic flags are lazy (flags.h): ALU instructions record operands and result; a flag is
//   computed only when something reads it.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <string>

#include "arch/x86/cpu_state.h"
#include "engine/soft/insn.h"

namespace vessel {
class BusDevice;
class GuestMemory;
class IoHandler;
class Lapic;
class VirtualClock;
} // namespace vessel

namespace vessel::soft {

class SoftMachine;

enum SegIdx : uint8_t { ES = 0, CS = 1, SS = 2, DS = 3, FS = 4, GS = 5 };

// Exception vectors.
enum Vector : uint8_t {
    kExcDE = 0,
    kExcDB = 1,
    kExcNMI = 2,
    kExcBP = 3,
    kExcOF = 4,
    kExcBR = 5,
    kExcUD = 6,
    kExcNM = 7,
    kExcDF = 8,
    kExcTS = 10,
    kExcNP = 11,
    kExcSS = 12,
    kExcGP = 13,
    kExcPF = 14,
    kExcMF = 16,
    kExcAC = 17,
    kExcMC = 18,
    kExcXM = 19,
};

// An architectural exception raised by the current instruction.
struct GuestFault {
    uint8_t vector;
    bool has_error;
    uint32_t error_code;
    uint64_t cr2; // #PF only: the faulting linear address
};

[[noreturn]] void raise_fault(uint8_t vector); // no error code
[[noreturn]] void raise_fault(uint8_t vector, uint32_t error_code); // with error code
[[noreturn]] void raise_page_fault(uint64_t linear, uint32_t error_code);
// The instruction cannot be emulated (unknown opcode class we chose not to implement): #UD.
[[noreturn]] void raise_ud();

// The engine cannot go on with this guest (something we chose not to implement, or a state the
// guest cannot leave): the vCPU stops with an internal-error exit carrying the message.
struct EngineAbort {
    const char* what; // static text
    uint64_t detail;
};
[[noreturn]] void abort_engine(const char* what, uint64_t detail = 0);

// Decode/execution mode, from CS and EFER.LMA.
enum class CpuMode : uint8_t {
    Real, // CR0.PE = 0: 16-bit code, segment base = selector << 4
    Prot16, // protected mode, CS.D = 0
    Prot32, // protected mode (or compatibility mode), CS.D = 1
    Long64, // EFER.LMA and CS.L
};

enum class FlagOp : uint8_t {
    None, // arithmetic flags are in Cpu::rflags
    Add, // res = a + b
    Adc, // res = a + b + carry_in (aux = carry_in)
    Sub, // res = a - b (also CMP)
    Sbb, // res = a - b - borrow_in (aux = borrow_in)
    Logic, // AND/OR/XOR/TEST: CF = OF = 0
    Inc, // res = a + 1, aux = CF before
    Dec, // res = a - 1, aux = CF before
    Neg, // res = -a (a = source)
    Host, // res = an RFLAGS image from the host (translated code ran the instruction natively)
};

struct LazyFlags {
    FlagOp op { FlagOp::None };
    uint8_t size { 8 }; // operand size in bytes
    uint64_t res { 0 };
    uint64_t a { 0 };
    uint64_t b { 0 };
    uint64_t aux { 0 };
};

// One software-TLB entry: a guest-linear page mapped to host memory. tag_* = linear page address
// when that kind of access may use the entry, kTlbInvalid otherwise; host = linear + addend.
struct TlbEntry {
    uint64_t tag_read;
    uint64_t tag_write;
    uint64_t tag_exec;
    uint64_t addend;
    uint64_t gpa_page; // guest-physical page (for code-page tracking)
    uint64_t global; // 1: a global page (CR4.PGE and PTE.G), kept across CR3 writes
};
constexpr uint64_t kTlbInvalid = 1; // never equal to a page-aligned address
constexpr size_t kTlbEntries = 4096; // per half; 1024 missed ~3x as often on Linux's network paths

struct Tlb {
    // [0] supervisor accesses (CPL < 3 or implicit system accesses), [1] user accesses.
    std::array<std::array<TlbEntry, kTlbEntries>, 2> e;
    uint64_t gen { 0 }; // bumped whenever translations are dropped (the jump cache keys on it)
    uint64_t gen_global { 0 }; // bumped whenever global translations may be dropped
    // Per linear page (hashed): bumped when INVLPG drops that page, so the jump cache forgets
    // only the code there instead of everything.
    static constexpr size_t kPageGens = 4096;
    std::array<uint32_t, kPageGens> page_gen {};
    // Where non-global entries were filled since the last flush (half * kTlbEntries + index), so
    // that a CR3 write clears those instead of scanning every entry; past kTracked, it scans.
    static constexpr size_t kTracked = 1024;
    std::array<uint16_t, kTracked> nonglobal {};
    uint32_t nonglobal_count { 0 }; // > kTracked: overflowed
    uint32_t page_gen_of(uint64_t linear) const { return page_gen[(linear >> 12) & (kPageGens - 1)]; }
    void flush();
    void flush_page(uint64_t linear);
    void flush_range(uint64_t linear, uint64_t pages); // INVLPG under a large page
    void flush_nonglobal(); // MOV to CR3 with CR4.PGE set
    void flush_writes(); // drop write permission everywhere (a page became code)
};

// Per-vCPU state. The field set maps 1:1 onto CpuState (get_state/set_state convert).
struct Cpu {
    std::array<uint64_t, 16> gpr {};
    uint64_t rip { 0 };
    uint64_t insn_start { 0 }; // RIP of the executing instruction (faults rewind to it)
    uint64_t rflags { x86::kRflagsFixed }; // arithmetic bits valid only when lf.op == None
    LazyFlags lf;

    std::array<SegmentReg, 6> seg {};
    std::array<uint64_t, 6> segbase {}; // effective bases (0 for ES/CS/SS/DS in 64-bit mode)
    SegmentReg ldtr, tr;
    DescriptorTableReg gdt, idt;

    uint64_t cr0 { 0x60000010 }, cr2 { 0 }, cr3 { 0 }, cr4 { 0 };
    uint64_t efer { 0 };
    uint64_t xcr0 { 3 };
    std::array<uint64_t, 4> dr {};
    uint64_t dr6 { 0xffff0ff0 }, dr7 { 0x400 };
    MsrState msrs;
    uint64_t apic_base { 0xfee00900 };
    int64_t tsc_offset { 0 }; // guest TSC = clock TSC + offset

    // FXSAVE image: FCW @0, FSW @2, abridged FTW @4, FOP @6, MXCSR @24, ST0-7 @32 (16 bytes
    // each), XMM0-15 @160. x87/SSE instructions operate on it in place.
    alignas(64) std::array<uint8_t, 512> fx {};

    // Derived mode state, recomputed by update_mode() after CR0/EFER/CS changes.
    CpuMode mode { CpuMode::Real };
    uint8_t cpl { 0 };
    uint8_t stack_size { 2 }; // SS.B: 2 or 4 (8 in 64-bit mode)

    // Interrupt state.
    uint8_t interrupt_shadow { 0 }; // STI / MOV SS: no interrupt before the next instruction ends
    bool halted { false };
    bool nmi_masked { false };
    MpState mp_state { MpState::Runnable };
    uint8_t sipi_vector { 0 };

    // Set by a handler when the block loop must stop after this instruction (mode change,
    // TLB flush, write to the running code, pending interrupt became deliverable...).
    bool stop_block { false };
    // Raised from any thread (kick, interrupt arrived, INIT/SIPI): the execution loop returns to
    // the vCPU at the next block boundary.
    std::atomic<bool> attention { false };

    Tlb tlb;
    bool tlb_has_large { false }; // INVLPG then flushes the whole 2 MiB region (4 KiB pieces)
    bool tlb_has_1g { false }; // ... or everything

    // Machine context (not architectural state).
    SoftMachine* machine { nullptr };
    IoHandler* io { nullptr };
    Lapic* lapic { nullptr };
    BusDevice* apic_page { nullptr }; // this vCPU's LAPIC registers (MMIO at apic_base)
    VirtualClock* clock { nullptr }; // guest time (TSC); nullptr in unit tests: host time
    uint8_t cr8_no_lapic { 0 }; // CR8 when no LAPIC is attached (unit tests)
    uint32_t id { 0 };
    uint64_t code_epoch_seen { 0 };
    // Translated code's scratch (jit.h): the instruction budget left, the vCPU's BlockCache.
    uint64_t jit_left { 0 };
    void* jit_cache { nullptr };
    std::array<uint64_t, 32> fault_counts {}; // exceptions delivered, by vector (diagnostics)

    // Recomputes mode, cpl, stack size and effective segment bases.
    void update_mode();
    bool long_mode() const { return mode == CpuMode::Long64; }
    bool user() const { return cpl == 3; }
    uint64_t fx_xmm_offset(unsigned i) const { return 160 + 16 * i; }
};

} // namespace vessel::soft
