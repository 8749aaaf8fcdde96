// The system instruction group: registration, and the mnemonics it shares with the integer
// group (MOV, PUSH, POP, JMP, CALL, RET), whose system forms are told apart here.
#include "engine/soft/exec_sys.h"

#include <array>

namespace vessel::soft {

namespace sys {

namespace {

// This group's registrations over handlers of groups registered before it.
HandlerChain g_chain;

bool has_kind(const Insn& in, OpKind kind)
{
    for (unsigned i = 0; i < in.nops && i < 2; ++i)
        if (in.op[i].kind == kind)
            return true;
    return false;
}

void dispatch_mov(Cpu& c, const Insn& in)
{
    if (has_kind(in, OpKind::Cr))
        exec_mov_cr(c, in);
    else if (has_kind(in, OpKind::Dr))
        exec_mov_dr(c, in);
    else if (has_kind(in, OpKind::Seg))
        exec_mov_sreg(c, in);
    else
        call_previous(c, in);
}

void dispatch_push(Cpu& c, const Insn& in)
{
    if (in.nops && in.op[0].kind == OpKind::Seg)
        exec_push_sreg(c, in);
    else
        call_previous(c, in);
}

void dispatch_pop(Cpu& c, const Insn& in)
{
    if (in.nops && in.op[0].kind == OpKind::Seg)
        exec_pop_sreg(c, in);
    else
        call_previous(c, in);
}

bool far_indirect(const Insn& in, unsigned modrm_reg)
{
    return in.opmap == 0 && in.opcode == 0xff && in.modrm_reg == modrm_reg;
}

void dispatch_jmp(Cpu& c, const Insn& in)
{
    if ((in.nops && in.op[0].kind == OpKind::Ptr) || far_indirect(in, 5))
        exec_far_jmp(c, in);
    else
        call_previous(c, in);
}

void dispatch_call(Cpu& c, const Insn& in)
{
    if ((in.nops && in.op[0].kind == OpKind::Ptr) || far_indirect(in, 3))
        exec_far_call(c, in);
    else
        call_previous(c, in);
}

void dispatch_ret(Cpu& c, const Insn& in)
{
    if (in.opmap == 0 && (in.opcode == 0xca || in.opcode == 0xcb))
        exec_far_ret(c, in);
    else
        call_previous(c, in);
}

} // namespace

void set_shared_handler(HandlerTable& t, ZydisMnemonic m, ExecFn fn) { g_chain.set(t, m, fn); }

void call_previous(Cpu& c, const Insn& in) { g_chain.call_previous(c, in); }

} // namespace sys

void register_system_handlers(HandlerTable& t)
{
    sys::register_control(t);
    sys::register_flow(t);
    sys::register_seg(t);
    sys::register_io(t);
    sys::set_shared_handler(t, ZYDIS_MNEMONIC_MOV, &sys::dispatch_mov);
    sys::set_shared_handler(t, ZYDIS_MNEMONIC_PUSH, &sys::dispatch_push);
    sys::set_shared_handler(t, ZYDIS_MNEMONIC_POP, &sys::dispatch_pop);
    sys::set_shared_handler(t, ZYDIS_MNEMONIC_JMP, &sys::dispatch_jmp);
    sys::set_shared_handler(t, ZYDIS_MNEMONIC_CALL, &sys::dispatch_call);
    sys::set_shared_handler(t, ZYDIS_MNEMONIC_RET, &sys::dispatch_ret);
}

} // namespace vessel::soft
