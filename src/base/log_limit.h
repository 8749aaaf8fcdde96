// Rate limiting for log lines a guest can trigger at will (unknown commands, writes to
// read-only registers, unclaimed addresses): the first 32, then one in every 4096.
#pragma once

#include <atomic>
#include <cstdint>

namespace vessel {

inline bool log_allowed(uint64_t& count)
{
    ++count;
    return count <= 32 || count % 4096 == 0;
}

inline bool log_allowed(std::atomic<uint64_t>& count)
{
    const uint64_t n = count.fetch_add(1, std::memory_order_relaxed) + 1;
    return n <= 32 || n % 4096 == 0;
}

} // namespace vessel
