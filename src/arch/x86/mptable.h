// Intel MultiProcessor Specification 1.4 tables: the floating pointer structure and the MP
// configuration table, written into the EBDA at layout::kMpTable for guests that boot without
// ACPI (acpi=off) or that look for the MP table anyway.
#pragma once

#include <cstdint>

#include "base/result.h"
#include "memory/guest_memory.h"

namespace vessel {

// Guest-physical address of the BIOS Data Area word holding the EBDA segment.
constexpr uint64_t kBdaEbdaSegment = 0x40e;
// Guest-physical address of the BIOS Data Area word holding the base memory size in KiB.
constexpr uint64_t kBdaBaseMemoryKib = 0x413;

// Size in bytes of the floating pointer plus the configuration table for `vcpus` processors.
uint64_t mp_table_size(uint32_t vcpus);
// The largest vCPU count whose MP table fits in [layout::kMpTable, layout::kLowRamEnd).
uint32_t mp_table_max_vcpus();

// Writes the MP floating pointer at layout::kMpTable, the configuration table right after it
// (processors, one ISA bus, one I/O APIC with id = vcpus, ISA IRQ routing with IRQ0 on pin 2,
// ExtINT/NMI on LINT0/LINT1), and the BDA's EBDA segment (0x40e) and base memory size (0x413).
// Fails if `vcpus` is 0 or the table would not fit below 640 KiB.
Result<void> build_mp_table(GuestMemory& mem, uint32_t vcpus);

} // namespace vessel
