// The software engine's translator: hot decoded blocks (block_cache.h) of 64-bit code become host
// x86-64 code, emitted with Xbyak. Guest and host share the ISA, so most integer instructions
// are translated to themselves: guest registers are loaded from Cpu::gpr into host registers,
// the same instruction runs natively (its flags are the silicon's), and the results and flags go
// back. Memory operands look the software TLB up inline; a miss, a fault, MMIO or anything the
// translator does not know runs the interpreter's handler for that one instruction, from the
// translated code. Design notes:
// - Flags: an instruction that writes flags runs natively and its flags are kept as the host's
//   RFLAGS image (pushfq into lf.res, lf.op = FlagOp::Host; flags.h reads that form). They are
//   stored only if a later instruction could see them: a reader, an instruction that can fault
//   (the exception frame holds RFLAGS) or the block's end. Readers (Jcc, CMOVcc, ADC...) load
//   them back into the host with SAHF and an OF trick.
// - Registers: up to four guest GPRs a block uses most live in host registers (rbp, r13-r15)
//   inside it; they are written back to Cpu::gpr before any handler call or exit, so the
//   interpreter, faults and other blocks always see Cpu::gpr.
// - Chaining: a block exit to a static target in the same page jumps through a slot patched on
//   first use; other exits look the jump cache up inline. Every exit counts the block's
//   instructions off Cpu::jit_left and leaves when it runs out or attention is raised (an
//   interrupt, a kick, another vCPU's new code page), so interrupts are taken at block
//   boundaries as with the interpreter.
// - Exceptions: handlers throw GuestFault through translated frames. The code buffer has one
//   DWARF frame description (registered with __register_frame): every translated block runs
//   in the frame the entry stub sets up, so one CFA rule covers the whole buffer.
// - W^X: the buffer is a memfd mapped twice, writable for the translator and executable for the
//   vCPU; no page is ever writable and executable at once. One buffer per vCPU (no locking);
//   when it is full every block is dropped and translation starts over.
// - Not translated: string ops, x87, SSE floating point, system instructions, LOCK-prefixed
//   ops... run the interpreter's handler from translated code; blocks outside 64-bit mode are
//   interpreted. VESSEL_JIT=off|on|eager; VESSEL_JIT_STATS=1 counts what is left to handlers.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <vector>

#include "engine/soft/cpu.h"

namespace vessel::soft {

struct Block;
class BlockCache;
class JitEmitter;
struct JitEmitterDeleter {
    void operator()(JitEmitter* e) const;
};

enum class JitMode : uint8_t {
    Off, // interpret everything
    On, // translate blocks that ran kJitThreshold times
    Eager, // translate every 64-bit block before it first runs (tests)
};
constexpr uint32_t kJitThreshold = 4;

// What Jit::translate returns for a block it cannot encode (it stays interpreted).
const void* jit_untranslatable();

// A jump slot in emitted code: `slot` (8 bytes at this offset) must hold the absolute address of
// the code at offset `stub` once the code is in place.
struct LinkSlot {
    size_t slot;
    size_t stub;
};

// VESSEL_JIT=off|on|eager (default on).
JitMode jit_mode_from_env();

// VESSEL_JIT_PERFMAP=1: every translation is appended to /tmp/perf-<pid>.map (perf's format for
// JIT code) as `vessel-guest-<rip>`, so `perf report` names translated blocks by guest RIP
// (scripts/perf-guest-symbols.py folds them into guest kernel symbols).

class Jit {
public:
    // nullptr (and a logged reason) when the host refuses an executable mapping.
    static std::unique_ptr<Jit> create(size_t buffer_bytes = 32 << 20);
    ~Jit();
    Jit(const Jit&) = delete;
    Jit& operator=(const Jit&) = delete;

    // Host code for a 64-bit block, for code running with the given privilege (the TLB half the
    // code uses). nullptr when the buffer is full: the caller flushes all blocks and reset()s.
    const void* translate(Cpu& c, const BlockCache& cache, const Block& block, bool user);

    // Runs translated code from c.rip (the block's start), going on through the translations of
    // the blocks that follow while fewer than `budget` instructions completed; returns the
    // instructions completed.
    uint64_t run(Cpu& c, const void* code, uint64_t budget, BlockCache& cache)
    {
        c.jit_left = budget;
        c.jit_cache = &cache;
        m_entry(&c, code);
        return budget - c.jit_left; // jit_left may have wrapped below 0: still the right count
    }

    // Points a jump slot of translated code (its executable address) at `target`.
    void patch(const void** slot, const void* target);

    // Drops all translations (their blocks are gone).
    void reset();
    uint64_t translations() const { return m_translations; }

private:
    using Entry = void (*)(Cpu*, const void*);
    Jit() = default;

    int m_fd { -1 };
    uint8_t* m_rw { nullptr };
    uint8_t* m_rx { nullptr };
    size_t m_size { 0 };
    size_t m_used { 0 };
    size_t m_stub_bytes { 0 };
    Entry m_entry { nullptr };
    const void* m_exit { nullptr };
    std::vector<uint8_t> m_eh_frame;
    bool m_eh_registered { false };
    uint64_t m_translations { 0 };
    uint64_t m_resets { 0 };
    std::FILE* m_perf_map { nullptr };
    std::unique_ptr<JitEmitter, JitEmitterDeleter> m_emitter;
    std::vector<LinkSlot> m_slots;
};

} // namespace vessel::soft
