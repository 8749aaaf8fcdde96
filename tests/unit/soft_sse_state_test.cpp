// FXSAVE/FXRSTOR, XSAVE/XRSTOR, LDMXCSR/STMXCSR and SIMD exception delivery on the soft engine.
#include "soft_sse_test_support.h"

namespace vessel::soft::test {
namespace {

using G = Xbyak::CodeGenerator;

// 0F AE /r [rsi + disp32] (Xbyak has no FXSAVE/XSAVE): /0 FXSAVE, /1 FXRSTOR, /4 XSAVE,
// /5 XRSTOR, /6 XSAVEOPT; REX.W selects the 64-bit forms.
void group15(G& g, unsigned r, int32_t disp, bool rexw)
{
    if (rexw)
        g.db(0x48);
    g.db(0x0f);
    g.db(0xae);
    g.db(0x86 | (r << 3));
    g.dd(static_cast<uint32_t>(disp));
}

constexpr unsigned kFxsave = 0, kFxrstor = 1, kXsave = 4, kXrstor = 5, kXsaveopt = 6;

// Bytes 6..23 (FOP, FIP, FDP) depend on where the code ran; MXCSR_MASK (28..31) on the host
// CPU model (ours is 0xffff).
constexpr Ignore fx_ip(size_t base)
{
    return { base + 6, base + 24 };
}
constexpr Ignore fx_mask(size_t base)
{
    return { base + 28, base + 32 };
}

VecState random_sse_state(Rng& rng)
{
    VecState s = random_int_state(rng);
    s.mxcsr = 0x1f80 | (rng.next() & 0xe07f); // random flags, RC, FZ, DAZ; all masked
    return s;
}

TEST(SoftSseState, FxsaveMatchesHost)
{
    SseRunner soft;
    Emit e = [](G& g) {
        group15(g, kFxsave, 0, true);
        group15(g, kFxsave, 512, false);
    };
    HostProgram host(e);
    Rng rng(11);
    for (int i = 0; i < 16; ++i)
        ASSERT_TRUE(differential(
            soft, host, e, random_sse_state(rng), false, { fx_ip(0), fx_ip(512), fx_mask(0), fx_mask(512) }));
}

// A random but valid image: restore, save (both forms), compare with the host.
TEST(SoftSseState, FxrstorFxsaveRoundTripMatchesHost)
{
    SseRunner soft;
    Emit e = [](G& g) {
        group15(g, kFxrstor, 0, true);
        g.paddd(g.xmm3, g.xmm3);
        group15(g, kFxsave, 512, true);
        group15(g, kFxrstor, 1024, false);
        group15(g, kFxsave, 1536, false);
    };
    HostProgram host(e);
    Rng rng(12);
    for (int i = 0; i < 16; ++i) {
        VecState s = random_int_state(rng);
        for (size_t base : { 0, 1024 }) {
            uint32_t mx = static_cast<uint32_t>(rng.next() & 0xffff);
            std::memcpy(&s.mem[base + 24], &mx, 4);
            s.mem[base + 5] = 0;
            // FCW with all exceptions masked and no pending exception (the host would trap at
            // the next waiting x87 instruction otherwise).
            uint16_t fcw = static_cast<uint16_t>(rng.next() | 0x3f);
            std::memcpy(&s.mem[base], &fcw, 2);
            s.mem[base + 2] &= 0x7f;
            s.mem[base + 3] &= 0x7f;
        }
        ASSERT_TRUE(differential(soft, host, e, s, false, { fx_ip(512), fx_ip(1536), fx_mask(512), fx_mask(1536) }))
            << "iteration " << i;
        // The restored state is the one saved.
        VecState g = s;
        ASSERT_FALSE(soft.run_state(e, g));
        EXPECT_EQ(std::memcmp(&g.mem[512 + 24], &s.mem[24], 4), 0);
        for (unsigned r = 0; r < 8; ++r)
            EXPECT_EQ(std::memcmp(&g.mem[512 + 32 + 16 * r], &s.mem[32 + 16 * r], 10), 0) << "st" << r;
        for (unsigned r = 0; r < 16; ++r)
            if (r != 3) {
                EXPECT_EQ(std::memcmp(&g.mem[512 + 160 + 16 * r], &s.mem[160 + 16 * r], 16), 0) << "xmm" << r;
            }
    }
}

TEST(SoftSseState, FxsaveFaults)
{
    SseRunner soft;
    Cpu& c = soft.cpu();
    VecState s;
    auto fault = soft.run_state([](G& g) { group15(g, kFxsave, 8, true); }, s);
    ASSERT_TRUE(fault);
    EXPECT_EQ(fault->vector, kExcGP);
    fault = soft.run_state([](G& g) { group15(g, kFxrstor, 24, false); }, s);
    ASSERT_TRUE(fault) << "misaligned FXRSTOR";
    // Reserved MXCSR bits in the image.
    s.mem.fill(0);
    s.mem[24 + 2] = 1;
    fault = soft.run_state([](G& g) { group15(g, kFxrstor, 0, true); }, s);
    ASSERT_TRUE(fault);
    EXPECT_EQ(fault->vector, kExcGP);
    c.cr0 |= fpu::kCr0Ts;
    fault = soft.run_state([](G& g) { group15(g, kFxsave, 0, true); }, s);
    ASSERT_TRUE(fault);
    EXPECT_EQ(fault->vector, kExcNM);
}

TEST(SoftSseState, XsaveWritesComponentsAndHeader)
{
    SseRunner soft;
    Rng rng(13);
    VecState s = random_sse_state(rng);
    s.gpr[RAX] = 3;
    s.gpr[RDX] = 0;
    for (size_t i = 512; i < 576; ++i)
        s.mem[i] = 0;
    s.mem[512 + 1] = 0x80; // XSTATE_BV bit 15, not ours: kept
    s.mem[512 + 40] = 0x5a; // reserved header bytes: not written
    VecState g = s;
    ASSERT_FALSE(soft.run_state(
        [](G& g) {
            group15(g, kXsave, 0, true);
            group15(g, kFxsave, 1024, true);
        },
        g));
    EXPECT_EQ(std::memcmp(&g.mem[0], &g.mem[1024], 416), 0) << "XSAVE legacy region = FXSAVE image";
    uint64_t bv;
    std::memcpy(&bv, &g.mem[512], 8);
    EXPECT_EQ(bv, 0x8003u);
    EXPECT_EQ(g.mem[512 + 40], 0x5a);
    EXPECT_EQ(std::memcmp(&g.mem[416], &s.mem[416], 96), 0) << "bytes 416..511 untouched";

    // Only x87 requested: the SSE area, MXCSR and XSTATE_BV[1] stay as they were.
    VecState h = s;
    h.gpr[RAX] = 1;
    h.mem[512] = 0;
    ASSERT_FALSE(soft.run_state([](G& g) { group15(g, kXsaveopt, 0, true); }, h));
    EXPECT_EQ(h.mem[512], 1);
    EXPECT_EQ(std::memcmp(&h.mem[24], &s.mem[24], 8), 0);
    EXPECT_EQ(std::memcmp(&h.mem[160], &s.mem[160], 256), 0);
    EXPECT_EQ(std::memcmp(&h.mem[32], &g.mem[32], 128), 0);
}

TEST(SoftSseState, XrstorLoadsOrInitialises)
{
    SseRunner soft;
    Cpu& c = soft.cpu();
    Rng rng(14);
    VecState s = random_sse_state(rng);
    s.gpr[RAX] = 3;
    s.gpr[RDX] = 0;
    std::memset(&s.mem[512], 0, 64);
    ASSERT_FALSE(soft.run_state([](G& g) { group15(g, kXsave, 0, true); }, s));
    VecState saved = s;
    // Scramble, restore everything: the state comes back.
    for (auto& x : s.xmm)
        x = { rng.next(), rng.next() };
    s.mxcsr = 0x1f80;
    ASSERT_FALSE(soft.run_state([](G& g) { group15(g, kXrstor, 0, true); }, s));
    EXPECT_EQ(s.xmm, saved.xmm);
    EXPECT_EQ(s.mxcsr, saved.mxcsr);

    // XSTATE_BV = 0: both components initialised, MXCSR still loaded from the image.
    s.mem[512] = 0;
    uint32_t mx = 0x1f80 | 0x6000;
    std::memcpy(&s.mem[24], &mx, 4);
    fpu::fx_set<uint16_t>(c, fpu::kFcw, 0x1234);
    ASSERT_FALSE(soft.run_state([](G& g) { group15(g, kXrstor, 0, true); }, s));
    for (auto& x : s.xmm)
        EXPECT_EQ(x, (std::array<uint64_t, 2> { 0, 0 }));
    EXPECT_EQ(s.mxcsr, mx);
    EXPECT_EQ(fpu::fcw(c), 0x037f);
    EXPECT_EQ(fpu::ftw(c), 0);

    // RFBM = x87 only: XMM registers untouched even with XSTATE_BV[1] = 0.
    s = saved;
    s.gpr[RAX] = 1;
    s.mem[512] = 0;
    VecState before = s;
    ASSERT_FALSE(soft.run_state([](G& g) { group15(g, kXrstor, 0, true); }, s));
    EXPECT_EQ(s.xmm, before.xmm);
    EXPECT_EQ(s.mxcsr, before.mxcsr);
}

TEST(SoftSseState, XrstorFaults)
{
    SseRunner soft;
    Cpu& c = soft.cpu();
    auto try_header = [&](size_t off, uint8_t v, bool misalign = false) {
        VecState s;
        s.gpr[RAX] = 3;
        uint32_t mx = 0x1f80;
        std::memcpy(&s.mem[24], &mx, 4);
        s.mem[512] = 3;
        s.mem[off] = v;
        s.xmm[0] = { 7, 7 };
        auto f = soft.run_state([misalign](G& g) { group15(g, kXrstor, misalign ? 16 : 0, true); }, s);
        EXPECT_EQ(s.xmm[0][0], f ? 7u : 0u);
        return f;
    };
    EXPECT_FALSE(try_header(100, 1));
    for (auto [off, v] :
        { std::pair<size_t, uint8_t> { 512, 7 }, { 512 + 8, 1 }, { 512 + 15, 0x80 }, { 512 + 16, 1 }, { 26, 1 } }) {
        auto f = try_header(off, v);
        ASSERT_TRUE(f) << "offset " << off;
        EXPECT_EQ(f->vector, kExcGP);
    }
    auto f = try_header(100, 1, true);
    ASSERT_TRUE(f);
    EXPECT_EQ(f->vector, kExcGP);
    c.cr4 &= ~fpu::kCr4Osxsave;
    f = try_header(100, 1);
    ASSERT_TRUE(f);
    EXPECT_EQ(f->vector, kExcUD);
}

TEST(SoftSseState, LdmxcsrStmxcsr)
{
    SseRunner soft;
    Emit e = [](G& g) {
        g.ldmxcsr(g.ptr[g.rsi]);
        g.stmxcsr(g.ptr[g.rsi + 8]);
    };
    HostProgram host(e);
    Rng rng(15);
    for (int i = 0; i < 16; ++i) {
        VecState s = random_int_state(rng);
        uint32_t mx = static_cast<uint32_t>(0x1f80 | (rng.next() & 0xe07f));
        std::memcpy(&s.mem[0], &mx, 4);
        ASSERT_TRUE(differential(soft, host, e, s));
    }
    VecState s;
    uint32_t bad = 0x10000 | 0x1f80;
    std::memcpy(&s.mem[0], &bad, 4);
    auto f = soft.run_state(e, s);
    ASSERT_TRUE(f);
    EXPECT_EQ(f->vector, kExcGP);
}

TEST(SoftSseState, UnmaskedExceptionRaisesXmOrUd)
{
    SseRunner soft;
    Cpu& c = soft.cpu();
    VecState s;
    s.mxcsr = 0x1f80 & ~0x200; // divide-by-zero unmasked
    s.xmm[0] = { 0x3ff0000000000000, 0 }; // 1.0
    s.xmm[1] = { 0, 0 };
    auto f = soft.run_state([](G& g) { g.divsd(g.xmm0, g.xmm1); }, s);
    ASSERT_TRUE(f);
    EXPECT_EQ(f->vector, kExcXM);
    EXPECT_EQ(s.mxcsr & 0x3f, 0x4u) << "ZE flagged";
    EXPECT_EQ(s.xmm[0][0], 0x3ff0000000000000u) << "destination unchanged";
    c.cr4 &= ~x86::kCr4Osxmmexcpt;
    f = soft.run_state([](G& g) { g.divsd(g.xmm0, g.xmm1); }, s);
    ASSERT_TRUE(f);
    EXPECT_EQ(f->vector, kExcUD);
    // Masked: result written, flag set, no fault.
    s.mxcsr = 0x1f80;
    ASSERT_FALSE(soft.run_state([](G& g) { g.divsd(g.xmm0, g.xmm1); }, s));
    EXPECT_EQ(s.xmm[0][0], 0x7ff0000000000000u);
    EXPECT_EQ(s.mxcsr, 0x1f84u);
}

} // namespace
} // namespace vessel::soft::test
