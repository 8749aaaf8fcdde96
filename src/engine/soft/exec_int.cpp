// The general-purpose integer instruction group: registration and the mnemonics it shares with
// other groups. The handlers live in exec_int_*.cpp by theme.
#include "engine/soft/exec_int.h"

#include <array>

namespace vessel::soft {

namespace integer {

namespace {

// This group's registrations over handlers of groups registered before it.
HandlerChain g_chain;

} // namespace

void set_handler(HandlerTable& t, ZydisMnemonic m, ExecFn fn) { g_chain.set(t, m, fn); }

void call_previous(Cpu& c, const Insn& in) { g_chain.call_previous(c, in); }

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
