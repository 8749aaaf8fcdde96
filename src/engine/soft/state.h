// Conversion between the interpreter's Cpu and the engine-neutral CpuState (the soft engine's
// side of snapshots and cross-engine restore). The LAPIC page is converted by the vCPU.
#pragma once

#include "arch/x86/cpu_state.h"
#include "base/result.h"
#include "engine/soft/cpu.h"

namespace vessel::soft {

CpuState state_from_cpu(Cpu& c);
// Whether this CPU can take `s`: XCR0 may enable only x87 and SSE state (XSAVE components
// XCR0 leaves off are unreachable to the guest and ignored).
Result<void> check_state(const CpuState& s);
// Loads everything but what lives with the vCPU's LAPIC and clock (the LAPIC page, APIC base,
// CR8 = TPR and the TSC: SoftVcpu::set_state); flushes the TLB and recomputes the mode. The
// XSAVE image is read as XRSTOR reads the standard form: a component whose XSTATE_BV bit is
// clear is in its initial state.
void cpu_from_state(Cpu& c, const CpuState& s);

} // namespace vessel::soft
