// SSE2 integer instructions (and their MMX forms where the mnemonic has one): logic, add/sub
// (wrapping and saturating), compares, min/max, averages, PSADBW, multiplies, unpacks, packs,
// shifts, shuffles, PEXTRW/PINSRW, PMOVMSKB; the bitwise and unpack FP-typed forms
// (ANDPS..XORPD, UNPCK*PS/PD, SHUFPS/PD) which raise no FP exceptions.
#include "engine/soft/exec_sse_common.h"

namespace vessel::soft::sse {

namespace {

using V2 = __m128i (*)(__m128i, __m128i);

#define VOP(name, expr)                                                                                                \
    __m128i name(__m128i a, __m128i b)                                                                                 \
    {                                                                                                                  \
        return expr;                                                                                                   \
    }

VOP(v_and, _mm_and_si128(a, b))
VOP(v_andn, _mm_andnot_si128(a, b))
VOP(v_or, _mm_or_si128(a, b))
VOP(v_xor, _mm_xor_si128(a, b))
VOP(v_addb, _mm_add_epi8(a, b))
VOP(v_addw, _mm_add_epi16(a, b))
VOP(v_addd, _mm_add_epi32(a, b))
VOP(v_addq, _mm_add_epi64(a, b))
VOP(v_subb, _mm_sub_epi8(a, b))
VOP(v_subw, _mm_sub_epi16(a, b))
VOP(v_subd, _mm_sub_epi32(a, b))
VOP(v_subq, _mm_sub_epi64(a, b))
VOP(v_addsb, _mm_adds_epi8(a, b))
VOP(v_addsw, _mm_adds_epi16(a, b))
VOP(v_addusb, _mm_adds_epu8(a, b))
VOP(v_addusw, _mm_adds_epu16(a, b))
VOP(v_subsb, _mm_subs_epi8(a, b))
VOP(v_subsw, _mm_subs_epi16(a, b))
VOP(v_subusb, _mm_subs_epu8(a, b))
VOP(v_subusw, _mm_subs_epu16(a, b))
VOP(v_cmpeqb, _mm_cmpeq_epi8(a, b))
VOP(v_cmpeqw, _mm_cmpeq_epi16(a, b))
VOP(v_cmpeqd, _mm_cmpeq_epi32(a, b))
VOP(v_cmpgtb, _mm_cmpgt_epi8(a, b))
VOP(v_cmpgtw, _mm_cmpgt_epi16(a, b))
VOP(v_cmpgtd, _mm_cmpgt_epi32(a, b))
VOP(v_minub, _mm_min_epu8(a, b))
VOP(v_maxub, _mm_max_epu8(a, b))
VOP(v_minsw, _mm_min_epi16(a, b))
VOP(v_maxsw, _mm_max_epi16(a, b))
VOP(v_avgb, _mm_avg_epu8(a, b))
VOP(v_avgw, _mm_avg_epu16(a, b))
VOP(v_sadbw, _mm_sad_epu8(a, b))
VOP(v_mullw, _mm_mullo_epi16(a, b))
VOP(v_mulhw, _mm_mulhi_epi16(a, b))
VOP(v_mulhuw, _mm_mulhi_epu16(a, b))
VOP(v_muludq, _mm_mul_epu32(a, b))
VOP(v_maddwd, _mm_madd_epi16(a, b))
VOP(v_unpcklbw, _mm_unpacklo_epi8(a, b))
VOP(v_unpcklwd, _mm_unpacklo_epi16(a, b))
VOP(v_unpckldq, _mm_unpacklo_epi32(a, b))
VOP(v_unpcklqdq, _mm_unpacklo_epi64(a, b))
VOP(v_unpckhbw, _mm_unpackhi_epi8(a, b))
VOP(v_unpckhwd, _mm_unpackhi_epi16(a, b))
VOP(v_unpckhdq, _mm_unpackhi_epi32(a, b))
VOP(v_unpckhqdq, _mm_unpackhi_epi64(a, b))
VOP(v_packsswb, _mm_packs_epi16(a, b))
VOP(v_packssdw, _mm_packs_epi32(a, b))
VOP(v_packuswb, _mm_packus_epi16(a, b))
// MMX forms whose 64-bit result is not the low half of the 128-bit operation on zero-extended
// operands: high unpacks take the upper doublewords, packs concatenate both sources first.
VOP(m_unpckhbw, _mm_unpacklo_epi8(_mm_srli_epi64(a, 32), _mm_srli_epi64(b, 32)))
VOP(m_unpckhwd, _mm_unpacklo_epi16(_mm_srli_epi64(a, 32), _mm_srli_epi64(b, 32)))
VOP(m_unpckhdq, _mm_unpacklo_epi32(_mm_srli_epi64(a, 32), _mm_srli_epi64(b, 32)))
VOP(m_packsswb, _mm_packs_epi16(_mm_unpacklo_epi64(a, b), _mm_unpacklo_epi64(a, b)))
VOP(m_packssdw, _mm_packs_epi32(_mm_unpacklo_epi64(a, b), _mm_unpacklo_epi64(a, b)))
VOP(m_packuswb, _mm_packus_epi16(_mm_unpacklo_epi64(a, b), _mm_unpacklo_epi64(a, b)))
// Shifts by a count in the low quadword of b (counts beyond the element width clear or fill).
VOP(v_sllw, _mm_sll_epi16(a, b))
VOP(v_slld, _mm_sll_epi32(a, b))
VOP(v_sllq, _mm_sll_epi64(a, b))
VOP(v_srlw, _mm_srl_epi16(a, b))
VOP(v_srld, _mm_srl_epi32(a, b))
VOP(v_srlq, _mm_srl_epi64(a, b))
VOP(v_sraw, _mm_sra_epi16(a, b))
VOP(v_srad, _mm_sra_epi32(a, b))

#undef VOP

// dst = F(dst, src) on XMM (src: xmm/m128, aligned) or MMX (src: mm/m64) registers;
// kMmx = nullptr: the mnemonic has no MMX form.
template<V2 F, V2 kMmx>
void exec_pbin(Cpu& c, const Insn& in)
{
    const Operand& d = in.op[0];
    if (d.kind == OpKind::Mmx) {
        if constexpr (kMmx == nullptr) {
            raise_ud();
        } else {
            check_mmx(c);
            uint64_t b = in.op[1].kind == OpKind::Mem ? read_mem(c, mem_linear(c, in), 8) : mm(c, in.op[1].reg);
            uint64_t r = lo64(kMmx(make128(mm(c, d.reg), 0), make128(b, 0)));
            enter_mmx(c);
            set_mm(c, d.reg, r);
        }
        return;
    }
    check_sse(c);
    __m128i b = read_src(c, in, 1, 16);
    set_xmm(c, d.reg, F(xmm(c, d.reg), b));
}

template<V2 F>
constexpr ExecFn exec_pbin_both = &exec_pbin<F, F>;

// PSLL/PSRL/PSRA: the count is an immediate or a register/memory operand.
template<V2 F>
void exec_pshift(Cpu& c, const Insn& in)
{
    const Operand& d = in.op[0];
    const Operand& s = in.op[1];
    if (d.kind == OpKind::Mmx) {
        check_mmx(c);
        uint64_t count = s.kind == OpKind::Imm ? (in.imm & 0xff)
            : s.kind == OpKind::Mem            ? read_mem(c, mem_linear(c, in), 8)
                                               : mm(c, s.reg);
        uint64_t r = lo64(F(make128(mm(c, d.reg), 0), make128(count, 0)));
        enter_mmx(c);
        set_mm(c, d.reg, r);
        return;
    }
    check_sse(c);
    __m128i count = s.kind == OpKind::Imm ? make128(in.imm & 0xff, 0) : read_src(c, in, 1, 16);
    set_xmm(c, d.reg, F(xmm(c, d.reg), count));
}

// PSLLDQ / PSRLDQ: whole-register byte shifts by an immediate.
template<bool kLeft>
void exec_pshift_dq(Cpu& c, const Insn& in)
{
    check_sse(c);
    unsigned n = static_cast<unsigned>(in.imm & 0xff);
    alignas(16) uint8_t buf[48] {};
    _mm_storeu_si128(reinterpret_cast<__m128i*>(buf + 16), xmm(c, in.op[0].reg));
    __m128i r = _mm_setzero_si128();
    if (n < 16) {
        // SAFETY: buf + 16 ± n stays within the 48-byte buffer.
        r = _mm_loadu_si128(reinterpret_cast<const __m128i*>(kLeft ? buf + 16 - n : buf + 16 + n));
    }
    set_xmm(c, in.op[0].reg, r);
}

struct Lanes {
    union {
        uint64_t q[2];
        uint32_t d[4];
        uint16_t w[8];
        uint8_t b[16];
    };
};

Lanes lanes(__m128i v)
{
    Lanes l;
    l.q[0] = lo64(v);
    l.q[1] = hi64(v);
    return l;
}

__m128i from_lanes(const Lanes& l)
{
    return make128(l.q[0], l.q[1]);
}

void exec_pshufd(Cpu& c, const Insn& in)
{
    check_sse(c);
    Lanes s = lanes(read_src(c, in, 1, 16)), r;
    unsigned imm = static_cast<unsigned>(in.imm);
    for (unsigned i = 0; i < 4; ++i)
        r.d[i] = s.d[(imm >> (2 * i)) & 3];
    set_xmm(c, in.op[0].reg, from_lanes(r));
}

// PSHUFLW (kHigh = false) / PSHUFHW: shuffle the words of one half, copy the other.
template<bool kHigh>
void exec_pshufw_half(Cpu& c, const Insn& in)
{
    check_sse(c);
    Lanes s = lanes(read_src(c, in, 1, 16)), r = s;
    unsigned imm = static_cast<unsigned>(in.imm), base = kHigh ? 4 : 0;
    for (unsigned i = 0; i < 4; ++i)
        r.w[base + i] = s.w[base + ((imm >> (2 * i)) & 3)];
    set_xmm(c, in.op[0].reg, from_lanes(r));
}

void exec_pshufw(Cpu& c, const Insn& in)
{
    check_mmx(c);
    uint64_t s = in.op[1].kind == OpKind::Mem ? read_mem(c, mem_linear(c, in), 8) : mm(c, in.op[1].reg);
    uint64_t r = 0;
    for (unsigned i = 0; i < 4; ++i)
        r |= ((s >> (16 * ((in.imm >> (2 * i)) & 3))) & 0xffff) << (16 * i);
    enter_mmx(c);
    set_mm(c, in.op[0].reg, r);
}

void exec_shufps(Cpu& c, const Insn& in)
{
    check_sse(c);
    Lanes b = lanes(read_src(c, in, 1, 16)), a = lanes(xmm(c, in.op[0].reg)), r;
    unsigned imm = static_cast<unsigned>(in.imm);
    r.d[0] = a.d[imm & 3];
    r.d[1] = a.d[(imm >> 2) & 3];
    r.d[2] = b.d[(imm >> 4) & 3];
    r.d[3] = b.d[(imm >> 6) & 3];
    set_xmm(c, in.op[0].reg, from_lanes(r));
}

void exec_shufpd(Cpu& c, const Insn& in)
{
    check_sse(c);
    Lanes b = lanes(read_src(c, in, 1, 16)), a = lanes(xmm(c, in.op[0].reg)), r;
    r.q[0] = a.q[in.imm & 1];
    r.q[1] = b.q[(in.imm >> 1) & 1];
    set_xmm(c, in.op[0].reg, from_lanes(r));
}

// PEXTRW r32/r64 (or m16, the SSE4.1 form), xmm/mm, imm8.
void exec_pextrw(Cpu& c, const Insn& in)
{
    const Operand& s = in.op[1];
    uint64_t w;
    if (s.kind == OpKind::Mmx) {
        check_mmx(c);
        w = (mm(c, s.reg) >> (16 * (in.imm & 3))) & 0xffff;
    } else {
        check_sse(c);
        w = lanes(xmm(c, s.reg)).w[in.imm & 7];
    }
    if (in.op[0].kind == OpKind::Mem)
        write_mem(c, mem_linear(c, in), 2, w);
    else
        write_gpr(c, in.op[0].reg, in.op[0].size == 8 ? 8 : 4, w);
    if (s.kind == OpKind::Mmx)
        enter_mmx(c);
}

// PINSRW xmm/mm, r32/m16, imm8.
void exec_pinsrw(Cpu& c, const Insn& in)
{
    const Operand& d = in.op[0];
    if (d.kind == OpKind::Mmx)
        check_mmx(c);
    else
        check_sse(c);
    uint64_t w = (in.op[1].kind == OpKind::Mem ? read_mem(c, mem_linear(c, in), 2) : c.gpr[in.op[1].reg]) & 0xffff;
    if (d.kind == OpKind::Mmx) {
        unsigned sh = 16 * (in.imm & 3);
        uint64_t v = (mm(c, d.reg) & ~(0xffffULL << sh)) | (w << sh);
        enter_mmx(c);
        set_mm(c, d.reg, v);
        return;
    }
    Lanes l = lanes(xmm(c, d.reg));
    l.w[in.imm & 7] = static_cast<uint16_t>(w);
    set_xmm(c, d.reg, from_lanes(l));
}

void exec_pmovmskb(Cpu& c, const Insn& in)
{
    const Operand& s = in.op[1];
    unsigned m;
    if (s.kind == OpKind::Mmx) {
        check_mmx(c);
        m = static_cast<unsigned>(_mm_movemask_epi8(make128(mm(c, s.reg), 0))) & 0xff;
        enter_mmx(c);
    } else {
        check_sse(c);
        m = static_cast<unsigned>(_mm_movemask_epi8(xmm(c, s.reg)));
    }
    write_gpr(c, in.op[0].reg, in.op[0].size == 8 ? 8 : 4, m);
}

} // namespace

void register_sse_int(HandlerTable& t)
{
    struct Entry {
        ZydisMnemonic m;
        ExecFn fn;
    };
    static constexpr Entry entries[] = {
        { ZYDIS_MNEMONIC_PAND, exec_pbin_both<v_and> },
        { ZYDIS_MNEMONIC_PANDN, exec_pbin_both<v_andn> },
        { ZYDIS_MNEMONIC_POR, exec_pbin_both<v_or> },
        { ZYDIS_MNEMONIC_PXOR, exec_pbin_both<v_xor> },
        { ZYDIS_MNEMONIC_ANDPS, &exec_pbin<v_and, nullptr> },
        { ZYDIS_MNEMONIC_ANDPD, &exec_pbin<v_and, nullptr> },
        { ZYDIS_MNEMONIC_ANDNPS, &exec_pbin<v_andn, nullptr> },
        { ZYDIS_MNEMONIC_ANDNPD, &exec_pbin<v_andn, nullptr> },
        { ZYDIS_MNEMONIC_ORPS, &exec_pbin<v_or, nullptr> },
        { ZYDIS_MNEMONIC_ORPD, &exec_pbin<v_or, nullptr> },
        { ZYDIS_MNEMONIC_XORPS, &exec_pbin<v_xor, nullptr> },
        { ZYDIS_MNEMONIC_XORPD, &exec_pbin<v_xor, nullptr> },
        { ZYDIS_MNEMONIC_PADDB, exec_pbin_both<v_addb> },
        { ZYDIS_MNEMONIC_PADDW, exec_pbin_both<v_addw> },
        { ZYDIS_MNEMONIC_PADDD, exec_pbin_both<v_addd> },
        { ZYDIS_MNEMONIC_PADDQ, exec_pbin_both<v_addq> },
        { ZYDIS_MNEMONIC_PSUBB, exec_pbin_both<v_subb> },
        { ZYDIS_MNEMONIC_PSUBW, exec_pbin_both<v_subw> },
        { ZYDIS_MNEMONIC_PSUBD, exec_pbin_both<v_subd> },
        { ZYDIS_MNEMONIC_PSUBQ, exec_pbin_both<v_subq> },
        { ZYDIS_MNEMONIC_PADDSB, exec_pbin_both<v_addsb> },
        { ZYDIS_MNEMONIC_PADDSW, exec_pbin_both<v_addsw> },
        { ZYDIS_MNEMONIC_PADDUSB, exec_pbin_both<v_addusb> },
        { ZYDIS_MNEMONIC_PADDUSW, exec_pbin_both<v_addusw> },
        { ZYDIS_MNEMONIC_PSUBSB, exec_pbin_both<v_subsb> },
        { ZYDIS_MNEMONIC_PSUBSW, exec_pbin_both<v_subsw> },
        { ZYDIS_MNEMONIC_PSUBUSB, exec_pbin_both<v_subusb> },
        { ZYDIS_MNEMONIC_PSUBUSW, exec_pbin_both<v_subusw> },
        { ZYDIS_MNEMONIC_PCMPEQB, exec_pbin_both<v_cmpeqb> },
        { ZYDIS_MNEMONIC_PCMPEQW, exec_pbin_both<v_cmpeqw> },
        { ZYDIS_MNEMONIC_PCMPEQD, exec_pbin_both<v_cmpeqd> },
        { ZYDIS_MNEMONIC_PCMPGTB, exec_pbin_both<v_cmpgtb> },
        { ZYDIS_MNEMONIC_PCMPGTW, exec_pbin_both<v_cmpgtw> },
        { ZYDIS_MNEMONIC_PCMPGTD, exec_pbin_both<v_cmpgtd> },
        { ZYDIS_MNEMONIC_PMINUB, exec_pbin_both<v_minub> },
        { ZYDIS_MNEMONIC_PMAXUB, exec_pbin_both<v_maxub> },
        { ZYDIS_MNEMONIC_PMINSW, exec_pbin_both<v_minsw> },
        { ZYDIS_MNEMONIC_PMAXSW, exec_pbin_both<v_maxsw> },
        { ZYDIS_MNEMONIC_PAVGB, exec_pbin_both<v_avgb> },
        { ZYDIS_MNEMONIC_PAVGW, exec_pbin_both<v_avgw> },
        { ZYDIS_MNEMONIC_PSADBW, exec_pbin_both<v_sadbw> },
        { ZYDIS_MNEMONIC_PMULLW, exec_pbin_both<v_mullw> },
        { ZYDIS_MNEMONIC_PMULHW, exec_pbin_both<v_mulhw> },
        { ZYDIS_MNEMONIC_PMULHUW, exec_pbin_both<v_mulhuw> },
        { ZYDIS_MNEMONIC_PMULUDQ, exec_pbin_both<v_muludq> },
        { ZYDIS_MNEMONIC_PMADDWD, exec_pbin_both<v_maddwd> },
        { ZYDIS_MNEMONIC_PUNPCKLBW, exec_pbin_both<v_unpcklbw> },
        { ZYDIS_MNEMONIC_PUNPCKLWD, exec_pbin_both<v_unpcklwd> },
        { ZYDIS_MNEMONIC_PUNPCKLDQ, exec_pbin_both<v_unpckldq> },
        { ZYDIS_MNEMONIC_PUNPCKLQDQ, &exec_pbin<v_unpcklqdq, nullptr> },
        { ZYDIS_MNEMONIC_PUNPCKHBW, &exec_pbin<v_unpckhbw, m_unpckhbw> },
        { ZYDIS_MNEMONIC_PUNPCKHWD, &exec_pbin<v_unpckhwd, m_unpckhwd> },
        { ZYDIS_MNEMONIC_PUNPCKHDQ, &exec_pbin<v_unpckhdq, m_unpckhdq> },
        { ZYDIS_MNEMONIC_PUNPCKHQDQ, &exec_pbin<v_unpckhqdq, nullptr> },
        { ZYDIS_MNEMONIC_UNPCKLPS, &exec_pbin<v_unpckldq, nullptr> },
        { ZYDIS_MNEMONIC_UNPCKHPS, &exec_pbin<v_unpckhdq, nullptr> },
        { ZYDIS_MNEMONIC_UNPCKLPD, &exec_pbin<v_unpcklqdq, nullptr> },
        { ZYDIS_MNEMONIC_UNPCKHPD, &exec_pbin<v_unpckhqdq, nullptr> },
        { ZYDIS_MNEMONIC_PACKSSWB, &exec_pbin<v_packsswb, m_packsswb> },
        { ZYDIS_MNEMONIC_PACKSSDW, &exec_pbin<v_packssdw, m_packssdw> },
        { ZYDIS_MNEMONIC_PACKUSWB, &exec_pbin<v_packuswb, m_packuswb> },
        { ZYDIS_MNEMONIC_PSLLW, &exec_pshift<v_sllw> },
        { ZYDIS_MNEMONIC_PSLLD, &exec_pshift<v_slld> },
        { ZYDIS_MNEMONIC_PSLLQ, &exec_pshift<v_sllq> },
        { ZYDIS_MNEMONIC_PSRLW, &exec_pshift<v_srlw> },
        { ZYDIS_MNEMONIC_PSRLD, &exec_pshift<v_srld> },
        { ZYDIS_MNEMONIC_PSRLQ, &exec_pshift<v_srlq> },
        { ZYDIS_MNEMONIC_PSRAW, &exec_pshift<v_sraw> },
        { ZYDIS_MNEMONIC_PSRAD, &exec_pshift<v_srad> },
        { ZYDIS_MNEMONIC_PSLLDQ, &exec_pshift_dq<true> },
        { ZYDIS_MNEMONIC_PSRLDQ, &exec_pshift_dq<false> },
        { ZYDIS_MNEMONIC_PSHUFD, &exec_pshufd },
        { ZYDIS_MNEMONIC_PSHUFLW, &exec_pshufw_half<false> },
        { ZYDIS_MNEMONIC_PSHUFHW, &exec_pshufw_half<true> },
        { ZYDIS_MNEMONIC_PSHUFW, &exec_pshufw },
        { ZYDIS_MNEMONIC_SHUFPS, &exec_shufps },
        { ZYDIS_MNEMONIC_SHUFPD, &exec_shufpd },
        { ZYDIS_MNEMONIC_PEXTRW, &exec_pextrw },
        { ZYDIS_MNEMONIC_PINSRW, &exec_pinsrw },
        { ZYDIS_MNEMONIC_PMOVMSKB, &exec_pmovmskb },
    };
    for (const Entry& e : entries)
        t[e.m] = e.fn;
}

} // namespace vessel::soft::sse
