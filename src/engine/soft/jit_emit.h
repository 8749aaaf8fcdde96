// The translator's code generator (jit.h has the design). Private to jit.cpp / jit_emit.cpp.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>

#include "engine/soft/block_cache.h"
#include "engine/soft/cpu.h"
#include "engine/soft/jit.h"

namespace vessel::soft {

// Where translated code finds the vCPU's state: byte offsets from the Cpu (rbx in translated code).
struct CpuLayout {
    int32_t gpr;
    int32_t rip;
    int32_t insn_start;
    int32_t rflags;
    int32_t lf_op;
    int32_t lf_res;
    int32_t stop_block;
    int32_t segbase;
    int32_t tlb[2]; // Tlb::e[user][0]
    int32_t attention;
    const uint64_t* code_write_epoch;
    int32_t tlb_gen;
    int32_t tlb_gen_global;
    int32_t tlb_page_gen;
    int32_t halted;
    int32_t interrupt_shadow;
    const JumpEntry* jump_table;
    int32_t jit_left;
    int32_t cr0;
    int32_t cr4;
    int32_t fx;
    int32_t jit_cache;
    int32_t cpl;
    int32_t seg_selector[6]; // Cpu::seg[i].selector
    int32_t gs_base; // Cpu::seg[GS].base
    int32_t kernel_gs_base;
    const void* exit_stub; // absolute
    static CpuLayout of(const Cpu& c, const BlockCache& cache);
};

using JitEmitterPtr = std::unique_ptr<JitEmitter, JitEmitterDeleter>;
JitEmitterPtr make_jit_emitter();

struct EmittedCode {
    const uint8_t* bytes;
    size_t size;
};

// The entry stub (void entry(Cpu*, const void* code)) followed by the exit stub (at
// `exit_offset`), to which translated code jumps. Position-independent.
EmittedCode emit_stubs(JitEmitter& e, const CpuLayout& layout, size_t& exit_offset);

// Host code for a 64-bit block; position-independent (calls are absolute) apart from the jump
// slots appended to `slots`. Throws Xbyak::Error if the block cannot be emitted.
EmittedCode emit_block(
    JitEmitter& e, const CpuLayout& layout, const Block& block, bool user, std::vector<LinkSlot>& slots);

// Called from translated code at a block exit (c.rip = the next block): the next block's
// translation, or nullptr to return to the execution loop. With `slot` (a static target in the
// same page), the slot is patched to go there directly from now on.
// VESSEL_JIT_STATS=1: counts, by instruction form, of what translated code left to handlers,
// printed by jit_print_stats().
extern bool g_jit_stats;
void jit_print_stats();

extern "C" const void* jit_link(Cpu* c, BlockCache* cache, const void** slot);

} // namespace vessel::soft
