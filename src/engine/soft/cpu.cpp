#include "engine/soft/cpu.h"

#include <mutex>

#include "base/log.h"
#include "engine/soft/handlers.h"

namespace vessel::soft {

void raise_fault(uint8_t vector) { throw GuestFault { vector, false, 0, 0 }; }

void raise_fault(uint8_t vector, uint32_t error_code) { throw GuestFault { vector, true, error_code, 0 }; }

void raise_page_fault(uint64_t linear, uint32_t error_code) { throw GuestFault { kExcPF, true, error_code, linear }; }

void raise_ud() { raise_fault(kExcUD); }

void abort_engine(const char* what, uint64_t detail) { throw EngineAbort { what, detail }; }

void Cpu::update_mode()
{
    if (!(cr0 & x86::kCr0Pe))
        mode = CpuMode::Real;
    else if ((efer & x86::kEferLma) && seg[CS].l)
        mode = CpuMode::Long64;
    else
        mode = seg[CS].db ? CpuMode::Prot32 : CpuMode::Prot16;
    cpl = mode == CpuMode::Real ? 0 : static_cast<uint8_t>(seg[CS].selector & 3);
    stack_size = mode == CpuMode::Long64 ? 8 : (seg[SS].db ? 4 : 2);
    for (unsigned i = 0; i < 6; ++i)
        segbase[i] = (mode == CpuMode::Long64 && i < FS) ? 0 : seg[i].base;
}

const HandlerTable& handler_table()
{
    static const HandlerTable table = [] {
        HandlerTable t;
        t.fill(&exec_unimplemented);
        register_system_handlers(t);
        register_sse_handlers(t);
        register_x87_handlers(t);
        // Last: MOV, PUSH/POP and JMP/CALL/RET are shared with the system group, MOVSD and CMPSD
        // with the SSE group; the integer handlers pass the forms they do not own
        // (control/debug/segment registers, far transfers, SSE2 MOVSD/CMPSD) on to the handler
        // registered before them.
        register_integer_handlers(t);
        return t;
    }();
    return table;
}

void HandlerChain::set(HandlerTable& table, ZydisMnemonic mnemonic, ExecFn fn)
{
    if (table[mnemonic] != fn)
        m_previous[mnemonic] = table[mnemonic];
    table[mnemonic] = fn;
}

void HandlerChain::call_previous(Cpu& c, const Insn& in) const
{
    ExecFn prev = in.mnemonic < m_previous.size() ? m_previous[in.mnemonic] : nullptr;
    (prev ? prev : &exec_unimplemented)(c, in);
}

void exec_unimplemented(Cpu& c, const Insn& in)
{
    static std::mutex lock;
    static std::array<bool, ZYDIS_MNEMONIC_MAX_VALUE + 1> reported {};
    {
        std::lock_guard guard(lock);
        if (in.mnemonic < reported.size() && !reported[in.mnemonic]) {
            reported[in.mnemonic] = true;
            log_warn("soft engine: vCPU {} executed {} at {:#x}, which is not implemented: #UD", c.id,
                     ZydisMnemonicGetString(static_cast<ZydisMnemonic>(in.mnemonic)), c.insn_start);
        }
    }
    raise_ud();
}

} // namespace vessel::soft
