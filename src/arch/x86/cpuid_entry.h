// One CPUID leaf as the guest sees it: what a snapshot records, and what a target engine must be
// able to present before a snapshot taken elsewhere is restored on it.
#pragma once

#include <cstdint>
#include <vector>

namespace vessel {

struct CpuidEntry {
    uint32_t function { 0 };
    uint32_t index { 0 }; // the subleaf (ECX), where the leaf has subleaves
    bool significant_index { false };
    uint32_t eax { 0 }, ebx { 0 }, ecx { 0 }, edx { 0 };
    bool operator==(const CpuidEntry&) const = default;
};

using CpuidTable = std::vector<CpuidEntry>;

} // namespace vessel
