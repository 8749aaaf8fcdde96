// Segment and descriptor-table handling shared by system instructions and event delivery.
#pragma once

#include <cstdint>

#include "engine/soft/cpu.h"

namespace vessel::soft {

// Loads a segment register the way MOV/POP/LDS... do in the current mode (real mode: base =
// selector << 4; protected/long mode: descriptor from the GDT/LDT with the architectural checks,
// #GP/#SS/#NP with the selector as error code; null selectors per mode). Updates c.segbase and
// the mode-derived state when CS or SS changes. CS is loaded with the checks of a far JMP to a
// code segment of the current privilege (call gates and task switches are not supported).
void load_segment(Cpu& c, uint8_t seg, uint16_t selector);

// Reads the 8-byte descriptor for `selector` from the GDT/LDT (throws #GP(selector) when outside
// the table limit). For system descriptors in long mode, `high` receives the second 8 bytes.
// `ext` (0 or 1) is ORed into the error code (the EXT bit, for faults during event delivery).
uint64_t read_descriptor(Cpu& c, uint16_t selector, uint64_t* high = nullptr, uint32_t ext = 0);

// Like read_descriptor, but returns false instead of faulting when the selector is outside its
// table (or names the LDT while none is loaded); paging faults still throw. For LAR/LSL/VERR
// and for checks that raise something other than #GP.
bool fetch_descriptor(Cpu& c, uint16_t selector, uint64_t& low, uint64_t* high = nullptr);

// Unpacks a code/data/system descriptor into the hidden part of a segment register.
SegmentReg unpack_descriptor(uint16_t selector, uint64_t descriptor, uint64_t high = 0);

// Sets the accessed bit (type bit 0) of a code/data descriptor in its table if it is clear.
void mark_accessed(Cpu& c, uint16_t selector, uint64_t descriptor);

// Hidden part of a null selector (unusable; DS/ES/FS/GS loads and the 64-bit null SS).
SegmentReg null_segment(uint16_t selector, uint8_t dpl = 0);

// Installs a segment register's new value and updates the derived state (mode, CPL, stack
// size and c.segbase) — no checks.
void set_segment(Cpu& c, uint8_t seg, const SegmentReg& value);

// Error code of a selector fault: index and TI, with EXT in bit 0.
constexpr uint32_t selector_error(uint16_t selector, uint32_t ext = 0) { return (selector & 0xfffcu) | ext; }

// Descriptor field helpers (raw 8-byte descriptors).
constexpr unsigned desc_type(uint64_t d) { return static_cast<unsigned>((d >> 40) & 0xf); }
constexpr bool desc_s(uint64_t d) { return (d >> 44) & 1; }
constexpr unsigned desc_dpl(uint64_t d) { return static_cast<unsigned>((d >> 45) & 3); }
constexpr bool desc_present(uint64_t d) { return (d >> 47) & 1; }
constexpr bool desc_is_code(uint64_t d) { return desc_s(d) && (desc_type(d) & 8); }
constexpr bool desc_is_data(uint64_t d) { return desc_s(d) && !(desc_type(d) & 8); }

// True for a canonical 48-bit linear address.
constexpr bool is_canonical(uint64_t v) { return static_cast<uint64_t>(static_cast<int64_t>(v << 16) >> 16) == v; }

// Power-on / INIT state of a vCPU (SDM table 9-1), real mode at F000:FFF0; the LAPIC is not touched.
void reset_cpu(Cpu& c);

} // namespace vessel::soft
