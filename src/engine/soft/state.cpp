#include "engine/soft/state.h"

#include <cstring>

#include "engine/soft/cpuid.h"
#include "engine/soft/flags.h"
#include "engine/soft/fpu_state.h"
#include "engine/soft/platform.h"

namespace vessel::soft {

namespace {

// CpuState names segments; Cpu keeps them in encoding order (ES CS SS DS FS GS).
template<typename State, typename CpuT>
void for_each_segment(State& s, CpuT& c, auto&& fn)
{
    fn(s.es, c.seg[ES]);
    fn(s.cs, c.seg[CS]);
    fn(s.ss, c.seg[SS]);
    fn(s.ds, c.seg[DS]);
    fn(s.fs, c.seg[FS]);
    fn(s.gs, c.seg[GS]);
}

// XSAVE header: XSTATE_BV at byte 512 of the XSAVE area.
constexpr size_t kXstateBv = 512;
constexpr uint64_t kXstateX87 = 1, kXstateSse = 2;

uint64_t xstate_bv(const CpuState& s)
{
    uint64_t bv;
    std::memcpy(&bv, s.xsave.data() + kXstateBv, sizeof(bv));
    return bv;
}

} // namespace

CpuState state_from_cpu(Cpu& c)
{
    CpuState s;
    s.gpr = c.gpr;
    s.rip = c.rip;
    s.rflags = get_rflags(c);
    for_each_segment(s, c, [](SegmentReg& out, const SegmentReg& in) { out = in; });
    s.tr = c.tr;
    s.ldtr = c.ldtr;
    s.gdt = c.gdt;
    s.idt = c.idt;
    s.cr0 = c.cr0;
    s.cr2 = c.cr2;
    s.cr3 = c.cr3;
    s.cr4 = c.cr4;
    s.cr8 = get_cr8(c);
    s.efer = c.efer;
    s.apic_base = c.apic_base;
    s.xcr0 = c.xcr0;
    s.dr = c.dr;
    s.dr6 = c.dr6;
    s.dr7 = c.dr7;
    s.msrs = c.msrs;
    s.tsc = guest_tsc(c);
    std::memcpy(s.xsave.data(), c.fx.data(), c.fx.size());
    uint64_t xstate_bv = 3; // x87 and SSE state are always live here
    std::memcpy(s.xsave.data() + kXstateBv, &xstate_bv, sizeof(xstate_bv));
    s.events.interrupt_shadow = c.interrupt_shadow;
    s.events.nmi_masked = c.nmi_masked;
    s.mp_state = c.halted ? MpState::Halted : c.mp_state;
    return s;
}

Result<void> check_state(const CpuState& s)
{
    if (s.xcr0 & ~kXcr0Supported)
        return make_error(
            "XCR0 {:#x} enables state the soft engine's CPU does not have (it supports {:#x})", s.xcr0, kXcr0Supported);
    return {};
}

void cpu_from_state(Cpu& c, const CpuState& s)
{
    c.gpr = s.gpr;
    c.rip = s.rip;
    c.lf.op = FlagOp::None;
    c.rflags = s.rflags | x86::kRflagsFixed;
    for_each_segment(s, c, [](const SegmentReg& in, SegmentReg& out) { out = in; });
    c.tr = s.tr;
    c.ldtr = s.ldtr;
    c.gdt = s.gdt;
    c.idt = s.idt;
    c.cr0 = s.cr0;
    c.cr2 = s.cr2;
    c.cr3 = s.cr3;
    c.cr4 = s.cr4;
    c.efer = s.efer;
    c.apic_base = s.apic_base;
    c.xcr0 = s.xcr0 ? s.xcr0 : 3;
    c.dr = s.dr;
    c.dr6 = s.dr6;
    c.dr7 = s.dr7;
    c.msrs = s.msrs;
    std::memcpy(c.fx.data(), s.xsave.data(), c.fx.size());
    const uint64_t bv = xstate_bv(s);
    if (!(bv & kXstateX87)) {
        // x87 initial state (FNINIT): FCW 0x37F, everything else zero (all registers empty).
        std::memset(c.fx.data(), 0, fpu::kMxcsr);
        std::memset(c.fx.data() + fpu::kSt, 0, fpu::kXmm - fpu::kSt);
        fpu::fx_set<uint16_t>(c, fpu::kFcw, fpu::kFcwInit);
    }
    if (!(bv & kXstateSse))
        std::memset(c.fx.data() + fpu::kXmm, 0, 16 * 16); // MXCSR is loaded either way
    c.interrupt_shadow = s.events.interrupt_shadow ? 1 : 0;
    c.nmi_masked = s.events.nmi_masked;
    c.halted = s.mp_state == MpState::Halted;
    c.mp_state = s.mp_state == MpState::Halted ? MpState::Runnable : s.mp_state;
    c.update_mode();
    c.tlb.flush();
    c.tlb_has_large = false;
    c.tlb_has_1g = false;
}

} // namespace vessel::soft
