// Multiboot 1 kernels (the subset `qemu -kernel` accepts): an ELF32 image or an a.out-kludge
// image described by the header's address fields, entered in 32-bit protected mode with
// %eax = 0x2BADB002 and %ebx pointing at multiboot_info.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "arch/x86/e820.h"
#include "base/result.h"
#include "loader/boot.h"

namespace vessel::loader {

constexpr uint32_t kMultibootHeaderMagic = 0x1badb002;
constexpr uint32_t kMultibootBootloaderMagic = 0x2badb002;
constexpr size_t kMultibootSearchLimit = 8192;

// Header flags.
constexpr uint32_t kMbPageAlign = 1u << 0;
constexpr uint32_t kMbMemoryInfo = 1u << 1;
constexpr uint32_t kMbVideoMode = 1u << 2;
constexpr uint32_t kMbAoutKludge = 1u << 16;

// multiboot_info flags.
constexpr uint32_t kMbInfoMemory = 1u << 0;
constexpr uint32_t kMbInfoCmdline = 1u << 2;
constexpr uint32_t kMbInfoMods = 1u << 3;
constexpr uint32_t kMbInfoMmap = 1u << 6;
constexpr uint32_t kMbInfoBootLoaderName = 1u << 9;

#pragma pack(push, 1)
struct MultibootInfo {
    uint32_t flags;
    uint32_t mem_lower;
    uint32_t mem_upper;
    uint32_t boot_device;
    uint32_t cmdline;
    uint32_t mods_count;
    uint32_t mods_addr;
    uint32_t syms[4];
    uint32_t mmap_length;
    uint32_t mmap_addr;
    uint32_t drives_length;
    uint32_t drives_addr;
    uint32_t config_table;
    uint32_t boot_loader_name;
    uint32_t apm_table;
    uint32_t vbe_control_info;
    uint32_t vbe_mode_info;
    uint16_t vbe_mode;
    uint16_t vbe_interface_seg;
    uint16_t vbe_interface_off;
    uint16_t vbe_interface_len;
    uint64_t framebuffer_addr;
    uint32_t framebuffer_pitch;
    uint32_t framebuffer_width;
    uint32_t framebuffer_height;
    uint8_t framebuffer_bpp;
    uint8_t framebuffer_type;
    uint8_t color_info[6];
};
#pragma pack(pop)
static_assert(offsetof(MultibootInfo, cmdline) == 16);
static_assert(offsetof(MultibootInfo, mmap_length) == 44);
static_assert(offsetof(MultibootInfo, boot_loader_name) == 64);
static_assert(offsetof(MultibootInfo, framebuffer_addr) == 88);
static_assert(sizeof(MultibootInfo) == 116);

struct MultibootModule {
    uint32_t mod_start;
    uint32_t mod_end;
    uint32_t string;
    uint32_t reserved;
};
static_assert(sizeof(MultibootModule) == 16);

#pragma pack(push, 1)
struct MultibootMmapEntry {
    uint32_t size; // of the rest of the entry: 20
    uint64_t base_addr;
    uint64_t length;
    uint32_t type;
};
#pragma pack(pop)
static_assert(sizeof(MultibootMmapEntry) == 24);

// Layout of the multiboot page at layout::kMultibootInfo.
constexpr uint64_t kMbModsOffset = 0x80;
constexpr uint64_t kMbModStringOffset = 0x100;
constexpr uint64_t kMbModStringMax = 0x100;
constexpr uint64_t kMbLoaderNameOffset = 0x200;
constexpr uint64_t kMbMmapOffset = 0x240;
constexpr size_t kMbMaxMmapEntries = 128;

struct MultibootHeader {
    size_t offset { 0 }; // file offset of the magic
    uint32_t flags { 0 };
    // a.out kludge fields (valid if flags & kMbAoutKludge)
    uint32_t header_addr { 0 }, load_addr { 0 }, load_end_addr { 0 }, bss_end_addr { 0 }, entry_addr { 0 };
};

// Finds a valid Multiboot 1 header (magic + flags + checksum == 0) in the first 8 KiB.
std::optional<MultibootHeader> find_multiboot_header(std::span<const uint8_t> data);

Result<BootEntry> load_multiboot(GuestMemory& memory, const std::vector<E820Entry>& e820, const LoadRequest& request,
                                 std::span<const uint8_t> data, const MultibootHeader& header);

} // namespace vessel::loader
