#include "arch/x86/e820.h"

#include "arch/x86/layout.h"

namespace vessel {

// The VM generation ID must stay out of the kernel's RAM: it lies in the reserved BIOS area, in a
// page of its own between the ACPI tables and the reset stub.
static_assert(layout::kVmGenId % 8 == 0);
static_assert(
    layout::kAcpiEnd <= layout::kVmGenIdPage && layout::kVmGenId + layout::kVmGenIdSize <= layout::kResetStubPage);
static_assert(layout::kBiosStart <= layout::kVmGenId && layout::kVmGenId + layout::kVmGenIdSize <= layout::kBiosEnd);

std::vector<E820Entry> build_e820(const GuestMemory& mem)
{
    std::vector<E820Entry> map;
    map.push_back({ 0, layout::kEbdaStart, E820Type::Ram });
    map.push_back({ layout::kEbdaStart, layout::kLowRamEnd - layout::kEbdaStart, E820Type::Reserved });
    map.push_back({ layout::kBiosStart, layout::kBiosEnd - layout::kBiosStart, E820Type::Reserved });
    for (const auto& region : mem.regions()) {
        uint64_t start = region.guest_base;
        uint64_t end = region.guest_base + region.size;
        if (start < layout::kHighMemStart)
            start = layout::kHighMemStart;
        if (end > start)
            map.push_back({ start, end - start, E820Type::Ram });
    }
    return map;
}

} // namespace vessel
