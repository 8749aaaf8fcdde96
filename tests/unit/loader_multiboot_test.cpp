// Multiboot 1: ELF32 and a.out-kludge kernels, multiboot_info and its memory map.
#include "loader/multiboot.h"
#include "loader_test_support.h"

using namespace vessel;
using namespace vessel::test;
using loader::MultibootInfo;
using loader::MultibootMmapEntry;
using loader::MultibootModule;

namespace {

constexpr uint32_t kMagic = 0x1badb002;

Bytes multiboot_header(uint32_t flags)
{
    Bytes h;
    append32(h, kMagic);
    append32(h, flags);
    append32(h, static_cast<uint32_t>(0u - kMagic - flags));
    return h;
}

// An ELF32 Multiboot kernel: the header at the start of its single segment.
ElfSpec multiboot_elf(uint32_t flags = 0x3, uint32_t paddr = 0x100000, uint32_t vaddr = 0)
{
    Bytes text = multiboot_header(flags);
    Bytes rest = pattern_bytes(4096, 2);
    text.insert(text.end(), rest.begin(), rest.end());
    ElfSpec spec;
    spec.is64 = false;
    spec.machine = EM_386;
    spec.entry = (vaddr ? vaddr : paddr) + 0x10;
    spec.segments.push_back({ paddr, vaddr, text, 0x4000 });
    return spec;
}

struct AoutFields {
    uint32_t flags { 0x10003 };
    uint32_t header_addr { 0x200040 };
    uint32_t load_addr { 0x200000 };
    uint32_t load_end_addr { 0 };
    uint32_t bss_end_addr { 0x203000 };
    uint32_t entry_addr { 0x200100 };
};

// An a.out-kludge image: 8 KiB, header at file offset 0x40.
Bytes aout_image(const AoutFields& f)
{
    Bytes img = pattern_bytes(0x2000, 8);
    Bytes h = multiboot_header(f.flags);
    append32(h, f.header_addr);
    append32(h, f.load_addr);
    append32(h, f.load_end_addr);
    append32(h, f.bss_end_addr);
    append32(h, f.entry_addr);
    std::copy(h.begin(), h.end(), img.begin() + 0x40);
    return img;
}

class LoaderMultiboot : public ::testing::Test {
protected:
    LoaderMultiboot() : mem(make_memory()), e820(build_e820(mem)) { }

    Result<BootEntry> load_bytes(const Bytes& image, const std::string& initrd = "", const std::string& cmdline = "")
    {
        LoadRequest req { dir.write("kernel.mb", image), initrd, cmdline, BootPath::Auto, 0 };
        return load_kernel(mem, e820, req);
    }

    void expect_error(const Result<BootEntry>& entry, const std::string& text)
    {
        ASSERT_FALSE(entry.ok());
        EXPECT_TRUE(mentions(entry.error(), "kernel '" + dir.path("kernel.mb") + "'")) << entry.error().message();
        EXPECT_TRUE(mentions(entry.error(), text)) << entry.error().message();
    }

    MultibootInfo info() const
    {
        auto i = mem.read_obj<MultibootInfo>(layout::kMultibootInfo);
        EXPECT_TRUE(i.ok());
        return i.value();
    }

    TempDir dir;
    GuestMemory mem;
    std::vector<E820Entry> e820;
};

} // namespace

TEST_F(LoaderMultiboot, Elf32KernelAndInfo)
{
    ElfSpec spec = multiboot_elf();
    Bytes initrd = pattern_bytes(7000, 4);
    std::string initrd_path = dir.write("module.bin", initrd);
    auto entry = load_bytes(build_elf(spec), initrd_path, "hello world");
    ASSERT_TRUE(entry.ok()) << entry.error().message();
    EXPECT_EQ(entry->mode, EntryMode::Protected32);
    EXPECT_EQ(entry->rip, 0x100010u);
    EXPECT_EQ(entry->rax, 0x2badb002u);
    EXPECT_EQ(entry->rbx, layout::kMultibootInfo);
    EXPECT_EQ(entry->kind, "Multiboot");
    EXPECT_EQ(read_guest(mem, 0x100000, spec.segments[0].data.size()), spec.segments[0].data);

    MultibootInfo mbi = info();
    EXPECT_EQ(val(mbi.flags) & loader::kMbInfoMemory, loader::kMbInfoMemory);
    EXPECT_EQ(val(mbi.flags) & loader::kMbInfoCmdline, loader::kMbInfoCmdline);
    EXPECT_EQ(val(mbi.flags) & loader::kMbInfoMods, loader::kMbInfoMods);
    EXPECT_EQ(val(mbi.flags) & loader::kMbInfoMmap, loader::kMbInfoMmap);
    EXPECT_EQ(val(mbi.mem_lower), 639u);                  // 0..0x9fc00
    EXPECT_EQ(val(mbi.mem_upper), (64u - 1) * 1024);      // 1 MiB..64 MiB
    EXPECT_EQ(val(mbi.cmdline), layout::kCmdline);
    EXPECT_EQ(read_guest_string(mem, mbi.cmdline), "hello world");
    EXPECT_EQ(read_guest_string(mem, mbi.boot_loader_name), "Vessel");

    ASSERT_EQ(val(mbi.mods_count), 1u);
    auto module = mem.read_obj<MultibootModule>(mbi.mods_addr);
    ASSERT_TRUE(module.ok());
    EXPECT_EQ(module->mod_start % 4096, 0u);
    EXPECT_EQ(module->mod_end - module->mod_start, initrd.size());
    EXPECT_GE(module->mod_start, 0x104000u);
    EXPECT_EQ(read_guest(mem, module->mod_start, initrd.size()), initrd);
    EXPECT_EQ(read_guest_string(mem, module->string), initrd_path);

    ASSERT_EQ(val(mbi.mmap_length), e820.size() * 24);
    for (size_t i = 0; i < e820.size(); i++) {
        auto map = mem.read_obj<MultibootMmapEntry>(mbi.mmap_addr + i * 24);
        ASSERT_TRUE(map.ok());
        EXPECT_EQ(val(map->size), 20u);
        EXPECT_EQ(val(map->base_addr), e820[i].addr) << i;
        EXPECT_EQ(val(map->length), e820[i].size) << i;
        EXPECT_EQ(val(map->type), static_cast<uint32_t>(e820[i].type)) << i;
    }
}

TEST_F(LoaderMultiboot, NoModuleWithoutInitrd)
{
    auto entry = load_bytes(build_elf(multiboot_elf()));
    ASSERT_TRUE(entry.ok()) << entry.error().message();
    MultibootInfo mbi = info();
    EXPECT_EQ(val(mbi.flags) & loader::kMbInfoMods, 0u);
    EXPECT_EQ(val(mbi.mods_count), 0u);
    EXPECT_EQ(read_guest_string(mem, mbi.cmdline), "");
}

TEST_F(LoaderMultiboot, EntryTranslatedFromVirtualAddress)
{
    auto entry = load_bytes(build_elf(multiboot_elf(0x3, 0x100000, 0xc0100000)));
    ASSERT_TRUE(entry.ok()) << entry.error().message();
    EXPECT_EQ(entry->rip, 0x100010u);
}

TEST_F(LoaderMultiboot, VideoModeRequestIsIgnored)
{
    auto entry = load_bytes(build_elf(multiboot_elf(0x7)));
    ASSERT_TRUE(entry.ok()) << entry.error().message();
}

TEST_F(LoaderMultiboot, UnsupportedRequiredFlag)
{
    expect_error(load_bytes(build_elf(multiboot_elf(0x3 | (1u << 3)))), "requires features");
}

TEST_F(LoaderMultiboot, Elf64IsRefused)
{
    ElfSpec spec = multiboot_elf();
    spec.is64 = true;
    spec.machine = EM_X86_64;
    expect_error(load_bytes(build_elf(spec)), "ELF32");
}

TEST_F(LoaderMultiboot, BadChecksumIsNotMultiboot)
{
    Bytes image = build_elf(multiboot_elf());
    // The header is at the start of the segment data; break its checksum.
    for (size_t off = 0; off + 12 <= image.size(); off += 4) {
        uint32_t word = 0;
        std::memcpy(&word, image.data() + off, 4);
        if (word == kMagic) {
            put32(image, off + 8, 0);
            break;
        }
    }
    expect_error(load_bytes(image), "not a bzImage, Multiboot kernel or ELF vmlinux with a PVH note");
}

TEST_F(LoaderMultiboot, HeaderBeyondFirst8KiBIsNotFound)
{
    Bytes image(9000, 0);
    Bytes h = multiboot_header(0x10003);
    std::copy(h.begin(), h.end(), image.begin() + 8192);
    expect_error(load_bytes(image), "not a bzImage, Multiboot kernel or ELF vmlinux with a PVH note");
}

TEST_F(LoaderMultiboot, AoutKludgeLoadsWholeFile)
{
    AoutFields f;
    Bytes image = aout_image(f);
    ASSERT_TRUE(mem.fill(0x202000, 0xcc, 0x1000).ok()); // bss must be cleared
    auto entry = load_bytes(image);
    ASSERT_TRUE(entry.ok()) << entry.error().message();
    EXPECT_EQ(entry->rip, 0x200100u);
    EXPECT_EQ(entry->rax, 0x2badb002u);
    EXPECT_EQ(entry->kind, "Multiboot (a.out kludge)");
    EXPECT_EQ(read_guest(mem, 0x200000, image.size()), image);
    Bytes bss = read_guest(mem, 0x202000, 0x1000);
    EXPECT_TRUE(std::all_of(bss.begin(), bss.end(), [](uint8_t b) { return b == 0; }));
}

TEST_F(LoaderMultiboot, AoutKludgeWithLoadEnd)
{
    AoutFields f;
    f.header_addr = 0x300040;
    f.load_addr = 0x300020; // the image starts 0x20 bytes into the file
    f.load_end_addr = 0x301020;
    f.bss_end_addr = 0;
    f.entry_addr = 0x300100;
    Bytes image = aout_image(f);
    auto entry = load_bytes(image);
    ASSERT_TRUE(entry.ok()) << entry.error().message();
    EXPECT_EQ(read_guest(mem, 0x300020, 0x1000), Bytes(image.begin() + 0x20, image.begin() + 0x1020));
    Bytes after = read_guest(mem, 0x301020, 16);
    EXPECT_TRUE(std::all_of(after.begin(), after.end(), [](uint8_t b) { return b == 0; }));
}

TEST_F(LoaderMultiboot, AoutKludgeTruncated)
{
    AoutFields f;
    f.load_end_addr = 0x210000; // 64 KiB from an 8 KiB file
    f.bss_end_addr = 0x210000;
    expect_error(load_bytes(aout_image(f)), "truncated");
}

TEST_F(LoaderMultiboot, AoutKludgeLoadAddrBeforeFile)
{
    AoutFields f;
    f.load_addr = 0x100000; // 1 MiB before the header, but the header is 0x40 into the file
    expect_error(load_bytes(aout_image(f)), "before the start of the file");
}

TEST_F(LoaderMultiboot, AoutKludgeEntryOutsideImage)
{
    AoutFields f;
    f.entry_addr = 0x400000;
    expect_error(load_bytes(aout_image(f)), "entry_addr");
}

TEST_F(LoaderMultiboot, AoutKludgeBelow1MiB)
{
    AoutFields f;
    f.header_addr = 0x10040;
    f.load_addr = 0x10000;
    f.bss_end_addr = 0;
    f.entry_addr = 0x10100;
    expect_error(load_bytes(aout_image(f)), "below 1 MiB");
}

TEST_F(LoaderMultiboot, AoutKludgeOutsideRam)
{
    AoutFields f;
    f.header_addr = 0x7ff0040;
    f.load_addr = 0x7ff0000;
    f.bss_end_addr = 0;
    f.entry_addr = 0x7ff0100;
    expect_error(load_bytes(aout_image(f)), "outside guest RAM");
}

TEST_F(LoaderMultiboot, AoutKludgeHeaderCutShort)
{
    Bytes image(0x4c, 0);
    Bytes h = multiboot_header(0x10003);
    std::copy(h.begin(), h.end(), image.begin() + 0x40);
    expect_error(load_bytes(image), "a.out kludge address fields are missing");
}

TEST_F(LoaderMultiboot, NonElfWithoutKludge)
{
    Bytes image(4096, 0x90);
    Bytes h = multiboot_header(0x3);
    std::copy(h.begin(), h.end(), image.begin() + 0x100);
    expect_error(load_bytes(image), "not an ELF");
}

TEST(LoaderMultibootHeader, SearchRules)
{
    Bytes image(8192, 0);
    Bytes h = multiboot_header(0x3);
    std::copy(h.begin(), h.end(), image.begin() + 0x102); // misaligned: ignored
    EXPECT_FALSE(loader::find_multiboot_header(image).has_value());
    std::copy(h.begin(), h.end(), image.begin() + 8180); // last aligned slot that fits
    auto found = loader::find_multiboot_header(image);
    ASSERT_TRUE(found.has_value());
    EXPECT_EQ(found->offset, 8180u);
    EXPECT_EQ(found->flags, 0x3u);
}
