// Event delivery: real-mode IVT, protected-mode IDT (16/32-bit interrupt and trap gates, stack
// switch through the 16/32-bit TSS), IA-32e IDT (64-bit gates, IST, RSP0-2 from the 64-bit TSS),
// and the double-fault rules (SDM vol. 3 §6.12-6.15, table 6-5).
//
// Fault atomicity: every check and every memory access that can fault (IDT, GDT, TSS, the pushes
// onto the new stack) happens before the first register is changed. A fault while delivering
// leaves the vCPU as it was, so deliver_fault can deliver the second exception (or #DF) from the
// original state.
#include "engine/soft/exceptions.h"

#include "engine/soft/exec_sys.h"
#include "engine/soft/flags.h"
#include "engine/soft/mmu.h"
#include "engine/soft/segments.h"

namespace vessel::soft {

namespace {

bool is_software(EventKind k) { return k == EventKind::SoftInt || k == EventKind::SoftException; }

// EXT (bit 0 of selector error codes): the event is not an INT n / INT3 / INTO of the program.
uint32_t ext_bit(EventKind k) { return is_software(k) ? 0 : 1; }

uint64_t legacy_linear(uint64_t a) { return a & 0xffffffffULL; }

void store(Cpu& c, uint64_t linear, unsigned size, uint64_t v, bool user)
{
    linear_write_slow(c, linear, &v, size, user);
}

constexpr uint64_t kAccessed = 1ULL << 40;

void deliver_real(Cpu& c, uint8_t vector)
{
    // Real mode pushes no error codes; the #GP below reaches the IVT's #GP entry the same way.
    if (vector * 4u + 3 > c.idt.limit)
        raise_fault(kExcGP, 0);
    uint32_t entry = read_sys<uint32_t>(c, legacy_linear(c.idt.base + vector * 4u));
    uint64_t flags = get_rflags(c);
    uint64_t sp = c.gpr[RSP];
    write_stack(c, sp, -2, 2, flags);
    write_stack(c, sp, -4, 2, c.seg[CS].selector);
    write_stack(c, sp, -6, 2, c.rip);
    set_sp(c, sp - 6);
    c.rflags &= ~(kIF | kTF | kAC | kRF);
    SegmentReg cs = c.seg[CS];
    cs.selector = static_cast<uint16_t>(entry >> 16);
    cs.base = static_cast<uint64_t>(cs.selector) << 4;
    set_segment(c, CS, cs);
    c.rip = entry & 0xffff;
}

// Code segment named by a gate: checks of SDM "INT n" for the target CS.
uint64_t gate_target_cs(Cpu& c, uint16_t sel, uint32_t ext)
{
    if ((sel & 0xfffc) == 0)
        raise_fault(kExcGP, ext);
    uint64_t d = read_descriptor(c, sel, nullptr, ext);
    if (!desc_is_code(d) || desc_dpl(d) > c.cpl)
        raise_fault(kExcGP, selector_error(sel, ext));
    return d;
}

void deliver_protected(Cpu& c, uint8_t vector, EventKind kind, bool has_error, uint32_t error_code)
{
    uint32_t ext = ext_bit(kind);
    uint32_t gate_error = vector * 8u + 2 + ext;
    if (c.rflags & kVM)
        abort_engine("virtual-8086 mode is not supported by the soft engine", vector);
    if (vector * 8u + 7 > c.idt.limit)
        raise_fault(kExcGP, gate_error);
    uint64_t gate = read_sys<uint64_t>(c, legacy_linear(c.idt.base + vector * 8u));
    unsigned type = static_cast<unsigned>((gate >> 40) & 0x1f); // with the S bit (must be 0)
    if (type != 0x5 && type != 0x6 && type != 0x7 && type != 0xe && type != 0xf)
        raise_fault(kExcGP, gate_error);
    if (is_software(kind) && desc_dpl(gate) < c.cpl)
        raise_fault(kExcGP, vector * 8u + 2);
    if (!desc_present(gate))
        raise_fault(kExcNP, gate_error);
    if (type == 0x5)
        abort_engine("task gates are not supported by the soft engine", vector);
    bool trap = type & 1;
    bool gate32 = type & 8;
    uint16_t sel = static_cast<uint16_t>(gate >> 16);
    uint64_t offset = (gate & 0xffff) | ((gate >> 32) & 0xffff0000ULL);
    if (!gate32)
        offset &= 0xffff;

    uint64_t d = gate_target_cs(c, sel, ext);
    if (!desc_present(d))
        raise_fault(kExcNP, selector_error(sel, ext));
    SegmentReg cs = unpack_descriptor(sel, d | kAccessed);
    if (offset > cs.limit)
        raise_fault(kExcGP, ext);
    bool conforming = desc_type(d) & 4;
    unsigned size = gate32 ? 4 : 2;
    uint64_t flags = get_rflags(c);
    uint64_t frame[6];
    unsigned n = 0;
    uint8_t new_cpl = c.cpl;

    if (!conforming && cs.dpl < c.cpl) {
        // Inner privilege: SS:ESP for the new CPL from the TSS.
        new_cpl = cs.dpl;
        const SegmentReg& tr = c.tr;
        bool tss32 = tr.type == 9 || tr.type == 11;
        bool tss16 = tr.type == 1 || tr.type == 3;
        uint32_t tss_error = selector_error(tr.selector, ext);
        if (tr.unusable || (!tss32 && !tss16))
            raise_fault(kExcTS, tss_error);
        uint64_t new_sp;
        uint16_t ss_sel;
        if (tss32) {
            uint32_t off = 4 + new_cpl * 8u;
            if (off + 5 > tr.limit)
                raise_fault(kExcTS, tss_error);
            new_sp = read_sys<uint32_t>(c, legacy_linear(tr.base + off));
            ss_sel = read_sys<uint16_t>(c, legacy_linear(tr.base + off + 4));
        } else {
            uint32_t off = 2 + new_cpl * 4u;
            if (off + 3 > tr.limit)
                raise_fault(kExcTS, tss_error);
            new_sp = read_sys<uint16_t>(c, legacy_linear(tr.base + off));
            ss_sel = read_sys<uint16_t>(c, legacy_linear(tr.base + off + 2));
        }
        if ((ss_sel & 0xfffc) == 0)
            raise_fault(kExcTS, ext);
        uint64_t sd = 0;
        if (!fetch_descriptor(c, ss_sel, sd))
            raise_fault(kExcTS, selector_error(ss_sel, ext));
        if ((ss_sel & 3u) != new_cpl || desc_dpl(sd) != new_cpl || !desc_is_data(sd) || !(desc_type(sd) & 2))
            raise_fault(kExcTS, selector_error(ss_sel, ext));
        if (!desc_present(sd))
            raise_fault(kExcSS, selector_error(ss_sel, ext));
        SegmentReg ss = unpack_descriptor(ss_sel, sd | kAccessed);

        frame[n++] = c.seg[SS].selector;
        frame[n++] = c.gpr[RSP];
        frame[n++] = flags;
        frame[n++] = c.seg[CS].selector;
        frame[n++] = c.rip;
        if (has_error)
            frame[n++] = error_code;
        uint64_t mask = ss.db ? 0xffffffffULL : 0xffffULL;
        for (unsigned i = 0; i < n; ++i)
            store(c, legacy_linear(ss.base + ((new_sp - (i + 1) * size) & mask)), size, frame[i], false);
        mark_accessed(c, ss_sel, sd);
        mark_accessed(c, sel, d);
        uint64_t sp = new_sp - n * size;
        set_segment(c, SS, ss);
        c.gpr[RSP] = ss.db ? (sp & mask) : ((new_sp & ~mask) | (sp & mask));
    } else {
        frame[n++] = flags;
        frame[n++] = c.seg[CS].selector;
        frame[n++] = c.rip;
        if (has_error)
            frame[n++] = error_code;
        uint64_t sp = c.gpr[RSP];
        for (unsigned i = 0; i < n; ++i)
            write_stack(c, sp, -static_cast<int64_t>((i + 1) * size), size, frame[i]);
        mark_accessed(c, sel, d);
        set_sp(c, sp - n * size);
    }
    cs.selector = static_cast<uint16_t>((sel & 0xfffc) | new_cpl);
    set_segment(c, CS, cs);
    c.rip = offset;
    c.rflags &= ~(kTF | kNT | kRF | kVM);
    if (!trap)
        c.rflags &= ~kIF;
}

void deliver_long(Cpu& c, uint8_t vector, EventKind kind, bool has_error, uint32_t error_code)
{
    uint32_t ext = ext_bit(kind);
    uint32_t gate_error = vector * 8u + 2 + ext;
    if (vector * 16u + 15 > c.idt.limit)
        raise_fault(kExcGP, gate_error);
    uint64_t lo = read_sys<uint64_t>(c, c.idt.base + vector * 16u);
    uint64_t hi = read_sys<uint64_t>(c, c.idt.base + vector * 16u + 8);
    unsigned type = static_cast<unsigned>((lo >> 40) & 0x1f);
    if ((type != 0xe && type != 0xf) || ((hi >> 40) & 0x1f) != 0)
        raise_fault(kExcGP, gate_error);
    if (is_software(kind) && desc_dpl(lo) < c.cpl)
        raise_fault(kExcGP, vector * 8u + 2);
    if (!desc_present(lo))
        raise_fault(kExcNP, gate_error);
    bool trap = type & 1;
    uint16_t sel = static_cast<uint16_t>(lo >> 16);
    uint64_t offset = (lo & 0xffff) | ((lo >> 32) & 0xffff0000ULL) | (hi << 32);
    unsigned ist = static_cast<unsigned>((lo >> 32) & 7);

    uint64_t d = gate_target_cs(c, sel, ext);
    bool l = (d >> 53) & 1, db = (d >> 54) & 1;
    if (!l || db)
        raise_fault(kExcGP, selector_error(sel, ext));
    if (!desc_present(d))
        raise_fault(kExcNP, selector_error(sel, ext));
    if (!is_canonical(offset))
        raise_fault(kExcGP, ext);
    SegmentReg cs = unpack_descriptor(sel, d | kAccessed);
    bool conforming = desc_type(d) & 4;
    bool inner = !conforming && cs.dpl < c.cpl;
    uint8_t new_cpl = inner ? cs.dpl : c.cpl;

    uint64_t rsp = c.gpr[RSP];
    if (inner || ist) {
        const SegmentReg& tr = c.tr;
        uint32_t tss_error = selector_error(tr.selector, ext);
        if (tr.unusable || (tr.type != 9 && tr.type != 11))
            raise_fault(kExcTS, tss_error);
        uint32_t off = ist ? 0x24 + (ist - 1) * 8u : 4 + new_cpl * 8u;
        if (off + 7 > tr.limit)
            raise_fault(kExcTS, tss_error);
        rsp = read_sys<uint64_t>(c, tr.base + off);
        if (!is_canonical(rsp))
            raise_fault(kExcSS, ext);
    }
    rsp &= ~0xfULL;

    uint64_t frame[6];
    unsigned n = 0;
    frame[n++] = c.seg[SS].selector;
    frame[n++] = c.gpr[RSP];
    frame[n++] = get_rflags(c);
    frame[n++] = c.seg[CS].selector;
    frame[n++] = c.rip;
    if (has_error)
        frame[n++] = error_code;
    for (unsigned i = 0; i < n; ++i)
        store(c, rsp - (i + 1) * 8, 8, frame[i], new_cpl == 3);
    mark_accessed(c, sel, d);

    if (inner)
        set_segment(c, SS, null_segment(new_cpl, new_cpl));
    c.gpr[RSP] = rsp - n * 8;
    cs.selector = static_cast<uint16_t>((sel & 0xfffc) | new_cpl);
    set_segment(c, CS, cs);
    c.rip = offset;
    c.rflags &= ~(kTF | kNT | kRF | kVM);
    if (!trap)
        c.rflags &= ~kIF;
}

enum class FaultClass : uint8_t { Benign, Contributory, PageFault, DoubleFault };

FaultClass classify(uint8_t vector)
{
    switch (vector) {
    case kExcDE:
    case kExcTS:
    case kExcNP:
    case kExcSS:
    case kExcGP: return FaultClass::Contributory;
    case kExcPF: return FaultClass::PageFault;
    case kExcDF: return FaultClass::DoubleFault;
    default: return FaultClass::Benign;
    }
}

} // namespace

void deliver_event(Cpu& c, uint8_t vector, EventKind kind, bool has_error, uint32_t error_code)
{
    if (!(c.cr0 & x86::kCr0Pe))
        deliver_real(c, vector);
    else if (c.efer & x86::kEferLma)
        deliver_long(c, vector, kind, has_error, error_code);
    else
        deliver_protected(c, vector, kind, has_error, error_code);
    c.interrupt_shadow = 0;
    c.halted = false;
    if (kind == EventKind::Nmi)
        c.nmi_masked = true;
    c.stop_block = true;
}

void deliver_fault(Cpu& c, const GuestFault& fault)
{
    GuestFault cur = fault;
    // Bounded: each round either delivers, escalates (→ #DF → triple fault) or moves on to an
    // exception raised by the delivery itself, which is contributory or a page fault.
    for (unsigned round = 0; round < 8; ++round) {
        if (cur.vector == kExcPF)
            c.cr2 = cur.cr2;
        try {
            deliver_event(c, cur.vector, EventKind::Exception, cur.has_error, cur.error_code);
            return;
        } catch (const GuestFault& next) {
            FaultClass first = classify(cur.vector);
            FaultClass second = classify(next.vector);
            bool serious = second == FaultClass::Contributory || second == FaultClass::PageFault;
            if (first == FaultClass::DoubleFault && serious)
                throw TripleFault {};
            if ((first == FaultClass::Contributory && second == FaultClass::Contributory)
                || (first == FaultClass::PageFault && serious))
                cur = GuestFault { kExcDF, true, 0, 0 };
            else
                cur = next;
        }
    }
    throw TripleFault {};
}

} // namespace vessel::soft
