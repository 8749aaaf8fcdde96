// SSE/SSE2 conversions: integer <-> scalar (CVTSI2SS/SD, CVT[T]SS2SI, CVT[T]SD2SI), scalar
// precision (CVTSS2SD, CVTSD2SS), packed (CVTDQ2PS, CVT[T]PS2DQ, CVTDQ2PD, CVT[T]PD2DQ,
// CVTPS2PD, CVTPD2PS) and the MMX forms (CVTPI2PS/PD, CVT[T]PS2PI, CVT[T]PD2PI). Results,
// including the integer indefinite on overflow/NaN, come from the host instruction under the
// guest MXCSR.
#include "engine/soft/exec_sse_common.h"

namespace vessel::soft::sse {

namespace {

using F2 = __m128i (*)(__m128i, __m128i);

__m128i cvtdq2ps(__m128i, __m128i b)
{
    return _mm_castps_si128(_mm_cvtepi32_ps(b));
}
__m128i cvtps2dq(__m128i, __m128i b)
{
    return _mm_cvtps_epi32(_mm_castsi128_ps(b));
}
__m128i cvttps2dq(__m128i, __m128i b)
{
    return _mm_cvttps_epi32(_mm_castsi128_ps(b));
}
__m128i cvtdq2pd(__m128i, __m128i b)
{
    return _mm_castpd_si128(_mm_cvtepi32_pd(b));
}
__m128i cvtpd2dq(__m128i, __m128i b)
{
    return _mm_cvtpd_epi32(_mm_castsi128_pd(b));
}
__m128i cvttpd2dq(__m128i, __m128i b)
{
    return _mm_cvttpd_epi32(_mm_castsi128_pd(b));
}
__m128i cvtps2pd(__m128i, __m128i b)
{
    return _mm_castpd_si128(_mm_cvtps_pd(_mm_castsi128_ps(b)));
}
__m128i cvtpd2ps(__m128i, __m128i b)
{
    return _mm_castps_si128(_mm_cvtpd_ps(_mm_castsi128_pd(b)));
}
__m128i cvtss2sd(__m128i a, __m128i b)
{
    return _mm_castpd_si128(_mm_cvtss_sd(_mm_castsi128_pd(a), _mm_castsi128_ps(b)));
}
__m128i cvtsd2ss(__m128i a, __m128i b)
{
    return _mm_castps_si128(_mm_cvtsd_ss(_mm_castsi128_ps(a), _mm_castsi128_pd(b)));
}

template<typename T>
T under_guest_mxcsr(Cpu& c, T (*f)(__m128i, __m128i), __m128i a, __m128i b)
{
    T r;
    uint32_t flags;
    {
        GuestMxcsr guard(c);
        opaque(a);
        opaque(b);
        r = f(a, b);
        opaque(r);
        flags = guard.flags();
    }
    commit_mxcsr_flags(c, flags);
    return r;
}

// xmm = f(xmm, src) with a memory source of kMem bytes.
template<F2 F, unsigned kMem>
void exec_cvt(Cpu& c, const Insn& in)
{
    check_sse(c);
    __m128i b = read_src(c, in, 1, kMem);
    __m128i r = under_guest_mxcsr(c, F, xmm(c, in.op[0].reg), b);
    set_xmm(c, in.op[0].reg, r);
}

unsigned src_size(const Insn& in, unsigned n)
{
    if (in.op[n].size == 4 || in.op[n].size == 8)
        return in.op[n].size;
    return (in.flags & kFlagRexW) ? 8 : 4;
}

// CVTSI2SS/CVTSI2SD xmm, r/m32 or r/m64.
template<bool kDouble>
void exec_cvtsi2f(Cpu& c, const Insn& in)
{
    check_sse(c);
    unsigned size = src_size(in, 1);
    const Operand& s = in.op[1];
    uint64_t raw = s.kind == OpKind::Mem ? read_mem(c, mem_linear(c, in), size) : read_gpr(c, s.reg, size);
    __m128i v = make128(raw, 0);
    F2 f;
    if constexpr (kDouble)
        f = size == 8 ? +[](__m128i a, __m128i b) {
            return _mm_castpd_si128(_mm_cvtsi64_sd(_mm_castsi128_pd(a), static_cast<long long>(lo64(b))));
        }
                      : +[](__m128i a, __m128i b) {
                            return _mm_castpd_si128(_mm_cvtsi32_sd(_mm_castsi128_pd(a), _mm_cvtsi128_si32(b)));
                        };
    else
        f = size == 8 ? +[](__m128i a, __m128i b) {
            return _mm_castps_si128(_mm_cvtsi64_ss(_mm_castsi128_ps(a), static_cast<long long>(lo64(b))));
        }
                      : +[](__m128i a, __m128i b) {
                            return _mm_castps_si128(_mm_cvtsi32_ss(_mm_castsi128_ps(a), _mm_cvtsi128_si32(b)));
                        };
    __m128i r = under_guest_mxcsr(c, f, xmm(c, in.op[0].reg), v);
    set_xmm(c, in.op[0].reg, r);
}

using ToInt = uint64_t (*)(__m128i, __m128i);

// CVT[T]SS2SI / CVT[T]SD2SI r32/r64, xmm/m32 or m64. Out-of-range and NaN give the integer
// indefinite (0x80000000 / 0x8000000000000000) with #I.
template<bool kDouble, bool kTruncate>
void exec_cvtf2si(Cpu& c, const Insn& in)
{
    check_sse(c);
    unsigned dsize = in.op[0].size ? (in.op[0].size == 8 ? 8 : 4) : ((in.flags & kFlagRexW) ? 8 : 4);
    __m128i b = read_src(c, in, 1, kDouble ? 8 : 4);
    ToInt f;
    if constexpr (kDouble && kTruncate)
        f = dsize == 8 ? +[](__m128i, __m128i v) { return static_cast<uint64_t>(_mm_cvttsd_si64(_mm_castsi128_pd(v))); }
                       : +[](__m128i, __m128i v) {
                             return static_cast<uint64_t>(static_cast<uint32_t>(_mm_cvttsd_si32(_mm_castsi128_pd(v))));
                         };
    else if constexpr (kDouble)
        f = dsize == 8 ? +[](__m128i, __m128i v) { return static_cast<uint64_t>(_mm_cvtsd_si64(_mm_castsi128_pd(v))); }
                       : +[](__m128i, __m128i v) {
                             return static_cast<uint64_t>(static_cast<uint32_t>(_mm_cvtsd_si32(_mm_castsi128_pd(v))));
                         };
    else if constexpr (kTruncate)
        f = dsize == 8 ? +[](__m128i, __m128i v) { return static_cast<uint64_t>(_mm_cvttss_si64(_mm_castsi128_ps(v))); }
                       : +[](__m128i, __m128i v) {
                             return static_cast<uint64_t>(static_cast<uint32_t>(_mm_cvttss_si32(_mm_castsi128_ps(v))));
                         };
    else
        f = dsize == 8 ? +[](__m128i, __m128i v) { return static_cast<uint64_t>(_mm_cvtss_si64(_mm_castsi128_ps(v))); }
                       : +[](__m128i, __m128i v) {
                             return static_cast<uint64_t>(static_cast<uint32_t>(_mm_cvtss_si32(_mm_castsi128_ps(v))));
                         };
    uint64_t r = under_guest_mxcsr(c, f, b, b);
    write_gpr(c, in.op[0].reg, dsize, r);
}

// CVTPI2PS xmm, mm/m64: two doublewords to the low two singles; the high half is kept.
void exec_cvtpi2ps(Cpu& c, const Insn& in)
{
    check_sse(c);
    if (in.op[1].kind == OpKind::Mmx)
        check_mmx(c);
    uint64_t v = in.op[1].kind == OpKind::Mem ? read_mem(c, mem_linear(c, in), 8) : mm(c, in.op[1].reg);
    __m128i r = under_guest_mxcsr(c, cvtdq2ps, make128(0, 0), make128(v, 0));
    if (in.op[1].kind == OpKind::Mmx)
        enter_mmx(c);
    set_xmm(c, in.op[0].reg, make128(lo64(r), hi64(xmm(c, in.op[0].reg))));
}

void exec_cvtpi2pd(Cpu& c, const Insn& in)
{
    check_sse(c);
    if (in.op[1].kind == OpKind::Mmx)
        check_mmx(c);
    uint64_t v = in.op[1].kind == OpKind::Mem ? read_mem(c, mem_linear(c, in), 8) : mm(c, in.op[1].reg);
    if (in.op[1].kind == OpKind::Mmx)
        enter_mmx(c);
    set_xmm(c, in.op[0].reg, cvtdq2pd(make128(0, 0), make128(v, 0)));
}

// CVT[T]PS2PI mm, xmm/m64 and CVT[T]PD2PI mm, xmm/m128: two integers into an MMX register.
template<F2 F, unsigned kMem, bool kSingle>
void exec_cvt2pi(Cpu& c, const Insn& in)
{
    check_sse(c);
    check_mmx(c);
    __m128i b = read_src(c, in, 1, kMem);
    if constexpr (kSingle)
        b = make128(lo64(b), 0); // only the low two singles are converted (no flags from the rest)
    __m128i r = under_guest_mxcsr(c, F, b, b);
    enter_mmx(c);
    set_mm(c, in.op[0].reg, lo64(r));
}

} // namespace

void register_sse_cvt(HandlerTable& t)
{
    t[ZYDIS_MNEMONIC_CVTDQ2PS] = &exec_cvt<cvtdq2ps, 16>;
    t[ZYDIS_MNEMONIC_CVTPS2DQ] = &exec_cvt<cvtps2dq, 16>;
    t[ZYDIS_MNEMONIC_CVTTPS2DQ] = &exec_cvt<cvttps2dq, 16>;
    t[ZYDIS_MNEMONIC_CVTDQ2PD] = &exec_cvt<cvtdq2pd, 8>;
    t[ZYDIS_MNEMONIC_CVTPD2DQ] = &exec_cvt<cvtpd2dq, 16>;
    t[ZYDIS_MNEMONIC_CVTTPD2DQ] = &exec_cvt<cvttpd2dq, 16>;
    t[ZYDIS_MNEMONIC_CVTPS2PD] = &exec_cvt<cvtps2pd, 8>;
    t[ZYDIS_MNEMONIC_CVTPD2PS] = &exec_cvt<cvtpd2ps, 16>;
    t[ZYDIS_MNEMONIC_CVTSS2SD] = &exec_cvt<cvtss2sd, 4>;
    t[ZYDIS_MNEMONIC_CVTSD2SS] = &exec_cvt<cvtsd2ss, 8>;
    t[ZYDIS_MNEMONIC_CVTSI2SS] = &exec_cvtsi2f<false>;
    t[ZYDIS_MNEMONIC_CVTSI2SD] = &exec_cvtsi2f<true>;
    t[ZYDIS_MNEMONIC_CVTSS2SI] = &exec_cvtf2si<false, false>;
    t[ZYDIS_MNEMONIC_CVTTSS2SI] = &exec_cvtf2si<false, true>;
    t[ZYDIS_MNEMONIC_CVTSD2SI] = &exec_cvtf2si<true, false>;
    t[ZYDIS_MNEMONIC_CVTTSD2SI] = &exec_cvtf2si<true, true>;
    t[ZYDIS_MNEMONIC_CVTPI2PS] = &exec_cvtpi2ps;
    t[ZYDIS_MNEMONIC_CVTPI2PD] = &exec_cvtpi2pd;
    t[ZYDIS_MNEMONIC_CVTPS2PI] = &exec_cvt2pi<cvtps2dq, 8, true>;
    t[ZYDIS_MNEMONIC_CVTTPS2PI] = &exec_cvt2pi<cvttps2dq, 8, true>;
    t[ZYDIS_MNEMONIC_CVTPD2PI] = &exec_cvt2pi<cvtpd2dq, 16, false>;
    t[ZYDIS_MNEMONIC_CVTTPD2PI] = &exec_cvt2pi<cvttpd2dq, 16, false>;
}

} // namespace vessel::soft::sse
