// load_kernel's format detection and the errors common to every format.
#include <algorithm>
#include <cstdlib>

#include "loader_test_support.h"

using namespace vessel;
using namespace vessel::test;

namespace {

class LoaderCommon : public ::testing::Test {
protected:
    LoaderCommon() : mem(make_memory()), e820(build_e820(mem)) { }

    Result<BootEntry> load_path(const std::string& path, BootPath boot_path = BootPath::Auto)
    {
        LoadRequest req { path, "", "", boot_path, 0 };
        return load_kernel(mem, e820, req);
    }

    TempDir dir;
    GuestMemory mem;
    std::vector<E820Entry> e820;
};

} // namespace

TEST_F(LoaderCommon, MissingKernel)
{
    std::string path = dir.path("no-such-kernel");
    auto entry = load_path(path);
    ASSERT_FALSE(entry.ok());
    EXPECT_TRUE(mentions(entry.error(), "'" + path + "'")) << entry.error().message();
    EXPECT_TRUE(mentions(entry.error(), "No such file")) << entry.error().message();
}

TEST_F(LoaderCommon, KernelIsADirectory)
{
    auto entry = load_path(dir.path(""));
    ASSERT_FALSE(entry.ok());
    EXPECT_TRUE(mentions(entry.error(), "not a regular file")) << entry.error().message();
}

TEST_F(LoaderCommon, EmptyFile)
{
    std::string path = dir.write("empty", Bytes {});
    auto entry = load_path(path);
    ASSERT_FALSE(entry.ok());
    EXPECT_EQ(entry.error().message(), "kernel '" + path + "': file is empty");
}

TEST_F(LoaderCommon, RandomBytes)
{
    for (uint32_t seed = 1; seed <= 8; seed++) {
        for (size_t size : { size_t { 3 }, size_t { 100 }, size_t { 0x300 }, size_t { 20000 } }) {
            std::string path = dir.write("random", random_bytes(size, seed));
            for (BootPath p : { BootPath::Auto, BootPath::Decompressor, BootPath::Pvh }) {
                auto entry = load_path(path, p);
                ASSERT_FALSE(entry.ok());
                EXPECT_EQ(entry.error().message(),
                          "kernel '" + path + "': not a bzImage, Multiboot kernel or ELF vmlinux with a PVH note");
            }
        }
    }
}

// Random bytes behind a valid-looking "HdrS" or ELF magic must fail cleanly, never crash.
TEST_F(LoaderCommon, RandomBytesWithMagic)
{
    for (uint32_t seed = 1; seed <= 32; seed++) {
        Bytes bz = random_bytes(4096, seed);
        put32(bz, 0x202, 0x53726448);
        put16(bz, 0x1fe, 0xaa55);
        Bytes elf = random_bytes(4096, seed + 100);
        elf[0] = 0x7f;
        elf[1] = 'E';
        elf[2] = 'L';
        elf[3] = 'F';
        elf[4] = static_cast<uint8_t>(1 + seed % 2);
        elf[5] = 1;
        elf[6] = 1;
        for (const Bytes& image : { bz, elf }) {
            std::string path = dir.write("fuzz", image);
            for (BootPath p : { BootPath::Auto, BootPath::Decompressor, BootPath::Pvh }) {
                auto entry = load_path(path, p);
                if (!entry.ok()) {
                    EXPECT_TRUE(mentions(entry.error(), path)) << entry.error().message();
                }
            }
        }
    }
}

TEST_F(LoaderCommon, KernelFileLargerThanGuestRam)
{
    std::string path = dir.write_sparse("huge", 65 * layout::MiB);
    auto entry = load_path(path);
    ASSERT_FALSE(entry.ok());
    EXPECT_TRUE(mentions(entry.error(), "'" + path + "' is too large")) << entry.error().message();
}

TEST_F(LoaderCommon, CmdlineTooLongForPvh)
{
    LoadRequest req { dir.write("vmlinux", build_elf(vmlinux_spec())), "", std::string(layout::kCmdlineMax, 'a'),
                      BootPath::Auto, 0 };
    auto entry = load_kernel(mem, e820, req);
    ASSERT_FALSE(entry.ok());
    EXPECT_TRUE(mentions(entry.error(), "kernel '" + req.kernel_path + "': command line is")) << entry.error().message();
    // The longest accepted command line fills the buffer with its NUL.
    req.cmdline = std::string(layout::kCmdlineMax - 1, 'a');
    auto ok = load_kernel(mem, e820, req);
    ASSERT_TRUE(ok.ok()) << ok.error().message();
    EXPECT_EQ(read_guest_string(mem, layout::kCmdline, layout::kCmdlineMax).size(), layout::kCmdlineMax - 1);
}

TEST_F(LoaderCommon, CmdlineWithNul)
{
    LoadRequest req { dir.write("vmlinux", build_elf(vmlinux_spec())), "", std::string("a\0b", 3), BootPath::Auto, 0 };
    auto entry = load_kernel(mem, e820, req);
    ASSERT_FALSE(entry.ok());
    EXPECT_TRUE(mentions(entry.error(), "NUL")) << entry.error().message();
}

TEST_F(LoaderCommon, InitrdIsADirectory)
{
    LoadRequest req { dir.write("vmlinux", build_elf(vmlinux_spec())), dir.path(""), "", BootPath::Auto, 0 };
    auto entry = load_kernel(mem, e820, req);
    ASSERT_FALSE(entry.ok());
    EXPECT_TRUE(mentions(entry.error(), "initrd '" + dir.path("") + "': not a regular file")) << entry.error().message();
}

// Real distribution kernels, if some have been cached (e.g. by the integration-test setup):
// every vmlinuz-* must load both through its decompressor and through PVH.
TEST(LoaderRealKernel, DebianVmlinuz)
{
    const char* home = std::getenv("HOME");
    std::filesystem::path cache = std::filesystem::path(home ? home : "/root") / ".cache/vessel/kernels";
    std::vector<std::string> kernels;
    std::error_code ec;
    if (std::filesystem::is_directory(cache, ec)) {
        for (const auto& file : std::filesystem::directory_iterator(cache, ec)) {
            // Symlinks (vmlinuz-amd64 -> vmlinuz-6.x-amd64) would only repeat a kernel.
            if (file.path().filename().string().starts_with("vmlinuz-") && !file.is_symlink() && file.is_regular_file())
                kernels.push_back(file.path().string());
        }
    }
    if (kernels.empty()) {
        std::printf("no vmlinuz-* in %s; skipping the real-kernel test\n", cache.c_str());
        GTEST_SKIP() << "no vmlinuz-* in " << cache;
    }
    std::sort(kernels.begin(), kernels.end());

    for (const auto& kernel : kernels) {
        SCOPED_TRACE(kernel);
        GuestMemory mem = make_memory(256 * layout::MiB);
        auto e820 = build_e820(mem);
        LoadRequest req { kernel, "", "console=ttyS0", BootPath::Decompressor, 0 };
        auto legacy = load_kernel(mem, e820, req);
        ASSERT_TRUE(legacy.ok()) << legacy.error().message();
        EXPECT_EQ(legacy->mode, EntryMode::Long64);
        EXPECT_GE(legacy->rip, 0x1000000u + 0x200);
        EXPECT_EQ(legacy->rip % 0x200000, 0x200u);
        EXPECT_EQ(legacy->rsi, layout::kZeroPage);
        EXPECT_EQ(read_guest_string(mem, layout::kCmdline), "console=ttyS0");

        GuestMemory mem2 = make_memory(256 * layout::MiB);
        req.path = BootPath::Pvh;
        auto pvh = load_kernel(mem2, e820, req);
        if (!pvh.ok() && mentions(pvh.error(), "no PVH entry point note")) {
            std::printf("%s: built without CONFIG_PVH, PVH half skipped\n", kernel.c_str());
            continue;
        }
        ASSERT_TRUE(pvh.ok()) << pvh.error().message();
        EXPECT_EQ(pvh->mode, EntryMode::Protected32);
        EXPECT_GE(pvh->rip, 0x1000000u);
        EXPECT_LT(pvh->rip, 256 * layout::MiB);
        EXPECT_EQ(pvh->rbx, layout::kPvhStartInfo);
        auto info = mem2.read_obj<uint32_t>(layout::kPvhStartInfo);
        ASSERT_TRUE(info.ok());
        EXPECT_EQ(*info, 0x336ec578u);
    }
}
