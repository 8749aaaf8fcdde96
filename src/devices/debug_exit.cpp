#include "devices/debug_exit.h"

#include <algorithm>

#include "base/log.h"

namespace vessel {

DebugExit::DebugExit(StopFn stop)
    : m_stop(std::move(stop))
{
}

void DebugExit::read(uint64_t, std::span<uint8_t> data)
{
    std::fill(data.begin(), data.end(), uint8_t { 0 });
}

void DebugExit::write(uint64_t, std::span<const uint8_t> data)
{
    // Little-endian value of the access (an 8-byte access keeps its low 32 bits).
    uint32_t value = 0;
    const size_t width = std::min<size_t>(data.size(), sizeof(value));
    for (size_t i = 0; i < width; ++i)
        value |= static_cast<uint32_t>(data[i]) << (8 * i);
    const int status = exit_status(value);
    log_debug("debug-exit: guest wrote {:#x}, exit status {}", value, status);
    if (m_stop)
        m_stop(StopRequest { StopReason::DebugExit, status });
}

} // namespace vessel
