// SSE2 integer instructions on the soft engine against the host CPU running the same bytes.
#include "soft_sse_test_support.h"

namespace vessel::soft::test {
namespace {

using G = Xbyak::CodeGenerator;

struct Case {
    const char* name;
    Emit emit;
};

// Register form, memory form (aligned) and a second register pair.
#define RM(op)                                                                                                         \
    Case                                                                                                               \
    {                                                                                                                  \
#op, [](G& g) {                                                                                                \
            g.op(g.xmm1, g.xmm2);                                                                                      \
            g.op(g.xmm3, g.ptr[g.rsi + 32]);                                                                           \
            g.op(g.xmm14, g.xmm9);                                                                                     \
        }       \
    }
// MMX register and memory forms.
#define MM(op)                                                                                                         \
    Case                                                                                                               \
    {                                                                                                                  \
#op "_mmx", [](G& g) {                                                                                         \
            g.movq(g.mm1, g.ptr[g.rsi + 64]);                                                                          \
            g.movq(g.mm2, g.ptr[g.rsi + 72]);                                                                          \
            g.op(g.mm1, g.mm2);                                                                                        \
            g.op(g.mm2, g.ptr[g.rsi + 80]);                                                                            \
            g.movq(g.ptr[g.rsi + 88], g.mm1);                                                                          \
            g.movq(g.ptr[g.rsi + 96], g.mm2);                                                                          \
            g.movq2dq(g.xmm5, g.mm1);                                                                                  \
            g.movdq2q(g.mm3, g.xmm7);                                                                                  \
            g.movq(g.ptr[g.rsi + 104], g.mm3);                                                                         \
            g.emms();                                                                                                  \
        }       \
    }

std::vector<Case> binary_cases()
{
    return {
        RM(pand),
        RM(pandn),
        RM(por),
        RM(pxor),
        RM(andps),
        RM(andpd),
        RM(andnps),
        RM(andnpd),
        RM(orps),
        RM(orpd),
        RM(xorps),
        RM(xorpd),
        RM(paddb),
        RM(paddw),
        RM(paddd),
        RM(paddq),
        RM(psubb),
        RM(psubw),
        RM(psubd),
        RM(psubq),
        RM(paddsb),
        RM(paddsw),
        RM(paddusb),
        RM(paddusw),
        RM(psubsb),
        RM(psubsw),
        RM(psubusb),
        RM(psubusw),
        RM(pcmpeqb),
        RM(pcmpeqw),
        RM(pcmpeqd),
        RM(pcmpgtb),
        RM(pcmpgtw),
        RM(pcmpgtd),
        RM(pminub),
        RM(pmaxub),
        RM(pminsw),
        RM(pmaxsw),
        RM(pavgb),
        RM(pavgw),
        RM(psadbw),
        RM(pmullw),
        RM(pmulhw),
        RM(pmulhuw),
        RM(pmuludq),
        RM(pmaddwd),
        RM(punpcklbw),
        RM(punpcklwd),
        RM(punpckldq),
        RM(punpcklqdq),
        RM(punpckhbw),
        RM(punpckhwd),
        RM(punpckhdq),
        RM(punpckhqdq),
        RM(unpcklps),
        RM(unpckhps),
        RM(unpcklpd),
        RM(unpckhpd),
        RM(packsswb),
        RM(packssdw),
        RM(packuswb),
        RM(psllw),
        RM(pslld),
        RM(psllq),
        RM(psrlw),
        RM(psrld),
        RM(psrlq),
        RM(psraw),
        RM(psrad),
        MM(pand),
        MM(pandn),
        MM(por),
        MM(pxor),
        MM(paddb),
        MM(paddw),
        MM(paddd),
        MM(paddq),
        MM(psubb),
        MM(psubq),
        MM(paddsb),
        MM(paddusw),
        MM(psubsw),
        MM(psubusb),
        MM(pcmpeqb),
        MM(pcmpgtw),
        MM(pcmpgtd),
        MM(pminub),
        MM(pmaxsw),
        MM(pavgb),
        MM(pavgw),
        MM(psadbw),
        MM(pmullw),
        MM(pmulhw),
        MM(pmulhuw),
        MM(pmuludq),
        MM(pmaddwd),
        MM(punpcklbw),
        MM(punpcklwd),
        MM(punpckldq),
        MM(punpckhbw),
        MM(punpckhwd),
        MM(punpckhdq),
        MM(packsswb),
        MM(packssdw),
        MM(packuswb),
        MM(psllw),
        MM(psrld),
        MM(psraw),
        MM(psrlq),
    };
}

#undef RM
#undef MM

// Shift counts from registers are small most of the time so that results are not all zero.
VecState shift_friendly(Rng& r)
{
    VecState s = random_int_state(r);
    if (r.below(4)) {
        s.xmm[2][0] = r.below(70);
        s.xmm[9][0] = r.below(20);
        uint64_t m = r.below(40);
        std::memcpy(&s.mem[32], &m, 8);
        std::memcpy(&s.mem[80], &m, 8);
        s.mem[72] = static_cast<uint8_t>(r.below(70));
        std::memset(&s.mem[73], 0, 7);
    }
    return s;
}

TEST(SoftSseInt, BinaryOpsMatchHost)
{
    SseRunner soft;
    Rng rng(1);
    for (const Case& c : binary_cases()) {
        HostProgram host(c.emit);
        for (int i = 0; i < 64; ++i) {
            VecState s = shift_friendly(rng);
            ASSERT_TRUE(differential(soft, host, c.emit, s)) << c.name << " iteration " << i;
        }
    }
}

TEST(SoftSseInt, ImmediateOpsMatchHost)
{
    SseRunner soft;
    Rng rng(2);
    for (int imm : { 0, 1, 3, 7, 8, 15, 16, 17, 31, 32, 33, 63, 64, 100, 255 }) {
        Emit e = [imm](G& g) {
            g.psllw(g.xmm0, imm);
            g.pslld(g.xmm1, imm);
            g.psllq(g.xmm2, imm);
            g.psrlw(g.xmm3, imm);
            g.psrld(g.xmm4, imm);
            g.psrlq(g.xmm5, imm);
            g.psraw(g.xmm6, imm);
            g.psrad(g.xmm7, imm);
            g.pslldq(g.xmm8, imm);
            g.psrldq(g.xmm9, imm);
            g.movq(g.mm3, g.ptr[g.rsi]);
            g.psllq(g.mm3, imm);
            g.movq(g.ptr[g.rsi + 8], g.mm3);
            g.emms();
        };
        HostProgram host(e);
        for (int i = 0; i < 8; ++i)
            ASSERT_TRUE(differential(soft, host, e, random_int_state(rng))) << "shift " << imm;
    }
    for (int i = 0; i < 40; ++i) {
        uint8_t imm = static_cast<uint8_t>(rng.next());
        Emit e = [imm](G& g) {
            g.pshufd(g.xmm0, g.xmm1, imm);
            g.pshufd(g.xmm2, g.ptr[g.rsi + 16], imm);
            g.pshuflw(g.xmm3, g.xmm4, imm);
            g.pshufhw(g.xmm5, g.ptr[g.rsi + 48], imm);
            g.shufps(g.xmm6, g.xmm7, imm);
            g.shufpd(g.xmm8, g.ptr[g.rsi + 64], imm);
            g.pextrw(g.eax, g.xmm9, imm);
            g.pextrw(g.r10, g.xmm10, imm);
            g.pinsrw(g.xmm11, g.ecx, imm);
            g.pinsrw(g.xmm12, g.ptr[g.rsi + 100], imm);
            g.movq(g.mm1, g.ptr[g.rsi + 128]);
            g.pshufw(g.mm2, g.mm1, imm);
            g.pextrw(g.edx, g.mm2, imm);
            g.pinsrw(g.mm1, g.r8d, imm);
            g.movq(g.ptr[g.rsi + 136], g.mm1);
            g.movq(g.ptr[g.rsi + 144], g.mm2);
            g.emms();
        };
        HostProgram host(e);
        for (int j = 0; j < 4; ++j)
            ASSERT_TRUE(differential(soft, host, e, random_int_state(rng))) << "imm " << int(imm);
    }
}

TEST(SoftSseInt, MovemaskMatchesHost)
{
    SseRunner soft;
    Rng rng(3);
    Emit e = [](G& g) {
        g.pmovmskb(g.eax, g.xmm1);
        g.pmovmskb(g.r9d, g.xmm12);
        g.movmskps(g.ecx, g.xmm2);
        g.movmskpd(g.edx, g.xmm3);
        g.movq(g.mm0, g.ptr[g.rsi]);
        g.pmovmskb(g.ebx, g.mm0);
        g.emms();
    };
    HostProgram host(e);
    for (int i = 0; i < 64; ++i)
        ASSERT_TRUE(differential(soft, host, e, random_int_state(rng)));
}

TEST(SoftSseInt, MisalignedOperandFaults)
{
    SseRunner soft;
    VecState s;
    auto fault = soft.run_state([](G& g) { g.paddb(g.xmm0, g.ptr[g.rsi + 8]); }, s);
    ASSERT_TRUE(fault);
    EXPECT_EQ(fault->vector, kExcGP);
    EXPECT_EQ(fault->error_code, 0u);
}

TEST(SoftSseInt, MmxFormsTagTheX87Stack)
{
    SseRunner soft;
    Cpu& c = soft.cpu();
    // TOP = 6 (two values pushed): MM1 is physical register R1, held in slot ST(3).
    fpu::set_fsw(c, 6 << 11);
    fpu::ftw(c) = 0xc0;
    fpu::fx_set<uint64_t>(c, fpu::kSt + 16 * 3, 0x0101010101010101ULL);
    fpu::fx_set<uint64_t>(c, fpu::kSt + 16 * 2, 0x0202020202020202ULL);
    ASSERT_FALSE(soft.run([](G& g) { g.paddb(g.mm0, g.mm1); }));
    EXPECT_EQ(fpu::top(c), 0u);
    EXPECT_EQ(fpu::mm(c, 0), 0x0303030303030303ULL);
    EXPECT_EQ(fpu::fx_get<uint64_t>(c, fpu::kSt), 0x0303030303030303ULL);
    EXPECT_EQ(fpu::fx_get<uint16_t>(c, fpu::kSt + 8), 0xffff);
    EXPECT_EQ(fpu::ftw(c), 0xff);
    ASSERT_FALSE(soft.run([](G& g) { g.emms(); }));
    EXPECT_EQ(fpu::ftw(c), 0);
}

} // namespace
} // namespace vessel::soft::test
