#pragma once

#include <cstdint>
#include <vector>

#include "memory/guest_memory.h"

namespace vessel {

enum class E820Type : uint32_t {
    Ram = 1,
    Reserved = 2,
    Acpi = 3,
    Nvs = 4,
    Unusable = 5,
};

struct E820Entry {
    uint64_t addr;
    uint64_t size;
    E820Type type;
};

// The e820 map for guest RAM laid out by GuestMemory: low RAM up to the EBDA, the EBDA and the
// BIOS area reserved (MP table; ACPI tables, VM generation ID, reset stub), RAM from 1 MiB up to
// the MMIO hole, RAM above 4 GiB.
std::vector<E820Entry> build_e820(const GuestMemory& mem);

} // namespace vessel
