// String MOVS/CMPS, implemented with the integer instructions (exec_int_*.cpp). Zydis names the
// doubleword string forms MOVSD and CMPSD, like the SSE2 scalar-double MOVSD and CMPSD; the SSE
// group registers those two mnemonics and hands the string forms (one-byte opcode map, A5/A7)
// to these functions.
#pragma once

#include "engine/soft/insn.h"

namespace vessel::soft {

void exec_string_movs(Cpu& c, const Insn& in);
void exec_string_cmps(Cpu& c, const Insn& in);

} // namespace vessel::soft
