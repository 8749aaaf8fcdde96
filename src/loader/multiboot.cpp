#include "loader/multiboot.h"

#include <algorithm>

#include "base/log.h"

#include "arch/x86/layout.h"
#include "loader/elf.h"
#include "loader/loader_util.h"

namespace vessel::loader {

namespace {

constexpr uint32_t kMbSupportedRequired = kMbPageAlign | kMbMemoryInfo | kMbVideoMode;
constexpr std::string_view kBootLoaderName = "Vessel";
static_assert(kMbMmapOffset + kMbMaxMmapEntries * sizeof(MultibootMmapEntry) <= 4096);
static_assert(kMbModStringOffset + kMbModStringMax <= kMbLoaderNameOffset);
static_assert(layout::kMultibootInfo + 4096 <= layout::kZeroPage);

struct LoadedImage {
    uint64_t entry { 0 };
    uint64_t end { 0 }; // first byte above the image (incl. bss)
};

// The a.out kludge: the header's address fields say which part of the file goes where.
Result<LoadedImage> load_aout_kludge(GuestMemory& memory, std::span<const uint8_t> data, const MultibootHeader& header)
{
    if (!range_in(header.offset, 32, data.size()))
        return make_error("truncated Multiboot header (the a.out kludge address fields are missing)");
    uint32_t header_addr = read_le<uint32_t>(data, header.offset + 12);
    uint32_t load_addr = read_le<uint32_t>(data, header.offset + 16);
    uint32_t load_end_addr = read_le<uint32_t>(data, header.offset + 20);
    uint32_t bss_end_addr = read_le<uint32_t>(data, header.offset + 24);
    uint32_t entry_addr = read_le<uint32_t>(data, header.offset + 28);

    if (load_addr > header_addr)
        return make_error("Multiboot load_addr {:#x} is above header_addr {:#x}", load_addr, header_addr);
    uint64_t delta = header_addr - load_addr;
    if (delta > header.offset)
        return make_error("Multiboot load_addr {:#x} lies before the start of the file", load_addr);
    uint64_t file_offset = header.offset - delta;
    uint64_t load_end = load_end_addr != 0 ? load_end_addr : load_addr + (data.size() - file_offset);
    if (load_end <= load_addr)
        return make_error("Multiboot load_end_addr {:#x} is not above load_addr {:#x}", load_end, load_addr);
    uint64_t load_size = load_end - load_addr;
    if (!range_in(file_offset, load_size, data.size()))
        return make_error("truncated (the Multiboot header asks for {} bytes from file offset {:#x} but file has "
                          "{} bytes)",
                          load_size, file_offset, data.size());
    uint64_t bss_end = bss_end_addr != 0 ? bss_end_addr : load_end;
    if (bss_end < load_end)
        return make_error("Multiboot bss_end_addr {:#x} is below load_end_addr {:#x}", bss_end, load_end);
    uint64_t image_size = bss_end - load_addr;
    TRY(check_above_low_memory(load_addr, image_size, "Multiboot image"));
    if (!memory.contains(load_addr, image_size))
        return make_error("Multiboot image at {:#x} ({} bytes) lies outside guest RAM ({} MiB)", load_addr,
                          image_size, memory.size() >> 20);
    if (entry_addr < load_addr || entry_addr >= load_end)
        return make_error("Multiboot entry_addr {:#x} is outside the loaded image {:#x}-{:#x}", entry_addr, load_addr,
                          load_end);

    TRY(memory.write(load_addr, data.subspan(static_cast<size_t>(file_offset), static_cast<size_t>(load_size))));
    TRY(memory.fill(load_end, 0, bss_end - load_end));
    return LoadedImage { entry_addr, bss_end };
}

Result<LoadedImage> load_elf32(GuestMemory& memory, std::span<const uint8_t> data)
{
    if (!is_elf(data))
        return make_error("the Multiboot header has no a.out kludge addresses (flag 16) and the file is not an ELF");
    ElfImage image = TRY(parse_elf(data));
    if (image.is64)
        return make_error("Multiboot ELF kernels must be ELF32 (this one is ELF64)");
    // The entry is a virtual address; translate it through the segment that contains it.
    auto entry = elf_virt_to_phys(image, image.entry);
    if (!entry)
        return make_error("ELF entry point {:#x} is outside the loadable segments", image.entry);
    uint64_t end = TRY(load_elf_segments(memory, data, image));
    return LoadedImage { *entry, end };
}

// KiB of RAM from 0 (at most 640) and of contiguous RAM from 1 MiB, from the e820 map.
std::pair<uint32_t, uint32_t> memory_sizes(const std::vector<E820Entry>& e820)
{
    uint64_t lower = 0;
    uint64_t upper_end = layout::kHighMemStart;
    for (const auto& entry : e820) {
        if (entry.type == E820Type::Ram && entry.addr == 0)
            lower = std::min(entry.size, layout::kLowRamEnd);
    }
    for (bool grew = true; grew;) {
        grew = false;
        for (const auto& entry : e820) {
            if (entry.type == E820Type::Ram && entry.addr <= upper_end && upper_end < entry.addr + entry.size) {
                upper_end = entry.addr + entry.size;
                grew = true;
            }
        }
    }
    uint64_t upper = std::min<uint64_t>((upper_end - layout::kHighMemStart) / 1024, UINT32_MAX);
    return { static_cast<uint32_t>(lower / 1024), static_cast<uint32_t>(upper) };
}

} // namespace

std::optional<MultibootHeader> find_multiboot_header(std::span<const uint8_t> data)
{
    size_t limit = std::min(data.size(), kMultibootSearchLimit);
    for (size_t offset = 0; offset + 12 <= limit; offset += 4) {
        uint32_t magic = read_le<uint32_t>(data, offset);
        if (magic != kMultibootHeaderMagic)
            continue;
        uint32_t flags = read_le<uint32_t>(data, offset + 4);
        uint32_t checksum = read_le<uint32_t>(data, offset + 8);
        if (static_cast<uint32_t>(magic + flags + checksum) != 0)
            continue;
        return MultibootHeader { offset, flags };
    }
    return std::nullopt;
}

Result<BootEntry> load_multiboot(GuestMemory& memory, const std::vector<E820Entry>& e820, const LoadRequest& request,
                                 std::span<const uint8_t> data, const MultibootHeader& header)
{
    std::string context = kernel_context(request);
    uint32_t unsupported = header.flags & 0xffffu & ~kMbSupportedRequired;
    if (unsupported)
        return make_error("{}: the Multiboot header requires features Vessel does not provide (flags {:#x})",
                          context, unsupported);
    if (header.flags & kMbVideoMode)
        log_debug("{}: ignoring the Multiboot video mode request (no framebuffer)", context);
    if (e820.size() > kMbMaxMmapEntries)
        return make_error("{}: the memory map has {} entries, more than the {} supported", context, e820.size(),
                          kMbMaxMmapEntries);

    bool kludge = header.flags & kMbAoutKludge;
    LoadedImage image = kludge ? TRY_CTX(load_aout_kludge(memory, data, header), context)
                               : TRY_CTX(load_elf32(memory, data), context);
    if (image.entry > UINT32_MAX)
        return make_error("{}: entry point {:#x} is not a 32-bit address", context, image.entry);

    TRY(write_cmdline(memory, request, layout::kCmdlineMax - 1));
    // Modules always go on a page boundary, which satisfies the page-align flag.
    auto initrd = TRY(load_initrd(memory, request, image.end, low_ram_end(memory)));

    const uint64_t base = layout::kMultibootInfo;
    TRY(memory.fill(base, 0, 4096));
    MultibootInfo info {};
    auto [lower, upper] = memory_sizes(e820);
    info.flags = kMbInfoMemory | kMbInfoCmdline | kMbInfoMmap | kMbInfoBootLoaderName;
    info.mem_lower = lower;
    info.mem_upper = upper;
    info.cmdline = static_cast<uint32_t>(layout::kCmdline);
    if (initrd) {
        std::string_view name = request.initrd_path;
        name = name.substr(0, kMbModStringMax - 1);
        auto name_bytes = std::span(reinterpret_cast<const uint8_t*>(name.data()), name.size());
        TRY(memory.write(base + kMbModStringOffset, name_bytes));
        MultibootModule module { static_cast<uint32_t>(initrd->addr),
                                 static_cast<uint32_t>(initrd->addr + initrd->size),
                                 static_cast<uint32_t>(base + kMbModStringOffset), 0 };
        TRY(memory.write_obj(base + kMbModsOffset, module));
        info.flags |= kMbInfoMods;
        info.mods_count = 1;
        info.mods_addr = static_cast<uint32_t>(base + kMbModsOffset);
    }
    auto loader_name = std::span(reinterpret_cast<const uint8_t*>(kBootLoaderName.data()), kBootLoaderName.size());
    TRY(memory.write(base + kMbLoaderNameOffset, loader_name));
    info.boot_loader_name = static_cast<uint32_t>(base + kMbLoaderNameOffset);
    for (size_t i = 0; i < e820.size(); i++) {
        MultibootMmapEntry entry { 20, e820[i].addr, e820[i].size, static_cast<uint32_t>(e820[i].type) };
        TRY(memory.write_obj(base + kMbMmapOffset + i * sizeof(MultibootMmapEntry), entry));
    }
    info.mmap_addr = static_cast<uint32_t>(base + kMbMmapOffset);
    info.mmap_length = static_cast<uint32_t>(e820.size() * sizeof(MultibootMmapEntry));
    TRY(memory.write_obj(base, info));

    BootEntry boot;
    boot.mode = EntryMode::Protected32;
    boot.rip = image.entry;
    boot.rax = kMultibootBootloaderMagic;
    boot.rbx = base;
    boot.rsp = layout::kBootStack;
    boot.kind = kludge ? "Multiboot (a.out kludge)" : "Multiboot";
    return boot;
}

} // namespace vessel::loader
