// bzImage through the kernel's own decompressor (Linux 64-bit boot protocol).
#include "loader/boot_params.h"
#include "loader_test_support.h"

using namespace vessel;
using namespace vessel::test;
using vessel::loader::BootParams;

namespace {

class LoaderBzImage : public ::testing::Test {
protected:
    LoaderBzImage() : mem(make_memory()), e820(build_e820(mem)) { }

    Result<BootEntry> load(const BzSpec& spec, const std::string& cmdline = "console=ttyS0",
                           const std::string& initrd = "", uint64_t rsdp = 0)
    {
        image = build_bzimage(spec);
        LoadRequest req;
        req.kernel_path = dir.write("bzImage", image);
        req.initrd_path = initrd;
        req.cmdline = cmdline;
        req.path = BootPath::Decompressor;
        req.rsdp_addr = rsdp;
        return load_kernel(mem, e820, req);
    }

    BootParams boot_params() const
    {
        auto bp = mem.read_obj<BootParams>(layout::kZeroPage);
        EXPECT_TRUE(bp.ok());
        return bp.value();
    }

    TempDir dir;
    GuestMemory mem;
    std::vector<E820Entry> e820;
    Bytes image;
};

BzSpec default_spec()
{
    BzSpec spec;
    spec.payload = gzip_compress(pattern_bytes(4096, 7));
    return spec;
}

} // namespace

TEST_F(LoaderBzImage, LoadsAtPrefAddressWithLongModeEntry)
{
    auto entry = load(default_spec());
    ASSERT_TRUE(entry.ok()) << entry.error().message();
    EXPECT_EQ(entry->mode, EntryMode::Long64);
    EXPECT_EQ(entry->rip, 0x1000000u + 0x200);
    EXPECT_EQ(entry->rsi, layout::kZeroPage);
    EXPECT_EQ(entry->kind, "bzImage");

    // The protected-mode part (after 2 sectors of setup) sits at the load address.
    Bytes pm(image.begin() + 2 * 512, image.end());
    EXPECT_EQ(read_guest(mem, 0x1000000, pm.size()), pm);
}

TEST_F(LoaderBzImage, BootParamsFields)
{
    Bytes initrd = pattern_bytes(100000, 3);
    std::string initrd_path = dir.write("initrd.img", initrd);
    auto entry = load(default_spec(), "console=ttyS0 root=/dev/vda", initrd_path, 0xe0000);
    ASSERT_TRUE(entry.ok()) << entry.error().message();
    BootParams bp = boot_params();

    EXPECT_EQ(val(bp.hdr.boot_flag), 0xaa55);
    EXPECT_EQ(val(bp.hdr.header), 0x53726448u);
    EXPECT_EQ(val(bp.hdr.version), 0x020f);
    EXPECT_EQ(val(bp.hdr.type_of_loader), 0xff);
    EXPECT_TRUE(bp.hdr.loadflags & loader::kCanUseHeap);
    EXPECT_TRUE(bp.hdr.loadflags & loader::kLoadedHigh);
    EXPECT_EQ(val(bp.hdr.heap_end_ptr), 0xde00);
    EXPECT_EQ(val(bp.hdr.init_size), 8u << 20);
    EXPECT_EQ(val(bp.hdr.kernel_alignment), 0x200000u);
    EXPECT_EQ(val(bp.hdr.cmd_line_ptr), layout::kCmdline);
    EXPECT_EQ(read_guest_string(mem, layout::kCmdline), "console=ttyS0 root=/dev/vda");
    EXPECT_EQ(val(bp.acpi_rsdp_addr), 0xe0000u);
    EXPECT_EQ(val(bp.sentinel), 0);

    // The initrd: page-aligned, as high as possible, above the kernel's init_size.
    EXPECT_EQ(val(bp.hdr.ramdisk_size), initrd.size());
    EXPECT_EQ(val(bp.hdr.ramdisk_image) % 4096, 0u);
    EXPECT_GE(val(bp.hdr.ramdisk_image), 0x1000000u + (8u << 20));
    EXPECT_LE(val(bp.hdr.ramdisk_image) + initrd.size(), mem.size());
    EXPECT_GT(val(bp.hdr.ramdisk_image) + initrd.size() + 4096, mem.size());
    EXPECT_EQ(read_guest(mem, bp.hdr.ramdisk_image, initrd.size()), initrd);

    ASSERT_EQ(val(bp.e820_entries), e820.size());
    for (size_t i = 0; i < e820.size(); i++) {
        EXPECT_EQ(val(bp.e820_table[i].addr), e820[i].addr) << i;
        EXPECT_EQ(val(bp.e820_table[i].size), e820[i].size) << i;
        EXPECT_EQ(val(bp.e820_table[i].type), static_cast<uint32_t>(e820[i].type)) << i;
    }
}

TEST_F(LoaderBzImage, NoInitrdNoRsdp)
{
    auto entry = load(default_spec());
    ASSERT_TRUE(entry.ok()) << entry.error().message();
    BootParams bp = boot_params();
    EXPECT_EQ(val(bp.hdr.ramdisk_image), 0u);
    EXPECT_EQ(val(bp.hdr.ramdisk_size), 0u);
    EXPECT_EQ(val(bp.acpi_rsdp_addr), 0u);
}

TEST_F(LoaderBzImage, InitrdRespectsInitrdAddrMax)
{
    BzSpec spec = default_spec();
    spec.initrd_addr_max = 0x2ffffff; // 48 MiB - 1 in a 64 MiB guest
    Bytes initrd = pattern_bytes(5000, 4);
    auto entry = load(spec, "", dir.write("initrd", initrd));
    ASSERT_TRUE(entry.ok()) << entry.error().message();
    BootParams bp = boot_params();
    EXPECT_LE(val(bp.hdr.ramdisk_image) + bp.hdr.ramdisk_size, 0x3000000u);
    EXPECT_EQ(val(bp.hdr.ramdisk_image), 0x3000000u - 8192);
}

TEST_F(LoaderBzImage, RelocatableKernelAlignsPrefAddress)
{
    BzSpec spec = default_spec();
    spec.pref_address = 0x1100000;
    auto entry = load(spec);
    ASSERT_TRUE(entry.ok()) << entry.error().message();
    EXPECT_EQ(entry->rip, 0x1200000u + 0x200);
}

TEST_F(LoaderBzImage, NonRelocatableKernelLoadsAt1MiB)
{
    BzSpec spec = default_spec();
    spec.relocatable = 0;
    auto entry = load(spec);
    ASSERT_TRUE(entry.ok()) << entry.error().message();
    EXPECT_EQ(entry->rip, 0x100000u + 0x200);
    EXPECT_EQ(boot_params().hdr.code32_start, 0x100000u);
}

TEST_F(LoaderBzImage, SetupSectsZeroMeansFour)
{
    BzSpec spec = default_spec();
    spec.setup_sects = 0;
    auto entry = load(spec);
    ASSERT_TRUE(entry.ok()) << entry.error().message();
    Bytes pm(image.begin() + 5 * 512, image.end());
    EXPECT_EQ(read_guest(mem, 0x1000000, pm.size()), pm);
}

TEST_F(LoaderBzImage, RefusesOldProtocolFor64BitEntry)
{
    BzSpec spec = default_spec();
    spec.version = 0x020b;
    auto entry = load(spec);
    ASSERT_FALSE(entry.ok());
    EXPECT_TRUE(mentions(entry.error(), "bzImage'")) << entry.error().message();
    EXPECT_TRUE(mentions(entry.error(), "2.11")) << entry.error().message();
}

TEST_F(LoaderBzImage, RefusesKernelWithout64BitEntry)
{
    BzSpec spec = default_spec();
    spec.xloadflags = 0;
    auto entry = load(spec);
    ASSERT_FALSE(entry.ok());
    EXPECT_TRUE(mentions(entry.error(), "XLF_KERNEL_64")) << entry.error().message();
}

TEST_F(LoaderBzImage, RefusesKernelLargerThanRam)
{
    BzSpec spec = default_spec();
    spec.init_size = 100 << 20;
    auto entry = load(spec);
    ASSERT_FALSE(entry.ok());
    EXPECT_TRUE(mentions(entry.error(), "kernel '" + dir.path("bzImage") + "'")) << entry.error().message();
    EXPECT_TRUE(mentions(entry.error(), "needs 116 MiB but guest RAM is 64 MiB")) << entry.error().message();
}

TEST_F(LoaderBzImage, RefusesBadKernelAlignment)
{
    BzSpec spec = default_spec();
    spec.kernel_alignment = 0x30000;
    auto entry = load(spec);
    ASSERT_FALSE(entry.ok());
    EXPECT_TRUE(mentions(entry.error(), "kernel_alignment")) << entry.error().message();
}

TEST_F(LoaderBzImage, TruncatedSetupHeader)
{
    Bytes img = build_bzimage(default_spec());
    img.resize(0x220);
    LoadRequest req { dir.write("short", img), "", "", BootPath::Decompressor, 0 };
    auto entry = load_kernel(mem, e820, req);
    ASSERT_FALSE(entry.ok());
    EXPECT_TRUE(mentions(entry.error(), "kernel '" + req.kernel_path + "': truncated")) << entry.error().message();
}

TEST_F(LoaderBzImage, TruncatedSetupSectors)
{
    BzSpec spec = default_spec();
    spec.setup_sects = 40; // 20 KiB of setup, more than the file
    Bytes img = build_bzimage(spec);
    img.resize(8192);
    LoadRequest req { dir.write("short", img), "", "", BootPath::Decompressor, 0 };
    auto entry = load_kernel(mem, e820, req);
    ASSERT_FALSE(entry.ok());
    EXPECT_TRUE(mentions(entry.error(), "truncated (setup header says")) << entry.error().message();
    EXPECT_TRUE(mentions(entry.error(), req.kernel_path)) << entry.error().message();
}

TEST_F(LoaderBzImage, TruncatedProtectedModeKernel)
{
    Bytes img = build_bzimage(default_spec());
    img.resize(img.size() - 64); // syssize now exceeds the file
    LoadRequest req { dir.write("short", img), "", "", BootPath::Decompressor, 0 };
    auto entry = load_kernel(mem, e820, req);
    ASSERT_FALSE(entry.ok());
    EXPECT_TRUE(mentions(entry.error(), "protected-mode kernel")) << entry.error().message();
}

TEST_F(LoaderBzImage, MissingBootSectorSignature)
{
    Bytes img = build_bzimage(default_spec());
    put16(img, 0x1fe, 0);
    LoadRequest req { dir.write("nosig", img), "", "", BootPath::Decompressor, 0 };
    auto entry = load_kernel(mem, e820, req);
    ASSERT_FALSE(entry.ok());
    EXPECT_TRUE(mentions(entry.error(), "0xaa55")) << entry.error().message();
    EXPECT_TRUE(mentions(entry.error(), req.kernel_path)) << entry.error().message();
}

TEST_F(LoaderBzImage, CmdlineLongerThanKernelLimit)
{
    BzSpec spec = default_spec();
    spec.cmdline_size = 10;
    auto entry = load(spec, "0123456789A");
    ASSERT_FALSE(entry.ok());
    EXPECT_TRUE(mentions(entry.error(), "kernel '" + dir.path("bzImage") + "'")) << entry.error().message();
    EXPECT_TRUE(mentions(entry.error(), "command line is 11 bytes")) << entry.error().message();
    // Exactly at the limit is fine.
    EXPECT_TRUE(load(spec, "0123456789").ok());
}

TEST_F(LoaderBzImage, CmdlineLongerThanVesselBuffer)
{
    BzSpec spec = default_spec();
    spec.cmdline_size = 0xffffffff;
    auto entry = load(spec, std::string(layout::kCmdlineMax, 'x'));
    ASSERT_FALSE(entry.ok());
    EXPECT_TRUE(mentions(entry.error(), "command line")) << entry.error().message();
}

TEST_F(LoaderBzImage, InitrdTooLarge)
{
    std::string big = dir.write_sparse("huge.img", 60 * layout::MiB);
    auto entry = load(default_spec(), "", big);
    ASSERT_FALSE(entry.ok());
    EXPECT_TRUE(mentions(entry.error(), "initrd '" + big + "': too large")) << entry.error().message();
}

TEST_F(LoaderBzImage, InitrdMissing)
{
    std::string missing = dir.path("no-such-initrd");
    auto entry = load(default_spec(), "", missing);
    ASSERT_FALSE(entry.ok());
    EXPECT_TRUE(mentions(entry.error(), "initrd '" + missing + "'")) << entry.error().message();
    EXPECT_TRUE(mentions(entry.error(), "No such file")) << entry.error().message();
}

TEST_F(LoaderBzImage, InitrdEmpty)
{
    std::string empty = dir.write("empty.img", Bytes {});
    auto entry = load(default_spec(), "", empty);
    ASSERT_FALSE(entry.ok());
    EXPECT_TRUE(mentions(entry.error(), "initrd '" + empty + "'")) << entry.error().message();
}

TEST_F(LoaderBzImage, TooManyE820Entries)
{
    std::vector<E820Entry> many(200, E820Entry { 0, 4096, E820Type::Reserved });
    image = build_bzimage(default_spec());
    LoadRequest req { dir.write("bzImage", image), "", "", BootPath::Decompressor, 0 };
    auto entry = load_kernel(mem, many, req);
    ASSERT_FALSE(entry.ok());
    EXPECT_TRUE(mentions(entry.error(), req.kernel_path)) << entry.error().message();
}
