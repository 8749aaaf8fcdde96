#include "devices/irqchip/clock.h"

#include <ctime>

namespace vessel {

namespace {

constexpr int64_t kPausedBit = 1;

int64_t encode_frozen(uint64_t guest_ns)
{
    return static_cast<int64_t>(guest_ns << 1) | kPausedBit;
}

int64_t encode_offset(int64_t offset_ns)
{
    return static_cast<int64_t>(static_cast<uint64_t>(offset_ns) << 1);
}

} // namespace

VirtualClock::VirtualClock(uint64_t tsc_khz, Source source)
    : m_tsc_khz(tsc_khz == 0 ? kDefaultTscKhz : tsc_khz)
    , m_source(source)
{
    // A host clock starts running at guest time 0; a manual one starts frozen at 0.
    if (m_source == Source::Host)
        m_state.store(encode_offset(host_ns()));
    else
        m_state.store(encode_frozen(0));
}

int64_t VirtualClock::host_ns()
{
    timespec ts {};
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

uint64_t VirtualClock::now_ns() const
{
    const int64_t state = m_state.load(std::memory_order_acquire);
    if (state & kPausedBit)
        return static_cast<uint64_t>(state) >> 1;
    const int64_t offset = state >> 1; // arithmetic shift keeps the sign
    const int64_t guest = host_ns() - offset;
    return guest < 0 ? 0 : static_cast<uint64_t>(guest);
}

void VirtualClock::pause()
{
    if (m_source == Source::Manual || paused())
        return;
    m_state.store(encode_frozen(now_ns()), std::memory_order_release);
}

void VirtualClock::resume()
{
    if (m_source == Source::Manual || !paused())
        return;
    const uint64_t frozen = static_cast<uint64_t>(m_state.load(std::memory_order_acquire)) >> 1;
    m_state.store(encode_offset(host_ns() - static_cast<int64_t>(frozen)), std::memory_order_release);
}

bool VirtualClock::paused() const
{
    return m_source == Source::Host && (m_state.load(std::memory_order_acquire) & kPausedBit);
}

void VirtualClock::set_now(uint64_t ns)
{
    // Guest times beyond 2^62 ns (146 years) do not fit the encoding.
    ns &= (uint64_t { 1 } << 62) - 1;
    if (m_source == Source::Manual || paused())
        m_state.store(encode_frozen(ns), std::memory_order_release);
    else
        m_state.store(encode_offset(host_ns() - static_cast<int64_t>(ns)), std::memory_order_release);
}

uint64_t VirtualClock::tsc(uint64_t now_ns) const
{
    return static_cast<uint64_t>(static_cast<unsigned __int128>(now_ns) * m_tsc_khz / 1'000'000);
}

uint64_t VirtualClock::ns_from_tsc(uint64_t tsc) const
{
    const unsigned __int128 ns = (static_cast<unsigned __int128>(tsc) * 1'000'000 + m_tsc_khz - 1) / m_tsc_khz;
    return ns > UINT64_MAX ? UINT64_MAX : static_cast<uint64_t>(ns);
}

} // namespace vessel
