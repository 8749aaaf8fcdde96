// Host-side decompression of bzImage payloads and the PVH / decompressor boot-path choice.
#include "loader/decompress.h"
#include "loader/pvh.h"
#include "loader_test_support.h"

using namespace vessel;
using namespace vessel::test;
using loader::PayloadFormat;

namespace {

struct Codec {
    const char* name;
    PayloadFormat format;
    Bytes (*compress)(std::span<const uint8_t>);
};

Bytes lz4_default(std::span<const uint8_t> in) { return lz4_compress(in); }

const Codec kCodecs[] = {
    { "gzip", PayloadFormat::Gzip, gzip_compress },
    { "xz", PayloadFormat::Xz, xz_compress },
    { "lzma", PayloadFormat::Lzma, lzma_compress },
    { "bzip2", PayloadFormat::Bzip2, bzip2_compress },
    { "lz4", PayloadFormat::Lz4, lz4_default },
    { "zstd", PayloadFormat::Zstd, zstd_compress },
};

class LoaderDecompress : public ::testing::TestWithParam<Codec> { };

std::string codec_name(const ::testing::TestParamInfo<Codec>& info) { return info.param.name; }

} // namespace

TEST_P(LoaderDecompress, RoundTrip)
{
    Bytes original = pattern_bytes(300000, 11);
    Bytes compressed = GetParam().compress(original);
    EXPECT_EQ(loader::detect_payload_format(compressed), GetParam().format);
    auto out = loader::decompress_payload(compressed);
    ASSERT_TRUE(out.ok()) << out.error().message();
    EXPECT_EQ(*out, original);
}

TEST_P(LoaderDecompress, TruncatedStreamIsAnError)
{
    Bytes compressed = GetParam().compress(pattern_bytes(300000, 12));
    for (size_t keep : { compressed.size() / 2, compressed.size() - 12, size_t { 8 } }) {
        Bytes cut(compressed.begin(), compressed.begin() + static_cast<ptrdiff_t>(keep));
        auto out = loader::decompress_payload(cut);
        ASSERT_FALSE(out.ok()) << GetParam().name << " kept " << keep;
        EXPECT_TRUE(mentions(out.error(), GetParam().name)) << out.error().message();
    }
}

TEST_P(LoaderDecompress, CorruptStreamIsAnError)
{
    Bytes original = pattern_bytes(200000, 13);
    Bytes compressed = GetParam().compress(original);
    // Overwrite a stretch in the middle of the compressed data.
    for (size_t i = compressed.size() / 2; i < compressed.size() / 2 + 64; i++)
        compressed[i] ^= 0x5a;
    auto out = loader::decompress_payload(compressed);
    if (GetParam().format == PayloadFormat::Lz4 || GetParam().format == PayloadFormat::Lzma) {
        // These formats carry no checksum: corruption is not always detectable, but it must
        // never crash or yield the original data.
        if (out.ok()) {
            EXPECT_NE(*out, original);
        }
        return;
    }
    ASSERT_FALSE(out.ok()) << GetParam().name;
    EXPECT_TRUE(mentions(out.error(), GetParam().name)) << out.error().message();
}

TEST_P(LoaderDecompress, OutputIsCapped)
{
    Bytes compressed = GetParam().compress(pattern_bytes(2 << 20, 14));
    auto out = loader::decompress_payload(compressed, 1 << 20);
    ASSERT_FALSE(out.ok());
    EXPECT_TRUE(mentions(out.error(), "larger than the limit of 1 MiB")) << out.error().message();
    // Exactly at the cap is accepted.
    auto exact = loader::decompress_payload(compressed, 2 << 20);
    ASSERT_TRUE(exact.ok()) << exact.error().message();
    EXPECT_EQ(exact->size(), 2u << 20);
}

// The bzImage's payload is a compressed vmlinux with a PVH note: Auto boots it through PVH.
TEST_P(LoaderDecompress, BzImageBootsThroughPvh)
{
    TempDir dir;
    GuestMemory mem = make_memory();
    auto e820 = build_e820(mem);
    ElfSpec spec = vmlinux_spec();
    Bytes vmlinux = build_elf(spec);
    BzSpec bz;
    bz.payload = GetParam().compress(vmlinux);
    LoadRequest req { dir.write("bzImage", build_bzimage(bz)), "", "quiet", BootPath::Auto, 0 };

    auto entry = load_kernel(mem, e820, req);
    ASSERT_TRUE(entry.ok()) << entry.error().message();
    EXPECT_EQ(entry->mode, EntryMode::Protected32);
    EXPECT_EQ(entry->rip, 0x1000040u);
    EXPECT_EQ(entry->rbx, layout::kPvhStartInfo);
    EXPECT_EQ(entry->kind, "bzImage (host-decompressed, PVH)");
    EXPECT_EQ(read_guest(mem, 0x1000000, spec.segments[0].data.size()), spec.segments[0].data);
    auto info = mem.read_obj<loader::HvmStartInfo>(layout::kPvhStartInfo);
    ASSERT_TRUE(info.ok());
    EXPECT_EQ(info->magic, loader::kHvmStartMagic);
    EXPECT_EQ(read_guest_string(mem, info->cmdline_paddr), "quiet");

    // BootPath::Pvh takes the same route.
    req.path = BootPath::Pvh;
    auto pvh = load_kernel(mem, e820, req);
    ASSERT_TRUE(pvh.ok()) << pvh.error().message();
    EXPECT_EQ(pvh->mode, EntryMode::Protected32);
}

INSTANTIATE_TEST_SUITE_P(LoaderFormats, LoaderDecompress, ::testing::ValuesIn(kCodecs), codec_name);

TEST(LoaderDecompressFormats, DetectsMagic)
{
    EXPECT_EQ(loader::detect_payload_format(Bytes { 0x1f, 0x8b, 8 }), PayloadFormat::Gzip);
    EXPECT_EQ(loader::detect_payload_format(Bytes { 0xfd, '7', 'z', 'X', 'Z', 0 }), PayloadFormat::Xz);
    EXPECT_EQ(loader::detect_payload_format(Bytes { 0x5d, 0, 0, 0x80 }), PayloadFormat::Lzma);
    EXPECT_EQ(loader::detect_payload_format(Bytes { 'B', 'Z', 'h', '9' }), PayloadFormat::Bzip2);
    EXPECT_EQ(loader::detect_payload_format(Bytes { 0x02, 0x21, 0x4c, 0x18 }), PayloadFormat::Lz4);
    EXPECT_EQ(loader::detect_payload_format(Bytes { 0x28, 0xb5, 0x2f, 0xfd }), PayloadFormat::Zstd);
    EXPECT_EQ(loader::detect_payload_format(Bytes { 0x89, 'L', 'Z', 'O', 0 }), PayloadFormat::Lzo);
    EXPECT_EQ(loader::detect_payload_format(Bytes { 1, 2, 3, 4 }), PayloadFormat::Unknown);
    EXPECT_EQ(loader::detect_payload_format(Bytes {}), PayloadFormat::Unknown);
    EXPECT_FALSE(loader::decompress_payload(Bytes { 0x89, 'L', 'Z', 'O', 0 }).ok());
    EXPECT_FALSE(loader::decompress_payload(Bytes {}).ok());
}

TEST(LoaderDecompressFormats, XzWithX86BcjFilter)
{
    // Code-like input: E8/E9 call and jump opcodes are what the BCJ filter rewrites.
    Bytes original = pattern_bytes(200000, 31);
    for (size_t i = 0; i + 5 < original.size(); i += 37)
        original[i] = (i & 1) ? 0xe8 : 0xe9;
    Bytes compressed = xz_x86_compress(original);
    auto out = loader::decompress_payload(compressed);
    ASSERT_TRUE(out.ok()) << out.error().message();
    EXPECT_EQ(*out, original);
}

TEST(LoaderDecompressFormats, Lz4MultipleBlocksAndFrames)
{
    Bytes original = pattern_bytes((8u << 20) * 2 + 12345, 21); // three 8 MiB blocks
    for (bool new_frames : { false, true }) {
        auto out = loader::decompress_payload(lz4_compress(original, new_frames));
        ASSERT_TRUE(out.ok()) << out.error().message();
        EXPECT_TRUE(*out == original) << "new frames: " << new_frames;
    }
}

TEST(LoaderDecompressFormats, Lz4WithoutSizeTrailer)
{
    Bytes original = pattern_bytes(50000, 22);
    Bytes compressed = lz4_compress(original);
    compressed.resize(compressed.size() - 4);
    auto out = loader::decompress_payload(compressed);
    ASSERT_TRUE(out.ok()) << out.error().message();
    EXPECT_EQ(*out, original);
}

TEST(LoaderDecompressFormats, Lz4BadBlockSize)
{
    Bytes compressed = lz4_compress(pattern_bytes(50000, 23));
    put32(compressed, 4, 0x7fffffff);
    auto out = loader::decompress_payload(compressed);
    ASSERT_FALSE(out.ok());
    EXPECT_TRUE(mentions(out.error(), "lz4")) << out.error().message();
}

// ---- boot path selection ----

namespace {

class LoaderBootPath : public ::testing::Test {
protected:
    LoaderBootPath() : mem(make_memory()), e820(build_e820(mem)) { }

    Result<BootEntry> load(const Bytes& payload, BootPath path)
    {
        BzSpec spec;
        spec.payload = payload;
        LoadRequest req { dir.write("bzImage", build_bzimage(spec)), "", "", path, 0 };
        return load_kernel(mem, e820, req);
    }

    TempDir dir;
    GuestMemory mem;
    std::vector<E820Entry> e820;
};

Bytes lzo_payload()
{
    Bytes payload { 0x89, 'L', 'Z', 'O', 0x00, 0x0d, 0x0a, 0x1a, 0x0a };
    Bytes rest = random_bytes(1000, 5);
    payload.insert(payload.end(), rest.begin(), rest.end());
    return payload;
}

} // namespace

TEST_F(LoaderBootPath, AutoFallsBackForUnsupportedCompression)
{
    auto entry = load(lzo_payload(), BootPath::Auto);
    ASSERT_TRUE(entry.ok()) << entry.error().message();
    EXPECT_EQ(entry->mode, EntryMode::Long64);
    EXPECT_EQ(entry->kind, "bzImage");
}

TEST_F(LoaderBootPath, PvhRefusesUnsupportedCompression)
{
    auto entry = load(lzo_payload(), BootPath::Pvh);
    ASSERT_FALSE(entry.ok());
    EXPECT_TRUE(mentions(entry.error(), dir.path("bzImage"))) << entry.error().message();
    EXPECT_TRUE(mentions(entry.error(), "lzo")) << entry.error().message();
}

TEST_F(LoaderBootPath, AutoFallsBackWithoutPvhNote)
{
    ElfSpec spec = vmlinux_spec();
    spec.pvh_entry.reset();
    auto entry = load(xz_compress(build_elf(spec)), BootPath::Auto);
    ASSERT_TRUE(entry.ok()) << entry.error().message();
    EXPECT_EQ(entry->mode, EntryMode::Long64);
}

TEST_F(LoaderBootPath, PvhRefusesKernelWithoutPvhNote)
{
    ElfSpec spec = vmlinux_spec();
    spec.pvh_entry.reset();
    auto entry = load(zstd_compress(build_elf(spec)), BootPath::Pvh);
    ASSERT_FALSE(entry.ok());
    EXPECT_TRUE(mentions(entry.error(), "PVH")) << entry.error().message();
    EXPECT_TRUE(mentions(entry.error(), dir.path("bzImage"))) << entry.error().message();
}

TEST_F(LoaderBootPath, AutoFallsBackWhenPayloadIsNotElf)
{
    auto entry = load(gzip_compress(pattern_bytes(5000, 1)), BootPath::Auto);
    ASSERT_TRUE(entry.ok()) << entry.error().message();
    EXPECT_EQ(entry->mode, EntryMode::Long64);
}

TEST_F(LoaderBootPath, DecompressorPathIgnoresPvhNote)
{
    auto entry = load(gzip_compress(build_elf(vmlinux_spec())), BootPath::Decompressor);
    ASSERT_TRUE(entry.ok()) << entry.error().message();
    EXPECT_EQ(entry->mode, EntryMode::Long64);
    EXPECT_EQ(entry->kind, "bzImage");
}

TEST_F(LoaderBootPath, CorruptPayloadIsAnErrorEvenWithAuto)
{
    for (auto compress : { gzip_compress, xz_compress, zstd_compress }) {
        Bytes payload = compress(build_elf(vmlinux_spec()));
        for (size_t i = payload.size() / 3; i < payload.size() / 3 + 32; i++)
            payload[i] ^= 0xa5;
        auto entry = load(payload, BootPath::Auto);
        ASSERT_FALSE(entry.ok());
        EXPECT_TRUE(mentions(entry.error(), "kernel '" + dir.path("bzImage") + "': bzImage payload"))
            << entry.error().message();
    }
}

TEST_F(LoaderBootPath, TruncatedPayloadIsAnError)
{
    Bytes payload = gzip_compress(build_elf(vmlinux_spec()));
    payload.resize(payload.size() / 2);
    auto entry = load(payload, BootPath::Pvh);
    ASSERT_FALSE(entry.ok());
    EXPECT_TRUE(mentions(entry.error(), "truncated")) << entry.error().message();
}

TEST_F(LoaderBootPath, PayloadOffsetBeyondFile)
{
    BzSpec spec;
    spec.payload = gzip_compress(build_elf(vmlinux_spec()));
    Bytes image = build_bzimage(spec);
    put32(image, 0x248, 0x10000000); // payload_offset
    LoadRequest req { dir.write("bzImage", image), "", "", BootPath::Auto, 0 };
    auto entry = load_kernel(mem, e820, req);
    ASSERT_FALSE(entry.ok());
    EXPECT_TRUE(mentions(entry.error(), "kernel '" + req.kernel_path + "': truncated")) << entry.error().message();
    EXPECT_TRUE(mentions(entry.error(), "payload")) << entry.error().message();

    put32(image, 0x248, 0x200);
    put32(image, 0x24c, 0xfffffff0); // payload_length
    req.kernel_path = dir.write("bzImage2", image);
    EXPECT_FALSE(load_kernel(mem, e820, req).ok());
}

TEST_F(LoaderBootPath, DecompressedVmlinuxSegmentOutsideRam)
{
    ElfSpec spec = vmlinux_spec();
    spec.segments[1].paddr = 0x3f00000; // 63 MiB + 2 MiB overruns the 64 MiB guest
    spec.segments[1].memsz = 2 << 20;
    auto entry = load(gzip_compress(build_elf(spec)), BootPath::Auto);
    ASSERT_FALSE(entry.ok());
    EXPECT_TRUE(mentions(entry.error(), "decompressed vmlinux")) << entry.error().message();
    EXPECT_TRUE(mentions(entry.error(), "outside guest RAM")) << entry.error().message();
}
