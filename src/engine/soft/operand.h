// Operand access for instruction handlers: registers with x86's partial-write rules, the memory
// operand through segmentation and the software TLB, immediates.
#pragma once

#include <cstdint>

#include "engine/soft/cpu.h"
#include "engine/soft/flags.h"
#include "engine/soft/mmu.h"

namespace vessel::soft {

constexpr uint64_t addr_mask(unsigned asize) { return size_mask(asize); }

// Offset part of the memory operand (before segmentation), truncated to the address size.
[[gnu::always_inline]] inline uint64_t effective_address(const Cpu& c, const Insn& in)
{
    uint64_t a = static_cast<uint64_t>(in.disp);
    if (in.base == kRipReg)
        a += c.rip; // RIP-relative: relative to the next instruction
    else if (in.base != kNoReg)
        a += c.gpr[in.base];
    if (in.index != kNoReg)
        a += c.gpr[in.index] * in.scale;
    return a & addr_mask(in.asize);
}

[[gnu::always_inline]] inline uint64_t mem_linear(const Cpu& c, const Insn& in) { return seg_linear(c, in.seg, effective_address(c, in)); }

[[gnu::always_inline]] inline uint64_t read_gpr(const Cpu& c, unsigned reg, unsigned size) { return c.gpr[reg] & size_mask(size); }

// Register write with x86 semantics: 32-bit writes zero the upper half, 8/16-bit writes merge.
[[gnu::always_inline]] inline void write_gpr(Cpu& c, unsigned reg, unsigned size, uint64_t v)
{
    switch (size) {
    case 1: c.gpr[reg] = (c.gpr[reg] & ~0xffULL) | (v & 0xff); break;
    case 2: c.gpr[reg] = (c.gpr[reg] & ~0xffffULL) | (v & 0xffff); break;
    case 4: c.gpr[reg] = v & 0xffffffffULL; break;
    default: c.gpr[reg] = v; break;
    }
}

[[gnu::always_inline]] inline uint64_t read_mem(Cpu& c, uint64_t linear, unsigned size)
{
    switch (size) {
    case 1: return read_linear<uint8_t>(c, linear);
    case 2: return read_linear<uint16_t>(c, linear);
    case 4: return read_linear<uint32_t>(c, linear);
    default: return read_linear<uint64_t>(c, linear);
    }
}

[[gnu::always_inline]] inline void write_mem(Cpu& c, uint64_t linear, unsigned size, uint64_t v)
{
    switch (size) {
    case 1: write_linear<uint8_t>(c, linear, static_cast<uint8_t>(v)); break;
    case 2: write_linear<uint16_t>(c, linear, static_cast<uint16_t>(v)); break;
    case 4: write_linear<uint32_t>(c, linear, static_cast<uint32_t>(v)); break;
    default: write_linear<uint64_t>(c, linear, v); break;
    }
}

// Value of explicit operand n, zero-extended from its size.
[[gnu::always_inline]] inline uint64_t read_op(Cpu& c, const Insn& in, unsigned n)
{
    const Operand& o = in.op[n];
    switch (o.kind) {
    case OpKind::Gpr: return read_gpr(c, o.reg, o.size);
    case OpKind::GprHigh8: return (c.gpr[o.reg] >> 8) & 0xff;
    case OpKind::Mem: return read_mem(c, mem_linear(c, in), o.size);
    case OpKind::Imm: return (o.imm_index ? in.imm2 : in.imm) & size_mask(o.size);
    case OpKind::Seg: return c.seg[o.reg].selector;
    default: abort_engine("read_op: operand kind not readable as an integer", static_cast<uint64_t>(o.kind));
    }
}

[[gnu::always_inline]] inline void write_op(Cpu& c, const Insn& in, unsigned n, uint64_t v)
{
    const Operand& o = in.op[n];
    switch (o.kind) {
    case OpKind::Gpr: write_gpr(c, o.reg, o.size, v); return;
    case OpKind::GprHigh8: c.gpr[o.reg] = (c.gpr[o.reg] & ~0xff00ULL) | ((v & 0xff) << 8); return;
    case OpKind::Mem: write_mem(c, mem_linear(c, in), o.size, v); return;
    default: abort_engine("write_op: operand kind not writable as an integer", static_cast<uint64_t>(o.kind));
    }
}

// Stack accesses (SS, with the current stack size: 2, 4 or 8 bytes of RSP).
inline uint64_t stack_mask(const Cpu& c) { return size_mask(c.stack_size); }

inline void push(Cpu& c, unsigned size, uint64_t v)
{
    uint64_t sp = (c.gpr[RSP] - size) & stack_mask(c);
    write_mem(c, seg_linear(c, SS, sp), size, v);
    c.gpr[RSP] = (c.gpr[RSP] & ~stack_mask(c)) | sp;
}

inline uint64_t pop(Cpu& c, unsigned size)
{
    uint64_t sp = c.gpr[RSP] & stack_mask(c);
    uint64_t v = read_mem(c, seg_linear(c, SS, sp), size);
    c.gpr[RSP] = (c.gpr[RSP] & ~stack_mask(c)) | ((sp + size) & stack_mask(c));
    return v;
}

// Branch to `target` (an offset in CS), truncated to the operand size outside 64-bit mode.
inline void jump_to(Cpu& c, uint64_t target, unsigned osize)
{
    c.rip = c.mode == CpuMode::Long64 ? target : (target & size_mask(osize));
}

} // namespace vessel::soft
