#include "engine/soft/interpreter.h"

#include <algorithm>
#include <cstdint>

#include "engine/soft/exceptions.h"
#include "engine/soft/mmu.h"

namespace vessel::soft {

namespace {

// Runs one block; returns the number of instructions that completed.
uint64_t run_block(Cpu& c, const Block& b, uint32_t limit)
{
    const Insn* in = b.insns.data();
    const Insn* end = in + std::min(b.count, limit);
    uint64_t done = 0;
    for (; in != end; ++in) {
        c.insn_start = c.rip;
        c.rip += in->length;
        in->exec(c, *in);
        ++done;
        if (c.stop_block) [[unlikely]]
            break;
    }
    return done;
}

} // namespace

uint64_t execute(Cpu& c, BlockCache& cache, uint64_t budget, Faults faults)
{
    uint64_t executed = 0;
    while (executed < budget && !c.halted && !c.attention.load(std::memory_order_relaxed)) {
        try {
            cache.flush_if_full();
            sync_code_epoch(c);
            c.insn_start = c.rip;
            uint64_t linear = code_linear(c);
            const Block* found = cache.find_linear(c, linear);
            if (!found) [[unlikely]] {
                uint64_t gpa = translate_exec(c, linear);
                found = &cache.get(c, linear, gpa);
                cache.remember_linear(c, linear, *found);
            }
            const Block& block = *found;
            bool had_shadow = c.interrupt_shadow != 0;
            c.stop_block = false;
            if (had_shadow) {
                // After STI / MOV SS exactly one instruction runs before interrupts are looked at
                // again (a whole block could close the window again: STI; x; CLI).
                executed += run_block(c, block, 1);
            } else if (const void* code = cache.translated(c, block)) {
                cache.remember_code(linear, code);
                executed += cache.run_translated(c, code, budget - executed);
            } else {
                executed += run_block(c, block, UINT32_MAX);
            }
            if (had_shadow)
                c.interrupt_shadow = 0;
        } catch (const GuestFault& fault) {
            c.rip = c.insn_start;
            c.stop_block = false;
            if (faults == Faults::Propagate)
                throw;
            c.halted = false;
            ++c.fault_counts[fault.vector & 31];
            deliver_fault(c, fault);
            ++executed;
        }
    }
    return executed;
}

} // namespace vessel::soft
