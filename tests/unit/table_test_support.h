// Helpers for tests that parse firmware tables (ACPI, MP table) back out of guest memory.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

#include "memory/guest_memory.h"

namespace vessel::table_test {

using Bytes = std::vector<uint8_t>;

// Sum of all bytes modulo 256: zero for a table with a correct checksum.
inline uint8_t sum_of(std::span<const uint8_t> bytes)
{
    uint8_t sum = 0;
    for (uint8_t b : bytes)
        sum = static_cast<uint8_t>(sum + b);
    return sum;
}

// An unaligned little-endian field at `offset`.
template<typename T>
T at(std::span<const uint8_t> bytes, size_t offset)
{
    T value {};
    EXPECT_LE(offset + sizeof(T), bytes.size());
    if (offset + sizeof(T) <= bytes.size())
        std::memcpy(&value, bytes.data() + offset, sizeof(T));
    return value;
}

inline Bytes read_bytes(const GuestMemory& mem, uint64_t gpa, uint64_t len)
{
    Bytes out(len);
    EXPECT_TRUE(mem.read(gpa, out).ok()) << "read " << len << " at " << std::hex << gpa;
    return out;
}

} // namespace vessel::table_test
