// SSE/SSE2 data movement on the soft engine against the host CPU running the same bytes.
#include "soft_sse_test_support.h"

namespace vessel::soft::test {
namespace {

using G = Xbyak::CodeGenerator;

void check_program(const Emit& e, uint64_t seed, int iterations = 16)
{
    SseRunner soft;
    HostProgram host(e);
    Rng rng(seed);
    for (int i = 0; i < iterations; ++i)
        ASSERT_TRUE(differential(soft, host, e, random_int_state(rng))) << "iteration " << i;
}

TEST(SoftSseMove, MovdMovqAllForms)
{
    check_program(
        [](G& g) {
            g.movd(g.xmm1, g.eax);
            g.movd(g.xmm2, g.ptr[g.rsi + 4]);
            g.movd(g.ecx, g.xmm3);
            g.movd(g.ptr[g.rsi + 8], g.xmm4);
            g.movq(g.xmm5, g.rdx);
            g.movq(g.r8, g.xmm6);
            g.movq(g.xmm7, g.xmm8);
            g.movq(g.xmm9, g.ptr[g.rsi + 16]);
            g.movq(g.ptr[g.rsi + 24], g.xmm10);
            g.movd(g.xmm15, g.r11d);
            g.movd(g.r12d, g.xmm14);
            g.movd(g.mm0, g.eax);
            g.movd(g.ebx, g.mm0);
            g.movd(g.mm1, g.ptr[g.rsi + 40]);
            g.movd(g.ptr[g.rsi + 44], g.mm1);
            g.movq(g.mm2, g.ptr[g.rsi + 48]);
            g.movq(g.mm3, g.mm2);
            g.movq(g.ptr[g.rsi + 56], g.mm3);
            g.movq(g.r9, g.mm2);
            g.movq(g.mm4, g.r10);
            g.movq(g.ptr[g.rsi + 64], g.mm4);
            g.movq2dq(g.xmm11, g.mm4);
            g.movdq2q(g.mm5, g.xmm12);
            g.movntq(g.ptr[g.rsi + 72], g.mm5);
            g.emms();
        },
        10);
}

TEST(SoftSseMove, FullRegisterMoves)
{
    check_program(
        [](G& g) {
            g.movdqa(g.xmm0, g.xmm1);
            g.movdqa(g.xmm2, g.ptr[g.rsi + 16]);
            g.movdqa(g.ptr[g.rsi + 32], g.xmm3);
            g.movdqu(g.xmm4, g.ptr[g.rsi + 7]);
            g.movdqu(g.ptr[g.rsi + 51], g.xmm5);
            g.movaps(g.xmm6, g.ptr[g.rsi + 80]);
            g.movaps(g.ptr[g.rsi + 96], g.xmm7);
            g.movapd(g.xmm8, g.xmm9);
            g.movapd(g.ptr[g.rsi + 112], g.xmm10);
            g.movups(g.xmm11, g.ptr[g.rsi + 131]);
            g.movups(g.ptr[g.rsi + 149], g.xmm12);
            g.movupd(g.xmm13, g.ptr[g.rsi + 170]);
            g.movupd(g.ptr[g.rsi + 190], g.xmm14);
            g.lddqu(g.xmm15, g.ptr[g.rsi + 211]);
            g.movntdq(g.ptr[g.rsi + 240], g.xmm1);
            g.movntps(g.ptr[g.rsi + 256], g.xmm2);
            g.movntpd(g.ptr[g.rsi + 272], g.xmm3);
            g.movnti(g.ptr[g.rsi + 290], g.eax);
            g.movnti(g.ptr[g.rsi + 300], g.rcx);
            g.movdqu(g.xmm1, g.ptr[g.rsi + 1997]);
        },
        20);
}

TEST(SoftSseMove, ScalarAndHalfMoves)
{
    check_program(
        [](G& g) {
            g.movss(g.xmm0, g.xmm1);
            g.movss(g.xmm2, g.ptr[g.rsi + 4]);
            g.movss(g.ptr[g.rsi + 12], g.xmm3);
            g.movsd(g.xmm4, g.xmm5);
            g.movsd(g.xmm6, g.ptr[g.rsi + 24]);
            g.movsd(g.ptr[g.rsi + 40], g.xmm7);
            g.movlps(g.xmm8, g.ptr[g.rsi + 48]);
            g.movlps(g.ptr[g.rsi + 56], g.xmm9);
            g.movhps(g.xmm10, g.ptr[g.rsi + 64]);
            g.movhps(g.ptr[g.rsi + 72], g.xmm11);
            g.movlpd(g.xmm12, g.ptr[g.rsi + 80]);
            g.movlpd(g.ptr[g.rsi + 88], g.xmm13);
            g.movhpd(g.xmm14, g.ptr[g.rsi + 96]);
            g.movhpd(g.ptr[g.rsi + 104], g.xmm15);
            g.movhlps(g.xmm1, g.xmm2);
            g.movlhps(g.xmm3, g.xmm4);
            g.movsd(g.xmm9, g.xmm9);
        },
        30);
}

TEST(SoftSseMove, MisalignedAlignedMovesFault)
{
    SseRunner soft;
    Cpu& c = soft.cpu();
    std::vector<Emit> programs = {
        [](G& g) { g.movdqa(g.xmm0, g.ptr[g.rsi + 8]); },
        [](G& g) { g.movdqa(g.ptr[g.rsi + 4], g.xmm0); },
        [](G& g) { g.movaps(g.xmm0, g.ptr[g.rsi + 1]); },
        [](G& g) { g.movapd(g.ptr[g.rsi + 12], g.xmm0); },
        [](G& g) { g.movntdq(g.ptr[g.rsi + 2], g.xmm0); },
        [](G& g) { g.addps(g.xmm0, g.ptr[g.rsi + 4]); },
    };
    for (const Emit& e : programs) {
        VecState s;
        s.xmm[0] = { 0x1111, 0x2222 };
        s.mem.fill(0xab);
        auto fault = soft.run_state(e, s);
        ASSERT_TRUE(fault);
        EXPECT_EQ(fault->vector, kExcGP);
        EXPECT_EQ(fault->error_code, 0u);
        EXPECT_EQ(c.rip, SseRunner::kCode);
        EXPECT_EQ(s.xmm[0][0], 0x1111u); // nothing written
        for (uint8_t b : s.mem)
            ASSERT_EQ(b, 0xab);
    }
}

TEST(SoftSseMove, PageCrossingLoad)
{
    SseRunner soft;
    Cpu& c = soft.cpu();
    // An unaligned 16-byte load across a page boundary reads both pages.
    uint8_t* p = soft.mem(0x20ff8, 16);
    for (int i = 0; i < 16; ++i)
        p[i] = static_cast<uint8_t>(i + 1);
    c.gpr[RAX] = 0x20ff8;
    ASSERT_FALSE(soft.run([](G& g) { g.movdqu(g.xmm3, g.ptr[g.rax]); }));
    EXPECT_EQ(std::memcmp(c.fx.data() + fpu::kXmm + 48, p, 16), 0);
}

TEST(SoftSseMove, MaskMovDquStoresSelectedBytes)
{
    SseRunner soft;
    Cpu& c = soft.cpu();
    Rng rng(7);
    for (int i = 0; i < 16; ++i) {
        alignas(16) uint8_t expect[32];
        uint8_t* mem = soft.mem(0x30000, 32);
        for (int j = 0; j < 32; ++j)
            mem[j] = expect[j] = static_cast<uint8_t>(rng.next());
        __m128i data = _mm_set_epi64x(static_cast<int64_t>(rng.next()), static_cast<int64_t>(rng.next()));
        __m128i mask = _mm_set_epi64x(static_cast<int64_t>(rng.next()), static_cast<int64_t>(rng.next()));
        _mm_maskmoveu_si128(data, mask, reinterpret_cast<char*>(expect + 5));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(c.fx.data() + fpu::kXmm + 16), data);
        _mm_storeu_si128(reinterpret_cast<__m128i*>(c.fx.data() + fpu::kXmm + 32), mask);
        c.gpr[RDI] = 0x30005;
        ASSERT_FALSE(soft.run([](G& g) { g.maskmovdqu(g.xmm1, g.xmm2); }));
        ASSERT_EQ(std::memcmp(mem, expect, 32), 0);
    }
}

TEST(SoftSseMove, MaskMovqStoresSelectedBytes)
{
    SseRunner soft;
    Cpu& c = soft.cpu();
    Rng rng(8);
    for (int i = 0; i < 16; ++i) {
        uint8_t* mem = soft.mem(0x30000, 16);
        uint8_t expect[16];
        for (int j = 0; j < 16; ++j)
            mem[j] = expect[j] = static_cast<uint8_t>(rng.next());
        uint64_t data = rng.next(), mask = rng.next();
        for (int j = 0; j < 8; ++j)
            if ((mask >> (8 * j + 7)) & 1)
                expect[3 + j] = static_cast<uint8_t>(data >> (8 * j));
        fpu::fx_set<uint64_t>(c, fpu::kSt + 16 * 1, data); // MM1 and MM2 (TOP = 0)
        fpu::fx_set<uint64_t>(c, fpu::kSt + 16 * 2, mask);
        c.gpr[RDI] = 0x30003;
        ASSERT_FALSE(soft.run([](G& g) { g.maskmovq(g.mm1, g.mm2); }));
        ASSERT_EQ(std::memcmp(mem, expect, 16), 0);
    }
}

TEST(SoftSseMove, SseDisabledOrTaskSwitched)
{
    SseRunner soft;
    Cpu& c = soft.cpu();
    c.cr4 &= ~x86::kCr4Osfxsr;
    auto fault = soft.run([](G& g) { g.movdqa(g.xmm0, g.xmm1); });
    ASSERT_TRUE(fault);
    EXPECT_EQ(fault->vector, kExcUD);
    c.cr4 |= x86::kCr4Osfxsr;
    c.cr0 |= fpu::kCr0Ts;
    fault = soft.run([](G& g) { g.pxor(g.xmm0, g.xmm1); });
    ASSERT_TRUE(fault);
    EXPECT_EQ(fault->vector, kExcNM);
    fault = soft.run([](G& g) { g.addsd(g.xmm0, g.xmm1); });
    ASSERT_TRUE(fault);
    EXPECT_EQ(fault->vector, kExcNM);
    c.cr0 &= ~fpu::kCr0Ts;
    c.cr0 |= fpu::kCr0Em;
    fault = soft.run([](G& g) { g.movd(g.xmm0, g.eax); });
    ASSERT_TRUE(fault);
    EXPECT_EQ(fault->vector, kExcUD);
}

} // namespace
} // namespace vessel::soft::test
