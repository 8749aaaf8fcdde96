// Segment and descriptor-table handling shared by system instructions and event delivery.
#pragma once

#include <cstdint>

#include "engine/soft/cpu.h"

namespace vessel::soft {

// Loads a segment register the way MOV/POP/LDS... do in the current mode (real mode: base =
// selector << 4; protected/long mode: descriptor from the GDT/LDT with the architectural checks,
// #GP/#SS/#NP with the selector as error code; null selectors per mode). Updates c.segbase and
// the mode-derived state when CS or SS changes.
void load_segment(Cpu& c, uint8_t seg, uint16_t selector);

// Reads the 8-byte descriptor for `selector` from the GDT/LDT (throws #GP(selector) when outside
// the table limit). For system descriptors in long mode, `high` receives the second 8 bytes.
uint64_t read_descriptor(Cpu& c, uint16_t selector, uint64_t* high = nullptr);

// Unpacks a code/data/system descriptor into the hidden part of a segment register.
SegmentReg unpack_descriptor(uint16_t selector, uint64_t descriptor, uint64_t high = 0);

// Power-on / INIT state of a vCPU (SDM table 9-1), real mode at F000:FFF0; the LAPIC is not touched.
void reset_cpu(Cpu& c);

} // namespace vessel::soft
