// The PVH boot protocol (xen/include/public/arch-x86/hvm/start_info.h): the kernel starts in
// 32-bit protected mode at the XEN_ELFNOTE_PHYS32_ENTRY address with %ebx pointing at an
// hvm_start_info structure.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "arch/x86/e820.h"
#include "base/result.h"
#include "loader/boot.h"
#include "loader/elf.h"

namespace vessel::loader {

constexpr uint32_t kHvmStartMagic = 0x336ec578;
constexpr size_t kPvhMaxMemmapEntries = 128;

struct HvmStartInfo {
    uint32_t magic;
    uint32_t version;
    uint32_t flags;
    uint32_t nr_modules;
    uint64_t modlist_paddr;
    uint64_t cmdline_paddr;
    uint64_t rsdp_paddr;
    uint64_t memmap_paddr;   // version >= 1
    uint32_t memmap_entries; // version >= 1
    uint32_t reserved;
};
static_assert(sizeof(HvmStartInfo) == 56);
static_assert(offsetof(HvmStartInfo, rsdp_paddr) == 32);
static_assert(offsetof(HvmStartInfo, memmap_entries) == 48);

struct HvmModlistEntry {
    uint64_t paddr;
    uint64_t size;
    uint64_t cmdline_paddr;
    uint64_t reserved;
};
static_assert(sizeof(HvmModlistEntry) == 32);

struct HvmMemmapEntry {
    uint64_t addr;
    uint64_t size;
    uint32_t type;
    uint32_t reserved;
};
static_assert(sizeof(HvmMemmapEntry) == 24);

// Where the structures go, inside the page at layout::kPvhStartInfo.
constexpr uint64_t kPvhModlistOffset = 0x40;
constexpr uint64_t kPvhMemmapOffset = 0x80;

// Loads an ELF kernel that has a PVH entry note, then the initrd and command line, and writes
// hvm_start_info. `context` prefixes errors about the ELF image (e.g. "kernel 'x'").
Result<BootEntry> load_pvh(GuestMemory& memory, const std::vector<E820Entry>& e820, const LoadRequest& request,
                           std::span<const uint8_t> elf, const ElfImage& image, uint32_t entry,
                           std::string_view context, std::string kind);

} // namespace vessel::loader
