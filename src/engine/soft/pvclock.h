// KVM's paravirtual clock (kvmclock) on the soft engine: the same CPUID leaves and MSRs a KVM
// guest sees, so a Linux guest picks the kvm-clock clocksource on both engines.
//
// The soft engine's TSC is one VM-wide clock: guest TSC = VirtualClock TSC (1 GHz, counting guest
// nanoseconds, stopped while the VM is paused) + the vCPU's TSC offset, which is the same on every
// vCPU. So one (tsc_timestamp, system_time) pair written when the guest enables the clock stays
// exact for as long as the offset does: system_time + scale(tsc - tsc_timestamp) is guest time in
// nanoseconds, on every vCPU (PVCLOCK_TSC_STABLE_BIT), with no periodic updates. The structure is
// rewritten whenever that pair changes: the guest enables it, writes IA32_TSC, or the vCPU's state
// is restored.
#pragma once

#include <cstdint>

#include "engine/soft/cpu.h"

namespace vessel::soft {

namespace msr {
constexpr uint32_t kKvmWallClock = 0x11, kKvmSystemTime = 0x12; // KVM_FEATURE_CLOCKSOURCE
constexpr uint32_t kKvmWallClockNew = 0x4b564d00, kKvmSystemTimeNew = 0x4b564d01; // KVM_FEATURE_CLOCKSOURCE2
} // namespace msr

// CPUID 0x40000001 EAX (KVM_CPUID_FEATURES): exactly what this file implements. No PV EOI,
// steal time, async page faults, PV IPIs or TLB flushes, PV spinlock kicks, NOP I/O delay.
constexpr uint32_t kKvmFeatureClocksource = 1u << 0;
constexpr uint32_t kKvmFeatureClocksource2 = 1u << 3;
constexpr uint32_t kKvmFeatureClocksourceStableBit = 1u << 24;
constexpr uint32_t kKvmFeatures = kKvmFeatureClocksource | kKvmFeatureClocksource2 | kKvmFeatureClocksourceStableBit;

// struct pvclock_vcpu_time_info flags.
constexpr uint8_t kPvclockTscStableBit = 1;

// ns = ((tsc_delta << shift) * mul) >> 32 (a right shift for a negative shift), as the guest
// computes it (pvclock_scale_delta).
struct PvclockScale {
    uint32_t mul;
    int8_t shift;
};
// The most precise scale for a TSC of `tsc_khz` (mul in [2^31, 2^32)): shift 1, mul 2^31 at 1 GHz,
// which is exact.
PvclockScale pvclock_scale(uint64_t tsc_khz);
uint64_t pvclock_scale_delta(uint64_t delta, PvclockScale scale);

// MSR_KVM_WALL_CLOCK(_NEW) / MSR_KVM_SYSTEM_TIME(_NEW): the value is kept in c.msrs (so CpuState
// carries it) and read back as written.
void pvclock_write_msr(Cpu& c, uint32_t index, uint64_t value);
uint64_t pvclock_read_msr(const Cpu& c, uint32_t index);

// Rewrites this vCPU's struct pvclock_vcpu_time_info if the guest enabled it (call after the TSC
// offset changed or the state was restored). A structure outside guest RAM is never written.
void pvclock_update(Cpu& c);

} // namespace vessel::soft
