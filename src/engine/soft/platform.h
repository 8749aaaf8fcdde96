// What instructions reach outside the CPU core for: time, the local APIC, halting. The vCPU
// (soft_vcpu.cpp) provides these; with no LAPIC attached (unit tests) they work on Cpu fields.
#pragma once

#include <cstdint>

#include "engine/soft/cpu.h"

namespace vessel::soft {

uint64_t guest_tsc(Cpu& c); // RDTSC/RDTSCP/RDMSR(TSC)
void set_guest_tsc(Cpu& c, uint64_t value); // WRMSR(TSC); updates the pvclock
uint64_t guest_tsc_khz(); // the default TSC frequency (no VM clock: unit tests)
uint64_t guest_tsc_khz(const Cpu& c); // the TSC frequency CPUID/pvclock report (the VM clock's)

// One reading of guest time: nanoseconds on the VM clock and this vCPU's TSC at that instant.
struct GuestTime {
    uint64_t ns;
    uint64_t tsc;
};
GuestTime guest_time(Cpu& c);

// IA32_APIC_BASE, IA32_TSC_DEADLINE: true when handled.
bool lapic_read_msr(Cpu& c, uint32_t msr, uint64_t& value);
bool lapic_write_msr(Cpu& c, uint32_t msr, uint64_t value);
uint8_t get_cr8(Cpu& c);
void set_cr8(Cpu& c, uint8_t value);

// HLT: the vCPU sleeps until an interrupt (or NMI/INIT/SIPI) arrives.
void cpu_halt(Cpu& c);

// Something may have made a pending interrupt deliverable (STI/POPF/IRET set IF, IRET unmasked
// NMIs, the TPR was lowered, an EOI cleared an in-service vector). If the LAPIC holds a pending
// event, raise c.attention: the block loop then returns to the vCPU at the next block boundary,
// which delivers it. Without this a pending interrupt is only looked at again at the end of the
// vCPU's slice, and code that keeps interrupts enabled for only a few instructions at a time can
// hold one off indefinitely.
void interrupt_window_opened(Cpu& c);

} // namespace vessel::soft
