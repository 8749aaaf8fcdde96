// Linux bzImage: either through the kernel's own decompressor and the 64-bit boot protocol, or
// decompressed on the host and started through the vmlinux's PVH entry point.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "arch/x86/e820.h"
#include "base/result.h"
#include "loader/boot.h"

namespace vessel::loader {

// True if the file carries the "HdrS" setup-header signature at 0x202.
bool is_bzimage(std::span<const uint8_t> data);

// Loads a bzImage along request.path. Errors name the kernel (and initrd) file.
Result<BootEntry> load_bzimage(GuestMemory& memory, const std::vector<E820Entry>& e820, const LoadRequest& request,
                               std::span<const uint8_t> data);

} // namespace vessel::loader
