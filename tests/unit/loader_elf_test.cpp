// ELF vmlinux with a PVH note, booted through hvm_start_info.
#include "loader/elf.h"
#include "loader/pvh.h"
#include "loader_test_support.h"

using namespace vessel;
using namespace vessel::test;

namespace {

class LoaderElf : public ::testing::Test {
protected:
    LoaderElf() : mem(make_memory()), e820(build_e820(mem)) { }

    Result<BootEntry> load_bytes(const Bytes& image, const std::string& initrd = "", const std::string& cmdline = "",
                                 uint64_t rsdp = 0, BootPath path = BootPath::Auto)
    {
        LoadRequest req { dir.write("vmlinux", image), initrd, cmdline, path, rsdp };
        return load_kernel(mem, e820, req);
    }

    void expect_error(const Result<BootEntry>& entry, const std::string& text)
    {
        ASSERT_FALSE(entry.ok());
        EXPECT_TRUE(mentions(entry.error(), "kernel '" + dir.path("vmlinux") + "'")) << entry.error().message();
        EXPECT_TRUE(mentions(entry.error(), text)) << entry.error().message();
    }

    TempDir dir;
    GuestMemory mem;
    std::vector<E820Entry> e820;
};

} // namespace

TEST_F(LoaderElf, Elf64PvhLoadsSegmentsAndStartInfo)
{
    ElfSpec spec = vmlinux_spec(3);
    // Poison guest RAM where the bss goes, to check that it is zeroed.
    ASSERT_TRUE(mem.fill(0x1200000, 0xaa, 64 * 1024).ok());
    Bytes initrd = pattern_bytes(12345, 9);
    std::string initrd_path = dir.write("initrd", initrd);

    auto entry = load_bytes(build_elf(spec), initrd_path, "console=hvc0", 0xe0000);
    ASSERT_TRUE(entry.ok()) << entry.error().message();
    EXPECT_EQ(entry->mode, EntryMode::Protected32);
    EXPECT_EQ(entry->rip, 0x1000040u);
    EXPECT_EQ(entry->rbx, layout::kPvhStartInfo);
    EXPECT_EQ(entry->kind, "ELF PVH");

    EXPECT_EQ(read_guest(mem, 0x1000000, spec.segments[0].data.size()), spec.segments[0].data);
    EXPECT_EQ(read_guest(mem, 0x1200000, spec.segments[1].data.size()), spec.segments[1].data);
    Bytes bss = read_guest(mem, 0x1200000 + spec.segments[1].data.size(), 64 * 1024 - spec.segments[1].data.size());
    EXPECT_TRUE(std::all_of(bss.begin(), bss.end(), [](uint8_t b) { return b == 0; }));

    auto info = mem.read_obj<loader::HvmStartInfo>(layout::kPvhStartInfo);
    ASSERT_TRUE(info.ok());
    EXPECT_EQ(info->magic, 0x336ec578u);
    EXPECT_EQ(info->version, 1u);
    EXPECT_EQ(info->flags, 0u);
    EXPECT_EQ(info->cmdline_paddr, layout::kCmdline);
    EXPECT_EQ(read_guest_string(mem, info->cmdline_paddr), "console=hvc0");
    EXPECT_EQ(info->rsdp_paddr, 0xe0000u);

    ASSERT_EQ(info->nr_modules, 1u);
    auto module = mem.read_obj<loader::HvmModlistEntry>(info->modlist_paddr);
    ASSERT_TRUE(module.ok());
    EXPECT_EQ(module->size, initrd.size());
    EXPECT_EQ(module->paddr % 4096, 0u);
    EXPECT_GE(module->paddr, 0x1200000u + 64 * 1024);
    EXPECT_LE(module->paddr + module->size, mem.size());
    EXPECT_EQ(read_guest(mem, module->paddr, initrd.size()), initrd);

    ASSERT_EQ(info->memmap_entries, e820.size());
    for (size_t i = 0; i < e820.size(); i++) {
        auto map = mem.read_obj<loader::HvmMemmapEntry>(info->memmap_paddr + i * sizeof(loader::HvmMemmapEntry));
        ASSERT_TRUE(map.ok());
        EXPECT_EQ(map->addr, e820[i].addr) << i;
        EXPECT_EQ(map->size, e820[i].size) << i;
        EXPECT_EQ(map->type, static_cast<uint32_t>(e820[i].type)) << i;
        EXPECT_EQ(map->reserved, 0u);
    }
}

TEST_F(LoaderElf, NoInitrdMeansNoModules)
{
    auto entry = load_bytes(build_elf(vmlinux_spec()));
    ASSERT_TRUE(entry.ok()) << entry.error().message();
    auto info = mem.read_obj<loader::HvmStartInfo>(layout::kPvhStartInfo);
    ASSERT_TRUE(info.ok());
    EXPECT_EQ(info->nr_modules, 0u);
    EXPECT_EQ(info->modlist_paddr, 0u);
    EXPECT_EQ(info->rsdp_paddr, 0u);
}

TEST_F(LoaderElf, Elf32Pvh)
{
    ElfSpec spec;
    spec.is64 = false;
    spec.machine = EM_386;
    spec.entry = 0x200000;
    spec.segments.push_back({ 0x200000, 0, pattern_bytes(8192, 5), 0x3000 });
    spec.pvh_entry = 0x200010;
    auto entry = load_bytes(build_elf(spec));
    ASSERT_TRUE(entry.ok()) << entry.error().message();
    EXPECT_EQ(entry->rip, 0x200010u);
    EXPECT_EQ(read_guest(mem, 0x200000, 8192), spec.segments[0].data);
}

TEST_F(LoaderElf, EightBytePvhNoteDescriptor)
{
    ElfSpec spec = vmlinux_spec();
    spec.pvh_desc_size = 8;
    auto entry = load_bytes(build_elf(spec));
    ASSERT_TRUE(entry.ok()) << entry.error().message();
    EXPECT_EQ(entry->rip, 0x1000040u);
}

TEST_F(LoaderElf, DecompressorPathStillUsesPvhForPlainElf)
{
    auto entry = load_bytes(build_elf(vmlinux_spec()), "", "", 0, BootPath::Decompressor);
    ASSERT_TRUE(entry.ok()) << entry.error().message();
    EXPECT_EQ(entry->mode, EntryMode::Protected32);
}

TEST_F(LoaderElf, ElfWithoutPvhNote)
{
    ElfSpec spec = vmlinux_spec();
    spec.pvh_entry.reset();
    expect_error(load_bytes(build_elf(spec)), "not a bzImage, Multiboot kernel or ELF vmlinux with a PVH note");
}

TEST_F(LoaderElf, PvhEntryOutsideSegments)
{
    ElfSpec spec = vmlinux_spec();
    spec.pvh_entry = 0x3000000;
    expect_error(load_bytes(build_elf(spec)), "PVH entry point 0x3000000 is not inside a loadable segment");
}

TEST_F(LoaderElf, PtLoadOutsideFile)
{
    Bytes image = build_elf(vmlinux_spec());
    put64(image, phdr_offset(true, 0) + phdr_field_offset(true), image.size() - 100);
    expect_error(load_bytes(image), "lies outside the file");

    image = build_elf(vmlinux_spec());
    put64(image, phdr_offset(true, 1) + phdr_field_filesz(true), 0xffffffffffffff00ULL);
    put64(image, phdr_offset(true, 1) + phdr_field_memsz(true), 0xffffffffffffff00ULL);
    expect_error(load_bytes(image), "lies outside the file");
}

TEST_F(LoaderElf, PtLoadOutsideGuestRam)
{
    ElfSpec spec = vmlinux_spec();
    spec.segments[1].paddr = 62 * layout::MiB;
    spec.segments[1].memsz = 4 * layout::MiB;
    expect_error(load_bytes(build_elf(spec)), "outside guest RAM");
    // Nothing was written: the first segment's range is still zero.
    Bytes first = read_guest(mem, 0x1000000, 64);
    EXPECT_TRUE(std::all_of(first.begin(), first.end(), [](uint8_t b) { return b == 0; }));
}

TEST_F(LoaderElf, SegmentAtHugeAddress)
{
    Bytes image = build_elf(vmlinux_spec());
    put64(image, phdr_offset(true, 1) + phdr_field_paddr(true), 0xfffffffffffff000ULL);
    expect_error(load_bytes(image), "outside guest RAM");

    put64(image, phdr_offset(true, 1) + phdr_field_paddr(true), layout::kMmioHoleStart);
    expect_error(load_bytes(image), "outside guest RAM");
}

TEST_F(LoaderElf, SegmentInLowMemory)
{
    ElfSpec spec = vmlinux_spec();
    spec.segments[1].paddr = 0x7000; // would overwrite the boot structures
    expect_error(load_bytes(build_elf(spec)), "below 1 MiB");
}

TEST_F(LoaderElf, FileszLargerThanMemsz)
{
    Bytes image = build_elf(vmlinux_spec());
    put64(image, phdr_offset(true, 0) + phdr_field_memsz(true), 16);
    expect_error(load_bytes(image), "p_filesz");
}

TEST_F(LoaderElf, TruncatedProgramHeaders)
{
    Bytes image = build_elf(vmlinux_spec());
    image.resize(sizeof(Elf64_Ehdr) + 20);
    expect_error(load_bytes(image), "program header table");
}

TEST_F(LoaderElf, TruncatedElfHeader)
{
    Bytes image = build_elf(vmlinux_spec());
    image.resize(30);
    expect_error(load_bytes(image), "ELF header is truncated");
}

TEST_F(LoaderElf, MalformedNote)
{
    ElfSpec spec = vmlinux_spec();
    Bytes image = build_elf(spec);
    // The PT_NOTE is the last program header; its data starts with the GNU note's namesz.
    size_t note_phdr = phdr_offset(true, spec.segments.size());
    uint64_t note_offset = 0;
    std::memcpy(&note_offset, image.data() + note_phdr + phdr_field_offset(true), 8);
    put32(image, note_offset + 4, 0xfffffff0); // descsz
    expect_error(load_bytes(image), "ELF note");
}

TEST_F(LoaderElf, WrongMachine)
{
    Bytes image = build_elf(vmlinux_spec());
    put16(image, 18, 40); // EM_ARM
    expect_error(load_bytes(image), "not x86");
}

TEST_F(LoaderElf, InitrdDoesNotFitAboveKernel)
{
    ElfSpec spec = vmlinux_spec();
    spec.segments[1].paddr = 60 * layout::MiB; // kernel ends just below 64 MiB
    spec.segments[1].memsz = 3 * layout::MiB;
    std::string initrd = dir.write("initrd", pattern_bytes(2 << 20, 1));
    auto entry = load_bytes(build_elf(spec), initrd);
    ASSERT_FALSE(entry.ok());
    EXPECT_TRUE(mentions(entry.error(), "initrd '" + initrd + "': too large")) << entry.error().message();
}

TEST(LoaderElfParse, FindsNotesByNameAndType)
{
    Bytes image = build_elf(vmlinux_spec());
    auto parsed = loader::parse_elf(image);
    ASSERT_TRUE(parsed.ok()) << parsed.error().message();
    auto gnu = loader::find_elf_note(image, *parsed, "GNU", 1);
    ASSERT_TRUE(gnu.ok());
    ASSERT_TRUE(gnu->has_value());
    EXPECT_EQ((*gnu)->size(), 3u);
    auto none = loader::find_elf_note(image, *parsed, "Xen", 99);
    ASSERT_TRUE(none.ok());
    EXPECT_FALSE(none->has_value());
}
