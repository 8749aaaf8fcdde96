// The general-purpose integer instruction group: registration and the mnemonics it shares with
// other groups. The handlers live in exec_int_*.cpp by theme.
#include "engine/soft/exec_int.h"

#include <array>

namespace vessel::soft {

namespace integer {

namespace {

// Handlers registered before ours for the mnemonics we share (see set_handler). Written once
// while handler_table() is built, read-only afterwards.
std::array<ExecFn, ZYDIS_MNEMONIC_MAX_VALUE + 1> g_previous {};

} // namespace

void set_handler(HandlerTable& t, ZydisMnemonic m, ExecFn fn)
{
    if (t[m] != fn)
        g_previous[m] = t[m];
    t[m] = fn;
}

void call_previous(Cpu& c, const Insn& in)
{
    ExecFn prev = in.mnemonic < g_previous.size() ? g_previous[in.mnemonic] : nullptr;
    if (!prev)
        prev = &exec_unimplemented;
    prev(c, in);
}

} // namespace integer

void register_integer_handlers(HandlerTable& t)
{
    integer::register_alu(t);
    integer::register_mov(t);
    integer::register_shift(t);
    integer::register_muldiv(t);
    integer::register_bits(t);
    integer::register_string(t);
    integer::register_flow(t);
}

} // namespace vessel::soft
