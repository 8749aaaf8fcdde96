// Placeholder: this instruction group's handlers are being written on their own branch.
#include "engine/soft/handlers.h"

namespace vessel::soft {

void register_sse_handlers(HandlerTable&) { }

} // namespace vessel::soft
