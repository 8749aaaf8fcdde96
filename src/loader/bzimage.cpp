#include "loader/bzimage.h"

#include <algorithm>
#include <optional>

#include "base/log.h"

#include "arch/x86/layout.h"
#include "loader/boot_params.h"
#include "loader/decompress.h"
#include "loader/elf.h"
#include "loader/loader_util.h"
#include "loader/pvh.h"

namespace vessel::loader {

namespace {

constexpr uint16_t kProtocol64BitEntry = 0x020c; // 2.12: xloadflags / XLF_KERNEL_64
constexpr uint16_t kProtocolPayload = 0x0208;    // 2.08: payload_offset / payload_length
constexpr uint16_t kProtocolSyssize32 = 0x0204;  // 2.04: syssize is 32 bits

struct BzImage {
    SetupHeader hdr {};              // as in the file; fields past its header length are zero
    size_t header_bytes { 0 };       // bytes of setup header present, from 0x1f1
    std::span<const uint8_t> kernel; // the protected-mode part
};

std::string protocol_text(uint16_t version) { return fmt::format("{}.{:02}", version >> 8, version & 0xff); }

Result<BzImage> parse_bzimage(std::span<const uint8_t> data)
{
    BzImage bz;
    // is_bzimage() has checked "HdrS" at 0x202, so the jump byte at 0x201 exists.
    size_t header_end = kSetupHeaderMagicOffset + data[kSetupJumpOffset];
    if (header_end > data.size())
        return make_error("truncated (setup header says it ends at offset {:#x} but file has {} bytes)",
                          header_end, data.size());
    if (header_end < offsetof(SetupHeader, version) + sizeof(uint16_t) + kSetupHeaderOffset)
        return make_error("setup header is too short ({} bytes)", header_end - kSetupHeaderOffset);
    bz.header_bytes = std::min(header_end, kSetupHeaderOffset + sizeof(SetupHeader)) - kSetupHeaderOffset;
    std::memcpy(&bz.hdr, data.data() + kSetupHeaderOffset, bz.header_bytes);

    // Packed fields are copied to locals before anything takes a reference to them.
    const uint16_t boot_flag = bz.hdr.boot_flag;
    if (boot_flag != kBootFlag)
        return make_error("not a bzImage (boot sector signature at 0x1fe is {:#06x}, expected 0xaa55)", boot_flag);
    if (bz.hdr.version < 0x0200)
        return make_error("boot protocol {} is too old", protocol_text(bz.hdr.version));

    uint64_t setup_sects = bz.hdr.setup_sects == 0 ? 4 : bz.hdr.setup_sects;
    uint64_t setup_size = (setup_sects + 1) * 512;
    if (setup_size >= data.size())
        return make_error("truncated (setup header says the real-mode setup is {} bytes but file has {} bytes)",
                          setup_size, data.size());
    bz.kernel = data.subspan(setup_size);
    if (bz.hdr.version >= kProtocolSyssize32) {
        uint64_t syssize = uint64_t { bz.hdr.syssize } * 16;
        if (syssize > bz.kernel.size())
            return make_error("truncated (setup header says the protected-mode kernel is {} bytes but file has {} "
                              "bytes after the {}-byte setup)",
                              syssize, bz.kernel.size(), setup_size);
    }
    return bz;
}

struct KernelPlacement {
    uint64_t load_addr { 0 }; // where the protected-mode kernel is copied
    uint64_t end { 0 };       // end of everything it needs (incl. init_size bytes to decompress into)
};

// Where the 64-bit boot protocol puts the compressed kernel, checked against guest RAM.
Result<KernelPlacement> place_kernel(const GuestMemory& memory, const BzImage& bz)
{
    const SetupHeader& hdr = bz.hdr;
    if (hdr.version < kProtocol64BitEntry)
        return make_error("boot protocol {} is too old for the 64-bit entry point (needs 2.12)",
                          protocol_text(hdr.version));
    if (!(hdr.xloadflags & kXlfKernel64))
        return make_error("the kernel has no 64-bit entry point (XLF_KERNEL_64 is not set)");

    const uint64_t pref_address = hdr.pref_address;
    const uint32_t kernel_alignment = hdr.kernel_alignment;
    const uint32_t init_size = hdr.init_size;
    if (pref_address >= layout::kMmioHoleStart)
        return make_error("pref_address {:#x} is not below the MMIO hole", pref_address);

    KernelPlacement place;
    uint64_t buffer_start = 0; // where the kernel decompresses itself to (init_size bytes)
    if (hdr.relocatable_kernel) {
        if (!is_power_of_two(kernel_alignment))
            return make_error("invalid kernel_alignment {:#x}", kernel_alignment);
        place.load_addr = align_up(std::max(pref_address, layout::kHighMemStart), kernel_alignment);
        buffer_start = place.load_addr;
    } else {
        // A non-relocatable kernel runs its decompressor from 1 MiB and decompresses to the
        // address it was linked at (pref_address).
        place.load_addr = layout::kHighMemStart;
        buffer_start = std::max(place.load_addr, pref_address);
    }
    uint64_t needed = std::max<uint64_t>(init_size, bz.kernel.size());
    place.end = std::max(place.load_addr + bz.kernel.size(), buffer_start + needed);
    if (place.end > low_ram_end(memory))
        return make_error("needs {} MiB but guest RAM is {} MiB", mib_ceil(place.end), memory.size() >> 20);
    return place;
}

// The 64-bit boot protocol: the compressed kernel at its load address, entered at +0x200 in
// long mode with %rsi pointing at boot_params.
Result<BootEntry> load_decompressor_path(GuestMemory& memory, const std::vector<E820Entry>& e820,
                                         const LoadRequest& request, const BzImage& bz)
{
    const SetupHeader& hdr = bz.hdr;
    std::string context = kernel_context(request);
    KernelPlacement place = TRY_CTX(place_kernel(memory, bz), context);
    if (e820.size() > kZeroPageE820Max)
        return make_error("{}: the memory map has {} entries, more than the {} boot_params holds", context,
                          e820.size(), kZeroPageE820Max);
    TRY_CTX(memory.write(place.load_addr, bz.kernel), context);

    // cmdline_size (protocol >= 2.06) is the longest command line without its NUL.
    TRY(write_cmdline(memory, request, hdr.cmdline_size));
    uint64_t initrd_limit = uint64_t { hdr.initrd_addr_max } + 1;
    auto initrd = TRY(load_initrd(memory, request, place.end, initrd_limit));

    BootParams params {};
    std::memcpy(reinterpret_cast<uint8_t*>(&params) + kSetupHeaderOffset, &hdr, bz.header_bytes);
    params.hdr.type_of_loader = kLoaderTypeUndefined;
    params.hdr.loadflags = static_cast<uint8_t>((hdr.loadflags | kCanUseHeap) & ~kKeepSegments);
    params.hdr.heap_end_ptr = kHeapEndPtr;
    params.hdr.code32_start = static_cast<uint32_t>(place.load_addr);
    params.hdr.cmd_line_ptr = static_cast<uint32_t>(layout::kCmdline);
    params.ext_cmd_line_ptr = 0;
    if (initrd) {
        params.hdr.ramdisk_image = static_cast<uint32_t>(initrd->addr);
        params.hdr.ramdisk_size = static_cast<uint32_t>(initrd->size);
    }
    if (request.rsdp_addr != 0)
        params.acpi_rsdp_addr = request.rsdp_addr;
    params.e820_entries = static_cast<uint8_t>(e820.size());
    for (size_t i = 0; i < e820.size(); i++)
        params.e820_table[i] = BootE820Entry { e820[i].addr, e820[i].size, static_cast<uint32_t>(e820[i].type) };
    TRY_CTX(memory.write_obj(layout::kZeroPage, params), context);

    BootEntry entry;
    entry.mode = EntryMode::Long64;
    entry.rip = place.load_addr + 0x200;
    entry.rsi = layout::kZeroPage;
    entry.rsp = layout::kBootStack;
    entry.kind = "bzImage";
    return entry;
}

// Decompresses the payload and boots the vmlinux through its PVH entry. Returns nullopt with
// `reason` set when the kernel cannot be booted that way but may still boot via its decompressor.
Result<std::optional<BootEntry>> try_pvh_path(GuestMemory& memory, const std::vector<E820Entry>& e820,
                                              const LoadRequest& request, const BzImage& bz, std::string& reason)
{
    using Maybe = std::optional<BootEntry>;
    const SetupHeader& hdr = bz.hdr;
    std::string context = kernel_context(request);
    if (hdr.version < kProtocolPayload) {
        reason = fmt::format("boot protocol {} does not describe the compressed payload (needs 2.08)",
                             protocol_text(hdr.version));
        return Maybe {};
    }
    const uint32_t payload_offset = hdr.payload_offset;
    const uint32_t payload_length = hdr.payload_length;
    if (!range_in(payload_offset, payload_length, bz.kernel.size()))
        return make_error("{}: truncated (setup header says the payload is {} bytes at offset {:#x} of the "
                          "protected-mode kernel, but that part of the file has {} bytes)",
                          context, payload_length, payload_offset, bz.kernel.size());
    auto payload = bz.kernel.subspan(payload_offset, payload_length);
    PayloadFormat format = detect_payload_format(payload);
    if (!payload_format_supported(format)) {
        reason = fmt::format("the payload is {}-compressed, which Vessel cannot decompress",
                             payload_format_name(format));
        return Maybe {};
    }
    auto vmlinux = TRY_CTX(decompress_payload(payload), context + ": bzImage payload");
    if (!is_elf(vmlinux)) {
        reason = "the decompressed payload is not an ELF vmlinux";
        return Maybe {};
    }
    std::string elf_context = context + ": decompressed vmlinux";
    ElfImage image = TRY_CTX(parse_elf(vmlinux), elf_context);
    auto pvh_entry = TRY_CTX(find_pvh_entry(vmlinux, image), elf_context);
    if (!pvh_entry) {
        reason = "the vmlinux has no PVH entry point note (the kernel was built without CONFIG_PVH)";
        return Maybe {};
    }
    log_debug("{}: {} payload decompressed to {} bytes, PVH entry {:#x}", context,
                  payload_format_name(format), vmlinux.size(), *pvh_entry);
    return Maybe(TRY(load_pvh(memory, e820, request, vmlinux, image, *pvh_entry, elf_context,
                              "bzImage (host-decompressed, PVH)")));
}

} // namespace

bool is_bzimage(std::span<const uint8_t> data)
{
    return data.size() >= kSetupHeaderMagicOffset + 4 && read_le<uint32_t>(data, kSetupHeaderMagicOffset) == kHdrSMagic;
}

Result<BootEntry> load_bzimage(GuestMemory& memory, const std::vector<E820Entry>& e820, const LoadRequest& request,
                               std::span<const uint8_t> data)
{
    BzImage bz = TRY_CTX(parse_bzimage(data), kernel_context(request));
    if (request.path != BootPath::Decompressor) {
        std::string reason;
        auto entry = TRY(try_pvh_path(memory, e820, request, bz, reason));
        if (entry)
            return std::move(*entry);
        if (request.path == BootPath::Pvh)
            return make_error("{}: cannot boot through the PVH entry point: {}", kernel_context(request), reason);
        log_info("{}: {}; booting through the kernel's own decompressor", kernel_context(request), reason);
    }
    return load_decompressor_path(memory, e820, request, bz);
}

} // namespace vessel::loader
