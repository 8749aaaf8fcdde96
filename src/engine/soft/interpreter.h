// The execution loop: fetch the block at CS:RIP through the software TLB and the block cache,
// run its instructions, deliver faults to the guest. Interrupts, timers and halting are the
// vCPU's business (soft_vcpu.cpp); the loop returns to it whenever c.attention is raised.
#pragma once

#include <cstdint>

#include "engine/soft/block_cache.h"
#include "engine/soft/cpu.h"

namespace vessel::soft {

// What execute() does with a guest fault: deliver it through the IDT/IVT (a vCPU), or rewind
// RIP to the faulting instruction and rethrow the GuestFault (instruction tests).
enum class Faults { Deliver, Propagate };

// Runs guest code until about `budget` instructions have executed (checked at block
// boundaries), the vCPU halts, or c.attention is set. TripleFault (exceptions.h) and
// EngineAbort propagate. Returns instructions executed.
uint64_t execute(Cpu& c, BlockCache& cache, uint64_t budget, Faults faults = Faults::Deliver);

// Linear address of CS:RIP.
inline uint64_t code_linear(const Cpu& c)
{
    uint64_t lin = c.segbase[CS] + c.rip;
    return c.mode == CpuMode::Long64 ? lin : (lin & 0xffffffffULL);
}

} // namespace vessel::soft
