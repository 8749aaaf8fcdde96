// Event delivery: exceptions, external interrupts, NMIs and software interrupts through the IVT
// (real mode) or the IDT (protected and long mode: interrupt/trap gates, privilege changes with
// the TSS stacks, IST in long mode), with the double-fault rules; a fault while delivering #DF
// is a triple fault.
#pragma once

#include <cstdint>

#include "engine/soft/cpu.h"

namespace vessel::soft {

struct TripleFault {};

enum class EventKind : uint8_t {
    Exception,     // fault/trap raised by the CPU
    External,      // maskable interrupt from the LAPIC/PIC
    Nmi,
    SoftInt,       // INT n (privilege check against the gate DPL)
    SoftException, // INT3, INTO (also checked against the gate DPL)
    PrivSoftException, // INT1 (ICEBP)
};

// Delivers one event with c.rip as the return address. Throws GuestFault when the delivery
// itself faults (the caller applies the double-fault rules through deliver_fault).
void deliver_event(Cpu& c, uint8_t vector, EventKind kind, bool has_error, uint32_t error_code);

// Delivers a fault raised by an instruction (c.rip already rewound to the faulting instruction
// for faults, after it for traps), escalating to #DF and then TripleFault per SDM table 6-5.
// Sets CR2 for #PF.
void deliver_fault(Cpu& c, const GuestFault& fault);

} // namespace vessel::soft
