// Minimal, bounds-checked ELF32/ELF64 (little-endian x86) program-header parsing and loading,
// shared by the PVH and Multiboot loaders. Error messages carry no file name: callers add it.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "base/result.h"
#include "memory/guest_memory.h"

namespace vessel::loader {

constexpr uint32_t kXenElfNotePhys32Entry = 18; // XEN_ELFNOTE_PHYS32_ENTRY

struct ElfSegment {
    uint32_t type { 0 };
    uint64_t offset { 0 };
    uint64_t vaddr { 0 };
    uint64_t paddr { 0 };
    uint64_t filesz { 0 };
    uint64_t memsz { 0 };
    uint64_t align { 0 };
};

struct ElfImage {
    bool is64 { false };
    uint16_t machine { 0 };
    uint64_t entry { 0 };
    std::vector<ElfSegment> segments; // PT_LOAD and PT_NOTE only, in file order
};

bool is_elf(std::span<const uint8_t> data);

// Parses the ELF and program headers. Every PT_LOAD and PT_NOTE segment's file range is checked
// to lie inside `data`, and p_filesz <= p_memsz for PT_LOAD.
Result<ElfImage> parse_elf(std::span<const uint8_t> data);

// Loads every PT_LOAD segment at its p_paddr (zeroing p_memsz beyond p_filesz) after checking
// that all of them lie inside guest RAM above 1 MiB. Returns the end of the highest segment.
Result<uint64_t> load_elf_segments(GuestMemory& memory, std::span<const uint8_t> data, const ElfImage& image);

// The descriptor of the first note named `name` with type `type` in the PT_NOTE segments.
Result<std::optional<std::span<const uint8_t>>> find_elf_note(std::span<const uint8_t> data, const ElfImage& image,
                                                             std::string_view name, uint32_t type);

// The 32-bit PVH entry point (Xen note XEN_ELFNOTE_PHYS32_ENTRY), if the image has one.
Result<std::optional<uint32_t>> find_pvh_entry(std::span<const uint8_t> data, const ElfImage& image);

// True if guest-physical `paddr` lies inside a PT_LOAD segment's memory image.
bool elf_paddr_loaded(const ElfImage& image, uint64_t paddr);

// Translates an address inside a PT_LOAD segment's virtual range to its physical address.
std::optional<uint64_t> elf_virt_to_phys(const ElfImage& image, uint64_t vaddr);

} // namespace vessel::loader
