// Host-side decompression of a bzImage payload (the compressed vmlinux), so that it can be
// booted through its PVH entry point without running the kernel's own decompressor.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "base/result.h"

namespace vessel::loader {

enum class PayloadFormat {
    Gzip,
    Xz,
    Lzma,
    Bzip2,
    Lz4,  // LZ4 legacy frame, as the kernel's build produces
    Zstd,
    Lzo,  // recognised, not supported
    Unknown,
};

constexpr uint64_t kMaxDecompressedSize = 512ull << 20;

PayloadFormat detect_payload_format(std::span<const uint8_t> payload);
std::string_view payload_format_name(PayloadFormat format);
bool payload_format_supported(PayloadFormat format);

// Decompresses one stream (the kernel's builds append the 4-byte uncompressed size after it,
// which is ignored). Refuses output beyond max_output bytes; corrupt or truncated input is an
// error naming the format.
Result<std::vector<uint8_t>> decompress_payload(std::span<const uint8_t> payload,
                                                uint64_t max_output = kMaxDecompressedSize);

} // namespace vessel::loader
