#include "loader/pvh.h"

#include "arch/x86/layout.h"
#include "loader/loader_util.h"

namespace vessel::loader {

static_assert(kPvhMemmapOffset + kPvhMaxMemmapEntries * sizeof(HvmMemmapEntry) <= 4096,
              "the PVH memmap must fit in the start-info page");
static_assert(layout::kPvhStartInfo + 4096 <= layout::kZeroPage);

Result<BootEntry> load_pvh(GuestMemory& memory, const std::vector<E820Entry>& e820, const LoadRequest& request,
                           std::span<const uint8_t> elf, const ElfImage& image, uint32_t entry,
                           std::string_view context, std::string kind)
{
    if (!elf_paddr_loaded(image, entry))
        return make_error("{}: PVH entry point {:#x} is not inside a loadable segment", context, entry);
    if (e820.size() > kPvhMaxMemmapEntries)
        return make_error("{}: the memory map has {} entries, more than the {} PVH supports here", context,
                          e820.size(), kPvhMaxMemmapEntries);
    uint64_t kernel_end = TRY_CTX(load_elf_segments(memory, elf, image), context);

    TRY(write_cmdline(memory, request, layout::kCmdlineMax - 1));
    auto initrd = TRY(load_initrd(memory, request, kernel_end, low_ram_end(memory)));

    const uint64_t base = layout::kPvhStartInfo;
    TRY(memory.fill(base, 0, 4096));
    HvmStartInfo info {};
    info.magic = kHvmStartMagic;
    info.version = 1;
    info.flags = 0;
    info.cmdline_paddr = layout::kCmdline;
    info.rsdp_paddr = request.rsdp_addr;
    if (initrd) {
        HvmModlistEntry module { initrd->addr, initrd->size, 0, 0 };
        TRY(memory.write_obj(base + kPvhModlistOffset, module));
        info.nr_modules = 1;
        info.modlist_paddr = base + kPvhModlistOffset;
    }
    for (size_t i = 0; i < e820.size(); i++) {
        HvmMemmapEntry map { e820[i].addr, e820[i].size, static_cast<uint32_t>(e820[i].type), 0 };
        TRY(memory.write_obj(base + kPvhMemmapOffset + i * sizeof(HvmMemmapEntry), map));
    }
    info.memmap_paddr = base + kPvhMemmapOffset;
    info.memmap_entries = static_cast<uint32_t>(e820.size());
    TRY(memory.write_obj(base, info));

    BootEntry boot;
    boot.mode = EntryMode::Protected32;
    boot.rip = entry;
    boot.rbx = layout::kPvhStartInfo;
    boot.rsp = layout::kBootStack;
    boot.kind = std::move(kind);
    return boot;
}

} // namespace vessel::loader
