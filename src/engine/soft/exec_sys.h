// Private helpers of the system instruction handlers (exec_sys_*.cpp), and the handlers of the
// system forms of mnemonics shared with the integer group (MOV to/from CR/DR/Sreg, PUSH/POP Sreg,
// far JMP/CALL/RET): a decoder may bind those directly instead of going through the shared
// mnemonic's dispatch.
#pragma once

#include <cstdint>

#include "engine/soft/flags.h"
#include "engine/soft/handlers.h"
#include "engine/soft/operand.h"

namespace vessel::soft {

// Drops every software-TLB entry (and the large-page note that makes INVLPG flush everything).
inline void flush_tlb(Cpu& c)
{
    c.tlb.flush();
    c.tlb_has_large = false;
    c.tlb_has_1g = false;
    c.stop_block = true;
}

inline bool in_ia32e(const Cpu& c) { return (c.efer & x86::kEferLma) != 0; }
inline unsigned iopl(const Cpu& c) { return static_cast<unsigned>((c.rflags >> 12) & 3); }

// Privileged instructions: #GP(0) above CPL 0 (real mode is CPL 0).
inline void require_cpl0(const Cpu& c)
{
    if (c.cpl != 0)
        raise_fault(kExcGP, 0);
}

// Stack slot `index` (0 = top) of `size` bytes relative to the current SP, without moving SP.
inline uint64_t stack_slot_linear(const Cpu& c, uint64_t sp, int64_t byte_offset)
{
    return seg_linear(c, SS, (sp + static_cast<uint64_t>(byte_offset)) & stack_mask(c));
}
inline uint64_t read_stack(Cpu& c, uint64_t sp, int64_t byte_offset, unsigned size)
{
    return read_mem(c, stack_slot_linear(c, sp, byte_offset), size);
}
inline void write_stack(Cpu& c, uint64_t sp, int64_t byte_offset, unsigned size, uint64_t v)
{
    write_mem(c, stack_slot_linear(c, sp, byte_offset), size, v);
}
// Sets the stack pointer within the current stack size (as PUSH/POP do: bits above it kept).
inline void set_sp(Cpu& c, uint64_t sp)
{
    uint64_t m = stack_mask(c);
    c.gpr[RSP] = (c.gpr[RSP] & ~m) | (sp & m);
}

namespace sys {

// Registration per theme.
void register_control(HandlerTable& t); // exec_sys_control.cpp: CR/DR, tables, MSR, CPUID, TSC, cache, HLT
void register_flow(HandlerTable& t);    // exec_sys_flow.cpp: INT/IRET, far transfers, SYSCALL/SYSENTER
void register_seg(HandlerTable& t);     // exec_sys_seg.cpp: Sreg moves, Lxs, LAR/LSL/VERx, flags
void register_io(HandlerTable& t);      // exec_sys_io.cpp: IN/OUT/INS/OUTS

// A mnemonic shared with another group (MOV, PUSH, POP, JMP, CALL, RET): `fn` handles the
// system forms and passes the others to the handler that was registered before it.
void set_shared_handler(HandlerTable& t, ZydisMnemonic m, ExecFn fn);
void call_previous(Cpu& c, const Insn& in);

// The system forms of shared mnemonics (callable directly by a decoder that tells them apart).
void exec_mov_cr(Cpu& c, const Insn& in);   // MOV CRn, r / MOV r, CRn
void exec_mov_dr(Cpu& c, const Insn& in);   // MOV DRn, r / MOV r, DRn
void exec_mov_sreg(Cpu& c, const Insn& in); // MOV Sreg, r/m16 / MOV r/m, Sreg
void exec_push_sreg(Cpu& c, const Insn& in);
void exec_pop_sreg(Cpu& c, const Insn& in);
void exec_far_jmp(Cpu& c, const Insn& in);  // EA ptr / FF /5
void exec_far_call(Cpu& c, const Insn& in); // 9A ptr / FF /3
void exec_far_ret(Cpu& c, const Insn& in);  // CB / CA imm16

// Far-pointer operand (ptr16:xx or m16:xx): offset and selector.
struct FarPtr {
    uint64_t offset;
    uint16_t selector;
    unsigned offset_size; // 2, 4 or 8
};
FarPtr read_far_pointer(Cpu& c, const Insn& in, unsigned n);

// Data-segment registers whose DPL is below the new CPL become null after a return to an outer
// privilege level (IRET, RETF).
void null_outer_segments(Cpu& c);

} // namespace sys

} // namespace vessel::soft
