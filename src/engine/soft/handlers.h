// Instruction semantics are registered per Zydis mnemonic by instruction group; the decoder puts
// the handler into each Insn. Groups live in exec_*.cpp files.
#pragma once

#include <array>

#include <Zydis/Zydis.h>

#include "engine/soft/insn.h"

namespace vessel::soft {

using HandlerTable = std::array<ExecFn, ZYDIS_MNEMONIC_MAX_VALUE + 1>;

void register_integer_handlers(HandlerTable& table); // exec_int_*.cpp
void register_system_handlers(HandlerTable& table);  // exec_sys_*.cpp
void register_sse_handlers(HandlerTable& table);     // exec_sse_*.cpp
void register_x87_handlers(HandlerTable& table);     // exec_x87.cpp

// Mnemonics shared between groups (MOV of GPRs vs. control/segment registers, string MOVSD vs.
// SSE2 MOVSD, ...): a group registering later installs a dispatcher with set() and hands the forms
// it does not own to the handler that was registered before it. One chain per group; written
// while handler_table() is built, read-only afterwards.
class HandlerChain {
public:
    void set(HandlerTable& table, ZydisMnemonic mnemonic, ExecFn fn);
    void call_previous(Cpu& c, const Insn& in) const;

private:
    std::array<ExecFn, ZYDIS_MNEMONIC_MAX_VALUE + 1> m_previous {};
};

// The table, built once; unregistered mnemonics map to exec_unimplemented.
const HandlerTable& handler_table();

// Raises #UD and logs (rate-limited) which mnemonic the guest needed.
void exec_unimplemented(Cpu& c, const Insn& in);

} // namespace vessel::soft
