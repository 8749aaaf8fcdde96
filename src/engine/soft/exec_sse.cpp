// Registration of the SSE/SSE2 (and MMX integer) handlers, exec_sse_*.cpp.
#include "engine/soft/exec_sse_common.h"

namespace vessel::soft {

void register_sse_handlers(HandlerTable& table)
{
    sse::register_sse_state(table);
    sse::register_sse_move(table);
    sse::register_sse_int(table);
    sse::register_sse_fp(table);
    sse::register_sse_cvt(table);
}

} // namespace vessel::soft
