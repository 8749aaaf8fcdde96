// Differential CPU tests: the seeded case generator.
//
// A case is a random initial state (GPRs, arithmetic flags and DF, XMM0-15, MXCSR, the data
// buffer and stack) and a sequence of steps; each step is flag-neutral set-up (MOVs that put
// addresses, counts or safe operands into registers or memory) followed by one instruction under
// test and a trace stub `pushfq; pop qword [trace slot]; mov qword [rsp-8], 0` that records
// RFLAGS after it without disturbing anything compared. The case ends with `out kDonePort, al`.
//
// Flags the SDM/APM leave undefined are tracked per step (a flag stays undefined until an
// instruction defines it) and masked in the trace and final RFLAGS; before an instruction that
// reads an undefined flag the generator inserts a `cmp` that defines all six. The per-class
// table of undefined flags sits next to each generator in differential_gen_int.cpp.
//
// Classes: integer (differential_gen_int.cpp), SSE/SSE2 (differential_gen_sse.cpp), control
// flow and self-modifying code (differential_gen_flow.cpp), and "fault": a last step that raises
// #DE/#UD/#GP/#SS/#PF/#XM on purpose, after which the exception frame is compared as well.
// Memory operands use every addressing form (base, index*scale, disp8/32, no base, [disp32],
// RIP-relative, 32-bit address size, RSP-based, FS/GS overrides with bases that wrap around
// 2^64) and often straddle a page boundary; code starts anywhere in its page (instructions
// straddle into the next one) and the stack anywhere in its two pages.
//
// Not generated, because the two engines may legitimately differ: instructions the soft
// engine's CPUID does not advertise (TZCNT/BMI, SSE3+, AVX, MMX), RCPPS/RSQRTPS (approximations),
// SHLD/SHRD 16-bit counts above 16, BSF/BSR r32 with a zero source, CPUID/RDTSC, `int n`
// (kvm_pvm turns it into #UD), and LOCKed accesses that are not naturally aligned (split locks).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "differential_guest.h"

namespace vessel::difftest {

constexpr uint64_t kCF = 1 << 0, kPF = 1 << 2, kAF = 1 << 4, kZF = 1 << 6, kSF = 1 << 7, kDF = 1 << 10,
                   kOF = 1 << 11;
constexpr uint64_t kArith = kCF | kPF | kAF | kZF | kSF | kOF;
// The RFLAGS bits a case compares (IF/IOPL and the rest are the host's business under kvm_pvm).
constexpr uint64_t kComparedFlags = kArith | kDF;

struct Step {
    uint32_t begin { 0 }; // first byte of the step (set-up included)
    uint32_t main { 0 };  // first byte of the instruction under test
    uint32_t end { 0 };   // one past it
    uint32_t tail { 0 };  // end of the step (a branch step has code after its instruction)
    std::string what;     // generator class
};

struct Case : CaseInput {
    uint64_t seed { 0 };
    uint32_t index { 0 };
    std::vector<Step> steps;          // step k's RFLAGS land in trace slot k
    std::vector<uint64_t> trace_mask; // RFLAGS bits compared per trace slot
    uint64_t flags_mask { kComparedFlags };
    uint64_t end_rip { 0 };           // RIP after the OUT to the done port
    bool expect_fault { false };      // the last step faults on purpose
};

struct GenOptions {
    uint32_t min_steps { 6 };
    uint32_t max_steps { 24 };
    // Comma-separated generator classes to use (empty: all). Unknown names are an error.
    // The class "fault" ends a case with an instruction that faults on purpose.
    std::string classes;
    unsigned fault_percent { 8 }; // of the cases, when "fault" is among the classes
    // The reference is kvm_pvm: it hands a #GP at CPL3 to KVM's instruction emulator, which
    // turns it into #UD for SSE instructions it does not know (ADDPD, PADDD...). Misaligned-SSE
    // #GP cases then use only MOVDQA/MOVAPS, which it emulates faithfully.
    bool pvm_reference { false };
};

// All generator class names.
std::vector<std::string> generator_classes();

// Case `index` of the run seeded with `seed` (each case has its own derived seed, so one case
// can be regenerated alone). Code is placed in code slot index % kCodeSlots.
Case generate_case(uint64_t seed, uint32_t index, const GenOptions& options);

} // namespace vessel::difftest
