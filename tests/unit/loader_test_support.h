// Helpers for the loader tests: a temporary directory, builders that synthesise bzImage, ELF and
// Multiboot images in memory, and the compressors the kernel's build uses.
#pragma once

#include <bzlib.h>
#include <elf.h>
#include <lz4.h>
#include <lzma.h>
#include <stdlib.h>
#include <zlib.h>
#include <zstd.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "arch/x86/e820.h"
#include "arch/x86/layout.h"
#include "loader/boot.h"
#include "memory/guest_memory.h"

namespace vessel::test {

using Bytes = std::vector<uint8_t>;

class TempDir {
public:
    TempDir()
    {
        std::string tmpl = (std::filesystem::temp_directory_path() / "vessel-loader-XXXXXX").string();
        if (::mkdtemp(tmpl.data()) == nullptr)
            ADD_FAILURE() << "mkdtemp failed";
        m_path = tmpl;
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    ~TempDir()
    {
        std::error_code ec;
        std::filesystem::remove_all(m_path, ec);
    }

    std::string path(const std::string& name) const { return m_path + "/" + name; }

    std::string write(const std::string& name, std::span<const uint8_t> data) const
    {
        std::string file = path(name);
        std::ofstream out(file, std::ios::binary | std::ios::trunc);
        out.write(reinterpret_cast<const char*>(data.data()), static_cast<std::streamsize>(data.size()));
        EXPECT_TRUE(out.good()) << file;
        return file;
    }

    // A sparse file of `size` bytes (cheap even when large).
    std::string write_sparse(const std::string& name, uint64_t size) const
    {
        std::string file = path(name);
        { std::ofstream out(file, std::ios::binary | std::ios::trunc); }
        std::filesystem::resize_file(file, size);
        return file;
    }

private:
    std::string m_path;
};

inline void put8(Bytes& b, size_t off, uint8_t v)
{
    if (b.size() < off + 1)
        b.resize(off + 1);
    b[off] = v;
}

template<typename T>
void put_le(Bytes& b, size_t off, T v)
{
    if (b.size() < off + sizeof(T))
        b.resize(off + sizeof(T));
    std::memcpy(b.data() + off, &v, sizeof(T));
}
inline void put16(Bytes& b, size_t off, uint16_t v) { put_le(b, off, v); }
inline void put32(Bytes& b, size_t off, uint32_t v) { put_le(b, off, v); }
inline void put64(Bytes& b, size_t off, uint64_t v) { put_le(b, off, v); }

inline void append32(Bytes& b, uint32_t v) { put32(b, b.size(), v); }

inline Bytes pattern_bytes(size_t size, uint32_t seed)
{
    Bytes b(size);
    std::mt19937 rng(seed);
    // Compressible but not trivial: runs of pseudo-random bytes.
    for (size_t i = 0; i < size; i++)
        b[i] = static_cast<uint8_t>((i / 64) * 7 + (rng() & 3));
    return b;
}

inline Bytes random_bytes(size_t size, uint32_t seed)
{
    Bytes b(size);
    std::mt19937 rng(seed);
    for (auto& x : b)
        x = static_cast<uint8_t>(rng());
    return b;
}

inline GuestMemory make_memory(uint64_t size = 64 * layout::MiB)
{
    auto mem = GuestMemory::create(size);
    if (!mem.ok()) {
        ADD_FAILURE() << mem.error().message();
        std::abort();
    }
    return mem.release_value();
}

inline Bytes read_guest(const GuestMemory& mem, uint64_t gpa, size_t size)
{
    Bytes out(size);
    auto r = mem.read(gpa, out);
    EXPECT_TRUE(r.ok()) << r.error().message();
    return out;
}

inline std::string read_guest_string(const GuestMemory& mem, uint64_t gpa, size_t max = 4096)
{
    Bytes raw = read_guest(mem, gpa, max);
    return std::string(reinterpret_cast<const char*>(raw.data()), strnlen(reinterpret_cast<const char*>(raw.data()), max));
}

// ---- compressors (kernel-style: all but gzip get the le32 uncompressed size appended; fast
// presets, the decoders do not care) ----

inline Bytes gzip_compress(std::span<const uint8_t> in)
{
    z_stream zs {};
    EXPECT_EQ(deflateInit2(&zs, 9, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY), Z_OK);
    Bytes out(deflateBound(&zs, in.size()) + 64);
    zs.next_in = const_cast<Bytef*>(in.data());
    zs.avail_in = static_cast<uInt>(in.size());
    zs.next_out = out.data();
    zs.avail_out = static_cast<uInt>(out.size());
    EXPECT_EQ(deflate(&zs, Z_FINISH), Z_STREAM_END);
    out.resize(zs.total_out);
    deflateEnd(&zs);
    return out;
}

inline Bytes xz_compress(std::span<const uint8_t> in)
{
    Bytes out(lzma_stream_buffer_bound(in.size()));
    size_t pos = 0;
    // The kernel's xz payloads use CRC32 checks.
    EXPECT_EQ(lzma_easy_buffer_encode(1, LZMA_CHECK_CRC32, nullptr, in.data(), in.size(), out.data(), &pos, out.size()),
              LZMA_OK);
    out.resize(pos);
    append32(out, static_cast<uint32_t>(in.size()));
    return out;
}

// As the kernel's build does it: `xz --check=crc32 --x86 --lzma2=...` (BCJ x86 filter first).
inline Bytes xz_x86_compress(std::span<const uint8_t> in)
{
    lzma_options_lzma opts {};
    lzma_lzma_preset(&opts, 1);
    lzma_filter filters[] = {
        { LZMA_FILTER_X86, nullptr },
        { LZMA_FILTER_LZMA2, &opts },
        { LZMA_VLI_UNKNOWN, nullptr },
    };
    Bytes out(lzma_stream_buffer_bound(in.size()));
    size_t pos = 0;
    EXPECT_EQ(lzma_stream_buffer_encode(filters, LZMA_CHECK_CRC32, nullptr, in.data(), in.size(), out.data(), &pos,
                                        out.size()),
              LZMA_OK);
    out.resize(pos);
    append32(out, static_cast<uint32_t>(in.size()));
    return out;
}

inline Bytes lzma_compress(std::span<const uint8_t> in)
{
    lzma_options_lzma opts {};
    lzma_lzma_preset(&opts, 1);
    lzma_stream strm {};
    EXPECT_EQ(lzma_alone_encoder(&strm, &opts), LZMA_OK);
    Bytes out(in.size() + in.size() / 2 + 4096);
    strm.next_in = in.data();
    strm.avail_in = in.size();
    strm.next_out = out.data();
    strm.avail_out = out.size();
    EXPECT_EQ(lzma_code(&strm, LZMA_FINISH), LZMA_STREAM_END);
    out.resize(strm.total_out);
    lzma_end(&strm);
    append32(out, static_cast<uint32_t>(in.size()));
    return out;
}

inline Bytes bzip2_compress(std::span<const uint8_t> in)
{
    unsigned size = static_cast<unsigned>(in.size() + in.size() / 100 + 1024);
    Bytes out(size);
    EXPECT_EQ(BZ2_bzBuffToBuffCompress(reinterpret_cast<char*>(out.data()), &size,
                                       const_cast<char*>(reinterpret_cast<const char*>(in.data())),
                                       static_cast<unsigned>(in.size()), 9, 0, 30),
              BZ_OK);
    out.resize(size);
    append32(out, static_cast<uint32_t>(in.size()));
    return out;
}

// LZ4 legacy frame(s): magic, then [le32 size][block] per 8 MiB of input. `frames` > 1 starts a
// new frame (repeats the magic) before every block after the first.
inline Bytes lz4_compress(std::span<const uint8_t> in, bool new_frame_per_block = false)
{
    constexpr size_t kBlock = 8u << 20;
    Bytes out;
    append32(out, 0x184c2102);
    for (size_t pos = 0; pos < in.size(); pos += kBlock) {
        if (pos != 0 && new_frame_per_block)
            append32(out, 0x184c2102);
        int n = static_cast<int>(std::min(kBlock, in.size() - pos));
        Bytes block(static_cast<size_t>(LZ4_compressBound(n)));
        int c = LZ4_compress_default(reinterpret_cast<const char*>(in.data() + pos), reinterpret_cast<char*>(block.data()),
                                     n, static_cast<int>(block.size()));
        EXPECT_GT(c, 0);
        append32(out, static_cast<uint32_t>(c));
        out.insert(out.end(), block.begin(), block.begin() + c);
    }
    append32(out, static_cast<uint32_t>(in.size()));
    return out;
}

// Like the zstd command line the kernel's build uses: with a content checksum.
inline Bytes zstd_compress(std::span<const uint8_t> in)
{
    Bytes out(ZSTD_compressBound(in.size()));
    ZSTD_CCtx* cctx = ZSTD_createCCtx();
    ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, 3);
    ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, 1);
    size_t n = ZSTD_compress2(cctx, out.data(), out.size(), in.data(), in.size());
    ZSTD_freeCCtx(cctx);
    EXPECT_FALSE(ZSTD_isError(n));
    out.resize(n);
    append32(out, static_cast<uint32_t>(in.size()));
    return out;
}

// ---- ELF ----

struct TestSegment {
    uint64_t paddr { 0 };
    uint64_t vaddr { 0 };
    Bytes data;
    uint64_t memsz { 0 }; // 0: data.size()
};

struct ElfSpec {
    bool is64 { true };
    uint16_t machine { EM_X86_64 };
    uint64_t entry { 0 };
    std::vector<TestSegment> segments;
    std::optional<uint64_t> pvh_entry;
    size_t pvh_desc_size { 4 };
};

// Offsets of program-header fields, for tests that corrupt them.
inline size_t phdr_offset(bool is64, size_t index)
{
    return is64 ? sizeof(Elf64_Ehdr) + index * sizeof(Elf64_Phdr) : sizeof(Elf32_Ehdr) + index * sizeof(Elf32_Phdr);
}
inline size_t phdr_field_offset(bool is64) { return is64 ? offsetof(Elf64_Phdr, p_offset) : offsetof(Elf32_Phdr, p_offset); }
inline size_t phdr_field_paddr(bool is64) { return is64 ? offsetof(Elf64_Phdr, p_paddr) : offsetof(Elf32_Phdr, p_paddr); }
inline size_t phdr_field_filesz(bool is64) { return is64 ? offsetof(Elf64_Phdr, p_filesz) : offsetof(Elf32_Phdr, p_filesz); }
inline size_t phdr_field_memsz(bool is64) { return is64 ? offsetof(Elf64_Phdr, p_memsz) : offsetof(Elf32_Phdr, p_memsz); }

inline void put_word(Bytes& b, bool is64, size_t off, uint64_t v)
{
    if (is64)
        put64(b, off, v);
    else
        put32(b, off, static_cast<uint32_t>(v));
}

inline Bytes build_pvh_note(uint64_t entry, size_t desc_size)
{
    Bytes note;
    append32(note, 4);                              // namesz ("Xen\0")
    append32(note, static_cast<uint32_t>(desc_size)); // descsz
    append32(note, 18);                             // XEN_ELFNOTE_PHYS32_ENTRY
    note.insert(note.end(), { 'X', 'e', 'n', 0 });
    if (desc_size == 8)
        put64(note, note.size(), entry);
    else
        append32(note, static_cast<uint32_t>(entry));
    return note;
}

inline Bytes build_elf(const ElfSpec& spec)
{
    // A harmless note in front of the PVH one, to exercise note walking.
    Bytes notes;
    if (spec.pvh_entry) {
        append32(notes, 4);
        append32(notes, 3);
        append32(notes, 1);
        notes.insert(notes.end(), { 'G', 'N', 'U', 0, 1, 2, 3, 0 });
        Bytes pvh = build_pvh_note(*spec.pvh_entry, spec.pvh_desc_size);
        notes.insert(notes.end(), pvh.begin(), pvh.end());
    }
    size_t phnum = spec.segments.size() + (notes.empty() ? 0 : 1);
    size_t ehsize = spec.is64 ? sizeof(Elf64_Ehdr) : sizeof(Elf32_Ehdr);
    size_t phentsize = spec.is64 ? sizeof(Elf64_Phdr) : sizeof(Elf32_Phdr);
    size_t pos = (ehsize + phnum * phentsize + 15) & ~size_t { 15 };

    Bytes out(pos, 0);
    size_t notes_offset = pos;
    out.insert(out.end(), notes.begin(), notes.end());
    std::vector<size_t> offsets;
    for (const auto& seg : spec.segments) {
        out.resize((out.size() + 15) & ~size_t { 15 });
        offsets.push_back(out.size());
        out.insert(out.end(), seg.data.begin(), seg.data.end());
    }

    out[0] = 0x7f;
    out[1] = 'E';
    out[2] = 'L';
    out[3] = 'F';
    out[EI_CLASS] = spec.is64 ? ELFCLASS64 : ELFCLASS32;
    out[EI_DATA] = ELFDATA2LSB;
    out[EI_VERSION] = EV_CURRENT;
    put16(out, 16, ET_EXEC);
    put16(out, 18, spec.machine);
    put32(out, 20, EV_CURRENT);
    put_word(out, spec.is64, 24, spec.entry);
    size_t w = spec.is64 ? 8 : 4;
    put_word(out, spec.is64, 24 + w, ehsize); // e_phoff
    put_word(out, spec.is64, 24 + 2 * w, 0);  // e_shoff
    size_t rest = 24 + 3 * w;                 // e_flags, e_ehsize, e_phentsize, e_phnum, ...
    put32(out, rest, 0);
    put16(out, rest + 4, static_cast<uint16_t>(ehsize));
    put16(out, rest + 6, static_cast<uint16_t>(phentsize));
    put16(out, rest + 8, static_cast<uint16_t>(phnum));

    auto write_phdr = [&](size_t index, uint32_t type, uint64_t offset, uint64_t vaddr, uint64_t paddr,
                          uint64_t filesz, uint64_t memsz, uint64_t align) {
        size_t p = phdr_offset(spec.is64, index);
        if (spec.is64) {
            Elf64_Phdr ph { type, PF_R | PF_X, offset, vaddr, paddr, filesz, memsz, align };
            std::memcpy(out.data() + p, &ph, sizeof(ph));
        } else {
            Elf32_Phdr ph { type, static_cast<uint32_t>(offset), static_cast<uint32_t>(vaddr),
                            static_cast<uint32_t>(paddr), static_cast<uint32_t>(filesz), static_cast<uint32_t>(memsz),
                            PF_R | PF_X, static_cast<uint32_t>(align) };
            std::memcpy(out.data() + p, &ph, sizeof(ph));
        }
    };
    for (size_t i = 0; i < spec.segments.size(); i++) {
        const auto& seg = spec.segments[i];
        uint64_t memsz = seg.memsz ? seg.memsz : seg.data.size();
        write_phdr(i, PT_LOAD, offsets[i], seg.vaddr ? seg.vaddr : seg.paddr, seg.paddr, seg.data.size(), memsz, 0x1000);
    }
    if (!notes.empty())
        write_phdr(spec.segments.size(), PT_NOTE, notes_offset, 0, 0, notes.size(), notes.size(), 4);
    return out;
}

// A 64-bit vmlinux-like ELF with a PVH note: text at 16 MiB, data + bss at 18 MiB.
inline ElfSpec vmlinux_spec(uint32_t seed = 1)
{
    ElfSpec spec;
    spec.is64 = true;
    spec.machine = EM_X86_64;
    spec.entry = 0xffffffff81000000ULL;
    spec.segments.push_back({ 0x1000000, 0xffffffff81000000ULL, pattern_bytes(96 * 1024, seed), 0 });
    spec.segments.push_back({ 0x1200000, 0xffffffff81200000ULL, pattern_bytes(16 * 1024, seed + 1), 64 * 1024 });
    spec.pvh_entry = 0x1000040;
    return spec;
}

// ---- bzImage ----

struct BzSpec {
    uint16_t version { 0x020f };
    uint8_t setup_sects { 1 };
    uint8_t loadflags { 0x01 }; // LOADED_HIGH
    uint16_t xloadflags { 0x3 };  // XLF_KERNEL_64 | XLF_CAN_BE_LOADED_ABOVE_4G
    uint8_t relocatable { 1 };
    uint32_t kernel_alignment { 0x200000 };
    uint64_t pref_address { 0x1000000 };
    uint32_t init_size { 8 << 20 };
    uint32_t cmdline_size { 2047 };
    uint32_t initrd_addr_max { 0x7fffffff };
    size_t code_before_payload { 0x200 }; // fake decompressor bytes in front of the payload
    Bytes payload;
};

inline Bytes build_bzimage(const BzSpec& spec)
{
    size_t setup_size = (size_t { spec.setup_sects ? spec.setup_sects : 4u } + 1) * 512;
    Bytes out(setup_size, 0);
    put8(out, 0x1f1, spec.setup_sects);
    put16(out, 0x1fa, 0xffff); // vid_mode: normal
    put16(out, 0x1fe, 0xaa55);
    put8(out, 0x200, 0xeb);
    put8(out, 0x201, 0x26c - 0x202); // header length
    put32(out, 0x202, 0x53726448);   // "HdrS"
    put16(out, 0x206, spec.version);
    put8(out, 0x211, spec.loadflags);
    put32(out, 0x214, 0x100000);
    put32(out, 0x22c, spec.initrd_addr_max);
    put32(out, 0x230, spec.kernel_alignment);
    put8(out, 0x234, spec.relocatable);
    put16(out, 0x236, spec.xloadflags);
    put32(out, 0x238, spec.cmdline_size);
    put32(out, 0x248, static_cast<uint32_t>(spec.code_before_payload));
    put32(out, 0x24c, static_cast<uint32_t>(spec.payload.size()));
    put64(out, 0x258, spec.pref_address);
    put32(out, 0x260, spec.init_size);

    Bytes pm(spec.code_before_payload, 0x90);
    pm.insert(pm.end(), spec.payload.begin(), spec.payload.end());
    pm.resize((pm.size() + 15) & ~size_t { 15 }, 0);
    put32(out, 0x1f4, static_cast<uint32_t>(pm.size() / 16)); // syssize
    out.insert(out.end(), pm.begin(), pm.end());
    return out;
}

inline std::vector<E820Entry> e820_for(const GuestMemory& mem) { return build_e820(mem); }

// Copies a (possibly packed, misaligned) field into a prvalue: gtest's assertions take their
// arguments by reference, and binding a reference to a misaligned packed member is UB.
template<typename T>
T val(T value)
{
    return value;
}

inline bool mentions(const Error& error, const std::string& text)
{
    return error.message().find(text) != std::string::npos;
}

} // namespace vessel::test
