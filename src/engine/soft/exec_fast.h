// Decode-time choice of specialised handlers for hot instruction forms (exec_fast.cpp).
#pragma once

#include "engine/soft/insn.h"

namespace vessel::soft {

// A faster handler with the same semantics as handler_table()[in.mnemonic] for this form, or
// nullptr to keep the generic one.
ExecFn specialize(const Insn& in);

} // namespace vessel::soft
