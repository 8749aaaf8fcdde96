#include "devices/post_port.h"

#include <algorithm>

namespace vessel {

void PostPort::read(uint64_t, std::span<uint8_t> data)
{
    if (data.empty())
        return;
    // Port 0x80 latches one byte; the other byte lanes of a wider read belong to other
    // (unclaimed) ports and float high.
    data[0] = last();
    std::fill(data.begin() + 1, data.end(), uint8_t { 0xff });
}

void PostPort::write(uint64_t, std::span<const uint8_t> data)
{
    if (!data.empty())
        m_last.store(data[0], std::memory_order_relaxed); // the byte at port 0x80
}

} // namespace vessel
