#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/result.h"

namespace vessel {

// Reads a whole regular file, refusing files larger than max_bytes. Errors name the path.
Result<std::vector<uint8_t>> read_file(const std::string& path, uint64_t max_bytes);

// Parses sizes such as "256M", "1G", "4096", "512K" (binary units). Errors name the text.
Result<uint64_t> parse_size(std::string_view text);

} // namespace vessel
