// Placeholder until event delivery lands from its branch: every event stops the vCPU.
#include "engine/soft/exceptions.h"

namespace vessel::soft {

void deliver_event(Cpu&, uint8_t vector, EventKind, bool, uint32_t) { abort_engine("event delivery not implemented", vector); }

void deliver_fault(Cpu&, const GuestFault& fault) { abort_engine("event delivery not implemented", fault.vector); }

} // namespace vessel::soft
