// Near control flow and the stack: Jcc JMP CALL RET LOOP LOOPE LOOPNE JCXZ/JECXZ/JRCXZ, PUSH POP
// ENTER LEAVE. Far JMP/CALL/RET and PUSH/POP of segment registers belong to the system group
// (passed on through call_previous).
#include <utility>

#include "engine/soft/exec_int.h"

namespace vessel::soft::integer {

namespace {

bool canonical(uint64_t v)
{
    return static_cast<uint64_t>(static_cast<int64_t>(v << 16) >> 16) == v;
}

// A near branch target that would fault does so before the instruction changes anything
// (64-bit mode: #GP(0) for a non-canonical target, reported at the branch).
inline void check_target(const Cpu& c, uint64_t target)
{
    if (c.mode == CpuMode::Long64 && !canonical(target)) [[unlikely]]
        raise_fault(kExcGP, 0);
}

inline void branch(Cpu& c, uint64_t target, unsigned osize)
{
    check_target(c, target);
    jump_to(c, target, osize);
}

inline uint64_t rel_target(const Cpu& c, const Insn& in)
{
    return c.rip + in.imm;
}

inline void set_sp(Cpu& c, uint64_t sp)
{
    uint64_t m = stack_mask(c);
    c.gpr[RSP] = (c.gpr[RSP] & ~m) | (sp & m);
}

template<unsigned CC>
void exec_jcc(Cpu& c, const Insn& in)
{
    if (test_cc(c, CC))
        branch(c, rel_target(c, in), in.osize);
}

bool is_far(const Insn& in)
{
    return in.op[0].kind == OpKind::Ptr
        || (in.opcode == 0xff && in.opmap == 0 && (in.modrm_reg == 3 || in.modrm_reg == 5));
}

void exec_jmp(Cpu& c, const Insn& in)
{
    if (in.flags & kFlagRelBranch) {
        branch(c, rel_target(c, in), in.osize);
        return;
    }
    if (is_far(in)) {
        call_previous(c, in);
        return;
    }
    branch(c, read_op(c, in, 0), in.osize);
}

void exec_call(Cpu& c, const Insn& in)
{
    uint64_t target;
    if (in.flags & kFlagRelBranch) {
        target = rel_target(c, in);
    } else if (is_far(in)) {
        call_previous(c, in);
        return;
    } else {
        target = read_op(c, in, 0);
    }
    check_target(c, target);
    push(c, in.osize, c.rip);
    jump_to(c, target, in.osize);
}

void exec_ret(Cpu& c, const Insn& in)
{
    if (in.opcode == 0xca || in.opcode == 0xcb) {
        call_previous(c, in); // far return
        return;
    }
    const unsigned size = in.osize;
    uint64_t sp = c.gpr[RSP] & stack_mask(c);
    uint64_t target = read_mem(c, seg_linear(c, SS, sp), size);
    check_target(c, target);
    uint64_t release = (in.opcode == 0xc2 || (in.nops >= 1 && in.op[0].kind == OpKind::Imm)) ? (in.imm & 0xffff) : 0;
    set_sp(c, sp + size + release);
    jump_to(c, target, size);
}

// LOOP/LOOPE/LOOPNE: decrement the address-size counter, branch while nonzero (and ZF matches).
template<int ZfCond> // -1: none, 1: LOOPE, 0: LOOPNE
void exec_loop(Cpu& c, const Insn& in)
{
    uint64_t count = (read_gpr(c, RCX, in.asize) - 1) & addr_mask(in.asize);
    bool taken = count != 0;
    if (ZfCond >= 0 && taken)
        taken = flag_zf(c) == (ZfCond == 1);
    uint64_t target = rel_target(c, in);
    if (taken)
        check_target(c, target);
    write_gpr(c, RCX, in.asize, count);
    if (taken)
        jump_to(c, target, in.osize);
}

void exec_jcxz(Cpu& c, const Insn& in)
{
    if (read_gpr(c, RCX, in.asize) == 0)
        branch(c, rel_target(c, in), in.osize);
}

void exec_push(Cpu& c, const Insn& in)
{
    if (in.op[0].kind == OpKind::Seg) [[unlikely]] {
        call_previous(c, in); // PUSH Sreg: system group
        return;
    }
    push(c, in.osize, read_op(c, in, 0)); // PUSH RSP pushes the value before the decrement
}

void exec_pop(Cpu& c, const Insn& in)
{
    if (in.op[0].kind == OpKind::Seg) {
        call_previous(c, in);
        return;
    }
    const unsigned size = in.osize;
    uint64_t sp = c.gpr[RSP] & stack_mask(c);
    uint64_t v = read_mem(c, seg_linear(c, SS, sp), size);
    uint64_t old_rsp = c.gpr[RSP];
    set_sp(c, sp + size);
    if (op_is_mem(in, 0)) {
        // POP m: the address is computed with the incremented RSP; a faulting store leaves RSP.
        try {
            write_op(c, in, 0, v);
        } catch (...) {
            c.gpr[RSP] = old_rsp;
            throw;
        }
        return;
    }
    write_op(c, in, 0, v); // POP RSP: the popped value replaces the increment
}

void exec_enter(Cpu& c, const Insn& in)
{
    const unsigned size = in.osize;
    const uint64_t alloc = in.imm & 0xffff;
    const unsigned level = static_cast<unsigned>(in.imm2 & 31);
    const uint64_t m = stack_mask(c);
    // All stores first; registers change only when none faulted.
    uint64_t sp = (c.gpr[RSP] - size) & m;
    write_mem(c, seg_linear(c, SS, sp), size, c.gpr[RBP]);
    const uint64_t frame = sp;
    if (level > 0) {
        uint64_t bp = c.gpr[RBP] & m;
        for (unsigned i = 1; i < level; ++i) {
            bp = (bp - size) & m;
            uint64_t v = read_mem(c, seg_linear(c, SS, bp), size);
            sp = (sp - size) & m;
            write_mem(c, seg_linear(c, SS, sp), size, v);
        }
        sp = (sp - size) & m;
        write_mem(c, seg_linear(c, SS, sp), size, frame);
    }
    // The SDM also faults ENTER when a write at the final stack pointer would fault.
    const uint64_t final_sp = (sp - alloc) & m;
    if (alloc != 0)
        translate(c, seg_linear(c, SS, final_sp), Access::Write, c.cpl == 3);
    c.gpr[RBP] = (c.gpr[RBP] & ~m) | frame;
    set_sp(c, final_sp);
}

void exec_leave(Cpu& c, const Insn& in)
{
    const unsigned size = in.osize;
    uint64_t sp = c.gpr[RBP] & stack_mask(c);
    uint64_t v = read_mem(c, seg_linear(c, SS, sp), size);
    set_sp(c, sp + size);
    write_gpr(c, RBP, size, v);
}

constexpr ZydisMnemonic kJcc[16] = { ZYDIS_MNEMONIC_JO, ZYDIS_MNEMONIC_JNO, ZYDIS_MNEMONIC_JB, ZYDIS_MNEMONIC_JNB,
    ZYDIS_MNEMONIC_JZ, ZYDIS_MNEMONIC_JNZ, ZYDIS_MNEMONIC_JBE, ZYDIS_MNEMONIC_JNBE, ZYDIS_MNEMONIC_JS,
    ZYDIS_MNEMONIC_JNS, ZYDIS_MNEMONIC_JP, ZYDIS_MNEMONIC_JNP, ZYDIS_MNEMONIC_JL, ZYDIS_MNEMONIC_JNL,
    ZYDIS_MNEMONIC_JLE, ZYDIS_MNEMONIC_JNLE };

template<unsigned... CC>
void register_jcc(HandlerTable& t, std::integer_sequence<unsigned, CC...>)
{
    (set_handler(t, kJcc[CC], &exec_jcc<CC>), ...);
}

} // namespace

void register_flow(HandlerTable& t)
{
    register_jcc(t, std::make_integer_sequence<unsigned, 16> {});
    set_handler(t, ZYDIS_MNEMONIC_JMP, &exec_jmp);
    set_handler(t, ZYDIS_MNEMONIC_CALL, &exec_call);
    set_handler(t, ZYDIS_MNEMONIC_RET, &exec_ret);
    set_handler(t, ZYDIS_MNEMONIC_LOOP, &exec_loop<-1>);
    set_handler(t, ZYDIS_MNEMONIC_LOOPE, &exec_loop<1>);
    set_handler(t, ZYDIS_MNEMONIC_LOOPNE, &exec_loop<0>);
    set_handler(t, ZYDIS_MNEMONIC_JCXZ, &exec_jcxz);
    set_handler(t, ZYDIS_MNEMONIC_JECXZ, &exec_jcxz);
    set_handler(t, ZYDIS_MNEMONIC_JRCXZ, &exec_jcxz);
    set_handler(t, ZYDIS_MNEMONIC_PUSH, &exec_push);
    set_handler(t, ZYDIS_MNEMONIC_POP, &exec_pop);
    set_handler(t, ZYDIS_MNEMONIC_ENTER, &exec_enter);
    set_handler(t, ZYDIS_MNEMONIC_LEAVE, &exec_leave);
}

} // namespace vessel::soft::integer
