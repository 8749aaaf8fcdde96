// Guest time for the user-space interrupt controllers and timers: nanoseconds since the VM
// started, from CLOCK_MONOTONIC, stopping while the VM is paused, and the guest TSC derived
// from it at a fixed frequency.
//
// Reads are lock-free (one atomic word holds either the offset from the host clock or the
// frozen guest time), so any vCPU or device thread may call now_ns() at any rate. pause(),
// resume() and set_now() come from one control thread at a time.
//
// A manual clock (Source::Manual) never advances by itself: set_now() moves it. Tests drive
// timers with it; it is also what a deterministic replay would use.
#pragma once

#include <atomic>
#include <cstdint>

namespace vessel {

class VirtualClock {
public:
    enum class Source { Host, Manual };

    static constexpr uint64_t kDefaultTscKhz = 1'000'000; // 1 GHz

    explicit VirtualClock(uint64_t tsc_khz = kDefaultTscKhz, Source source = Source::Host);
    VirtualClock(const VirtualClock&) = delete;
    VirtualClock& operator=(const VirtualClock&) = delete;

    // Guest nanoseconds since the VM started (or since the time set_now() last set).
    uint64_t now_ns() const;

    // Stops / restarts guest time. Idempotent. A manual clock ignores both.
    void pause();
    void resume();
    bool paused() const;
    // Makes guest time `ns` now (a restored snapshot continues from its own time). Guest time
    // should only move forwards while timers are armed against it.
    void set_now(uint64_t ns);

    Source source() const { return m_source; }
    uint64_t tsc_khz() const { return m_tsc_khz; }
    // The guest TSC (before any per-vCPU offset) at guest time `now_ns`.
    uint64_t tsc(uint64_t now_ns) const;
    // The earliest guest time at which tsc() reaches `tsc` (rounded up).
    uint64_t ns_from_tsc(uint64_t tsc) const;

private:
    static int64_t host_ns();

    const uint64_t m_tsc_khz;
    const Source m_source;
    // Bit 0 set: paused, bits 63:1 are the frozen guest time. Bit 0 clear: running, bits 63:1
    // are (host time - guest time) as a signed value.
    std::atomic<int64_t> m_state { 0 };
};

} // namespace vessel
