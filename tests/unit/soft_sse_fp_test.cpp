// SSE/SSE2 floating point and conversions on the soft engine against the host CPU running the
// same bytes, over inputs biased towards NaN/Inf/denormal/overflow values, with random rounding
// modes, FZ and DAZ. MXCSR flags are compared too.
#include <cmath>

#include "soft_sse_test_support.h"

namespace vessel::soft::test {
namespace {

using G = Xbyak::CodeGenerator;

struct Case {
    const char* name;
    bool is_double;
    Emit emit;
    bool flags = false;
};

#define RM(op, dbl, mem)                                                                                               \
    Case                                                                                                               \
    {                                                                                                                  \
#op, dbl, [](G& g) {                                                                                           \
            g.op(g.xmm1, g.xmm2);                                                                                      \
            g.op(g.xmm3, g.mem[g.rsi + 32]);                                                                           \
            g.op(g.xmm12, g.xmm7);                                                                                     \
            g.op(g.xmm5, g.xmm5);                                                                                      \
        }       \
    }

std::vector<Case> arith_cases()
{
    return {
        RM(addps, false, ptr),
        RM(addss, false, dword),
        RM(addpd, true, ptr),
        RM(addsd, true, qword),
        RM(subps, false, ptr),
        RM(subss, false, dword),
        RM(subpd, true, ptr),
        RM(subsd, true, qword),
        RM(mulps, false, ptr),
        RM(mulss, false, dword),
        RM(mulpd, true, ptr),
        RM(mulsd, true, qword),
        RM(divps, false, ptr),
        RM(divss, false, dword),
        RM(divpd, true, ptr),
        RM(divsd, true, qword),
        RM(minps, false, ptr),
        RM(minss, false, dword),
        RM(minpd, true, ptr),
        RM(minsd, true, qword),
        RM(maxps, false, ptr),
        RM(maxss, false, dword),
        RM(maxpd, true, ptr),
        RM(maxsd, true, qword),
        RM(sqrtps, false, ptr),
        RM(sqrtss, false, dword),
        RM(sqrtpd, true, ptr),
        RM(sqrtsd, true, qword),
        RM(cvtdq2ps, false, ptr),
        RM(cvtps2dq, false, ptr),
        RM(cvttps2dq, false, ptr),
        RM(cvtdq2pd, false, qword),
        RM(cvtpd2dq, true, ptr),
        RM(cvttpd2dq, true, ptr),
        RM(cvtps2pd, false, qword),
        RM(cvtpd2ps, true, ptr),
        RM(cvtss2sd, false, dword),
        RM(cvtsd2ss, true, qword),
        RM(andps, false, ptr),
        RM(xorpd, true, ptr),
        RM(unpcklps, false, ptr),
        RM(unpckhpd, true, ptr),
    };
}

#undef RM

TEST(SoftSseFp, ArithmeticAndConversionsMatchHost)
{
    SseRunner soft;
    Rng rng(21);
    for (const Case& c : arith_cases()) {
        HostProgram host(c.emit);
        for (int i = 0; i < 300; ++i) {
            VecState s = random_fp_state(rng, c.is_double);
            ASSERT_TRUE(differential(soft, host, c.emit, s)) << c.name << " iteration " << i;
        }
    }
}

TEST(SoftSseFp, ComparePredicatesMatchHost)
{
    SseRunner soft;
    Rng rng(22);
    for (uint8_t pred = 0; pred < 8; ++pred) {
        for (bool dbl : { false, true }) {
            Emit e = [pred, dbl](G& g) {
                if (dbl) {
                    g.cmppd(g.xmm1, g.xmm2, pred);
                    g.cmppd(g.xmm3, g.ptr[g.rsi + 16], pred);
                    g.cmpsd(g.xmm4, g.xmm5, pred);
                    g.cmpsd(g.xmm6, g.qword[g.rsi + 40], pred);
                    g.cmpsd(g.xmm11, g.xmm11, pred);
                } else {
                    g.cmpps(g.xmm1, g.xmm2, pred);
                    g.cmpps(g.xmm3, g.ptr[g.rsi + 16], pred);
                    g.cmpss(g.xmm4, g.xmm5, pred);
                    g.cmpss(g.xmm6, g.dword[g.rsi + 40], pred);
                    g.cmpss(g.xmm11, g.xmm11, pred);
                }
            };
            HostProgram host(e);
            for (int i = 0; i < 200; ++i)
                ASSERT_TRUE(differential(soft, host, e, random_fp_state(rng, dbl))) << int(pred) << " " << dbl;
        }
    }
}

TEST(SoftSseFp, ComisFlagsMatchHost)
{
    SseRunner soft;
    Rng rng(23);
    std::vector<Case> cases = {
        { "comiss", false, [](G& g) { g.comiss(g.xmm1, g.xmm2); } },
        { "comiss_m", false, [](G& g) { g.comiss(g.xmm1, g.dword[g.rsi + 4]); } },
        { "ucomiss", false, [](G& g) { g.ucomiss(g.xmm3, g.xmm4); } },
        { "comisd", true, [](G& g) { g.comisd(g.xmm5, g.xmm6); } },
        { "ucomisd", true, [](G& g) { g.ucomisd(g.xmm7, g.qword[g.rsi + 8]); } },
        { "ucomisd_same", true, [](G& g) { g.ucomisd(g.xmm7, g.xmm7); } },
    };
    for (const Case& c : cases) {
        HostProgram host(c.emit);
        for (int i = 0; i < 300; ++i) {
            VecState s = random_fp_state(rng, c.is_double);
            ASSERT_TRUE(differential(soft, host, c.emit, s, true)) << c.name << " iteration " << i;
        }
    }
}

TEST(SoftSseFp, ScalarIntegerConversionsMatchHost)
{
    SseRunner soft;
    Rng rng(24);
    std::vector<Case> cases = {
        { "cvtsi2ss", false,
            [](G& g) {
                g.cvtsi2ss(g.xmm1, g.eax);
                g.cvtsi2ss(g.xmm2, g.rcx);
                g.cvtsi2ss(g.xmm3, g.dword[g.rsi]);
                g.cvtsi2ss(g.xmm4, g.qword[g.rsi + 8]);
            } },
        { "cvtsi2sd", true,
            [](G& g) {
                g.cvtsi2sd(g.xmm1, g.edx);
                g.cvtsi2sd(g.xmm2, g.r8);
                g.cvtsi2sd(g.xmm3, g.dword[g.rsi + 16]);
                g.cvtsi2sd(g.xmm4, g.qword[g.rsi + 24]);
            } },
        { "cvtss2si", false,
            [](G& g) {
                g.cvtss2si(g.eax, g.xmm1);
                g.cvtss2si(g.rcx, g.xmm2);
                g.cvtss2si(g.edx, g.dword[g.rsi + 4]);
                g.cvtss2si(g.r9, g.dword[g.rsi + 12]);
                g.cvttss2si(g.r10d, g.xmm3);
                g.cvttss2si(g.r11, g.xmm4);
                g.cvttss2si(g.ebx, g.dword[g.rsi + 20]);
            } },
        { "cvtsd2si", true,
            [](G& g) {
                g.cvtsd2si(g.eax, g.xmm1);
                g.cvtsd2si(g.rcx, g.xmm2);
                g.cvtsd2si(g.edx, g.qword[g.rsi + 8]);
                g.cvtsd2si(g.r9, g.qword[g.rsi + 16]);
                g.cvttsd2si(g.r10d, g.xmm3);
                g.cvttsd2si(g.r11, g.xmm4);
                g.cvttsd2si(g.rbx, g.qword[g.rsi + 24]);
            } },
        { "mmx_cvt", false,
            [](G& g) {
                g.cvtpi2ps(g.xmm1, g.qword[g.rsi]);
                g.movq(g.mm0, g.ptr[g.rsi + 8]);
                g.cvtpi2ps(g.xmm2, g.mm0);
                g.cvtpi2pd(g.xmm3, g.mm0);
                g.cvtps2pi(g.mm1, g.xmm4);
                g.cvttps2pi(g.mm2, g.qword[g.rsi + 16]);
                g.movq(g.ptr[g.rsi + 64], g.mm1);
                g.movq(g.ptr[g.rsi + 72], g.mm2);
                g.emms();
            } },
        { "mmx_cvt_pd", true,
            [](G& g) {
                g.cvtpd2pi(g.mm1, g.xmm4);
                g.cvttpd2pi(g.mm2, g.ptr[g.rsi + 16]);
                g.movq(g.ptr[g.rsi + 64], g.mm1);
                g.movq(g.ptr[g.rsi + 72], g.mm2);
                g.emms();
            } },
    };
    for (const Case& c : cases) {
        HostProgram host(c.emit);
        for (int i = 0; i < 300; ++i) {
            VecState s = random_fp_state(rng, c.is_double);
            if (i % 3 == 0) { // small integers and limits in the integer sources
                s.gpr[RAX] = static_cast<uint64_t>(static_cast<int64_t>(rng.below(2000)) - 1000);
                s.gpr[RCX] = 1ULL << 63;
                s.gpr[RDX] = 0x7fffffff;
                s.gpr[R8] = (1ULL << 53) + 1;
            }
            ASSERT_TRUE(differential(soft, host, c.emit, s)) << c.name << " iteration " << i;
        }
    }
}

TEST(SoftSseFp, KnownResults)
{
    SseRunner soft;
    auto f32 = [](float f) {
        uint32_t v;
        std::memcpy(&v, &f, 4);
        return uint64_t { v };
    };
    VecState s;
    // MINSS/MAXSS return the second operand when either is NaN.
    s.xmm[1] = { 0x7fc00000, 0 };
    s.xmm[2] = { f32(1.0f), 0 };
    s.xmm[3] = { f32(2.0f), 0 };
    s.xmm[4] = { 0x7fc00001, 0 };
    // CVTTSD2SI: integer indefinite on overflow and NaN.
    s.xmm[5] = { 0x41e0000000000000, 0 }; // 2^31
    s.xmm[6] = { 0x7ff8000000000000, 0 };
    ASSERT_FALSE(soft.run_state(
        [](G& g) {
            g.minss(g.xmm1, g.xmm2);
            g.maxss(g.xmm3, g.xmm4);
            g.cvttsd2si(g.eax, g.xmm5);
            g.cvttsd2si(g.rcx, g.xmm6);
            g.cvttsd2si(g.rdx, g.xmm5);
        },
        s));
    EXPECT_EQ(s.xmm[1][0], f32(1.0f));
    EXPECT_EQ(s.xmm[3][0], 0x7fc00001u);
    EXPECT_EQ(s.gpr[RAX], 0x80000000u);
    EXPECT_EQ(s.gpr[RCX], 0x8000000000000000u);
    EXPECT_EQ(s.gpr[RDX], 0x80000000u);
    EXPECT_EQ(s.mxcsr & 0x3f, 1u) << "invalid";
}

// With UM clear a tiny result faults (#XM) even when it is exact and whatever FTZ says; its
// element reports UE without PE, while the other elements report their own flags (as measured
// on hardware). The destination keeps its value.
TEST(SoftSseFp, UnmaskedUnderflowReportsUeWithoutPe)
{
    SseRunner soft; // CR4.OSXMMEXCPT is set: #XM, not #UD
    const uint32_t um_clear = 0x1f80 & ~(1u << 11);
    struct Probe {
        uint32_t a0, b0, a1, b1; // elements 0 and 1 of the operands
        bool packed;
        uint32_t mxcsr;
        uint32_t flags; // MXCSR flags after the fault
    };
    const Probe probes[] = {
        { 0x00800000, 0x00800000, 0, 0, false, um_clear, 0x10 },                   // tiny and inexact
        { 0x00800000, 0x3f000000, 0, 0, false, um_clear, 0x10 },                   // tiny and exact
        { 0x00800000, 0x3f000000, 0, 0, false, um_clear | 0x8000, 0x10 },          // FTZ set
        { 0x00800000, 0x00800000, 0x3f8ccccd, 0x3fa66666, true, um_clear, 0x30 }, // element 1 inexact
    };
    for (const Probe& p : probes) {
        VecState s;
        s.xmm[1] = { p.a0 | (uint64_t { p.a1 } << 32), 0 };
        s.xmm[2] = { p.b0 | (uint64_t { p.b1 } << 32), 0 };
        s.mxcsr = p.mxcsr;
        auto before = s.xmm[1];
        auto f = soft.run_state(
            [&](G& g) {
                if (p.packed)
                    g.mulps(g.xmm1, g.xmm2);
                else
                    g.mulss(g.xmm1, g.xmm2);
            },
            s);
        ASSERT_TRUE(f.has_value());
        EXPECT_EQ(f->vector, kExcXM);
        EXPECT_EQ(s.mxcsr & 0x3f, p.flags) << std::hex << p.a0 << " * " << p.b0;
        EXPECT_EQ(s.xmm[1], before);
    }
}

TEST(SoftSseFp, ReciprocalApproximationsWithinBound)
{
    SseRunner soft;
    Rng rng(25);
    for (int i = 0; i < 500; ++i) {
        VecState s;
        float in[4];
        for (float& f : in)
            f = std::ldexp(
                1.0f + static_cast<float>(rng.below(1 << 20)) / (1 << 20), static_cast<int>(rng.below(60)) - 30);
        std::memcpy(s.xmm[1].data(), in, 16);
        ASSERT_FALSE(soft.run_state(
            [](G& g) {
                g.rcpps(g.xmm2, g.xmm1);
                g.rsqrtps(g.xmm3, g.xmm1);
                g.rcpss(g.xmm4, g.xmm1);
                g.rsqrtss(g.xmm5, g.xmm1);
            },
            s));
        float rcp[4], rsq[4];
        std::memcpy(rcp, s.xmm[2].data(), 16);
        std::memcpy(rsq, s.xmm[3].data(), 16);
        for (int j = 0; j < 4; ++j) {
            double r = 1.0 / in[j], q = 1.0 / std::sqrt(static_cast<double>(in[j]));
            EXPECT_LE(std::fabs(rcp[j] - r), 1.5 * std::ldexp(1.0, -12) * std::fabs(r));
            EXPECT_LE(std::fabs(rsq[j] - q), 1.5 * std::ldexp(1.0, -12) * std::fabs(q));
        }
        EXPECT_EQ(s.xmm[4][0] & 0xffffffff, s.xmm[2][0] & 0xffffffff);
        EXPECT_EQ(s.xmm[5][0] & 0xffffffff, s.xmm[3][0] & 0xffffffff);
    }
}

} // namespace
} // namespace vessel::soft::test
