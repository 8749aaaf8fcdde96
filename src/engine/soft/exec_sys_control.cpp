// Control and debug registers, descriptor-table registers, MSRs, CPUID, TSC, XCR0, TLB and cache
// control, HLT, fences, and the instructions the CPU model does not offer (#UD).
//
// Debug registers are storage only: no breakpoint (DR0-3/DR7) or single-step (TF) trap is
// implemented.
#include <atomic>

#include "engine/soft/cpuid.h"
#include "engine/soft/exec_sys.h"
#include "engine/soft/msr.h"
#include "engine/soft/platform.h"
#include "engine/soft/segments.h"

namespace vessel::soft::sys {

namespace {

constexpr uint64_t kCr0Em = 1ULL << 2, kCr0Ts = 1ULL << 3, kCr0Am = 1ULL << 18, kCr0Nw = 1ULL << 29,
                   kCr0Cd = 1ULL << 30;
constexpr uint64_t kCr0Writable = x86::kCr0Pe | x86::kCr0Mp | kCr0Em | kCr0Ts | x86::kCr0Ne | x86::kCr0Wp | kCr0Am
                                  | kCr0Nw | kCr0Cd | x86::kCr0Pg;
constexpr uint64_t kCr4Tsd = 1ULL << 2, kCr4Pse = 1ULL << 4, kCr4Pce = 1ULL << 8, kCr4De = 1ULL << 3,
                   kCr4Mce = 1ULL << 6, kCr4Osxsave = 1ULL << 18;
// Bits of features we implement. DE (DR4/DR5 become #UD) and MCE (no machine check is ever
// raised) are accepted although CPUID does not list them: every x86-64 CPU has them, and code
// that preserves or sets them blindly must not fault. VME/PVI, UMIP, FSGSBASE, PCIDE, SMEP,
// SMAP, PKE, LA57, VMXE are reserved (#GP).
constexpr uint64_t kCr4Writable = kCr4Tsd | kCr4De | kCr4Pse | x86::kCr4Pae | kCr4Mce | x86::kCr4Pge | kCr4Pce
                                  | x86::kCr4Osfxsr | x86::kCr4Osxmmexcpt | (kSseGroupXsave ? kCr4Osxsave : 0);

unsigned cr_size(const Cpu& c) { return c.mode == CpuMode::Long64 ? 8 : 4; }

void write_cr0(Cpu& c, uint64_t v)
{
    if (c.mode == CpuMode::Long64 && (v >> 32))
        raise_fault(kExcGP, 0);
    v = (v & kCr0Writable) | x86::kCr0Et; // other low bits are ignored, ET is hardwired
    if ((v & x86::kCr0Pg) && !(v & x86::kCr0Pe))
        raise_fault(kExcGP, 0);
    if ((v & kCr0Nw) && !(v & kCr0Cd))
        raise_fault(kExcGP, 0);
    bool pg_on = !(c.cr0 & x86::kCr0Pg) && (v & x86::kCr0Pg);
    bool pg_off = (c.cr0 & x86::kCr0Pg) && !(v & x86::kCr0Pg);
    if (pg_on && (c.efer & x86::kEferLme) && (!(c.cr4 & x86::kCr4Pae) || c.seg[CS].l))
        raise_fault(kExcGP, 0);
    if (pg_off && c.mode == CpuMode::Long64)
        raise_fault(kExcGP, 0);
    uint64_t changed = c.cr0 ^ v;
    c.cr0 = v;
    if (pg_on && (c.efer & x86::kEferLme))
        c.efer |= x86::kEferLma;
    if (pg_off)
        c.efer &= ~x86::kEferLma;
    if (changed & (x86::kCr0Pg | x86::kCr0Wp | x86::kCr0Pe))
        flush_tlb(c);
    c.update_mode();
    c.stop_block = true;
}

void write_cr3(Cpu& c, uint64_t v)
{
    if (in_ia32e(c)) {
        if (v >> kPhysAddrBits) // no PCID: bit 63 and the bits above MAXPHYADDR are reserved
            raise_fault(kExcGP, 0);
    } else {
        v &= 0xffffffffULL;
    }
    c.cr3 = v;
    // Global pages survive (SDM 4.10.4.1); without CR4.PGE no entry is global.
    c.tlb.flush_nonglobal();
    c.stop_block = true;
}

void write_cr4(Cpu& c, uint64_t v)
{
    if (v & ~kCr4Writable)
        raise_fault(kExcGP, 0);
    if (in_ia32e(c) && !(v & x86::kCr4Pae))
        raise_fault(kExcGP, 0);
    uint64_t changed = c.cr4 ^ v;
    c.cr4 = v;
    if (changed & (x86::kCr4Pge | x86::kCr4Pae | kCr4Pse))
        flush_tlb(c);
    c.update_mode();
    c.stop_block = true;
}

uint64_t read_cr(Cpu& c, unsigned n)
{
    switch (n) {
    case 0: return c.cr0;
    case 2: return c.cr2;
    case 3: return c.cr3;
    case 4: return c.cr4;
    case 8: return get_cr8(c);
    default: raise_ud();
    }
}

void write_cr(Cpu& c, unsigned n, uint64_t v)
{
    switch (n) {
    case 0: write_cr0(c, v); break;
    case 2: c.cr2 = v; break;
    case 3: write_cr3(c, v); break;
    case 4: write_cr4(c, v); break;
    case 8:
        if (v & ~0xfULL)
            raise_fault(kExcGP, 0);
        set_cr8(c, static_cast<uint8_t>(v));
        c.stop_block = true; // a lower TPR can unmask a pending interrupt
        break;
    default: raise_ud();
    }
}

unsigned dr_index(const Cpu& c, unsigned n)
{
    if (n == 4 || n == 5) {
        if (c.cr4 & kCr4De)
            raise_ud();
        return n + 2; // aliases of DR6/DR7 without CR4.DE
    }
    if (n > 7)
        raise_ud();
    return n;
}

// Address of the memory operand plus `delta` bytes (wrapping at the address size).
uint64_t mem_linear_at(const Cpu& c, const Insn& in, uint64_t delta)
{
    return seg_linear(c, in.seg, (effective_address(c, in) + delta) & addr_mask(in.asize));
}

void exec_lgdt_lidt(Cpu& c, const Insn& in)
{
    require_cpl0(c);
    uint16_t limit = static_cast<uint16_t>(read_mem(c, mem_linear_at(c, in, 0), 2));
    uint64_t base;
    if (c.mode == CpuMode::Long64) {
        base = read_mem(c, mem_linear_at(c, in, 2), 8);
        if (!is_canonical(base))
            raise_fault(kExcGP, 0);
    } else {
        base = read_mem(c, mem_linear_at(c, in, 2), 4);
        if (in.osize == 2)
            base &= 0xffffff;
    }
    DescriptorTableReg& r = in.mnemonic == ZYDIS_MNEMONIC_LGDT ? c.gdt : c.idt;
    r.base = base;
    r.limit = limit;
    c.stop_block = true;
}

void exec_sgdt_sidt(Cpu& c, const Insn& in)
{
    const DescriptorTableReg& r = in.mnemonic == ZYDIS_MNEMONIC_SGDT ? c.gdt : c.idt;
    unsigned base_size = c.mode == CpuMode::Long64 ? 8 : 4;
    uint64_t lim_lin = mem_linear_at(c, in, 0), base_lin = mem_linear_at(c, in, 2);
    write_mem(c, lim_lin, 2, r.limit);
    write_mem(c, base_lin, base_size, base_size == 4 ? (r.base & 0xffffffffULL) : r.base);
}

void require_protected(const Cpu& c)
{
    if (c.mode == CpuMode::Real || (c.rflags & kVM))
        raise_ud();
}

void exec_lldt(Cpu& c, const Insn& in)
{
    require_protected(c);
    require_cpl0(c);
    uint16_t sel = static_cast<uint16_t>(read_op(c, in, 0));
    if ((sel & 0xfffc) == 0) {
        c.ldtr = null_segment(sel);
        return;
    }
    if (sel & 4)
        raise_fault(kExcGP, selector_error(sel));
    uint64_t hi = 0;
    uint64_t d = read_descriptor(c, sel, in_ia32e(c) ? &hi : nullptr);
    if (desc_s(d) || desc_type(d) != 2)
        raise_fault(kExcGP, selector_error(sel));
    if (!desc_present(d))
        raise_fault(kExcNP, selector_error(sel));
    SegmentReg s = unpack_descriptor(sel, d, hi);
    if (in_ia32e(c) && !is_canonical(s.base))
        raise_fault(kExcGP, selector_error(sel));
    c.ldtr = s;
}

void exec_ltr(Cpu& c, const Insn& in)
{
    require_protected(c);
    require_cpl0(c);
    uint16_t sel = static_cast<uint16_t>(read_op(c, in, 0));
    if ((sel & 0xfffc) == 0)
        raise_fault(kExcGP, 0);
    if (sel & 4)
        raise_fault(kExcGP, selector_error(sel));
    uint64_t hi = 0;
    uint64_t d = read_descriptor(c, sel, in_ia32e(c) ? &hi : nullptr);
    unsigned type = desc_type(d);
    if (desc_s(d) || !(type == 9 || (type == 1 && !in_ia32e(c))))
        raise_fault(kExcGP, selector_error(sel));
    if (!desc_present(d))
        raise_fault(kExcNP, selector_error(sel));
    SegmentReg s = unpack_descriptor(sel, d | (2ULL << 40), hi); // busy
    if (in_ia32e(c) && !is_canonical(s.base))
        raise_fault(kExcGP, selector_error(sel));
    uint64_t entry = c.gdt.base + (sel & 0xfff8u) + 5;
    write_sys<uint8_t>(c, in_ia32e(c) ? entry : (entry & 0xffffffffULL), static_cast<uint8_t>((d >> 40) | 2));
    c.tr = s;
}

void exec_sldt_str(Cpu& c, const Insn& in)
{
    require_protected(c);
    write_op(c, in, 0, in.mnemonic == ZYDIS_MNEMONIC_SLDT ? c.ldtr.selector : c.tr.selector);
}

void exec_smsw(Cpu& c, const Insn& in)
{
    write_op(c, in, 0, c.cr0);
}

void exec_lmsw(Cpu& c, const Insn& in)
{
    require_cpl0(c);
    uint64_t v = read_op(c, in, 0) & 0xf;
    // PE can be set but not cleared.
    write_cr0(c, (c.cr0 & ~0xeULL) | v | (c.cr0 & x86::kCr0Pe));
}

void exec_clts(Cpu& c, const Insn&)
{
    require_cpl0(c);
    c.cr0 &= ~kCr0Ts;
}

void exec_invlpg(Cpu& c, const Insn& in)
{
    require_cpl0(c);
    // Not mem_linear(): INVLPG of a non-canonical address is a no-op, even through SS.
    uint64_t lin = c.segbase[in.seg] + effective_address(c, in);
    if (c.mode != CpuMode::Long64)
        lin &= 0xffffffffULL;
    // Large pages are cached as 4 KiB pieces: drop every piece of the region lin is in.
    if (c.tlb_has_1g)
        flush_tlb(c);
    else if (c.tlb_has_large)
        c.tlb.flush_range(lin & ~0x1fffffULL, 512);
    else
        c.tlb.flush_page(lin);
    c.stop_block = true;
}

void exec_cpl0_nop(Cpu& c, const Insn&) { require_cpl0(c); }

void exec_hlt(Cpu& c, const Insn&)
{
    require_cpl0(c);
    cpu_halt(c);
    c.stop_block = true;
}

void exec_cpuid(Cpu& c, const Insn&)
{
    uint32_t out[4];
    cpuid(c, static_cast<uint32_t>(c.gpr[RAX]), static_cast<uint32_t>(c.gpr[RCX]), out);
    c.gpr[RAX] = out[0];
    c.gpr[RBX] = out[1];
    c.gpr[RCX] = out[2];
    c.gpr[RDX] = out[3];
}

void exec_rdmsr(Cpu& c, const Insn&)
{
    require_cpl0(c);
    uint64_t v = read_msr(c, static_cast<uint32_t>(c.gpr[RCX]));
    c.gpr[RAX] = v & 0xffffffffULL;
    c.gpr[RDX] = v >> 32;
}

void exec_wrmsr(Cpu& c, const Insn&)
{
    require_cpl0(c);
    uint64_t v = (c.gpr[RDX] << 32) | (c.gpr[RAX] & 0xffffffffULL);
    write_msr(c, static_cast<uint32_t>(c.gpr[RCX]), v);
    c.stop_block = true;
}

void exec_rdtsc(Cpu& c, const Insn& in)
{
    if ((c.cr4 & kCr4Tsd) && c.cpl != 0)
        raise_fault(kExcGP, 0);
    uint64_t tsc = guest_tsc(c);
    c.gpr[RAX] = tsc & 0xffffffffULL;
    c.gpr[RDX] = tsc >> 32;
    if (in.mnemonic == ZYDIS_MNEMONIC_RDTSCP)
        c.gpr[RCX] = c.msrs.tsc_aux & 0xffffffffULL;
}

// No performance counters exist (CPUID leaf 0xA is zero): every counter index is invalid.
void exec_rdpmc(Cpu&, const Insn&) { raise_fault(kExcGP, 0); }

void exec_xgetbv(Cpu& c, const Insn&)
{
    if (!(c.cr4 & kCr4Osxsave))
        raise_ud();
    if (static_cast<uint32_t>(c.gpr[RCX]) != 0)
        raise_fault(kExcGP, 0);
    c.gpr[RAX] = c.xcr0 & 0xffffffffULL;
    c.gpr[RDX] = c.xcr0 >> 32;
}

void exec_xsetbv(Cpu& c, const Insn&)
{
    if (!(c.cr4 & kCr4Osxsave))
        raise_ud();
    require_cpl0(c);
    if (static_cast<uint32_t>(c.gpr[RCX]) != 0)
        raise_fault(kExcGP, 0);
    uint64_t v = (c.gpr[RDX] << 32) | (c.gpr[RAX] & 0xffffffffULL);
    if (!(v & 1) || (v & ~kXcr0Supported))
        raise_fault(kExcGP, 0);
    c.xcr0 = v;
    c.stop_block = true;
}

void exec_clflush(Cpu& c, const Insn& in)
{
    // No caches to flush; the address must still be valid for a read.
    uint64_t lin = mem_linear(c, in);
    if (c.cr0 & x86::kCr0Pg)
        translate(c, lin, Access::Read, c.cpl == 3);
}

void exec_mfence(Cpu&, const Insn&) { std::atomic_thread_fence(std::memory_order_seq_cst); }

// Guest loads and stores are host loads and stores on an x86 host, which already keeps loads
// and stores in order (TSO); LFENCE/SFENCE only need to stop the compiler from reordering.
void exec_lsfence(Cpu&, const Insn&) { std::atomic_thread_fence(std::memory_order_acq_rel); }

void exec_nop(Cpu&, const Insn&) { }

void exec_ud(Cpu&, const Insn&) { raise_ud(); }

} // namespace

void exec_mov_cr(Cpu& c, const Insn& in)
{
    require_cpl0(c);
    if (c.rflags & kVM)
        raise_fault(kExcGP, 0);
    bool to_cr = in.op[0].kind == OpKind::Cr;
    unsigned n = to_cr ? in.op[0].reg : in.op[1].reg;
    unsigned gpr = to_cr ? in.op[1].reg : in.op[0].reg;
    if (n == 8 && c.mode != CpuMode::Long64)
        raise_ud();
    unsigned size = cr_size(c);
    if (to_cr)
        write_cr(c, n, read_gpr(c, gpr, size));
    else
        write_gpr(c, gpr, size, read_cr(c, n) & size_mask(size));
}

void exec_mov_dr(Cpu& c, const Insn& in)
{
    require_cpl0(c);
    if (c.rflags & kVM)
        raise_fault(kExcGP, 0);
    bool to_dr = in.op[0].kind == OpKind::Dr;
    unsigned n = dr_index(c, to_dr ? in.op[0].reg : in.op[1].reg);
    unsigned gpr = to_dr ? in.op[1].reg : in.op[0].reg;
    unsigned size = cr_size(c);
    if (!to_dr) {
        uint64_t v = n < 4 ? c.dr[n] : (n == 6 ? c.dr6 : c.dr7);
        write_gpr(c, gpr, size, v & size_mask(size));
        return;
    }
    uint64_t v = read_gpr(c, gpr, size);
    if (n < 4) {
        c.dr[n] = v;
        return;
    }
    if (v >> 32)
        raise_fault(kExcGP, 0);
    if (n == 6)
        c.dr6 = (v & 0xe00fULL) | 0xffff0ff0ULL;
    else
        c.dr7 = (v & 0xffff23ffULL) | 0x400;
}

void register_control(HandlerTable& t)
{
    t[ZYDIS_MNEMONIC_LGDT] = &exec_lgdt_lidt;
    t[ZYDIS_MNEMONIC_LIDT] = &exec_lgdt_lidt;
    t[ZYDIS_MNEMONIC_SGDT] = &exec_sgdt_sidt;
    t[ZYDIS_MNEMONIC_SIDT] = &exec_sgdt_sidt;
    t[ZYDIS_MNEMONIC_LLDT] = &exec_lldt;
    t[ZYDIS_MNEMONIC_LTR] = &exec_ltr;
    t[ZYDIS_MNEMONIC_SLDT] = &exec_sldt_str;
    t[ZYDIS_MNEMONIC_STR] = &exec_sldt_str;
    t[ZYDIS_MNEMONIC_SMSW] = &exec_smsw;
    t[ZYDIS_MNEMONIC_LMSW] = &exec_lmsw;
    t[ZYDIS_MNEMONIC_CLTS] = &exec_clts;
    t[ZYDIS_MNEMONIC_INVLPG] = &exec_invlpg;
    t[ZYDIS_MNEMONIC_WBINVD] = &exec_cpl0_nop;
    t[ZYDIS_MNEMONIC_INVD] = &exec_cpl0_nop;
    t[ZYDIS_MNEMONIC_HLT] = &exec_hlt;
    t[ZYDIS_MNEMONIC_CPUID] = &exec_cpuid;
    t[ZYDIS_MNEMONIC_RDMSR] = &exec_rdmsr;
    t[ZYDIS_MNEMONIC_WRMSR] = &exec_wrmsr;
    t[ZYDIS_MNEMONIC_RDTSC] = &exec_rdtsc;
    t[ZYDIS_MNEMONIC_RDTSCP] = &exec_rdtsc;
    t[ZYDIS_MNEMONIC_RDPMC] = &exec_rdpmc;
    t[ZYDIS_MNEMONIC_XGETBV] = &exec_xgetbv;
    t[ZYDIS_MNEMONIC_XSETBV] = &exec_xsetbv;
    t[ZYDIS_MNEMONIC_CLFLUSH] = &exec_clflush;
    t[ZYDIS_MNEMONIC_CLFLUSHOPT] = &exec_clflush;
    t[ZYDIS_MNEMONIC_MFENCE] = &exec_mfence;
    t[ZYDIS_MNEMONIC_LFENCE] = &exec_lsfence;
    t[ZYDIS_MNEMONIC_SFENCE] = &exec_lsfence;
    for (ZydisMnemonic m : { ZYDIS_MNEMONIC_PREFETCH, ZYDIS_MNEMONIC_PREFETCHNTA, ZYDIS_MNEMONIC_PREFETCHT0,
             ZYDIS_MNEMONIC_PREFETCHT1, ZYDIS_MNEMONIC_PREFETCHT2, ZYDIS_MNEMONIC_PREFETCHW })
        t[m] = &exec_nop;
    // CET is not offered: ENDBR32/64 are the reserved NOPs they decode as on such CPUs (unless
    // another group already handles them).
    for (ZydisMnemonic m : { ZYDIS_MNEMONIC_ENDBR32, ZYDIS_MNEMONIC_ENDBR64 })
        if (t[m] == &exec_unimplemented)
            t[m] = &exec_nop;
    // Not offered by this CPU model (CPUID does not advertise them) or invalid by definition.
    for (ZydisMnemonic m : { ZYDIS_MNEMONIC_UD0, ZYDIS_MNEMONIC_UD1, ZYDIS_MNEMONIC_UD2, ZYDIS_MNEMONIC_INVPCID,
             ZYDIS_MNEMONIC_MONITOR, ZYDIS_MNEMONIC_MWAIT, ZYDIS_MNEMONIC_RDRAND, ZYDIS_MNEMONIC_RDSEED,
             ZYDIS_MNEMONIC_RDPID, ZYDIS_MNEMONIC_STAC, ZYDIS_MNEMONIC_CLAC, ZYDIS_MNEMONIC_RSM })
        t[m] = &exec_ud;
}

} // namespace vessel::soft::sys
