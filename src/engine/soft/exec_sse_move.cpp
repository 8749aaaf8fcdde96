// SSE/SSE2 data movement: MOVD/MOVQ (XMM, MMX and GPR forms), full-register moves (aligned,
// unaligned and non-temporal), MOVSS/MOVSD (the SSE2 scalar move; the string MOVSD goes to the
// integer group, exec_int_string.cpp), half-register moves, MOVNTI, MASKMOVDQU/MASKMOVQ, MOVMSKPS/PD.
#include "engine/soft/exec_sse_common.h"

namespace vessel::soft::sse {

namespace {

bool is_mmx_form(const Insn& in)
{
    for (unsigned i = 0; i < in.nops; ++i)
        if (in.op[i].kind == OpKind::Mmx)
            return true;
    return false;
}

// MOVD (32-bit) and MOVQ (64-bit): between XMM/MMX registers, GPRs and memory. Loads into a
// vector register zero-extend; MOVQ xmm, xmm copies the low quadword and clears the high one.
void exec_movd_movq(Cpu& c, const Insn& in)
{
    const Operand& d = in.op[0];
    const Operand& s = in.op[1];
    unsigned size = in.mnemonic == ZYDIS_MNEMONIC_MOVD ? 4 : 8;
    bool mmx = is_mmx_form(in);
    if (mmx)
        check_mmx(c);
    else
        check_sse(c);
    uint64_t v;
    switch (s.kind) {
    case OpKind::Xmm: v = lo64(xmm(c, s.reg)); break;
    case OpKind::Mmx: v = mm(c, s.reg); break;
    case OpKind::Gpr: v = read_gpr(c, s.reg, s.size ? s.size : size); break;
    case OpKind::Mem: v = read_mem(c, mem_linear(c, in), size); break;
    default: abort_engine("MOVD/MOVQ: unexpected source", static_cast<uint64_t>(s.kind));
    }
    v &= size_mask(size);
    switch (d.kind) {
    case OpKind::Xmm: set_xmm(c, d.reg, make128(v, 0)); break;
    case OpKind::Mmx: set_mm(c, d.reg, v); break;
    case OpKind::Gpr: write_gpr(c, d.reg, d.size ? d.size : size, v); break;
    case OpKind::Mem: write_mem(c, mem_linear(c, in), size, v); break;
    default: abort_engine("MOVD/MOVQ: unexpected destination", static_cast<uint64_t>(d.kind));
    }
    if (mmx)
        enter_mmx(c);
}

void exec_movq2dq(Cpu& c, const Insn& in)
{
    check_sse(c);
    check_mmx(c);
    set_xmm(c, in.op[0].reg, make128(mm(c, in.op[1].reg), 0));
    enter_mmx(c);
}

void exec_movdq2q(Cpu& c, const Insn& in)
{
    check_sse(c);
    check_mmx(c);
    set_mm(c, in.op[0].reg, lo64(xmm(c, in.op[1].reg)));
    enter_mmx(c);
}

// 128-bit moves. Aligned forms (MOVDQA/MOVAPS/MOVAPD and the non-temporal stores) #GP on a
// misaligned memory operand.
template<bool kAligned>
void exec_mov128(Cpu& c, const Insn& in)
{
    check_sse(c);
    const Operand& d = in.op[0];
    if (d.kind == OpKind::Xmm) {
        set_xmm(c, d.reg, read_src(c, in, 1, 16, !kAligned));
        return;
    }
    store128(c, mem_addr(c, in, kAligned ? 16 : 1), xmm(c, in.op[1].reg));
}

void exec_movntq(Cpu& c, const Insn& in)
{
    check_mmx(c);
    write_mem(c, mem_linear(c, in), 8, mm(c, in.op[1].reg));
    enter_mmx(c);
}

// MOVSS / MOVSD (SSE2): register to register merges the low element; a load zero-extends.
template<unsigned kSize>
void scalar_move(Cpu& c, const Insn& in)
{
    check_sse(c);
    const Operand& d = in.op[0];
    const Operand& s = in.op[1];
    if (d.kind == OpKind::Mem) {
        write_mem(c, mem_linear(c, in), kSize, lo64(xmm(c, s.reg)));
        return;
    }
    if (s.kind == OpKind::Mem) {
        set_xmm(c, d.reg, make128(read_mem(c, mem_linear(c, in), kSize), 0));
        return;
    }
    __m128i a = xmm(c, d.reg), b = xmm(c, s.reg);
    if constexpr (kSize == 4)
        set_xmm(c, d.reg, _mm_castps_si128(_mm_move_ss(_mm_castsi128_ps(a), _mm_castsi128_ps(b))));
    else
        set_xmm(c, d.reg, make128(lo64(b), hi64(a)));
}

void exec_movss(Cpu& c, const Insn& in)
{
    scalar_move<4>(c, in);
}

// Zydis calls both the string move (A5) and the SSE2 scalar move (F2 0F 10/11) MOVSD. The
// integer group registers after us, runs the string form and passes the SSE2 form here.
void exec_movsd(Cpu& c, const Insn& in)
{
    if (in.opmap == 0)
        return exec_unimplemented(c, in);
    scalar_move<8>(c, in);
}

// MOVLPS/MOVLPD (kHigh = false) and MOVHPS/MOVHPD (kHigh = true): one quadword between memory
// and the low or high half of an XMM register.
template<bool kHigh>
void exec_movhalf(Cpu& c, const Insn& in)
{
    check_sse(c);
    const Operand& d = in.op[0];
    if (d.kind == OpKind::Mem) {
        __m128i v = xmm(c, in.op[1].reg);
        write_mem(c, mem_linear(c, in), 8, kHigh ? hi64(v) : lo64(v));
        return;
    }
    uint64_t q = in.op[1].kind == OpKind::Mem ? read_mem(c, mem_linear(c, in), 8) : lo64(xmm(c, in.op[1].reg));
    __m128i a = xmm(c, d.reg);
    set_xmm(c, d.reg, kHigh ? make128(lo64(a), q) : make128(q, hi64(a)));
}

void exec_movhlps(Cpu& c, const Insn& in)
{
    check_sse(c);
    __m128i a = xmm(c, in.op[0].reg), b = xmm(c, in.op[1].reg);
    set_xmm(c, in.op[0].reg, make128(hi64(b), hi64(a)));
}

void exec_movlhps(Cpu& c, const Insn& in)
{
    check_sse(c);
    __m128i a = xmm(c, in.op[0].reg), b = xmm(c, in.op[1].reg);
    set_xmm(c, in.op[0].reg, make128(lo64(a), lo64(b)));
}

// MOVNTI is a GPR store: no CR0/CR4 conditions.
void exec_movnti(Cpu& c, const Insn& in)
{
    write_op(c, in, 0, read_op(c, in, 1));
}

// MASKMOVDQU / MASKMOVQ: stores the bytes of the first operand whose mask byte (second
// operand) has its top bit set, to DS:rDI (segment override allowed). Every page that will be
// written is checked first, so a fault stores nothing.
void masked_store(Cpu& c, const Insn& in, const uint8_t* data, const uint8_t* mask, unsigned n)
{
    unsigned first = n, last = 0;
    for (unsigned i = 0; i < n; ++i) {
        if (mask[i] & 0x80) {
            first = i < first ? i : first;
            last = i;
        }
    }
    if (first == n)
        return;
    uint8_t seg = (in.flags & kFlagSegOverride) ? in.seg : static_cast<uint8_t>(DS);
    uint64_t lin = seg_linear(c, seg, c.gpr[RDI] & addr_mask(in.asize ? in.asize : 8));
    bool user = c.cpl == 3;
    translate(c, lin + first, Access::Write, user);
    if (((lin + first) ^ (lin + last)) >> 12)
        translate(c, lin + last, Access::Write, user);
    for (unsigned i = first; i <= last; ++i)
        if (mask[i] & 0x80)
            write_linear<uint8_t>(c, lin + i, data[i]);
}

void exec_maskmovdqu(Cpu& c, const Insn& in)
{
    check_sse(c);
    M128 data { { lo64(xmm(c, in.op[0].reg)), hi64(xmm(c, in.op[0].reg)) } };
    M128 mask { { lo64(xmm(c, in.op[1].reg)), hi64(xmm(c, in.op[1].reg)) } };
    masked_store(c, in, reinterpret_cast<const uint8_t*>(data.q), reinterpret_cast<const uint8_t*>(mask.q), 16);
}

void exec_maskmovq(Cpu& c, const Insn& in)
{
    check_mmx(c);
    uint64_t data = mm(c, in.op[0].reg), mask = mm(c, in.op[1].reg);
    masked_store(c, in, reinterpret_cast<const uint8_t*>(&data), reinterpret_cast<const uint8_t*>(&mask), 8);
    enter_mmx(c);
}

void exec_movmskps(Cpu& c, const Insn& in)
{
    check_sse(c);
    unsigned m = static_cast<unsigned>(_mm_movemask_ps(_mm_castsi128_ps(xmm(c, in.op[1].reg))));
    write_gpr(c, in.op[0].reg, in.op[0].size == 8 ? 8 : 4, m);
}

void exec_movmskpd(Cpu& c, const Insn& in)
{
    check_sse(c);
    unsigned m = static_cast<unsigned>(_mm_movemask_pd(_mm_castsi128_pd(xmm(c, in.op[1].reg))));
    write_gpr(c, in.op[0].reg, in.op[0].size == 8 ? 8 : 4, m);
}

} // namespace

void register_sse_move(HandlerTable& t)
{
    t[ZYDIS_MNEMONIC_MOVD] = &exec_movd_movq;
    t[ZYDIS_MNEMONIC_MOVQ] = &exec_movd_movq;
    t[ZYDIS_MNEMONIC_MOVQ2DQ] = &exec_movq2dq;
    t[ZYDIS_MNEMONIC_MOVDQ2Q] = &exec_movdq2q;
    for (auto m : { ZYDIS_MNEMONIC_MOVDQA, ZYDIS_MNEMONIC_MOVAPS, ZYDIS_MNEMONIC_MOVAPD, ZYDIS_MNEMONIC_MOVNTDQ,
             ZYDIS_MNEMONIC_MOVNTPS, ZYDIS_MNEMONIC_MOVNTPD })
        t[m] = &exec_mov128<true>;
    for (auto m : { ZYDIS_MNEMONIC_MOVDQU, ZYDIS_MNEMONIC_MOVUPS, ZYDIS_MNEMONIC_MOVUPD, ZYDIS_MNEMONIC_LDDQU })
        t[m] = &exec_mov128<false>;
    t[ZYDIS_MNEMONIC_MOVNTQ] = &exec_movntq;
    t[ZYDIS_MNEMONIC_MOVSS] = &exec_movss;
    t[ZYDIS_MNEMONIC_MOVSD] = &exec_movsd;
    t[ZYDIS_MNEMONIC_MOVLPS] = &exec_movhalf<false>;
    t[ZYDIS_MNEMONIC_MOVLPD] = &exec_movhalf<false>;
    t[ZYDIS_MNEMONIC_MOVHPS] = &exec_movhalf<true>;
    t[ZYDIS_MNEMONIC_MOVHPD] = &exec_movhalf<true>;
    t[ZYDIS_MNEMONIC_MOVHLPS] = &exec_movhlps;
    t[ZYDIS_MNEMONIC_MOVLHPS] = &exec_movlhps;
    t[ZYDIS_MNEMONIC_MOVNTI] = &exec_movnti;
    t[ZYDIS_MNEMONIC_MASKMOVDQU] = &exec_maskmovdqu;
    t[ZYDIS_MNEMONIC_MASKMOVQ] = &exec_maskmovq;
    t[ZYDIS_MNEMONIC_MOVMSKPS] = &exec_movmskps;
    t[ZYDIS_MNEMONIC_MOVMSKPD] = &exec_movmskpd;
}

} // namespace vessel::soft::sse
