// Internal helpers shared by the boot loaders (not part of the loader's public interface).
#pragma once

#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <type_traits>

#include "base/result.h"
#include "loader/boot.h"
#include "memory/guest_memory.h"

namespace vessel::loader {

constexpr uint64_t kPageSize = 4096;

// Little-endian reads at `offset`; the caller has checked offset + sizeof(T) <= bytes.size().
template<typename T>
T read_le(std::span<const uint8_t> bytes, size_t offset)
{
    static_assert(std::is_trivially_copyable_v<T>);
    T value {};
    std::memcpy(&value, bytes.data() + offset, sizeof(T)); // x86 hosts only: little-endian
    return value;
}

// True if [offset, offset + len) lies inside a buffer of `size` bytes (overflow-safe).
constexpr bool range_in(uint64_t offset, uint64_t len, uint64_t size)
{
    return offset <= size && len <= size - offset;
}

constexpr uint64_t align_up(uint64_t value, uint64_t align) { return (value + align - 1) & ~(align - 1); }
constexpr uint64_t align_down(uint64_t value, uint64_t align) { return value & ~(align - 1); }
constexpr bool is_power_of_two(uint64_t value) { return value != 0 && (value & (value - 1)) == 0; }

// "N MiB", rounded up, for messages.
inline uint64_t mib_ceil(uint64_t bytes) { return (bytes + (1u << 20) - 1) >> 20; }

// The end (exclusive) of the RAM that starts at guest-physical 0 and stops at the MMIO hole.
uint64_t low_ram_end(const GuestMemory& memory);

// "kernel 'path'", the prefix of every error about the kernel file.
std::string kernel_context(const LoadRequest& request);

struct InitrdPlacement {
    uint64_t addr { 0 };
    uint64_t size { 0 };
};

// Loads the initrd named by the request, if any, page-aligned as high as possible inside
// [lowest, limit). The file is read straight into guest RAM. Errors name the initrd file.
Result<std::optional<InitrdPlacement>> load_initrd(GuestMemory& memory, const LoadRequest& request,
                                                   uint64_t lowest, uint64_t limit);

// Writes the NUL-terminated command line at layout::kCmdline, refusing one longer than
// `max_length` bytes (without the NUL) or than the buffer Vessel reserves.
// Errors name the kernel file.
Result<void> write_cmdline(GuestMemory& memory, const LoadRequest& request, uint64_t max_length);

// Rejects kernel images that would overwrite the VMM's boot structures, the EBDA or the BIOS
// area (everything below 1 MiB). `what` describes the range for the message.
Result<void> check_above_low_memory(uint64_t addr, uint64_t size, std::string_view what);

} // namespace vessel::loader
