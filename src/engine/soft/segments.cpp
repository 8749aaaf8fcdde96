// Segment register loads, descriptor tables and the reset state.
#include "engine/soft/segments.h"

#include "engine/soft/cpuid.h"
#include "engine/soft/exec_sys.h"
#include "engine/soft/flags.h"
#include "engine/soft/mmu.h"

namespace vessel::soft {

namespace {

// Linear address of a descriptor-table entry: 64-bit in IA-32e mode, 32-bit otherwise.
uint64_t table_linear(const Cpu& c, uint64_t addr) { return (c.efer & x86::kEferLma) ? addr : (addr & 0xffffffffULL); }

bool table_of(const Cpu& c, uint16_t selector, uint64_t& base, uint64_t& limit)
{
    if (selector & 4) {
        if (c.ldtr.unusable || !c.ldtr.present || (c.ldtr.selector & 0xfffc) == 0)
            return false;
        base = c.ldtr.base;
        limit = c.ldtr.limit;
    } else {
        base = c.gdt.base;
        limit = c.gdt.limit;
    }
    return true;
}

// Real-mode segment load: base = selector << 4; limit and attributes keep their values (this is
// what makes "unreal mode" work), but the register becomes usable.
void load_real(Cpu& c, uint8_t seg, uint16_t selector)
{
    SegmentReg s = c.seg[seg];
    s.selector = selector;
    s.base = static_cast<uint64_t>(selector) << 4;
    s.present = 1;
    s.unusable = 0;
    set_segment(c, seg, s);
}

void load_ss(Cpu& c, uint16_t selector)
{
    uint8_t rpl = selector & 3;
    if ((selector & 0xfffc) == 0) {
        // A null SS is legal only in 64-bit mode below CPL 3 with RPL = CPL.
        if (c.mode == CpuMode::Long64 && c.cpl < 3 && rpl == c.cpl) {
            set_segment(c, SS, null_segment(selector, c.cpl));
            return;
        }
        raise_fault(kExcGP, 0);
    }
    uint64_t d = read_descriptor(c, selector);
    if (rpl != c.cpl || !desc_is_data(d) || !(desc_type(d) & 2) || desc_dpl(d) != c.cpl)
        raise_fault(kExcGP, selector_error(selector));
    if (!desc_present(d))
        raise_fault(kExcSS, selector_error(selector));
    mark_accessed(c, selector, d);
    set_segment(c, SS, unpack_descriptor(selector, d | (1ULL << 40)));
}

void load_data(Cpu& c, uint8_t seg, uint16_t selector)
{
    if ((selector & 0xfffc) == 0) {
        set_segment(c, seg, null_segment(selector));
        return;
    }
    uint64_t d = read_descriptor(c, selector);
    unsigned type = desc_type(d);
    bool code = desc_is_code(d);
    // Data or readable code only.
    if (!desc_s(d) || (code && !(type & 2)))
        raise_fault(kExcGP, selector_error(selector));
    // Data and non-conforming code: RPL and CPL must not exceed DPL.
    bool conforming = code && (type & 4);
    if (!conforming && ((selector & 3u) > desc_dpl(d) || c.cpl > desc_dpl(d)))
        raise_fault(kExcGP, selector_error(selector));
    if (!desc_present(d))
        raise_fault(kExcNP, selector_error(selector));
    mark_accessed(c, selector, d);
    set_segment(c, seg, unpack_descriptor(selector, d | (1ULL << 40)));
}

// CS with the checks of a far JMP to a code segment of the current privilege.
void load_cs(Cpu& c, uint16_t selector)
{
    if ((selector & 0xfffc) == 0)
        raise_fault(kExcGP, 0);
    uint64_t d = read_descriptor(c, selector);
    if (!desc_is_code(d))
        raise_fault(kExcGP, selector_error(selector));
    bool conforming = desc_type(d) & 4;
    if (conforming ? desc_dpl(d) > c.cpl : ((selector & 3u) > c.cpl || desc_dpl(d) != c.cpl))
        raise_fault(kExcGP, selector_error(selector));
    if (!desc_present(d))
        raise_fault(kExcNP, selector_error(selector));
    if ((c.efer & x86::kEferLma) && ((d >> 53) & 1) && ((d >> 54) & 1))
        raise_fault(kExcGP, selector_error(selector)); // L and D both set
    mark_accessed(c, selector, d);
    SegmentReg s = unpack_descriptor(static_cast<uint16_t>((selector & 0xfffc) | c.cpl), d | (1ULL << 40));
    set_segment(c, CS, s);
}

} // namespace

bool fetch_descriptor(Cpu& c, uint16_t selector, uint64_t& low, uint64_t* high)
{
    uint64_t base = 0, limit = 0;
    if (!table_of(c, selector, base, limit))
        return false;
    uint64_t off = selector & 0xfff8u;
    if (off + (high ? 15 : 7) > limit)
        return false;
    low = read_sys<uint64_t>(c, table_linear(c, base + off));
    if (high)
        *high = read_sys<uint64_t>(c, table_linear(c, base + off + 8));
    return true;
}

uint64_t read_descriptor(Cpu& c, uint16_t selector, uint64_t* high, uint32_t ext)
{
    uint64_t low = 0;
    if (!fetch_descriptor(c, selector, low, high))
        raise_fault(kExcGP, selector_error(selector, ext));
    return low;
}

SegmentReg unpack_descriptor(uint16_t selector, uint64_t d, uint64_t high)
{
    SegmentReg s;
    s.selector = selector;
    uint32_t limit = static_cast<uint32_t>((d & 0xffff) | ((d >> 32) & 0xf0000));
    s.base = ((d >> 16) & 0xffffff) | (((d >> 56) & 0xff) << 24);
    s.type = static_cast<uint8_t>(desc_type(d));
    s.s = desc_s(d) ? 1 : 0;
    s.dpl = static_cast<uint8_t>(desc_dpl(d));
    s.present = desc_present(d) ? 1 : 0;
    s.avl = (d >> 52) & 1;
    s.l = (d >> 53) & 1;
    s.db = (d >> 54) & 1;
    s.g = (d >> 55) & 1;
    s.limit = s.g ? ((limit << 12) | 0xfff) : limit;
    if (!s.s)
        s.base |= (high & 0xffffffffULL) << 32;
    s.unusable = 0;
    return s;
}

void mark_accessed(Cpu& c, uint16_t selector, uint64_t d)
{
    if (!desc_s(d) || (d & (1ULL << 40)))
        return;
    uint64_t base = 0, limit = 0;
    if (!table_of(c, selector, base, limit))
        return;
    write_sys<uint8_t>(c, table_linear(c, base + (selector & 0xfff8u) + 5), static_cast<uint8_t>((d >> 40) | 1));
}

SegmentReg null_segment(uint16_t selector, uint8_t dpl)
{
    SegmentReg s;
    s.selector = selector;
    s.unusable = 1;
    s.dpl = dpl;
    return s;
}

void set_segment(Cpu& c, uint8_t seg, const SegmentReg& value)
{
    c.seg[seg] = value;
    if (seg == CS || seg == SS) {
        c.update_mode();
        c.stop_block = true;
    } else {
        c.segbase[seg] = (c.mode == CpuMode::Long64 && seg < FS) ? 0 : value.base;
    }
}

void load_segment(Cpu& c, uint8_t seg, uint16_t selector)
{
    if (c.mode == CpuMode::Real || (c.rflags & kVM)) {
        load_real(c, seg, selector);
        return;
    }
    switch (seg) {
    case CS: load_cs(c, selector); break;
    case SS: load_ss(c, selector); break;
    default: load_data(c, seg, selector); break;
    }
}

void reset_cpu(Cpu& c)
{
    c.gpr.fill(0);
    c.gpr[RDX] = kCpuidSignature;
    c.rip = 0xfff0;
    c.insn_start = 0xfff0;
    c.lf = LazyFlags {};
    c.rflags = x86::kRflagsFixed;

    SegmentReg data;
    data.limit = 0xffff;
    data.type = 3; // read/write, accessed
    data.s = 1;
    data.present = 1;
    for (unsigned i = 0; i < 6; ++i)
        c.seg[i] = data;
    c.seg[CS].selector = 0xf000;
    c.seg[CS].base = 0xffff0000ULL;
    c.seg[CS].type = 0xb; // execute/read, accessed

    c.ldtr = SegmentReg {};
    c.ldtr.limit = 0xffff;
    c.ldtr.type = 2;
    c.ldtr.present = 1;
    c.tr = SegmentReg {};
    c.tr.limit = 0xffff;
    c.tr.type = 0xb;
    c.tr.present = 1;
    c.gdt = DescriptorTableReg { 0, 0xffff };
    c.idt = DescriptorTableReg { 0, 0xffff };

    c.cr0 = 0x60000010;
    c.cr2 = c.cr3 = c.cr4 = 0;
    c.efer = 0;
    c.xcr0 = 1;
    c.dr.fill(0);
    c.dr6 = 0xffff0ff0;
    c.dr7 = 0x400;
    c.msrs = MsrState {};

    // x87/SSE power-on state: FCW 0x0040, everything else zero, MXCSR 0x1F80.
    c.fx.fill(0);
    c.fx[0] = 0x40;
    c.fx[24] = 0x80;
    c.fx[25] = 0x1f;

    c.interrupt_shadow = 0;
    c.halted = false;
    c.nmi_masked = false;
    flush_tlb(c);
    c.update_mode();
    c.stop_block = true;
}

} // namespace vessel::soft
