// Registration of the SSE/SSE2 (and MMX integer) handlers, exec_sse_*.cpp.
#include "engine/soft/exec_sse_common.h"
#include "engine/soft/exec_string.h"

namespace vessel::soft {

void register_sse_handlers(HandlerTable& table)
{
    sse::register_sse_state(table);
    sse::register_sse_move(table);
    sse::register_sse_int(table);
    sse::register_sse_fp(table);
    sse::register_sse_cvt(table);
}

// Fallbacks until the integer group provides the string forms of MOVSD/CMPSD: its (strong)
// definitions replace these at link time. Delete both once exec_int_*.cpp defines them.
[[gnu::weak]] void exec_string_movs(Cpu& c, const Insn& in) { exec_unimplemented(c, in); }
[[gnu::weak]] void exec_string_cmps(Cpu& c, const Insn& in) { exec_unimplemented(c, in); }

} // namespace vessel::soft
