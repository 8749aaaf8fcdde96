// Placeholder until segment handling lands from its branch.
#include "engine/soft/segments.h"

namespace vessel::soft {

void load_segment(Cpu&, uint8_t, uint16_t selector) { abort_engine("segment loads not implemented", selector); }
uint64_t read_descriptor(Cpu&, uint16_t selector, uint64_t*) { abort_engine("descriptors not implemented", selector); }
SegmentReg unpack_descriptor(uint16_t, uint64_t, uint64_t) { return {}; }
void reset_cpu(Cpu&) { abort_engine("reset not implemented"); }

} // namespace vessel::soft
