// SSE/SSE2 floating-point arithmetic: ADD/SUB/MUL/DIV/MIN/MAX/SQRT (PS/PD/SS/SD), RCP/RSQRT
// (PS/SS, the host's approximation), CMPccPS/PD/SS/SD (8 predicates), COMISS/COMISD/UCOMISS/
// UCOMISD. Each runs the host instruction with the guest's MXCSR controls (exec_sse_common.h).
#include <cstring>

#include "engine/soft/exec_sse_common.h"
#include "engine/soft/flags.h"

namespace vessel::soft::sse {

namespace {

using F2 = __m128i (*)(__m128i, __m128i);

#define FPS(name, expr)                                                                                                \
    __m128i name(__m128i ai, __m128i bi)                                                                               \
    {                                                                                                                  \
        __m128 a = _mm_castsi128_ps(ai), b = _mm_castsi128_ps(bi);                                                     \
        (void)a;                                                                                                       \
        return _mm_castps_si128(expr);                                                                                 \
    }
#define FPD(name, expr)                                                                                                \
    __m128i name(__m128i ai, __m128i bi)                                                                               \
    {                                                                                                                  \
        __m128d a = _mm_castsi128_pd(ai), b = _mm_castsi128_pd(bi);                                                    \
        (void)a;                                                                                                       \
        return _mm_castpd_si128(expr);                                                                                 \
    }

FPS(addps, _mm_add_ps(a, b))
FPS(addss, _mm_add_ss(a, b))
FPD(addpd, _mm_add_pd(a, b))
FPD(addsd, _mm_add_sd(a, b))
FPS(subps, _mm_sub_ps(a, b))
FPS(subss, _mm_sub_ss(a, b))
FPD(subpd, _mm_sub_pd(a, b))
FPD(subsd, _mm_sub_sd(a, b))
FPS(mulps, _mm_mul_ps(a, b))
FPS(mulss, _mm_mul_ss(a, b))
FPD(mulpd, _mm_mul_pd(a, b))
FPD(mulsd, _mm_mul_sd(a, b))
FPS(divps, _mm_div_ps(a, b))
FPS(divss, _mm_div_ss(a, b))
FPD(divpd, _mm_div_pd(a, b))
FPD(divsd, _mm_div_sd(a, b))
FPS(minps, _mm_min_ps(a, b))
FPS(minss, _mm_min_ss(a, b))
FPD(minpd, _mm_min_pd(a, b))
FPD(minsd, _mm_min_sd(a, b))
FPS(maxps, _mm_max_ps(a, b))
FPS(maxss, _mm_max_ss(a, b))
FPD(maxpd, _mm_max_pd(a, b))
FPD(maxsd, _mm_max_sd(a, b))
FPS(sqrtps, _mm_sqrt_ps(b))
FPS(sqrtss, _mm_move_ss(a, _mm_sqrt_ss(b)))
FPD(sqrtpd, _mm_sqrt_pd(b))
FPD(sqrtsd, _mm_sqrt_sd(a, b))
FPS(rcpps, _mm_rcp_ps(b))
FPS(rcpss, _mm_move_ss(a, _mm_rcp_ss(b)))
FPS(rsqrtps, _mm_rsqrt_ps(b))
FPS(rsqrtss, _mm_move_ss(a, _mm_rsqrt_ss(b)))

// CMPccPS/PD/SS/SD, predicate = imm8[2:0]: EQ LT LE UNORD NEQ NLT NLE ORD.
FPS(cmpeqps, _mm_cmpeq_ps(a, b))
FPS(cmpltps, _mm_cmplt_ps(a, b))
FPS(cmpleps, _mm_cmple_ps(a, b))
FPS(cmpunordps, _mm_cmpunord_ps(a, b))
FPS(cmpneqps, _mm_cmpneq_ps(a, b))
FPS(cmpnltps, _mm_cmpnlt_ps(a, b))
FPS(cmpnleps, _mm_cmpnle_ps(a, b))
FPS(cmpordps, _mm_cmpord_ps(a, b))
FPS(cmpeqss, _mm_cmpeq_ss(a, b))
FPS(cmpltss, _mm_cmplt_ss(a, b))
FPS(cmpless, _mm_cmple_ss(a, b))
FPS(cmpunordss, _mm_cmpunord_ss(a, b))
FPS(cmpneqss, _mm_cmpneq_ss(a, b))
FPS(cmpnltss, _mm_cmpnlt_ss(a, b))
FPS(cmpnless, _mm_cmpnle_ss(a, b))
FPS(cmpordss, _mm_cmpord_ss(a, b))
FPD(cmpeqpd, _mm_cmpeq_pd(a, b))
FPD(cmpltpd, _mm_cmplt_pd(a, b))
FPD(cmplepd, _mm_cmple_pd(a, b))
FPD(cmpunordpd, _mm_cmpunord_pd(a, b))
FPD(cmpneqpd, _mm_cmpneq_pd(a, b))
FPD(cmpnltpd, _mm_cmpnlt_pd(a, b))
FPD(cmpnlepd, _mm_cmpnle_pd(a, b))
FPD(cmpordpd, _mm_cmpord_pd(a, b))
FPD(cmpeqsd, _mm_cmpeq_sd(a, b))
FPD(cmpltsd, _mm_cmplt_sd(a, b))
FPD(cmplesd, _mm_cmple_sd(a, b))
FPD(cmpunordsd, _mm_cmpunord_sd(a, b))
FPD(cmpneqsd, _mm_cmpneq_sd(a, b))
FPD(cmpnltsd, _mm_cmpnlt_sd(a, b))
FPD(cmpnlesd, _mm_cmpnle_sd(a, b))
FPD(cmpordsd, _mm_cmpord_sd(a, b))

#undef FPS
#undef FPD

constexpr F2 kCmpPs[8] = { cmpeqps, cmpltps, cmpleps, cmpunordps, cmpneqps, cmpnltps, cmpnleps, cmpordps };
constexpr F2 kCmpSs[8] = { cmpeqss, cmpltss, cmpless, cmpunordss, cmpneqss, cmpnltss, cmpnless, cmpordss };
constexpr F2 kCmpPd[8] = { cmpeqpd, cmpltpd, cmplepd, cmpunordpd, cmpneqpd, cmpnltpd, cmpnlepd, cmpordpd };
constexpr F2 kCmpSd[8] = { cmpeqsd, cmpltsd, cmplesd, cmpunordsd, cmpneqsd, cmpnltsd, cmpnlesd, cmpordsd };

// With the underflow exception unmasked the CPU reports an element whose result is tiny (even
// exact, and whatever FTZ says) as UE alone, without PE, and faults; a run with every exception
// masked flags only tiny inexact results, and with PE. So redo the operation one element at a
// time (the other elements 1.0, exact in ADD/SUB/MUL/DIV) with FTZ off and rebuild the flags.
// `elem` = element bytes (4 or 8), `count` = elements computed (1 for scalar forms).
uint32_t flags_with_unmasked_underflow(const Cpu& c, F2 f, __m128i a, __m128i b, unsigned elem, unsigned count)
{
    constexpr uint32_t kUE = 0x10, kPrecomputation = 0x7;
    const uint64_t one = elem == 4 ? 0x3f8000003f800000ULL : 0x3ff0000000000000ULL;
    M128 va, vb, vr;
    _mm_store_si128(reinterpret_cast<__m128i*>(&va), a);
    _mm_store_si128(reinterpret_cast<__m128i*>(&vb), b);
    uint32_t out = 0;
    for (unsigned i = 0; i < count; ++i) {
        M128 ea { { one, one } }, eb { { one, one } };
        // SAFETY: i * elem + elem <= 16, inside the 16-byte M128 values.
        std::memcpy(reinterpret_cast<uint8_t*>(ea.q) + i * elem, reinterpret_cast<const uint8_t*>(va.q) + i * elem, elem);
        std::memcpy(reinterpret_cast<uint8_t*>(eb.q) + i * elem, reinterpret_cast<const uint8_t*>(vb.q) + i * elem, elem);
        __m128i x = _mm_load_si128(reinterpret_cast<const __m128i*>(&ea));
        __m128i y = _mm_load_si128(reinterpret_cast<const __m128i*>(&eb));
        uint32_t saved = _mm_getcsr();
        _mm_setcsr((mxcsr(c) & 0x6040) | 0x1f80); // guest RC and DAZ, no FTZ, all masked
        opaque(x);
        opaque(y);
        __m128i r = f(x, y);
        opaque(r);
        uint32_t flags = _mm_getcsr() & 0x3f;
        _mm_setcsr(saved);
        _mm_store_si128(reinterpret_cast<__m128i*>(&vr), r);
        uint64_t bits = 0;
        std::memcpy(&bits, reinterpret_cast<const uint8_t*>(vr.q) + i * elem, elem);
        uint64_t exp_mask = elem == 4 ? 0x7f800000ULL : 0x7ff0000000000000ULL;
        uint64_t frac_mask = elem == 4 ? 0x007fffffULL : 0x000fffffffffffffULL;
        bool denormal = (bits & exp_mask) == 0 && (bits & frac_mask) != 0;
        out |= (flags & kUE) || denormal ? (flags & kPrecomputation) | kUE : flags;
    }
    return out;
}

// dst = f(dst, src) under the guest MXCSR; the destination is written only if no unmasked
// exception occurred. `elem` != 0 for operations that can underflow (see above).
void fp_binary(Cpu& c, const Insn& in, F2 f, unsigned mem_size, unsigned elem = 0)
{
    check_sse(c);
    __m128i b = read_src(c, in, 1, mem_size);
    __m128i a = xmm(c, in.op[0].reg);
    __m128i r;
    uint32_t flags;
    {
        GuestMxcsr guard(c);
        opaque(a);
        opaque(b);
        r = f(a, b);
        opaque(r);
        flags = guard.flags();
    }
    if (elem && !(mxcsr(c) & (1u << 11))) // UM clear
        flags = flags_with_unmasked_underflow(c, f, a, b, elem, mem_size == 16 ? 16 / elem : 1);
    commit_mxcsr_flags(c, flags);
    set_xmm(c, in.op[0].reg, r);
}

template<F2 F, unsigned kMem, unsigned kElem = 0>
void exec_fp(Cpu& c, const Insn& in)
{
    fp_binary(c, in, F, kMem, kElem);
}

template<const F2 (&kTable)[8], unsigned kMem>
void exec_cmp(Cpu& c, const Insn& in)
{
    fp_binary(c, in, kTable[in.imm & 7], kMem);
}

// Zydis calls both the string compare (A7) and the SSE2 scalar compare (F2 0F C2) CMPSD. The
// integer group registers after us, runs the string form and passes the SSE2 form here.
void exec_cmpsd(Cpu& c, const Insn& in)
{
    if (in.opmap == 0)
        return exec_unimplemented(c, in);
    exec_cmp<kCmpSd, 8>(c, in);
}

// COMIS* signal invalid for QNaN operands, UCOMIS* only for SNaN. ZF/PF/CF from the compare
// (all three on unordered), OF/SF/AF cleared.
template<bool kDouble, bool kOrdered>
void exec_comis(Cpu& c, const Insn& in)
{
    check_sse(c);
    __m128i b = read_src(c, in, 1, kDouble ? 8 : 4);
    __m128i a = xmm(c, in.op[0].reg);
    bool zf, pf, cf;
    uint32_t flags;
    {
        GuestMxcsr guard(c);
        if constexpr (kDouble && kOrdered)
            asm volatile("comisd %[b], %[a]" : "=@ccz"(zf), "=@ccp"(pf), "=@ccc"(cf) : [a] "x"(a), [b] "x"(b));
        else if constexpr (kDouble)
            asm volatile("ucomisd %[b], %[a]" : "=@ccz"(zf), "=@ccp"(pf), "=@ccc"(cf) : [a] "x"(a), [b] "x"(b));
        else if constexpr (kOrdered)
            asm volatile("comiss %[b], %[a]" : "=@ccz"(zf), "=@ccp"(pf), "=@ccc"(cf) : [a] "x"(a), [b] "x"(b));
        else
            asm volatile("ucomiss %[b], %[a]" : "=@ccz"(zf), "=@ccp"(pf), "=@ccc"(cf) : [a] "x"(a), [b] "x"(b));
        flags = guard.flags();
    }
    commit_mxcsr_flags(c, flags);
    set_arith_flags(c, (zf ? kZF : 0) | (pf ? kPF : 0) | (cf ? kCF : 0));
}

} // namespace

void register_sse_fp(HandlerTable& t)
{
    struct Entry {
        ZydisMnemonic m;
        ExecFn fn;
    };
    static constexpr Entry entries[] = {
        { ZYDIS_MNEMONIC_ADDPS, &exec_fp<addps, 16, 4> },
        { ZYDIS_MNEMONIC_ADDSS, &exec_fp<addss, 4, 4> },
        { ZYDIS_MNEMONIC_ADDPD, &exec_fp<addpd, 16, 8> },
        { ZYDIS_MNEMONIC_ADDSD, &exec_fp<addsd, 8, 8> },
        { ZYDIS_MNEMONIC_SUBPS, &exec_fp<subps, 16, 4> },
        { ZYDIS_MNEMONIC_SUBSS, &exec_fp<subss, 4, 4> },
        { ZYDIS_MNEMONIC_SUBPD, &exec_fp<subpd, 16, 8> },
        { ZYDIS_MNEMONIC_SUBSD, &exec_fp<subsd, 8, 8> },
        { ZYDIS_MNEMONIC_MULPS, &exec_fp<mulps, 16, 4> },
        { ZYDIS_MNEMONIC_MULSS, &exec_fp<mulss, 4, 4> },
        { ZYDIS_MNEMONIC_MULPD, &exec_fp<mulpd, 16, 8> },
        { ZYDIS_MNEMONIC_MULSD, &exec_fp<mulsd, 8, 8> },
        { ZYDIS_MNEMONIC_DIVPS, &exec_fp<divps, 16, 4> },
        { ZYDIS_MNEMONIC_DIVSS, &exec_fp<divss, 4, 4> },
        { ZYDIS_MNEMONIC_DIVPD, &exec_fp<divpd, 16, 8> },
        { ZYDIS_MNEMONIC_DIVSD, &exec_fp<divsd, 8, 8> },
        { ZYDIS_MNEMONIC_MINPS, &exec_fp<minps, 16> },
        { ZYDIS_MNEMONIC_MINSS, &exec_fp<minss, 4> },
        { ZYDIS_MNEMONIC_MINPD, &exec_fp<minpd, 16> },
        { ZYDIS_MNEMONIC_MINSD, &exec_fp<minsd, 8> },
        { ZYDIS_MNEMONIC_MAXPS, &exec_fp<maxps, 16> },
        { ZYDIS_MNEMONIC_MAXSS, &exec_fp<maxss, 4> },
        { ZYDIS_MNEMONIC_MAXPD, &exec_fp<maxpd, 16> },
        { ZYDIS_MNEMONIC_MAXSD, &exec_fp<maxsd, 8> },
        { ZYDIS_MNEMONIC_SQRTPS, &exec_fp<sqrtps, 16> },
        { ZYDIS_MNEMONIC_SQRTSS, &exec_fp<sqrtss, 4> },
        { ZYDIS_MNEMONIC_SQRTPD, &exec_fp<sqrtpd, 16> },
        { ZYDIS_MNEMONIC_SQRTSD, &exec_fp<sqrtsd, 8> },
        { ZYDIS_MNEMONIC_RCPPS, &exec_fp<rcpps, 16> },
        { ZYDIS_MNEMONIC_RCPSS, &exec_fp<rcpss, 4> },
        { ZYDIS_MNEMONIC_RSQRTPS, &exec_fp<rsqrtps, 16> },
        { ZYDIS_MNEMONIC_RSQRTSS, &exec_fp<rsqrtss, 4> },
        { ZYDIS_MNEMONIC_CMPPS, &exec_cmp<kCmpPs, 16> },
        { ZYDIS_MNEMONIC_CMPSS, &exec_cmp<kCmpSs, 4> },
        { ZYDIS_MNEMONIC_CMPPD, &exec_cmp<kCmpPd, 16> },
        { ZYDIS_MNEMONIC_CMPSD, &exec_cmpsd },
        { ZYDIS_MNEMONIC_COMISS, &exec_comis<false, true> },
        { ZYDIS_MNEMONIC_COMISD, &exec_comis<true, true> },
        { ZYDIS_MNEMONIC_UCOMISS, &exec_comis<false, false> },
        { ZYDIS_MNEMONIC_UCOMISD, &exec_comis<true, false> },
    };
    for (const Entry& e : entries)
        t[e.m] = e.fn;
}

} // namespace vessel::soft::sse
