// The time source of the MMDS: milliseconds on a monotonic clock. Token expiry and TCP
// retransmission timers read it through a Clock so that tests and the fuzz target can drive time
// by hand (a fake clock) instead of sleeping.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>

namespace vessel::mmds {

using Clock = std::function<uint64_t()>;

// CLOCK_MONOTONIC in milliseconds: never jumps with wall-clock changes (a token's lifetime and a
// retransmission timeout are durations, not dates).
inline uint64_t monotonic_ms()
{
    return static_cast<uint64_t>(
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch())
            .count());
}

} // namespace vessel::mmds
