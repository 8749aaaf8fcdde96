#include "loader/decompress.h"

#include <bzlib.h>
#include <lz4.h>
#include <lzma.h>
#include <zlib.h>
#include <zstd.h>

#include <algorithm>
#include <array>
#include <climits>
#include <cstring>

#include "loader/loader_util.h"

namespace vessel::loader {

namespace {

constexpr std::array<uint8_t, 2> kGzipMagic { 0x1f, 0x8b };
constexpr std::array<uint8_t, 6> kXzMagic { 0xfd, '7', 'z', 'X', 'Z', 0x00 };
constexpr std::array<uint8_t, 3> kLzmaMagic { 0x5d, 0x00, 0x00 };
constexpr std::array<uint8_t, 3> kBzip2Magic { 'B', 'Z', 'h' };
constexpr std::array<uint8_t, 4> kLz4LegacyMagicBytes { 0x02, 0x21, 0x4c, 0x18 };
constexpr std::array<uint8_t, 4> kZstdMagic { 0x28, 0xb5, 0x2f, 0xfd };
constexpr std::array<uint8_t, 4> kLzoMagic { 0x89, 'L', 'Z', 'O' };

constexpr uint32_t kLz4LegacyMagic = 0x184c2102;
constexpr size_t kLz4LegacyBlockSize = 8u << 20;
constexpr uint64_t kLzmaMemLimit = 512ull << 20;

template<size_t N>
bool starts_with(std::span<const uint8_t> data, const std::array<uint8_t, N>& magic)
{
    return data.size() >= N && std::equal(magic.begin(), magic.end(), data.begin());
}

template<typename F>
class ScopeExit {
public:
    explicit ScopeExit(F f) : m_f(std::move(f)) { }
    ScopeExit(const ScopeExit&) = delete;
    ScopeExit& operator=(const ScopeExit&) = delete;
    ~ScopeExit() { m_f(); }

private:
    F m_f;
};

// A growing output buffer that refuses to hold more than `max` bytes. It keeps one byte of
// head-room beyond the limit so that "exactly max bytes" and "more than max" can be told apart.
class OutputBuffer {
public:
    OutputBuffer(uint64_t max, uint64_t size_hint, std::string_view format)
        : m_max(max)
        , m_format(format)
    {
        uint64_t initial = size_hint != 0 && size_hint <= max ? size_hint + 64 * 1024 : 1u << 20;
        m_data.resize(static_cast<size_t>(std::min(initial, m_max + 1)));
    }

    // Free space to decode into (grows the buffer when it is full).
    Result<std::span<uint8_t>> space()
    {
        if (m_used == m_data.size()) {
            if (m_data.size() > m_max)
                return too_large();
            uint64_t grown = std::min<uint64_t>(std::max<uint64_t>(m_data.size() * 2, 1u << 20), m_max + 1);
            m_data.resize(static_cast<size_t>(grown));
        }
        // zlib, bzip2 and friends count in unsigned int.
        size_t avail = std::min<size_t>(m_data.size() - m_used, UINT_MAX);
        return std::span(m_data.data() + m_used, avail);
    }

    Result<void> commit(size_t produced)
    {
        m_used += produced;
        if (m_used > m_max)
            return too_large();
        return {};
    }

    Result<void> append(std::span<const uint8_t> bytes)
    {
        while (!bytes.empty()) {
            auto dst = TRY(space());
            size_t n = std::min(dst.size(), bytes.size());
            std::memcpy(dst.data(), bytes.data(), n);
            TRY(commit(n));
            bytes = bytes.subspan(n);
        }
        return {};
    }

    uint64_t used() const { return m_used; }

    std::vector<uint8_t> take()
    {
        m_data.resize(m_used);
        m_data.shrink_to_fit();
        return std::move(m_data);
    }

private:
    Error too_large() const
    {
        return make_error("decompressed {} payload is larger than the limit of {} MiB", m_format, m_max >> 20);
    }

    std::vector<uint8_t> m_data;
    uint64_t m_used { 0 };
    uint64_t m_max;
    std::string_view m_format;
};

Error truncated(std::string_view format)
{
    return make_error("{} payload is truncated (the compressed stream ends early)", format);
}

Error corrupt(std::string_view format, std::string_view detail)
{
    return make_error("{} payload is corrupt: {}", format, detail);
}

Result<void> inflate_gzip(std::span<const uint8_t> in, OutputBuffer& out)
{
    z_stream zs {};
    if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK)
        return make_error("cannot initialise zlib");
    ScopeExit end([&] { inflateEnd(&zs); });
    zs.next_in = const_cast<Bytef*>(in.data()); // zlib does not write through next_in
    zs.avail_in = static_cast<uInt>(in.size());
    for (;;) {
        auto dst = TRY(out.space());
        zs.next_out = dst.data();
        zs.avail_out = static_cast<uInt>(dst.size());
        uInt in_before = zs.avail_in;
        int ret = inflate(&zs, Z_NO_FLUSH);
        size_t produced = dst.size() - zs.avail_out;
        TRY(out.commit(produced));
        if (ret == Z_STREAM_END)
            return {};
        if (ret == Z_BUF_ERROR || (ret == Z_OK && produced == 0 && zs.avail_in == in_before))
            return truncated("gzip");
        if (ret != Z_OK)
            return corrupt("gzip", zs.msg ? zs.msg : "inflate failed");
    }
}

std::string_view lzma_error_text(lzma_ret ret)
{
    switch (ret) {
    case LZMA_MEM_ERROR: return "out of memory";
    case LZMA_MEMLIMIT_ERROR: return "the stream needs more decoder memory than allowed";
    case LZMA_FORMAT_ERROR: return "bad stream header";
    case LZMA_OPTIONS_ERROR: return "unsupported compression options";
    case LZMA_DATA_ERROR: return "compressed data is corrupt";
    default: return "decoder error";
    }
}

Result<void> decode_lzma(std::span<const uint8_t> in, OutputBuffer& out, bool xz_container)
{
    std::string_view format = xz_container ? "xz" : "lzma";
    lzma_stream strm {};
    // Without LZMA_CONCATENATED the xz decoder stops after the first stream, ignoring the
    // 4-byte size the kernel's build appends.
    lzma_ret init = xz_container ? lzma_stream_decoder(&strm, kLzmaMemLimit, 0)
                                 : lzma_alone_decoder(&strm, kLzmaMemLimit);
    if (init != LZMA_OK)
        return make_error("cannot initialise the {} decoder: {}", format, lzma_error_text(init));
    ScopeExit end([&] { lzma_end(&strm); });
    strm.next_in = in.data();
    strm.avail_in = in.size();
    for (;;) {
        auto dst = TRY(out.space());
        strm.next_out = dst.data();
        strm.avail_out = dst.size();
        size_t in_before = strm.avail_in;
        lzma_ret ret = lzma_code(&strm, LZMA_FINISH);
        size_t produced = dst.size() - strm.avail_out;
        TRY(out.commit(produced));
        if (ret == LZMA_STREAM_END)
            return {};
        if (ret == LZMA_BUF_ERROR || (ret == LZMA_OK && produced == 0 && strm.avail_in == in_before))
            return truncated(format);
        if (ret != LZMA_OK)
            return corrupt(format, lzma_error_text(ret));
    }
}

Result<void> decode_bzip2(std::span<const uint8_t> in, OutputBuffer& out)
{
    bz_stream strm {};
    if (BZ2_bzDecompressInit(&strm, 0, 0) != BZ_OK)
        return make_error("cannot initialise the bzip2 decoder");
    ScopeExit end([&] { BZ2_bzDecompressEnd(&strm); });
    // libbz2 does not write through next_in.
    strm.next_in = const_cast<char*>(reinterpret_cast<const char*>(in.data()));
    strm.avail_in = static_cast<unsigned>(in.size());
    for (;;) {
        auto dst = TRY(out.space());
        strm.next_out = reinterpret_cast<char*>(dst.data());
        strm.avail_out = static_cast<unsigned>(dst.size());
        unsigned in_before = strm.avail_in;
        int ret = BZ2_bzDecompress(&strm);
        size_t produced = dst.size() - strm.avail_out;
        TRY(out.commit(produced));
        if (ret == BZ_STREAM_END)
            return {};
        if (ret == BZ_OK && produced == 0 && strm.avail_in == in_before)
            return truncated("bzip2");
        if (ret != BZ_OK)
            return corrupt("bzip2", ret == BZ_MEM_ERROR ? "out of memory" : "invalid compressed data");
    }
}

Result<void> decode_zstd(std::span<const uint8_t> in, OutputBuffer& out)
{
    ZSTD_DCtx* dctx = ZSTD_createDCtx();
    if (!dctx)
        return make_error("cannot allocate a zstd decoder");
    ScopeExit end([&] { ZSTD_freeDCtx(dctx); });
    ZSTD_inBuffer input { in.data(), in.size(), 0 };
    for (;;) {
        auto dst = TRY(out.space());
        ZSTD_outBuffer output { dst.data(), dst.size(), 0 };
        size_t in_before = input.pos;
        size_t ret = ZSTD_decompressStream(dctx, &output, &input);
        if (ZSTD_isError(ret))
            return corrupt("zstd", ZSTD_getErrorName(ret));
        TRY(out.commit(output.pos));
        // 0: the frame is complete (the kernel's appended size word follows; ignore it).
        if (ret == 0)
            return {};
        if (output.pos == 0 && input.pos == in_before)
            return truncated("zstd");
    }
}

// The LZ4 legacy format: a magic word, then blocks of [le32 compressed size][data], each
// decompressing to at most 8 MiB. A size word equal to the magic starts a new frame; the
// kernel's build appends the le32 uncompressed size at the very end.
Result<void> decode_lz4_legacy(std::span<const uint8_t> in, OutputBuffer& out)
{
    const uint64_t max_block = static_cast<uint64_t>(LZ4_compressBound(kLz4LegacyBlockSize));
    std::vector<uint8_t> block(kLz4LegacyBlockSize);
    size_t pos = kLz4LegacyMagicBytes.size();
    while (pos < in.size()) {
        size_t left = in.size() - pos;
        if (left < 4)
            return truncated("lz4");
        uint32_t word = read_le<uint32_t>(in, pos);
        pos += 4;
        if (word == kLz4LegacyMagic)
            continue;
        if (left == 4) {
            // Only the size word is left: it is the appended uncompressed size, which must match.
            if (word != static_cast<uint32_t>(out.used()))
                return truncated("lz4");
            break;
        }
        if (word == 0 || word > max_block)
            return corrupt("lz4", fmt::format("invalid block size {}", word));
        if (word > in.size() - pos)
            return truncated("lz4");
        int n = LZ4_decompress_safe(reinterpret_cast<const char*>(in.data() + pos),
                                    reinterpret_cast<char*>(block.data()), static_cast<int>(word),
                                    static_cast<int>(block.size()));
        if (n < 0)
            return corrupt("lz4", fmt::format("invalid block at offset {}", pos - 4));
        TRY(out.append(std::span<const uint8_t>(block.data(), static_cast<size_t>(n))));
        pos += word;
    }
    return {};
}

} // namespace

PayloadFormat detect_payload_format(std::span<const uint8_t> payload)
{
    if (starts_with(payload, kGzipMagic))
        return PayloadFormat::Gzip;
    if (starts_with(payload, kXzMagic))
        return PayloadFormat::Xz;
    if (starts_with(payload, kLzmaMagic))
        return PayloadFormat::Lzma;
    if (starts_with(payload, kBzip2Magic))
        return PayloadFormat::Bzip2;
    if (starts_with(payload, kLz4LegacyMagicBytes))
        return PayloadFormat::Lz4;
    if (starts_with(payload, kZstdMagic))
        return PayloadFormat::Zstd;
    if (starts_with(payload, kLzoMagic))
        return PayloadFormat::Lzo;
    return PayloadFormat::Unknown;
}

std::string_view payload_format_name(PayloadFormat format)
{
    switch (format) {
    case PayloadFormat::Gzip: return "gzip";
    case PayloadFormat::Xz: return "xz";
    case PayloadFormat::Lzma: return "lzma";
    case PayloadFormat::Bzip2: return "bzip2";
    case PayloadFormat::Lz4: return "lz4";
    case PayloadFormat::Zstd: return "zstd";
    case PayloadFormat::Lzo: return "lzo";
    case PayloadFormat::Unknown: break;
    }
    return "unknown";
}

bool payload_format_supported(PayloadFormat format)
{
    return format != PayloadFormat::Lzo && format != PayloadFormat::Unknown;
}

Result<std::vector<uint8_t>> decompress_payload(std::span<const uint8_t> payload, uint64_t max_output)
{
    PayloadFormat format = detect_payload_format(payload);
    std::string_view name = payload_format_name(format);
    if (!payload_format_supported(format))
        return make_error("{} compression is not supported for host-side decompression", name);
    if (payload.size() > UINT_MAX)
        return make_error("{} payload of {} bytes is too large", name, payload.size());

    // The last 4 bytes are the uncompressed size (gzip's ISIZE, or the size the kernel's build
    // appends to the other formats): a good first guess for the output buffer.
    uint64_t hint = payload.size() >= 8 ? read_le<uint32_t>(payload, payload.size() - 4) : 0;
    if (hint > payload.size() * 64)
        hint = 0; // implausible ratio: probably not a size word; grow as needed instead
    OutputBuffer out(max_output, hint, name);
    switch (format) {
    case PayloadFormat::Gzip: TRY(inflate_gzip(payload, out)); break;
    case PayloadFormat::Xz: TRY(decode_lzma(payload, out, true)); break;
    case PayloadFormat::Lzma: TRY(decode_lzma(payload, out, false)); break;
    case PayloadFormat::Bzip2: TRY(decode_bzip2(payload, out)); break;
    case PayloadFormat::Lz4: TRY(decode_lz4_legacy(payload, out)); break;
    case PayloadFormat::Zstd: TRY(decode_zstd(payload, out)); break;
    case PayloadFormat::Lzo:
    case PayloadFormat::Unknown: break;
    }
    if (out.used() == 0)
        return make_error("{} payload decompresses to nothing", name);
    return out.take();
}

} // namespace vessel::loader
