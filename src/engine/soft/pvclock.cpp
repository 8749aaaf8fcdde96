#include "engine/soft/pvclock.h"

#include <time.h>

#include <atomic>
#include <cstring>

#include "engine/soft/mmu.h"
#include "engine/soft/platform.h"
#include "memory/dirty_bitmap.h"
#include "memory/guest_memory.h"

namespace vessel::soft {

namespace {

constexpr uint64_t kNsPerSec = 1'000'000'000;

// The guest-visible layouts (Linux's asm/pvclock-abi.h; KVM's documentation, msr.rst).
struct PvclockWallClock {
    uint32_t version;
    uint32_t sec;
    uint32_t nsec;
};
static_assert(sizeof(PvclockWallClock) == 12);

struct PvclockVcpuTimeInfo {
    uint32_t version;
    uint32_t pad0;
    uint64_t tsc_timestamp;
    uint64_t system_time;
    uint32_t tsc_to_system_mul;
    int8_t tsc_shift;
    uint8_t flags;
    uint8_t pad[2];
};
static_assert(sizeof(PvclockVcpuTimeInfo) == 32);

// Writes `value` to guest RAM at `gpa` the way the guest's readers expect (a seqlock): the
// version becomes odd, the fields change, the version becomes even and larger than before.
// Other vCPUs may be reading concurrently (Linux's vDSO reads vCPU 0's structure from any CPU).
// Fences keep the stores in that order (x86 keeps them in order for the readers). The version is
// 4-byte aligned whenever the guest aligned its structure (Linux does); memcpy copes otherwise.
template<typename T>
void publish(Cpu& c, uint64_t gpa, T value)
{
    // SAFETY: ram() checked [gpa, gpa + sizeof(T)) lies in guest RAM; outside it nothing is written.
    uint8_t* p = c.machine ? c.machine->ram(gpa, sizeof(T)) : nullptr;
    if (!p)
        return;
    uint32_t version;
    std::memcpy(&version, p, 4);
    version = (version + 1) | 1;
    std::memcpy(p, &version, 4);
    std::atomic_thread_fence(std::memory_order_seq_cst);
    value.version = version;
    std::memcpy(p + 4, reinterpret_cast<const uint8_t*>(&value) + 4, sizeof(T) - 4);
    std::atomic_thread_fence(std::memory_order_seq_cst);
    ++version;
    std::memcpy(p, &version, 4);
    // A write the guest did not make: decoded code on the page (unlikely) must go, and a dirty
    // log must see it (the engine's own, and whatever the VMM observes).
    if (DirtyBitmap* log = c.machine->dirty_log())
        log->mark(gpa, sizeof(T));
    c.machine->memory().note_written(gpa, sizeof(T));
}

uint64_t host_realtime_ns()
{
    timespec ts {};
    ::clock_gettime(CLOCK_REALTIME, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * kNsPerSec + static_cast<uint64_t>(ts.tv_nsec);
}

// Host wall-clock time at guest time 0: the guest adds its kvm-clock reading to it.
void write_wall_clock(Cpu& c, uint64_t gpa)
{
    uint64_t now = host_realtime_ns();
    uint64_t guest_ns = guest_time(c).ns;
    uint64_t boot = now > guest_ns ? now - guest_ns : 0;
    PvclockWallClock w {};
    w.sec = static_cast<uint32_t>(boot / kNsPerSec);
    w.nsec = static_cast<uint32_t>(boot % kNsPerSec);
    publish(c, gpa, w);
}

} // namespace

PvclockScale pvclock_scale(uint64_t tsc_khz)
{
    // Find the smallest shift with tsc_hz * 2^shift > 10^9, i.e. the 10^9 / (tsc_hz * 2^shift) that
    // mul / 2^32 encodes lies in [0.5, 1).
    unsigned __int128 hz = static_cast<unsigned __int128>(tsc_khz ? tsc_khz : 1) * 1000;
    int shift = 0;
    auto scaled = [&](int s) { return s >= 0 ? hz << s : hz >> -s; };
    while (scaled(shift) <= kNsPerSec)
        ++shift;
    while (shift > -31 && scaled(shift - 1) > kNsPerSec)
        --shift;
    // mul = 10^9 * 2^(32 - shift) / tsc_hz, below 2^32 by the choice of shift.
    unsigned __int128 num = static_cast<unsigned __int128>(kNsPerSec) << 32;
    unsigned __int128 mul = num / scaled(shift);
    return { static_cast<uint32_t>(mul), static_cast<int8_t>(shift) };
}

uint64_t pvclock_scale_delta(uint64_t delta, PvclockScale scale)
{
    if (scale.shift < 0)
        delta >>= -scale.shift;
    else
        delta <<= scale.shift;
    return static_cast<uint64_t>((static_cast<unsigned __int128>(delta) * scale.mul) >> 32);
}

void pvclock_update(Cpu& c)
{
    uint64_t msr = c.msrs.kvm_system_time;
    if (!(msr & 1))
        return;
    // One clock reading gives both ends of the pair, so the guest's extrapolation is exact.
    GuestTime t = guest_time(c);
    PvclockScale scale = pvclock_scale(guest_tsc_khz(c));
    PvclockVcpuTimeInfo info {};
    info.tsc_timestamp = t.tsc;
    info.system_time = t.ns;
    info.tsc_to_system_mul = scale.mul;
    info.tsc_shift = scale.shift;
    info.flags = kPvclockTscStableBit;
    publish(c, msr & ~1ULL, info);
}

void pvclock_write_msr(Cpu& c, uint32_t index, uint64_t value)
{
    switch (index) {
    case msr::kKvmWallClock:
    case msr::kKvmWallClockNew:
        c.msrs.kvm_wall_clock = value;
        write_wall_clock(c, value);
        return;
    case msr::kKvmSystemTime:
    case msr::kKvmSystemTimeNew:
        // Bit 0 enables; clearing it stops updates (Linux does so before kexec and shutdown).
        c.msrs.kvm_system_time = value;
        pvclock_update(c);
        return;
    default: return;
    }
}

uint64_t pvclock_read_msr(const Cpu& c, uint32_t index)
{
    switch (index) {
    case msr::kKvmWallClock:
    case msr::kKvmWallClockNew: return c.msrs.kvm_wall_clock;
    default: return c.msrs.kvm_system_time;
    }
}

} // namespace vessel::soft
