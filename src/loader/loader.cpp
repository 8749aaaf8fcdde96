// load_kernel: reads the kernel file and hands it to the loader for its format.
#include "loader/boot.h"

#include <algorithm>

#include "base/log.h"

#include "base/file.h"
#include "loader/bzimage.h"
#include "loader/elf.h"
#include "loader/loader_util.h"
#include "loader/multiboot.h"
#include "loader/pvh.h"

namespace vessel {

namespace {

constexpr uint64_t kMaxKernelFile = 1ull << 30;

Result<BootEntry> load_by_format(GuestMemory& memory, const std::vector<E820Entry>& e820, const LoadRequest& request,
                                 std::span<const uint8_t> data)
{
    using namespace loader;
    std::string context = kernel_context(request);
    if (data.empty())
        return make_error("{}: file is empty", context);
    if (is_bzimage(data))
        return load_bzimage(memory, e820, request, data);
    if (auto header = find_multiboot_header(data))
        return load_multiboot(memory, e820, request, data, *header);
    if (is_elf(data)) {
        ElfImage image = TRY_CTX(parse_elf(data), context);
        auto entry = TRY_CTX(find_pvh_entry(data, image), context);
        if (!entry)
            return make_error("{}: ELF file without a PVH entry point note (XEN_ELFNOTE_PHYS32_ENTRY); not a "
                              "bzImage, Multiboot kernel or ELF vmlinux with a PVH note",
                              context);
        if (request.path == BootPath::Decompressor)
            log_info("{}: not a bzImage, booting the ELF through its PVH entry point", context);
        return load_pvh(memory, e820, request, data, image, *entry, context, "ELF PVH");
    }
    return make_error("{}: not a bzImage, Multiboot kernel or ELF vmlinux with a PVH note", context);
}

} // namespace

Result<BootEntry> load_kernel(GuestMemory& memory, const std::vector<E820Entry>& e820, const LoadRequest& request)
{
    // No kernel format needs more of its file in guest RAM than there is guest RAM (a bzImage
    // is compressed; an ELF's segments are loaded whole).
    uint64_t max_file = std::min(kMaxKernelFile, memory.size());
    auto data = TRY_CTX(read_file(request.kernel_path, max_file), "kernel");
    BootEntry entry = TRY(load_by_format(memory, e820, request, data));
    log_info("kernel '{}': {}, entry {:#x}", request.kernel_path, entry.kind, entry.rip);
    return entry;
}

} // namespace vessel
