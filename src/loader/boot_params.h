// The Linux x86 boot protocol structures (Documentation/arch/x86/boot.rst and zero-page.rst):
// the setup header found at offset 0x1f1 of a bzImage and the boot_params "zero page".
#pragma once

#include <cstddef>
#include <cstdint>

namespace vessel::loader {

constexpr uint16_t kBootFlag = 0xaa55;          // at 0x1fe
constexpr uint32_t kHdrSMagic = 0x53726448;      // "HdrS" at 0x202
constexpr size_t kSetupHeaderOffset = 0x1f1;
constexpr size_t kSetupHeaderMagicOffset = 0x202;
constexpr size_t kSetupJumpOffset = 0x201;       // the byte after the jump opcode: header length

// loadflags
constexpr uint8_t kLoadedHigh = 1u << 0;
constexpr uint8_t kKeepSegments = 1u << 6;
constexpr uint8_t kCanUseHeap = 1u << 7;

// xloadflags
constexpr uint16_t kXlfKernel64 = 1u << 0;
constexpr uint16_t kXlfCanBeLoadedAbove4G = 1u << 1;

constexpr uint8_t kLoaderTypeUndefined = 0xff;
constexpr uint16_t kHeapEndPtr = 0xe000 - 0x200; // boot.rst: heap_end = 0xe000 for protocol >= 2.02
constexpr size_t kZeroPageE820Max = 128;

#pragma pack(push, 1)

struct SetupHeader {
    uint8_t setup_sects;
    uint16_t root_flags;
    uint32_t syssize;
    uint16_t ram_size;
    uint16_t vid_mode;
    uint16_t root_dev;
    uint16_t boot_flag;
    uint16_t jump;
    uint32_t header;
    uint16_t version;
    uint32_t realmode_swtch;
    uint16_t start_sys_seg;
    uint16_t kernel_version;
    uint8_t type_of_loader;
    uint8_t loadflags;
    uint16_t setup_move_size;
    uint32_t code32_start;
    uint32_t ramdisk_image;
    uint32_t ramdisk_size;
    uint32_t bootsect_kludge;
    uint16_t heap_end_ptr;
    uint8_t ext_loader_ver;
    uint8_t ext_loader_type;
    uint32_t cmd_line_ptr;
    uint32_t initrd_addr_max;
    uint32_t kernel_alignment;
    uint8_t relocatable_kernel;
    uint8_t min_alignment;
    uint16_t xloadflags;
    uint32_t cmdline_size;
    uint32_t hardware_subarch;
    uint64_t hardware_subarch_data;
    uint32_t payload_offset;
    uint32_t payload_length;
    uint64_t setup_data;
    uint64_t pref_address;
    uint32_t init_size;
    uint32_t handover_offset;
    uint32_t kernel_info_offset;
};

struct BootE820Entry {
    uint64_t addr;
    uint64_t size;
    uint32_t type;
};

struct BootParams {
    uint8_t screen_info[0x40];
    uint8_t apm_bios_info[0x14];
    uint8_t pad2[4];
    uint64_t tboot_addr;
    uint8_t ist_info[0x10];
    uint64_t acpi_rsdp_addr;
    uint8_t pad3[8];
    uint8_t hd0_info[16];
    uint8_t hd1_info[16];
    uint8_t sys_desc_table[0x10];
    uint8_t olpc_ofw_header[0x10];
    uint32_t ext_ramdisk_image;
    uint32_t ext_ramdisk_size;
    uint32_t ext_cmd_line_ptr;
    uint8_t pad4[112];
    uint32_t cc_blob_address;
    uint8_t edid_info[0x80];
    uint8_t efi_info[0x20];
    uint32_t alt_mem_k;
    uint32_t scratch;
    uint8_t e820_entries;
    uint8_t eddbuf_entries;
    uint8_t edd_mbr_sig_buf_entries;
    uint8_t kbd_status;
    uint8_t secure_boot;
    uint8_t pad5[2];
    uint8_t sentinel;
    uint8_t pad6[1];
    SetupHeader hdr;
    uint8_t pad7[0x290 - 0x1f1 - sizeof(SetupHeader)];
    uint32_t edd_mbr_sig_buffer[16];
    BootE820Entry e820_table[kZeroPageE820Max];
    uint8_t pad8[48];
    uint8_t eddbuf[0x1ec];
    uint8_t pad9[276];
};

#pragma pack(pop)

#define VESSEL_HDR_AT(field, off) static_assert(offsetof(SetupHeader, field) + kSetupHeaderOffset == (off))
VESSEL_HDR_AT(setup_sects, 0x1f1);
VESSEL_HDR_AT(syssize, 0x1f4);
VESSEL_HDR_AT(vid_mode, 0x1fa);
VESSEL_HDR_AT(boot_flag, 0x1fe);
VESSEL_HDR_AT(jump, 0x200);
VESSEL_HDR_AT(header, 0x202);
VESSEL_HDR_AT(version, 0x206);
VESSEL_HDR_AT(type_of_loader, 0x210);
VESSEL_HDR_AT(loadflags, 0x211);
VESSEL_HDR_AT(code32_start, 0x214);
VESSEL_HDR_AT(ramdisk_image, 0x218);
VESSEL_HDR_AT(ramdisk_size, 0x21c);
VESSEL_HDR_AT(heap_end_ptr, 0x224);
VESSEL_HDR_AT(cmd_line_ptr, 0x228);
VESSEL_HDR_AT(initrd_addr_max, 0x22c);
VESSEL_HDR_AT(kernel_alignment, 0x230);
VESSEL_HDR_AT(relocatable_kernel, 0x234);
VESSEL_HDR_AT(xloadflags, 0x236);
VESSEL_HDR_AT(cmdline_size, 0x238);
VESSEL_HDR_AT(payload_offset, 0x248);
VESSEL_HDR_AT(payload_length, 0x24c);
VESSEL_HDR_AT(setup_data, 0x250);
VESSEL_HDR_AT(pref_address, 0x258);
VESSEL_HDR_AT(init_size, 0x260);
VESSEL_HDR_AT(handover_offset, 0x264);
VESSEL_HDR_AT(kernel_info_offset, 0x268);
#undef VESSEL_HDR_AT
static_assert(sizeof(SetupHeader) == 0x26c - 0x1f1);
static_assert(sizeof(BootE820Entry) == 20);

static_assert(offsetof(BootParams, tboot_addr) == 0x058);
static_assert(offsetof(BootParams, acpi_rsdp_addr) == 0x070);
static_assert(offsetof(BootParams, ext_ramdisk_image) == 0x0c0);
static_assert(offsetof(BootParams, ext_cmd_line_ptr) == 0x0c8);
static_assert(offsetof(BootParams, cc_blob_address) == 0x13c);
static_assert(offsetof(BootParams, edid_info) == 0x140);
static_assert(offsetof(BootParams, efi_info) == 0x1c0);
static_assert(offsetof(BootParams, alt_mem_k) == 0x1e0);
static_assert(offsetof(BootParams, e820_entries) == 0x1e8);
static_assert(offsetof(BootParams, sentinel) == 0x1ef);
static_assert(offsetof(BootParams, hdr) == kSetupHeaderOffset);
static_assert(offsetof(BootParams, edd_mbr_sig_buffer) == 0x290);
static_assert(offsetof(BootParams, e820_table) == 0x2d0);
static_assert(offsetof(BootParams, eddbuf) == 0xd00);
static_assert(sizeof(BootParams) == 4096);

} // namespace vessel::loader
