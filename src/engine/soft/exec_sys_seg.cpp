// Segment registers (MOV/PUSH/POP Sreg, LDS/LES/LFS/LGS/LSS), descriptor queries (LAR, LSL,
// VERR, VERW) and the system flags (CLI, STI, PUSHF, POPF).
#include "engine/soft/exec_sys.h"
#include "engine/soft/platform.h"
#include "engine/soft/segments.h"

namespace vessel::soft::sys {

namespace {

void no_vm86(const Cpu& c)
{
    if (c.rflags & kVM)
        abort_engine("virtual-8086 mode is not supported by the soft engine", c.insn_start);
}

void require_protected(const Cpu& c)
{
    if (c.mode == CpuMode::Real || (c.rflags & kVM))
        raise_ud();
}

void exec_load_far_pointer(Cpu& c, const Insn& in)
{
    uint8_t seg;
    switch (in.mnemonic) {
    case ZYDIS_MNEMONIC_LDS: seg = DS; break;
    case ZYDIS_MNEMONIC_LES: seg = ES; break;
    case ZYDIS_MNEMONIC_LFS: seg = FS; break;
    case ZYDIS_MNEMONIC_LGS: seg = GS; break;
    default: seg = SS; break;
    }
    FarPtr p = read_far_pointer(c, in, 1);
    load_segment(c, seg, p.selector);
    write_gpr(c, in.op[0].reg, in.op[0].size, p.offset);
    c.stop_block = true;
}

// Privilege rule of LAR/LSL/VERR/VERW: conforming code segments are always visible, everything
// else needs DPL >= CPL and DPL >= RPL.
bool visible(const Cpu& c, uint16_t sel, uint64_t d)
{
    if (desc_is_code(d) && (desc_type(d) & 4))
        return true;
    return desc_dpl(d) >= c.cpl && desc_dpl(d) >= (sel & 3u);
}

void set_zf(Cpu& c, bool zf) { set_rflags_bits(c, zf ? kZF : 0, kZF); }

void exec_lar_lsl(Cpu& c, const Insn& in)
{
    require_protected(c);
    bool lar = in.mnemonic == ZYDIS_MNEMONIC_LAR;
    uint16_t sel = static_cast<uint16_t>(read_op(c, in, 1));
    uint64_t d = 0;
    bool ok = (sel & 0xfffc) != 0 && fetch_descriptor(c, sel, d);
    if (ok && !desc_s(d)) {
        unsigned type = desc_type(d);
        if (in_ia32e(c))
            ok = type == 2 || type == 9 || type == 0xb || (lar && type == 0xc);
        else
            ok = type == 1 || type == 2 || type == 3 || type == 9 || type == 0xb
                || (lar && (type == 4 || type == 5 || type == 0xc));
    }
    ok = ok && visible(c, sel, d);
    if (ok) {
        uint64_t v;
        if (lar)
            v = (d >> 32) & (in.op[0].size == 2 ? 0xff00 : 0x00f0ff00);
        else
            v = unpack_descriptor(sel, d).limit;
        write_op(c, in, 0, v);
    }
    set_zf(c, ok);
}

void exec_verr_verw(Cpu& c, const Insn& in)
{
    require_protected(c);
    uint16_t sel = static_cast<uint16_t>(read_op(c, in, 0));
    uint64_t d = 0;
    bool ok = (sel & 0xfffc) != 0 && fetch_descriptor(c, sel, d) && desc_s(d) && visible(c, sel, d);
    if (ok) {
        bool code = desc_is_code(d);
        bool rw = desc_type(d) & 2;
        ok = in.mnemonic == ZYDIS_MNEMONIC_VERR ? (!code || rw) : (!code && rw);
    }
    set_zf(c, ok);
}

// CLI/STI/POPF(IF) in protected mode need CPL <= IOPL (no VME/PVI).
bool if_allowed(const Cpu& c) { return c.mode == CpuMode::Real || c.cpl <= iopl(c); }

void exec_cli(Cpu& c, const Insn&)
{
    no_vm86(c);
    if (!if_allowed(c))
        raise_fault(kExcGP, 0);
    c.rflags &= ~kIF;
}

void exec_sti(Cpu& c, const Insn&)
{
    no_vm86(c);
    if (!if_allowed(c))
        raise_fault(kExcGP, 0);
    if (!(c.rflags & kIF)) {
        c.rflags |= kIF;
        c.interrupt_shadow = 1; // interrupts stay blocked until the next instruction completes
        c.stop_block = true;
        interrupt_window_opened(c);
    }
}

unsigned flags_size(const Insn& in)
{
    switch (in.mnemonic) {
    case ZYDIS_MNEMONIC_PUSHFQ:
    case ZYDIS_MNEMONIC_POPFQ: return 8;
    case ZYDIS_MNEMONIC_PUSHFD:
    case ZYDIS_MNEMONIC_POPFD: return 4;
    default: return 2;
    }
}

void exec_pushf(Cpu& c, const Insn& in)
{
    no_vm86(c);
    unsigned size = flags_size(in);
    push(c, size, get_rflags(c) & ~(kVM | kRF));
}

void exec_popf(Cpu& c, const Insn& in)
{
    no_vm86(c);
    unsigned size = flags_size(in);
    uint64_t sp = c.gpr[RSP];
    uint64_t v = read_stack(c, sp, 0, size);
    // VM, VIF, VIP and reserved bits are never changed; RF is cleared; IOPL only at CPL 0;
    // IF only at CPL <= IOPL (silently kept otherwise).
    uint64_t mask = kCF | kPF | kAF | kZF | kSF | kTF | kDF | kOF | kNT | kAC | kID | kRF;
    if (c.cpl == 0)
        mask |= kIOPL;
    if (if_allowed(c))
        mask |= kIF;
    if (size == 2)
        mask &= 0xffff;
    uint64_t before = c.rflags;
    set_sp(c, sp + size);
    set_rflags_bits(c, v & ~kRF, mask);
    // The block loop must look again when interrupts became enabled.
    if (!(before & kIF) && (c.rflags & kIF)) {
        c.stop_block = true;
        interrupt_window_opened(c);
    }
}

} // namespace

void exec_mov_sreg(Cpu& c, const Insn& in)
{
    if (in.op[0].kind == OpKind::Seg) {
        uint8_t seg = in.op[0].reg;
        if (seg == CS || seg > GS)
            raise_ud();
        load_segment(c, seg, static_cast<uint16_t>(read_op(c, in, 1)));
        if (seg == SS)
            c.interrupt_shadow = 1;
        c.stop_block = true;
        return;
    }
    write_op(c, in, 0, c.seg[in.op[1].reg].selector);
}

void exec_push_sreg(Cpu& c, const Insn& in)
{
    push(c, in.osize, c.seg[in.op[0].reg].selector);
}

void exec_pop_sreg(Cpu& c, const Insn& in)
{
    uint8_t seg = in.op[0].reg;
    if (seg == CS)
        raise_ud();
    unsigned size = in.osize;
    uint64_t sp = c.gpr[RSP];
    uint16_t sel = static_cast<uint16_t>(read_stack(c, sp, 0, size));
    uint64_t m = stack_mask(c);
    uint64_t new_rsp = (c.gpr[RSP] & ~m) | ((sp + size) & m);
    load_segment(c, seg, sel);
    c.gpr[RSP] = new_rsp;
    if (seg == SS)
        c.interrupt_shadow = 1;
    c.stop_block = true;
}

void register_seg(HandlerTable& t)
{
    for (ZydisMnemonic m : { ZYDIS_MNEMONIC_LDS, ZYDIS_MNEMONIC_LES, ZYDIS_MNEMONIC_LFS, ZYDIS_MNEMONIC_LGS,
             ZYDIS_MNEMONIC_LSS })
        t[m] = &exec_load_far_pointer;
    t[ZYDIS_MNEMONIC_LAR] = &exec_lar_lsl;
    t[ZYDIS_MNEMONIC_LSL] = &exec_lar_lsl;
    t[ZYDIS_MNEMONIC_VERR] = &exec_verr_verw;
    t[ZYDIS_MNEMONIC_VERW] = &exec_verr_verw;
    t[ZYDIS_MNEMONIC_CLI] = &exec_cli;
    t[ZYDIS_MNEMONIC_STI] = &exec_sti;
    for (ZydisMnemonic m : { ZYDIS_MNEMONIC_PUSHF, ZYDIS_MNEMONIC_PUSHFD, ZYDIS_MNEMONIC_PUSHFQ })
        t[m] = &exec_pushf;
    for (ZydisMnemonic m : { ZYDIS_MNEMONIC_POPF, ZYDIS_MNEMONIC_POPFD, ZYDIS_MNEMONIC_POPFQ })
        t[m] = &exec_popf;
}

} // namespace vessel::soft::sys
