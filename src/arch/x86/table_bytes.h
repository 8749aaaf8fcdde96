// Helpers shared by the firmware-table builders (ACPI, MP table): appending packed structs to a
// byte buffer and the 8-bit checksum both specifications use (all bytes sum to zero).
#pragma once

#include <cstdint>
#include <span>
#include <type_traits>
#include <vector>

namespace vessel {

template<typename T>
void append_obj(std::vector<uint8_t>& out, const T& value)
{
    static_assert(std::is_trivially_copyable_v<T>);
    // SAFETY: T is trivially copyable; its object representation is sizeof(T) bytes.
    auto bytes = reinterpret_cast<const uint8_t*>(&value);
    out.insert(out.end(), bytes, bytes + sizeof(T));
}

// The byte that makes `bytes` (with the checksum field still zero) sum to 0 modulo 256.
inline uint8_t checksum_of(std::span<const uint8_t> bytes)
{
    uint8_t sum = 0;
    for (uint8_t b : bytes)
        sum = static_cast<uint8_t>(sum + b);
    return static_cast<uint8_t>(-sum);
}

} // namespace vessel
