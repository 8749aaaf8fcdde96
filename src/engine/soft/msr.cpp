// MSRs: the SYSCALL/SYSENTER and segment-base MSRs, EFER, TSC, PAT, KVM's paravirtual clock
// (pvclock.h), SPEC_CTRL/PRED_CMD (cpuid.h), and the identification / capability MSRs Linux
// reads on an Intel CPU. No MTRRs (MTRRcap = 0, not advertised), no machine check (MCG_CAP = 0,
// not advertised), no VMX (FEATURE_CONTROL locked with VMX off).
#include "engine/soft/msr.h"

#include "engine/soft/cpuid.h"
#include "engine/soft/exec_sys.h"
#include "engine/soft/platform.h"
#include "engine/soft/pvclock.h"
#include "engine/soft/segments.h"

namespace vessel::soft {

namespace {

constexpr uint64_t kEferWritable = x86::kEferSce | x86::kEferLme | x86::kEferLma | x86::kEferNxe;

[[noreturn]] void gp()
{
    raise_fault(kExcGP, 0);
}

void require_canonical(uint64_t v)
{
    if (!is_canonical(v))
        gp();
}

// PAT entries: 0 (UC), 1 (WC), 4 (WT), 5 (WP), 6 (WB), 7 (UC-); 2 and 3 are reserved.
bool valid_pat(uint64_t v)
{
    for (unsigned i = 0; i < 8; ++i) {
        uint64_t t = (v >> (i * 8)) & 0xff;
        if (t > 7 || t == 2 || t == 3)
            return false;
    }
    return true;
}

void write_efer(Cpu& c, uint64_t v)
{
    if (v & ~kEferWritable)
        gp();
    // LME cannot change while paging is on; LMA is read-only (kept).
    if ((c.cr0 & x86::kCr0Pg) && ((v ^ c.efer) & x86::kEferLme))
        gp();
    uint64_t nv = (v & ~x86::kEferLma) | (c.efer & x86::kEferLma);
    if ((nv ^ c.efer) & x86::kEferNxe)
        flush_tlb(c);
    c.efer = nv;
    c.update_mode();
    c.stop_block = true;
}

void set_base(Cpu& c, uint8_t seg, uint64_t v)
{
    require_canonical(v);
    c.seg[seg].base = v;
    c.segbase[seg] = v; // FS/GS bases apply in every mode (seg_linear truncates outside 64-bit)
}

} // namespace

uint64_t read_msr(Cpu& c, uint32_t index)
{
    uint64_t v = 0;
    switch (index) {
    case msr::kTsc: return guest_tsc(c);
    case msr::kPlatformId: return 0;
    case msr::kApicBase:
    case msr::kTscDeadline:
        if (lapic_read_msr(c, index, v))
            return v;
        if (index == msr::kApicBase)
            return c.apic_base;
        return c.msrs.tsc_deadline;
    case msr::kFeatureControl: return 1; // locked, VMX and SMX off
    case msr::kSpecCtrl: return c.msrs.spec_ctrl;
    case msr::kBiosSignId: return 0; // microcode revision 0
    case msr::kPlatformInfo: {
        // Maximum non-turbo ratio (bits 15:8) against the 100 MHz bus clock; no CPUID faulting.
        uint64_t ratio = guest_tsc_khz(c) / 100000;
        return (ratio & 0xff) << 8;
    }
    case msr::kMtrrCap: return 0;
    case msr::kArchCapabilities: return kArchCapabilities;
    case msr::kSysenterCs: return c.msrs.sysenter_cs;
    case msr::kSysenterEsp: return c.msrs.sysenter_esp;
    case msr::kSysenterEip: return c.msrs.sysenter_eip;
    case msr::kMcgCap: return 0;
    case msr::kMcgStatus: return 0;
    case msr::kMiscEnable: return c.msrs.misc_enable;
    case msr::kDebugCtl: return 0;
    case msr::kPat: return c.msrs.pat;
    case msr::kMtrrDefType: return 0;
    case msr::kEfer: return c.efer;
    case msr::kStar: return c.msrs.star;
    case msr::kLstar: return c.msrs.lstar;
    case msr::kCstar: return c.msrs.cstar;
    case msr::kSfmask: return c.msrs.sfmask;
    case msr::kFsBase: return c.seg[FS].base;
    case msr::kGsBase: return c.seg[GS].base;
    case msr::kKernelGsBase: return c.msrs.kernel_gs_base;
    case msr::kTscAux: return c.msrs.tsc_aux;
    case msr::kKvmWallClock:
    case msr::kKvmSystemTime:
    case msr::kKvmWallClockNew:
    case msr::kKvmSystemTimeNew: return pvclock_read_msr(c, index);
    default:
        // x2APIC registers, should the LAPIC offer them (CPUID does not advertise x2APIC).
        if (index >= 0x800 && index <= 0x8ff && lapic_read_msr(c, index, v))
            return v;
        gp();
    }
}

void write_msr(Cpu& c, uint32_t index, uint64_t v)
{
    switch (index) {
    case msr::kTsc: set_guest_tsc(c, v); return;
    case msr::kApicBase:
    case msr::kTscDeadline:
        if (lapic_write_msr(c, index, v)) {
            c.stop_block = true;
            return;
        }
        if (index == msr::kApicBase) {
            if (v & ~((((1ULL << kPhysAddrBits) - 1) & ~0xfffULL) | (1ULL << 8) | (1ULL << 11)))
                gp();
            c.apic_base = v;
        } else {
            c.msrs.tsc_deadline = v;
        }
        c.stop_block = true;
        return;
    case msr::kBiosSignId: return; // Linux writes 0 before reading the microcode revision
    case msr::kSpecCtrl:
        // IBRS and BHI_DIS_S restrict predictions this CPU does not make.
        if (v & ~kSpecCtrlWritable)
            gp();
        c.msrs.spec_ctrl = v;
        return;
    case msr::kPredCmd:
        if (v & ~kPredCmdIbpb)
            gp();
        return; // IBPB: no predictor state to drop
    case msr::kSysenterCs: c.msrs.sysenter_cs = v & 0xffffffffULL; return;
    case msr::kSysenterEsp:
        require_canonical(v);
        c.msrs.sysenter_esp = v;
        return;
    case msr::kSysenterEip:
        require_canonical(v);
        c.msrs.sysenter_eip = v;
        return;
    case msr::kMcgStatus:
        if (v)
            gp();
        return;
    case msr::kMiscEnable: c.msrs.misc_enable = v; return;
    case msr::kDebugCtl:
        if (v)
            gp(); // no LBR/BTF: only 0 is accepted
        return;
    case msr::kPat:
        if (!valid_pat(v))
            gp();
        c.msrs.pat = v;
        return;
    case msr::kMtrrDefType: return; // no MTRRs: writes ignored
    case msr::kEfer: write_efer(c, v); return;
    case msr::kStar: c.msrs.star = v; return;
    case msr::kLstar:
        require_canonical(v);
        c.msrs.lstar = v;
        return;
    case msr::kCstar:
        require_canonical(v);
        c.msrs.cstar = v;
        return;
    case msr::kSfmask: c.msrs.sfmask = v & 0xffffffffULL; return;
    case msr::kFsBase: set_base(c, FS, v); return;
    case msr::kGsBase: set_base(c, GS, v); return;
    case msr::kKernelGsBase:
        require_canonical(v);
        c.msrs.kernel_gs_base = v;
        return;
    case msr::kTscAux: c.msrs.tsc_aux = v & 0xffffffffULL; return;
    case msr::kKvmWallClock:
    case msr::kKvmSystemTime:
    case msr::kKvmWallClockNew:
    case msr::kKvmSystemTimeNew: pvclock_write_msr(c, index, v); return;
    default:
        if (index >= 0x800 && index <= 0x8ff && lapic_write_msr(c, index, v)) {
            c.stop_block = true;
            return;
        }
        gp();
    }
}

} // namespace vessel::soft
