// Control transfers across privilege or segment boundaries: INT n/INT3/INTO/INT1, IRET, far
// JMP/CALL/RET, SYSCALL/SYSRET, SYSENTER/SYSEXIT, SWAPGS.
//
// Not supported (EngineAbort): call gates, task switches (task gates, TSS targets, IRET with
// NT=1 outside IA-32e mode), virtual-8086 mode.
#include "engine/soft/exceptions.h"
#include "engine/soft/exec_sys.h"
#include "engine/soft/platform.h"
#include "engine/soft/segments.h"

namespace vessel::soft::sys {

namespace {

constexpr uint64_t kAccessed = 1ULL << 40;

[[noreturn]] void gp_sel(uint16_t sel) { raise_fault(kExcGP, selector_error(sel)); }

void no_vm86(const Cpu& c)
{
    if (c.rflags & kVM)
        abort_engine("virtual-8086 mode is not supported by the soft engine", c.insn_start);
}

SegmentReg flat_segment(uint16_t sel, uint8_t type, uint8_t dpl, bool l, bool db)
{
    SegmentReg s;
    s.selector = sel;
    s.base = 0;
    s.limit = 0xffffffff;
    s.type = type;
    s.s = 1;
    s.dpl = dpl;
    s.present = 1;
    s.l = l ? 1 : 0;
    s.db = db ? 1 : 0;
    s.g = 1;
    return s;
}

void load_real_cs(Cpu& c, uint16_t sel)
{
    SegmentReg cs = c.seg[CS];
    cs.selector = sel;
    cs.base = static_cast<uint64_t>(sel) << 4;
    cs.present = 1;
    cs.unusable = 0;
    set_segment(c, CS, cs);
}

// Target of a far JMP/CALL in protected/IA-32e mode: a code segment at the current privilege.
struct CodeTarget {
    uint64_t desc;
    SegmentReg cs;
    bool is64;
};

CodeTarget far_target(Cpu& c, uint16_t sel)
{
    if ((sel & 0xfffc) == 0)
        raise_fault(kExcGP, 0);
    uint64_t d = read_descriptor(c, sel);
    if (!desc_s(d)) {
        switch (desc_type(d)) {
        case 0x4:
        case 0xc: abort_engine("far JMP/CALL through a call gate is not supported by the soft engine", sel);
        case 0x1:
        case 0x5:
        case 0x9: abort_engine("task switches are not supported by the soft engine", sel);
        default: gp_sel(sel);
        }
    }
    if (!desc_is_code(d))
        gp_sel(sel);
    bool conforming = desc_type(d) & 4;
    if (conforming ? desc_dpl(d) > c.cpl : ((sel & 3u) > c.cpl || desc_dpl(d) != c.cpl))
        gp_sel(sel);
    if (!desc_present(d))
        raise_fault(kExcNP, selector_error(sel));
    bool l = (d >> 53) & 1, db = (d >> 54) & 1;
    if (in_ia32e(c) && l && db)
        gp_sel(sel);
    SegmentReg cs = unpack_descriptor(static_cast<uint16_t>((sel & 0xfffc) | c.cpl), d | kAccessed);
    return { d, cs, in_ia32e(c) && l };
}

// Code segment of a far return (RETF, IRET) to privilege RPL >= CPL.
CodeTarget return_target(Cpu& c, uint16_t sel)
{
    if ((sel & 0xfffc) == 0)
        raise_fault(kExcGP, 0);
    uint64_t d = read_descriptor(c, sel);
    unsigned rpl = sel & 3;
    if (rpl < c.cpl || !desc_is_code(d))
        gp_sel(sel);
    bool conforming = desc_type(d) & 4;
    if (conforming ? desc_dpl(d) > rpl : desc_dpl(d) != rpl)
        gp_sel(sel);
    if (!desc_present(d))
        raise_fault(kExcNP, selector_error(sel));
    bool l = (d >> 53) & 1, db = (d >> 54) & 1;
    if (in_ia32e(c) && l && db)
        gp_sel(sel);
    return { d, unpack_descriptor(sel, d | kAccessed), in_ia32e(c) && l };
}

// Stack segment popped by a return to privilege `cpl` (null is allowed only for a return to
// 64-bit code below CPL 3).
SegmentReg return_ss(Cpu& c, uint16_t sel, unsigned cpl, bool to64, uint64_t& desc)
{
    desc = 0;
    if ((sel & 0xfffc) == 0) {
        if (to64 && cpl != 3)
            return null_segment(sel, static_cast<uint8_t>(cpl));
        raise_fault(kExcGP, 0);
    }
    if ((sel & 3u) != cpl)
        gp_sel(sel);
    uint64_t d = read_descriptor(c, sel);
    if (!desc_is_data(d) || !(desc_type(d) & 2) || desc_dpl(d) != cpl)
        gp_sel(sel);
    if (!desc_present(d))
        raise_fault(kExcSS, selector_error(sel));
    desc = d;
    return unpack_descriptor(sel, d | kAccessed);
}

// New RIP of a far transfer: canonical for 64-bit code, else truncated and within the limit.
uint64_t target_rip(const CodeTarget& t, uint64_t offset, unsigned size)
{
    if (t.is64) {
        if (!is_canonical(offset))
            raise_fault(kExcGP, 0);
        return offset;
    }
    uint64_t rip = offset & size_mask(size);
    if (rip > t.cs.limit)
        raise_fault(kExcGP, 0);
    return rip;
}

// RSP after the stack segment changed (IRET/RETF to an outer level): the new SS's stack size.
void set_new_sp(Cpu& c, uint64_t sp)
{
    if (c.mode == CpuMode::Long64)
        c.gpr[RSP] = sp;
    else if (c.stack_size == 4)
        c.gpr[RSP] = sp & 0xffffffffULL;
    else
        c.gpr[RSP] = (c.gpr[RSP] & ~0xffffULL) | (sp & 0xffff);
}

void exec_int(Cpu& c, const Insn& in)
{
    no_vm86(c);
    deliver_event(c, static_cast<uint8_t>(in.imm), EventKind::SoftInt, false, 0);
}

void exec_int3(Cpu& c, const Insn&)
{
    no_vm86(c);
    deliver_event(c, kExcBP, EventKind::SoftException, false, 0);
}

void exec_into(Cpu& c, const Insn&)
{
    if (!flag_of(c))
        return;
    no_vm86(c);
    deliver_event(c, kExcOF, EventKind::SoftException, false, 0);
}

void exec_int1(Cpu& c, const Insn&)
{
    no_vm86(c);
    deliver_event(c, kExcDB, EventKind::PrivSoftException, false, 0);
}

constexpr uint64_t kIretFlags = kCF | kPF | kAF | kZF | kSF | kTF | kDF | kOF | kNT | kRF | kAC | kID;

void exec_iret(Cpu& c, const Insn& in)
{
    unsigned size = in.mnemonic == ZYDIS_MNEMONIC_IRETQ ? 8 : (in.mnemonic == ZYDIS_MNEMONIC_IRETD ? 4 : 2);
    uint64_t sp = c.gpr[RSP];
    uint64_t rip = read_stack(c, sp, 0, size);
    uint16_t sel = static_cast<uint16_t>(read_stack(c, sp, size, 2));
    uint64_t flags = read_stack(c, sp, 2 * size, size);

    if (c.mode == CpuMode::Real) {
        uint64_t mask = size == 2 ? 0x7fd5 : (kIretFlags | kIF | kIOPL);
        if (size == 4 && rip > 0xffff)
            raise_fault(kExcGP, 0);
        set_rflags_bits(c, flags, mask);
        load_real_cs(c, sel);
        c.rip = rip & 0xffff;
        set_sp(c, sp + 3 * size);
        c.nmi_masked = false;
        c.stop_block = true;
        interrupt_window_opened(c);
        return;
    }
    no_vm86(c);
    if (c.rflags & kNT) {
        if (in_ia32e(c))
            raise_fault(kExcGP, 0);
        abort_engine("IRET task return (NT=1) is not supported by the soft engine", c.insn_start);
    }
    if (!in_ia32e(c) && (flags & kVM) && c.cpl == 0 && size == 4)
        abort_engine("IRET to virtual-8086 mode is not supported by the soft engine", c.insn_start);

    CodeTarget t = return_target(c, sel);
    unsigned new_cpl = sel & 3;
    bool pop_ss = c.mode == CpuMode::Long64 || new_cpl > c.cpl;
    uint64_t new_sp = 0, ss_desc = 0;
    SegmentReg ss;
    if (pop_ss) {
        new_sp = read_stack(c, sp, 3 * size, size);
        uint16_t ss_sel = static_cast<uint16_t>(read_stack(c, sp, 4 * size, 2));
        ss = return_ss(c, ss_sel, new_cpl, t.is64 && c.mode == CpuMode::Long64, ss_desc);
    }
    uint64_t new_rip = target_rip(t, rip, size);

    uint64_t mask = kIretFlags;
    if (c.cpl <= iopl(c))
        mask |= kIF;
    if (c.cpl == 0)
        mask |= kIOPL | kVIF | kVIP;
    if (size == 2)
        mask &= 0xffff;
    mark_accessed(c, sel, t.desc);
    if (ss_desc)
        mark_accessed(c, ss.selector, ss_desc);

    uint8_t old_cpl = c.cpl;
    set_rflags_bits(c, flags, mask); // with the old CPL's privileges
    set_segment(c, CS, t.cs);
    c.rip = new_rip;
    if (pop_ss) {
        set_segment(c, SS, ss);
        set_new_sp(c, new_sp);
    } else {
        set_sp(c, sp + 3 * size);
    }
    if (new_cpl > old_cpl)
        null_outer_segments(c);
    c.nmi_masked = false;
    c.stop_block = true;
    interrupt_window_opened(c);
}

void exec_syscall(Cpu& c, const Insn&)
{
    // Intel: SYSCALL exists only in 64-bit mode.
    if (!(c.efer & x86::kEferSce) || c.mode != CpuMode::Long64)
        raise_ud();
    uint64_t flags = get_rflags(c);
    c.gpr[RCX] = c.rip;
    c.gpr[R11] = flags & ~kRF;
    c.rflags = (flags & ~(c.msrs.sfmask | kRF)) | x86::kRflagsFixed;
    uint16_t sel = static_cast<uint16_t>(c.msrs.star >> 32);
    set_segment(c, CS, flat_segment(sel & 0xfffc, 0xb, 0, true, false));
    set_segment(c, SS, flat_segment(static_cast<uint16_t>(sel + 8), 0x3, 0, false, true));
    c.rip = c.msrs.lstar;
    c.stop_block = true;
}

void exec_sysret(Cpu& c, const Insn& in)
{
    if (!(c.efer & x86::kEferSce) || c.mode != CpuMode::Long64)
        raise_ud();
    require_cpl0(c);
    bool to64 = in.flags & kFlagRexW;
    if (to64 && !is_canonical(c.gpr[RCX]))
        raise_fault(kExcGP, 0);
    uint16_t base = static_cast<uint16_t>(c.msrs.star >> 48);
    c.lf.op = FlagOp::None;
    c.rflags = (c.gpr[R11] & 0x3c7fd7ULL) | x86::kRflagsFixed;
    if (to64) {
        set_segment(c, CS, flat_segment(static_cast<uint16_t>((base + 16) | 3), 0xb, 3, true, false));
        c.rip = c.gpr[RCX];
    } else {
        set_segment(c, CS, flat_segment(static_cast<uint16_t>(base | 3), 0xb, 3, false, true));
        c.rip = c.gpr[RCX] & 0xffffffffULL;
    }
    set_segment(c, SS, flat_segment(static_cast<uint16_t>((base + 8) | 3), 0x3, 3, false, true));
    c.stop_block = true;
}

void exec_sysenter(Cpu& c, const Insn&)
{
    uint16_t cs_sel = static_cast<uint16_t>(c.msrs.sysenter_cs);
    if (!(c.cr0 & x86::kCr0Pe) || (cs_sel & 0xfffc) == 0)
        raise_fault(kExcGP, 0);
    get_rflags(c);
    c.rflags &= ~(kVM | kIF | kRF);
    bool ia32e = in_ia32e(c);
    set_segment(c, CS, flat_segment(cs_sel & 0xfffc, 0xb, 0, ia32e, !ia32e));
    set_segment(c, SS, flat_segment(static_cast<uint16_t>((cs_sel & 0xfffc) + 8), 0x3, 0, false, true));
    c.gpr[RSP] = ia32e ? c.msrs.sysenter_esp : (c.msrs.sysenter_esp & 0xffffffffULL);
    c.rip = ia32e ? c.msrs.sysenter_eip : (c.msrs.sysenter_eip & 0xffffffffULL);
    c.stop_block = true;
}

void exec_sysexit(Cpu& c, const Insn& in)
{
    uint16_t cs_sel = static_cast<uint16_t>(c.msrs.sysenter_cs);
    if (!(c.cr0 & x86::kCr0Pe) || (cs_sel & 0xfffc) == 0 || c.cpl != 0)
        raise_fault(kExcGP, 0);
    bool to64 = c.mode == CpuMode::Long64 && (in.flags & kFlagRexW);
    if (to64) {
        if (!is_canonical(c.gpr[RDX]) || !is_canonical(c.gpr[RCX]))
            raise_fault(kExcGP, 0);
        set_segment(c, CS, flat_segment(static_cast<uint16_t>((cs_sel + 32) | 3), 0xb, 3, true, false));
        set_segment(c, SS, flat_segment(static_cast<uint16_t>((cs_sel + 40) | 3), 0x3, 3, false, true));
        c.gpr[RSP] = c.gpr[RCX];
        c.rip = c.gpr[RDX];
    } else {
        set_segment(c, CS, flat_segment(static_cast<uint16_t>((cs_sel + 16) | 3), 0xb, 3, false, true));
        set_segment(c, SS, flat_segment(static_cast<uint16_t>((cs_sel + 24) | 3), 0x3, 3, false, true));
        c.gpr[RSP] = c.gpr[RCX] & 0xffffffffULL;
        c.rip = c.gpr[RDX] & 0xffffffffULL;
    }
    c.stop_block = true;
}

void exec_swapgs(Cpu& c, const Insn&)
{
    if (c.mode != CpuMode::Long64)
        raise_ud();
    require_cpl0(c);
    uint64_t base = c.seg[GS].base;
    c.seg[GS].base = c.msrs.kernel_gs_base;
    c.segbase[GS] = c.seg[GS].base;
    c.msrs.kernel_gs_base = base;
}

} // namespace

FarPtr read_far_pointer(Cpu& c, const Insn& in, unsigned n)
{
    const Operand& o = in.op[n];
    if (o.kind == OpKind::Ptr) {
        unsigned size = o.size > 2 ? o.size - 2u : in.osize;
        return { in.imm & size_mask(size), static_cast<uint16_t>(in.imm2), size };
    }
    unsigned size = o.size > 2 ? o.size - 2u : in.osize;
    uint64_t ea = effective_address(c, in);
    uint64_t offset = read_mem(c, seg_linear(c, in.seg, ea), size);
    uint16_t sel = static_cast<uint16_t>(read_mem(c, seg_linear(c, in.seg, (ea + size) & addr_mask(in.asize)), 2));
    return { offset, sel, size };
}

void null_outer_segments(Cpu& c)
{
    for (uint8_t seg : { ES, DS, FS, GS }) {
        const SegmentReg& s = c.seg[seg];
        if (s.unusable)
            continue;
        bool data_or_nonconforming = !(s.type & 8) || !(s.type & 4);
        if (data_or_nonconforming && s.dpl < c.cpl)
            set_segment(c, seg, null_segment(0));
    }
}

void exec_far_jmp(Cpu& c, const Insn& in)
{
    FarPtr p = read_far_pointer(c, in, 0);
    if (c.mode == CpuMode::Real || (c.rflags & kVM)) {
        load_real_cs(c, p.selector);
        c.rip = p.offset & size_mask(p.offset_size);
        return;
    }
    CodeTarget t = far_target(c, p.selector);
    uint64_t rip = target_rip(t, p.offset, p.offset_size);
    mark_accessed(c, p.selector, t.desc);
    set_segment(c, CS, t.cs);
    c.rip = rip;
    c.stop_block = true;
}

void exec_far_call(Cpu& c, const Insn& in)
{
    FarPtr p = read_far_pointer(c, in, 0);
    unsigned size = p.offset_size;
    uint64_t sp = c.gpr[RSP];
    if (c.mode == CpuMode::Real || (c.rflags & kVM)) {
        write_stack(c, sp, -static_cast<int64_t>(size), size, c.seg[CS].selector);
        write_stack(c, sp, -2 * static_cast<int64_t>(size), size, c.rip);
        set_sp(c, sp - 2 * size);
        load_real_cs(c, p.selector);
        c.rip = p.offset & size_mask(size);
        return;
    }
    CodeTarget t = far_target(c, p.selector);
    uint64_t rip = target_rip(t, p.offset, size);
    write_stack(c, sp, -static_cast<int64_t>(size), size, c.seg[CS].selector);
    write_stack(c, sp, -2 * static_cast<int64_t>(size), size, c.rip);
    mark_accessed(c, p.selector, t.desc);
    set_sp(c, sp - 2 * size);
    set_segment(c, CS, t.cs);
    c.rip = rip;
    c.stop_block = true;
}

void exec_far_ret(Cpu& c, const Insn& in)
{
    unsigned size = in.osize;
    uint64_t imm = in.nops && in.op[0].kind == OpKind::Imm ? (in.imm & 0xffff) : 0;
    uint64_t sp = c.gpr[RSP];
    uint64_t rip = read_stack(c, sp, 0, size);
    uint16_t sel = static_cast<uint16_t>(read_stack(c, sp, size, 2));
    if (c.mode == CpuMode::Real || (c.rflags & kVM)) {
        load_real_cs(c, sel);
        c.rip = rip & size_mask(size);
        set_sp(c, sp + 2 * size + imm);
        return;
    }
    CodeTarget t = return_target(c, sel);
    unsigned new_cpl = sel & 3;
    if (new_cpl == c.cpl) {
        uint64_t new_rip = target_rip(t, rip, size);
        mark_accessed(c, sel, t.desc);
        set_segment(c, CS, t.cs);
        c.rip = new_rip;
        set_sp(c, sp + 2 * size + imm);
        c.stop_block = true;
        return;
    }
    uint64_t new_sp = read_stack(c, sp, static_cast<int64_t>(2 * size + imm), size);
    uint16_t ss_sel = static_cast<uint16_t>(read_stack(c, sp, static_cast<int64_t>(3 * size + imm), 2));
    uint64_t ss_desc = 0;
    SegmentReg ss = return_ss(c, ss_sel, new_cpl, t.is64, ss_desc);
    uint64_t new_rip = target_rip(t, rip, size);
    mark_accessed(c, sel, t.desc);
    if (ss_desc)
        mark_accessed(c, ss_sel, ss_desc);
    set_segment(c, CS, t.cs);
    c.rip = new_rip;
    set_segment(c, SS, ss);
    set_new_sp(c, new_sp + imm);
    null_outer_segments(c);
    c.stop_block = true;
}

void register_flow(HandlerTable& t)
{
    t[ZYDIS_MNEMONIC_INT] = &exec_int;
    t[ZYDIS_MNEMONIC_INT3] = &exec_int3;
    t[ZYDIS_MNEMONIC_INTO] = &exec_into;
    t[ZYDIS_MNEMONIC_INT1] = &exec_int1;
    t[ZYDIS_MNEMONIC_IRET] = &exec_iret;
    t[ZYDIS_MNEMONIC_IRETD] = &exec_iret;
    t[ZYDIS_MNEMONIC_IRETQ] = &exec_iret;
    t[ZYDIS_MNEMONIC_SYSCALL] = &exec_syscall;
    t[ZYDIS_MNEMONIC_SYSRET] = &exec_sysret;
    t[ZYDIS_MNEMONIC_SYSENTER] = &exec_sysenter;
    t[ZYDIS_MNEMONIC_SYSEXIT] = &exec_sysexit;
    t[ZYDIS_MNEMONIC_SWAPGS] = &exec_swapgs;
}

} // namespace vessel::soft::sys
