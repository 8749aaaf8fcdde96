#include <gtest/gtest.h>

#include "arch/x86/e820.h"
#include "arch/x86/layout.h"

using namespace vessel;

namespace {

uint64_t end_of(const E820Entry& e) { return e.addr + e.size; }

// Sorted, non-empty, non-overlapping; returns the bytes reported as RAM.
uint64_t check_map(const std::vector<E820Entry>& map)
{
    uint64_t ram = 0;
    for (size_t i = 0; i < map.size(); ++i) {
        EXPECT_GT(map[i].size, 0u) << "entry " << i;
        if (i > 0) {
            EXPECT_LE(end_of(map[i - 1]), map[i].addr) << "entry " << i << " overlaps or is out of order";
        }
        if (map[i].type == E820Type::Ram)
            ram += map[i].size;
    }
    return ram;
}

bool has_entry(const std::vector<E820Entry>& map, uint64_t addr, uint64_t size, E820Type type)
{
    for (const auto& e : map) {
        if (e.addr == addr && e.size == size && e.type == type)
            return true;
    }
    return false;
}

// True if any RAM entry overlaps [start, end).
bool ram_overlaps(const std::vector<E820Entry>& map, uint64_t start, uint64_t end)
{
    for (const auto& e : map) {
        if (e.type == E820Type::Ram && e.addr < end && start < end_of(e))
            return true;
    }
    return false;
}

void check_low_memory(const std::vector<E820Entry>& map)
{
    EXPECT_TRUE(has_entry(map, 0, layout::kEbdaStart, E820Type::Ram));
    EXPECT_TRUE(has_entry(map, layout::kEbdaStart, layout::kLowRamEnd - layout::kEbdaStart, E820Type::Reserved));
    EXPECT_TRUE(has_entry(map, layout::kBiosStart, layout::kBiosEnd - layout::kBiosStart, E820Type::Reserved));
    // The MP table and the ACPI tables must never be handed out as RAM; nor the VGA hole.
    EXPECT_FALSE(ram_overlaps(map, layout::kEbdaStart, layout::kHighMemStart));
}

// Hole below 4 GiB that is never RAM, plus [640 KiB, 1 MiB).
constexpr uint64_t kLowHoleBytes = layout::kHighMemStart - layout::kEbdaStart;

} // namespace

TEST(E820, SixtyFourMiB)
{
    auto mem = GuestMemory::create(64 * layout::MiB).release_value();
    auto map = build_e820(mem);
    uint64_t ram = check_map(map);
    check_low_memory(map);
    EXPECT_TRUE(has_entry(map, layout::kHighMemStart, 64 * layout::MiB - layout::kHighMemStart, E820Type::Ram));
    EXPECT_EQ(ram, 64 * layout::MiB - kLowHoleBytes);
    EXPECT_EQ(end_of(map.back()), mem.end_address());
    EXPECT_EQ(map.size(), 4u);
}

TEST(E820, ExactlyThreeGiBFillsUpToTheMmioHole)
{
    auto mem = GuestMemory::create(3 * layout::GiB).release_value();
    auto map = build_e820(mem);
    uint64_t ram = check_map(map);
    check_low_memory(map);
    EXPECT_TRUE(has_entry(map, layout::kHighMemStart, layout::kMmioHoleStart - layout::kHighMemStart, E820Type::Ram));
    EXPECT_FALSE(ram_overlaps(map, layout::kMmioHoleStart, layout::k4GiB));
    EXPECT_FALSE(ram_overlaps(map, layout::k4GiB, ~0ULL)) << "no RAM above 4 GiB for exactly 3 GiB";
    EXPECT_EQ(ram, 3 * layout::GiB - kLowHoleBytes);
    EXPECT_EQ(end_of(map.back()), layout::kMmioHoleStart);
}

TEST(E820, FiveGiBSpillsAboveFourGiB)
{
    auto mem = GuestMemory::create(5 * layout::GiB).release_value();
    auto map = build_e820(mem);
    uint64_t ram = check_map(map);
    check_low_memory(map);
    EXPECT_TRUE(has_entry(map, layout::kHighMemStart, layout::kMmioHoleStart - layout::kHighMemStart, E820Type::Ram));
    EXPECT_TRUE(has_entry(map, layout::k4GiB, 2 * layout::GiB, E820Type::Ram));
    EXPECT_FALSE(ram_overlaps(map, layout::kMmioHoleStart, layout::k4GiB)) << "MMIO hole must not be RAM";
    EXPECT_EQ(ram, 5 * layout::GiB - kLowHoleBytes);
    EXPECT_EQ(end_of(map.back()), 6 * layout::GiB);
    EXPECT_EQ(end_of(map.back()), mem.end_address());
}

TEST(E820, MinimumRam)
{
    auto mem = GuestMemory::create(layout::kMinRam).release_value();
    auto map = build_e820(mem);
    uint64_t ram = check_map(map);
    check_low_memory(map);
    EXPECT_EQ(ram, layout::kMinRam - kLowHoleBytes);
}

TEST(E820, EveryRamEntryIsBackedByGuestMemory)
{
    for (uint64_t size : { 64 * layout::MiB, 3 * layout::GiB, 5 * layout::GiB }) {
        auto mem = GuestMemory::create(size).release_value();
        for (const auto& e : build_e820(mem)) {
            if (e.type == E820Type::Ram) {
                EXPECT_TRUE(mem.contains(e.addr, e.size)) << std::hex << e.addr << "+" << e.size;
            }
        }
    }
}

TEST(E820, VmGenIdIsReservedNeverRam)
{
    // The VM generation ID lies inside a Reserved entry for every RAM size, never in RAM.
    for (uint64_t size : { layout::kMinRam, 64 * layout::MiB, 5 * layout::GiB }) {
        auto mem = GuestMemory::create(size).release_value();
        auto map = build_e820(mem);
        EXPECT_FALSE(ram_overlaps(map, layout::kVmGenIdPage, layout::kResetStubPage));
        bool reserved = false;
        for (const auto& e : map) {
            if (e.type == E820Type::Reserved && e.addr <= layout::kVmGenId
                && layout::kVmGenId + layout::kVmGenIdSize <= end_of(e))
                reserved = true;
        }
        EXPECT_TRUE(reserved) << size;
        // Backed by guest memory (the guest reads it as ordinary RAM it must not allocate).
        EXPECT_TRUE(mem.contains(layout::kVmGenId, layout::kVmGenIdSize));
    }
    EXPECT_EQ(layout::kVmGenId % 8, 0u);
    // Clear of the boot structures, the command line, the EBDA's MP table and the ACPI tables.
    EXPECT_GE(layout::kVmGenId, layout::kAcpiEnd);
    EXPECT_GE(layout::kVmGenId, layout::kLowRamEnd);
    EXPECT_LE(layout::kVmGenId + layout::kVmGenIdSize, layout::kResetStubPage);
}
