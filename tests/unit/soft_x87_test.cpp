// x87 instructions on the soft engine against the host CPU running the same bytes: each program
// ends with FXSAVE64, so the whole register stack, FSW (TOP, condition codes, flags), FCW and
// the tags are compared, along with every value the program stored.
#include "soft_sse_test_support.h"

namespace vessel::soft::test {
namespace {

using G = Xbyak::CodeGenerator;

// Memory layout of the x87 test state.
constexpr int kF80 = 0; // 16 extended values, 16 bytes apart
constexpr int kF32 = 256; // 16 floats
constexpr int kF64 = 320; // 16 doubles
constexpr int kI16 = 448; // 16 words
constexpr int kI32 = 480; // 8 doublewords
constexpr int kI64 = 512; // 8 quadwords
constexpr int kCw = 600; // control word loaded by the programs
constexpr int kOut = 640; // results
constexpr int kFx = 1024; // FXSAVE64 image at the end
constexpr int kEnv = 1536; // environment / FNSAVE images

void modrm_disp32(G& g, uint8_t opcode, unsigned reg, int32_t disp)
{
    g.db(opcode);
    g.db(0x86 | (reg << 3)); // [rsi + disp32]
    g.dd(static_cast<uint32_t>(disp));
}
void fld80(G& g, int32_t disp)
{
    modrm_disp32(g, 0xdb, 5, disp);
}
void fstp80(G& g, int32_t disp)
{
    modrm_disp32(g, 0xdb, 7, disp);
}
void fxsave64(G& g, int32_t disp)
{
    g.db(0x48);
    g.db(0x0f);
    g.db(0xae);
    g.db(0x86);
    g.dd(static_cast<uint32_t>(disp));
}

// FOP/FIP/FDP depend on where the code ran (and the host may not save them at all);
// MXCSR_MASK on the host model.
constexpr std::initializer_list<Ignore> kFxIgnore = { { kFx + 6, kFx + 24 }, { kFx + 28, kFx + 32 } };
// The same for programs that also FXSAVE64 to kEnv.
constexpr std::initializer_list<Ignore> kFxIgnore2
    = { { kFx + 6, kFx + 24 }, { kFx + 28, kFx + 32 }, { kEnv + 6, kEnv + 24 }, { kEnv + 28, kEnv + 32 } };

unsigned x87_value_exp(const Cpu& c, unsigned i)
{
    return fpu::fx_get<uint16_t>(c, fpu::kSt + 16 * i + 8) & 0x7fff;
}

// The contents of empty registers are whatever they held before (on the host: earlier host
// x87 work), so they are cleared before comparing: in the final FXSAVE image (stack order, the
// abridged tag by physical register) and in an FNSAVE image at kEnv + 32, if any.
void clear_empty_registers(VecState& s)
{
    uint16_t sw;
    std::memcpy(&sw, &s.mem[kFx + 2], 2);
    unsigned top = (sw >> 11) & 7;
    uint8_t tags = s.mem[kFx + 4];
    for (unsigned i = 0; i < 8; ++i)
        if (!((tags >> ((top + i) & 7)) & 1))
            std::memset(&s.mem[kFx + 32 + 16 * i], 0, 10);
    uint16_t save_sw, save_tw;
    std::memcpy(&save_sw, &s.mem[kEnv + 32 + 4], 2);
    std::memcpy(&save_tw, &s.mem[kEnv + 32 + 8], 2);
    unsigned save_top = (save_sw >> 11) & 7;
    for (unsigned i = 0; i < 8; ++i)
        if (((save_tw >> (2 * ((save_top + i) & 7))) & 3) == 3)
            std::memset(&s.mem[kEnv + 32 + 28 + 10 * i], 0, 10);
}

void put_f80(VecState& s, int off, uint64_t mant, uint16_t se)
{
    std::memcpy(&s.mem[off], &mant, 8);
    std::memcpy(&s.mem[off + 8], &se, 2);
}

void random_f80(Rng& r, uint64_t& mant, uint16_t& se)
{
    uint16_t sign = r.below(2) ? 0x8000 : 0;
    switch (r.below(16)) {
    case 0:
        mant = 0;
        se = sign;
        return; // zero
    case 1:
        mant = 1ULL << 63;
        se = sign | 0x7fff;
        return; // infinity
    case 2:
        mant = 0xc000000000000000ULL | (r.next() >> 2);
        se = sign | 0x7fff;
        return; // QNaN
    case 3:
        mant = 0x8000000000000000ULL | (r.next() >> 3) | 1;
        se = sign | 0x7fff;
        return; // SNaN
    case 4:
        mant = r.next() >> 1;
        se = sign;
        return; // denormal
    case 5:
        mant = (1ULL << 63) | r.next();
        se = sign;
        return; // pseudo-denormal
    case 6:
        mant = r.next() >> 1;
        se = sign | static_cast<uint16_t>(1 + r.below(0x7ffe));
        return; // unnormal
    case 7:
        mant = (1ULL << 63) | r.next();
        se = sign | static_cast<uint16_t>(r.below(2) ? 0x7ffe : 1);
        return;
    case 8: { // half-integers and integers near the integer limits
        static constexpr int kExp[] = { 0, 1, 14, 15, 16, 30, 31, 32, 62, 63, 64 };
        mant = (1ULL << 63) | ((r.next() & 0xffff) << (r.below(2) ? 40 : 0));
        se = sign | static_cast<uint16_t>(0x3fff + kExp[r.below(11)]);
        return;
    }
    default:
        mant = (1ULL << 63) | r.next();
        se = sign | static_cast<uint16_t>(0x3fff - 70 + r.below(140));
        return;
    }
}

VecState random_x87_state(Rng& r, bool exceptions_masked = true)
{
    VecState s = random_int_state(r);
    for (int i = 0; i < 16; ++i) {
        uint64_t m;
        uint16_t se;
        random_f80(r, m, se);
        put_f80(s, kF80 + 16 * i, m, se);
    }
    for (int i = 0; i < 16; ++i) {
        uint32_t v = r.f32();
        std::memcpy(&s.mem[kF32 + 4 * i], &v, 4);
    }
    for (int i = 0; i < 16; ++i) {
        uint64_t v = r.f64();
        std::memcpy(&s.mem[kF64 + 8 * i], &v, 8);
    }
    for (int i = 0; i < 8; ++i) { // small integers half of the time
        if (r.below(2)) {
            int64_t v = static_cast<int64_t>(r.below(2001)) - 1000;
            std::memcpy(&s.mem[kI64 + 8 * i], &v, 8);
            int32_t v32 = static_cast<int32_t>(v);
            std::memcpy(&s.mem[kI32 + 4 * i], &v32, 4);
            int16_t v16 = static_cast<int16_t>(v);
            std::memcpy(&s.mem[kI16 + 2 * i], &v16, 2);
        }
    }
    // Random precision and rounding control; all exceptions masked (the host would trap).
    uint16_t cw = static_cast<uint16_t>(0x40 | (r.below(4) << 8) | (r.below(4) << 10) | 0x3f);
    if (!exceptions_masked)
        cw = static_cast<uint16_t>(cw & ~0x3f);
    std::memcpy(&s.mem[kCw], &cw, 2);
    return s;
}

void check_x87(const char* name, const Emit& body, uint64_t seed, int iterations = 200)
{
    Emit e = [&body](G& g) {
        g.fldcw(g.ptr[g.rsi + kCw]);
        body(g);
        fxsave64(g, kFx);
    };
    SseRunner soft;
    HostProgram host(e);
    Rng rng(seed);
    for (int i = 0; i < iterations; ++i)
        ASSERT_TRUE(differential(soft, host, e, random_x87_state(rng), false, kFxIgnore2, clear_empty_registers))
            << name << " iteration " << i;
}

TEST(SoftX87, ArithmeticMatchesHost)
{
#define ARITH(op, opp, iop)                                                                                            \
    check_x87(                                                                                                         \
        #op,                                                                                                           \
        [](G& g) {                                                                                                     \
            fld80(g, kF80);                                                                                            \
            fld80(g, kF80 + 16);                                                                                       \
            fld80(g, kF80 + 32);                                                                                       \
            g.op(g.st0, g.st1);                                                                                        \
            fstp80(g, kOut);                                                                                           \
            g.op(g.st1, g.st0);                                                                                        \
            g.op(g.dword[g.rsi + kF32 + 4]);                                                                           \
            g.op(g.qword[g.rsi + kF64 + 8]);                                                                           \
            g.iop(g.word[g.rsi + kI16 + 2]);                                                                           \
            g.iop(g.dword[g.rsi + kI32 + 4]);                                                                          \
            fld80(g, kF80 + 48);                                                                                       \
            g.opp(g.st2, g.st0);                                                                                       \
            fstp80(g, kOut + 16);                                                                                      \
            fstp80(g, kOut + 32);                                                                                      \
        },                                                                                                             \
        __LINE__)
    ARITH(fadd, faddp, fiadd);
    ARITH(fsub, fsubp, fisub);
    ARITH(fsubr, fsubrp, fisubr);
    ARITH(fmul, fmulp, fimul);
    ARITH(fdiv, fdivp, fidiv);
    ARITH(fdivr, fdivrp, fidivr);
#undef ARITH
}

TEST(SoftX87, LoadsAndStoresMatchHost)
{
    check_x87(
        "real",
        [](G& g) {
            g.fld(g.dword[g.rsi + kF32]);
            g.fld(g.qword[g.rsi + kF64]);
            fld80(g, kF80);
            g.fst(g.dword[g.rsi + kOut]);
            g.fst(g.qword[g.rsi + kOut + 8]);
            g.fstp(g.dword[g.rsi + kOut + 16]);
            g.fstp(g.qword[g.rsi + kOut + 24]);
            fstp80(g, kOut + 32);
            fld80(g, kF80 + 16);
            g.fld(g.st0);
            g.fld(g.st2);
            g.fst(g.st3);
            g.fstp(g.st1);
            g.fstp(g.qword[g.rsi + kOut + 48]);
        },
        1);
    check_x87(
        "int",
        [](G& g) {
            g.fild(g.word[g.rsi + kI16]);
            g.fild(g.dword[g.rsi + kI32]);
            g.fild(g.qword[g.rsi + kI64]);
            fld80(g, kF80);
            g.fist(g.word[g.rsi + kOut]);
            g.fist(g.dword[g.rsi + kOut + 4]);
            g.fistp(g.qword[g.rsi + kOut + 8]);
            fld80(g, kF80 + 16);
            g.fistp(g.word[g.rsi + kOut + 16]);
            fld80(g, kF80 + 32);
            g.fistp(g.dword[g.rsi + kOut + 20]);
            fld80(g, kF80 + 48);
            g.fisttp(g.word[g.rsi + kOut + 24]);
            fld80(g, kF80 + 64);
            g.fisttp(g.dword[g.rsi + kOut + 28]);
            fld80(g, kF80 + 80);
            g.fisttp(g.qword[g.rsi + kOut + 32]);
            g.fld(g.dword[g.rsi + kF32 + 8]);
            g.fistp(g.dword[g.rsi + kOut + 40]);
            fld80(g, kF80 + 96);
            g.fbstp(g.ptr[g.rsi + kOut + 48]);
            g.fbld(g.ptr[g.rsi + kOut + 48]);
        },
        2);
}

TEST(SoftX87, ConstantsMatchHost)
{
    check_x87(
        "constants",
        [](G& g) {
            g.fld1();
            g.fldl2t();
            g.fldl2e();
            g.fldpi();
            g.fldlg2();
            g.fldln2();
            g.fldz();
        },
        3, 40);
}

TEST(SoftX87, ComparesMatchHost)
{
    auto cmp = [](const char* name, const Emit& op, uint64_t seed) {
        check_x87(
            name,
            [&op](G& g) {
                fld80(g, kF80 + 16);
                fld80(g, kF80);
                op(g);
                g.fnstsw(g.ax);
            },
            seed, 300);
    };
    cmp(
        "fcom", [](G& g) { g.fcom(g.st1); }, 10);
    cmp(
        "fcomp", [](G& g) { g.fcomp(g.st1); }, 11);
    cmp(
        "fcompp", [](G& g) { g.fcompp(); }, 12);
    cmp(
        "fucom", [](G& g) { g.fucom(g.st1); }, 13);
    cmp(
        "fucomp", [](G& g) { g.fucomp(g.st1); }, 14);
    cmp(
        "fucompp", [](G& g) { g.fucompp(); }, 15);
    cmp(
        "fcom_m32", [](G& g) { g.fcom(g.dword[g.rsi + kF32]); }, 16);
    cmp(
        "fcomp_m64", [](G& g) { g.fcomp(g.qword[g.rsi + kF64]); }, 17);
    cmp(
        "ficom", [](G& g) { g.ficom(g.word[g.rsi + kI16]); }, 18);
    cmp(
        "ficomp", [](G& g) { g.ficomp(g.dword[g.rsi + kI32]); }, 19);
    cmp(
        "ftst", [](G& g) { g.ftst(); }, 20);
    cmp(
        "fxam", [](G& g) { g.fxam(); }, 21);
    cmp(
        "fxam_empty",
        [](G& g) {
            g.ffree(g.st0);
            g.fxam();
        },
        22);

    // FCOMI family: EFLAGS compared too.
    SseRunner soft;
    Rng rng(23);
    std::vector<Emit> progs = {
        [](G& g) { g.fcomi(g.st0, g.st1); },
        [](G& g) { g.fcomip(g.st0, g.st1); },
        [](G& g) { g.fucomi(g.st0, g.st1); },
        [](G& g) { g.fucomip(g.st0, g.st1); },
    };
    for (const Emit& op : progs) {
        Emit e = [&op](G& g) {
            g.fldcw(g.ptr[g.rsi + kCw]);
            fld80(g, kF80 + 16);
            fld80(g, kF80);
            op(g);
            fxsave64(g, kFx);
        };
        HostProgram host(e);
        for (int i = 0; i < 300; ++i)
            ASSERT_TRUE(differential(soft, host, e, random_x87_state(rng), true, kFxIgnore, clear_empty_registers));
    }
}

TEST(SoftX87, FcmovMatchesHost)
{
    SseRunner soft;
    Rng rng(24);
    std::vector<Emit> ops = {
        [](G& g) { g.fcmovb(g.st0, g.st2); },
        [](G& g) { g.fcmove(g.st0, g.st2); },
        [](G& g) { g.fcmovbe(g.st0, g.st2); },
        [](G& g) { g.fcmovu(g.st0, g.st2); },
        [](G& g) { g.fcmovnb(g.st0, g.st2); },
        [](G& g) { g.fcmovne(g.st0, g.st2); },
        [](G& g) { g.fcmovnbe(g.st0, g.st2); },
        [](G& g) { g.fcmovnu(g.st0, g.st2); },
    };
    for (const Emit& op : ops) {
        Emit e = [&op](G& g) {
            g.fldcw(g.ptr[g.rsi + kCw]);
            fld80(g, kF80 + 32);
            fld80(g, kF80 + 16);
            fld80(g, kF80);
            g.fucomi(g.st0, g.st1);
            op(g);
            fxsave64(g, kFx);
        };
        HostProgram host(e);
        for (int i = 0; i < 100; ++i)
            ASSERT_TRUE(differential(soft, host, e, random_x87_state(rng), true, kFxIgnore, clear_empty_registers));
    }
}

TEST(SoftX87, UnaryAndTranscendentalMatchHost)
{
#define UNARY(op)                                                                                                      \
    check_x87(                                                                                                         \
        #op,                                                                                                           \
        [](G& g) {                                                                                                     \
            fld80(g, kF80 + 16);                                                                                       \
            fld80(g, kF80);                                                                                            \
            g.op();                                                                                                    \
        },                                                                                                             \
        __LINE__, 150)
    UNARY(fsqrt);
    UNARY(frndint);
    UNARY(fchs);
    UNARY(fabs);
    UNARY(f2xm1);
    UNARY(fsin);
    UNARY(fcos);
    UNARY(fptan);
    UNARY(fsincos);
    UNARY(fxtract);
    UNARY(fscale);
    UNARY(fprem);
    UNARY(fprem1);
    UNARY(fyl2x);
    UNARY(fyl2xp1);
    UNARY(fpatan);
#undef UNARY
}

TEST(SoftX87, StackFaultsMaskedResponseMatchesHost)
{
    check_x87(
        "overflow",
        [](G& g) {
            for (int i = 0; i < 9; ++i)
                fld80(g, kF80 + 16 * i);
            g.fld1();
            g.fild(g.word[g.rsi + kI16]);
            g.fldz();
            g.fptan();
        },
        30, 20);
    check_x87(
        "underflow",
        [](G& g) {
            fld80(g, kF80);
            g.fadd(g.st0, g.st3);
            g.fxch(g.st5);
            g.fstp(g.dword[g.rsi + kOut]);
            g.fstp(g.qword[g.rsi + kOut + 8]);
            g.fistp(g.word[g.rsi + kOut + 16]);
            g.fist(g.dword[g.rsi + kOut + 20]);
            fstp80(g, kOut + 32);
            g.fsqrt();
            g.fcom(g.st1);
            g.fnstsw(g.ax);
            g.fchs();
            g.fscale();
            g.fyl2x();
            g.fincstp();
            g.fdecstp();
            g.fdecstp();
            g.ffree(g.st2);
            g.fnclex();
        },
        31, 20);
}

TEST(SoftX87, EnvironmentAndSaveMatchHost)
{
    // FIP/FCS/FOP/FDP/FDS (environment bytes 12..27) depend on where the code ran.
    SseRunner soft;
    Emit e = [](G& g) {
        g.fldcw(g.ptr[g.rsi + kCw]);
        fld80(g, kF80);
        fld80(g, kF80 + 16);
        fld80(g, kF80 + 32);
        g.ffree(g.st1);
        g.fdiv(g.st0, g.st2);
        g.fnstenv(g.ptr[g.rsi + kEnv]);
        g.fnstcw(g.ptr[g.rsi + kOut]);
        g.fldenv(g.ptr[g.rsi + kEnv]);
        g.fnsave(g.ptr[g.rsi + kEnv + 32]);
        g.fnstsw(g.ptr[g.rsi + kOut + 2]);
        g.fnstcw(g.ptr[g.rsi + kOut + 4]);
        g.fld1();
        g.frstor(g.ptr[g.rsi + kEnv + 32]);
        g.fxch(g.st2);
        fxsave64(g, kFx);
    };
    HostProgram host(e);
    Rng rng(32);
    for (int i = 0; i < 100; ++i)
        ASSERT_TRUE(differential(soft, host, e, random_x87_state(rng), false,
            { { kFx + 6, kFx + 24 }, { kFx + 28, kFx + 32 }, { kEnv + 12, kEnv + 28 },
                { kEnv + 32 + 12, kEnv + 32 + 28 } },
            clear_empty_registers))
            << "iteration " << i;
}

TEST(SoftX87, ControlWordAnd16BitEnvironmentMatchHost)
{
    SseRunner soft;
    Emit e = [](G& g) {
        g.fldcw(g.ptr[g.rsi + kCw]);
        g.fnstcw(g.ptr[g.rsi + kOut]);
        g.fldcw(g.ptr[g.rsi + kOut + 64]); // reserved bits random
        g.fnstcw(g.ptr[g.rsi + kOut + 2]);
        g.fldcw(g.ptr[g.rsi + kCw]);
        fld80(g, kF80);
        fld80(g, kF80 + 16);
        g.fmul(g.st0, g.st1);
        g.db(0x66);
        g.fnstenv(g.ptr[g.rsi + kEnv]);
        g.db(0x66);
        g.fldenv(g.ptr[g.rsi + kEnv]);
        g.fnstsw(g.ax);
        g.db(0x66);
        g.fnsave(g.ptr[g.rsi + kEnv + 32]);
        g.db(0x66);
        g.frstor(g.ptr[g.rsi + kEnv + 32]);
        fxsave64(g, kFx);
    };
    HostProgram host(e);
    Rng rng(34);
    for (int i = 0; i < 50; ++i) {
        VecState s = random_x87_state(rng);
        s.mem[kOut + 64] |= 0x3f; // keep the exceptions masked
        ASSERT_TRUE(differential(soft, host, e, s, false,
            { { kFx + 6, kFx + 24 }, { kFx + 28, kFx + 32 }, { kEnv + 6, kEnv + 14 }, { kEnv + 32 + 6, kEnv + 32 + 14 },
                { kEnv + 32 + 14, kEnv + 32 + 94 } }))
            << "iteration " << i;
    }
}

TEST(SoftX87, MmxAliasingMatchesHost)
{
    check_x87(
        "mmx",
        [](G& g) {
            fld80(g, kF80);
            fld80(g, kF80 + 16);
            fld80(g, kF80 + 32);
            g.movq(g.mm3, g.ptr[g.rsi + kI64]);
            g.paddw(g.mm3, g.mm6);
            g.movq(g.ptr[g.rsi + kOut], g.mm7);
            g.movd(g.eax, g.mm5);
            fxsave64(g, kEnv);
            g.emms();
            fld80(g, kF80 + 48);
        },
        35, 50);
}

TEST(SoftX87, FninitControlWord)
{
    SseRunner soft;
    Cpu& c = soft.cpu();
    fpu::fx_set<uint16_t>(c, fpu::kFcw, 0x0c7f);
    fpu::set_fsw(c, 0x3800 | fpu::kPE);
    fpu::ftw(c) = 0x80;
    VecState s;
    std::memset(s.mem.data(), 0xcc, 16);
    c.gpr[RSI] = SseRunner::kData;
    std::memcpy(soft.mem(SseRunner::kData, 16), s.mem.data(), 16);
    ASSERT_FALSE(soft.run([](G& g) {
        g.fninit();
        g.fnstcw(g.ptr[g.rsi]);
        g.fnstsw(g.ptr[g.rsi + 2]);
    }));
    uint16_t cw, sw;
    std::memcpy(&cw, soft.mem(SseRunner::kData, 2), 2);
    std::memcpy(&sw, soft.mem(SseRunner::kData + 2, 2), 2);
    EXPECT_EQ(cw, 0x037f);
    EXPECT_EQ(sw, 0);
    EXPECT_EQ(fpu::ftw(c), 0);
}

TEST(SoftX87, FistRoundsPerControlWord)
{
    SseRunner soft;
    struct Expect {
        double in;
        int16_t nearest, down, up, trunc;
    };
    static constexpr Expect kCases[] = {
        { 2.5, 2, 2, 3, 2 },
        { -2.5, -2, -3, -2, -2 },
        { 3.5, 4, 3, 4, 3 },
        { -0.4, 0, -1, 0, 0 },
        { 1.0, 1, 1, 1, 1 },
        { 32767.4, 32767, 32767, -32768, 32767 },
    };
    for (const Expect& x : kCases) {
        for (unsigned rc = 0; rc < 4; ++rc) {
            VecState s;
            std::memcpy(&s.mem[0], &x.in, 8);
            uint16_t cw = static_cast<uint16_t>(0x037f | (rc << 10));
            std::memcpy(&s.mem[8], &cw, 2);
            ASSERT_FALSE(soft.run_state(
                [](G& g) {
                    g.fldcw(g.ptr[g.rsi + 8]);
                    g.fld(g.qword[g.rsi]);
                    g.fistp(g.word[g.rsi + 16]);
                    g.fld(g.qword[g.rsi]);
                    g.fisttp(g.word[g.rsi + 18]);
                },
                s));
            int16_t got, trunc;
            std::memcpy(&got, &s.mem[16], 2);
            std::memcpy(&trunc, &s.mem[18], 2);
            int16_t want = rc == 0 ? x.nearest : rc == 1 ? x.down : rc == 2 ? x.up : x.trunc;
            if (x.in > 32767.0 && rc == 2)
                want = -32768; // out of range: integer indefinite
            EXPECT_EQ(got, want) << x.in << " rc " << rc;
            EXPECT_EQ(trunc, x.trunc) << x.in;
        }
    }
}

TEST(SoftX87, Fld80Fstp80RoundTripIsExact)
{
    SseRunner soft;
    Rng rng(33);
    for (int i = 0; i < 200; ++i) {
        VecState s;
        uint64_t m = rng.next();
        uint16_t se = static_cast<uint16_t>(rng.next());
        put_f80(s, 0, m, se);
        ASSERT_FALSE(soft.run_state(
            [](G& g) {
                fld80(g, 0);
                fstp80(g, 16);
            },
            s));
        EXPECT_EQ(std::memcmp(&s.mem[0], &s.mem[16], 10), 0);
        EXPECT_EQ(s.mem[26], 0) << "only 10 bytes written";
    }
}

TEST(SoftX87, UnmaskedExceptionIsPendingUntilNextWaitingInstruction)
{
    SseRunner soft;
    Cpu& c = soft.cpu();
    VecState s;
    uint16_t cw = 0x037b; // ZE unmasked
    std::memcpy(&s.mem[0], &cw, 2);
    ASSERT_FALSE(soft.run_state(
        [](G& g) {
            g.fldcw(g.ptr[g.rsi]);
            g.fld1();
            g.fldz();
            g.fdivp(g.st1, g.st0); // 1 / 0
            g.fnstsw(g.ax);
        },
        s));
    uint16_t sw = static_cast<uint16_t>(s.gpr[RAX]);
    EXPECT_TRUE(sw & fpu::kZE);
    EXPECT_TRUE(sw & fpu::kES);
    EXPECT_TRUE(sw & fpu::kBusy);
    EXPECT_EQ((sw >> 11) & 7, 6u) << "not popped";
    EXPECT_EQ(x87_value_exp(c, 1), 0x3fffu) << "destination unchanged";
    auto f = soft.run([](G& g) { g.fld1(); });
    ASSERT_TRUE(f);
    EXPECT_EQ(f->vector, kExcMF);
    f = soft.run([](G& g) { g.fwait(); });
    ASSERT_TRUE(f);
    EXPECT_EQ(f->vector, kExcMF);
    ASSERT_FALSE(soft.run([](G& g) {
        g.fnclex();
        g.fld1();
    }));
}

TEST(SoftX87, DeviceNotAvailable)
{
    SseRunner soft;
    Cpu& c = soft.cpu();
    c.cr0 &= ~x86::kCr0Mp;
    c.cr0 |= fpu::kCr0Ts;
    auto f = soft.run([](G& g) { g.fld1(); });
    ASSERT_TRUE(f);
    EXPECT_EQ(f->vector, kExcNM);
    f = soft.run([](G& g) { g.fninit(); });
    ASSERT_TRUE(f);
    EXPECT_EQ(f->vector, kExcNM);
    EXPECT_FALSE(soft.run([](G& g) { g.fwait(); })) << "WAIT faults only with MP and TS";
    c.cr0 |= x86::kCr0Mp;
    f = soft.run([](G& g) { g.fwait(); });
    ASSERT_TRUE(f);
    EXPECT_EQ(f->vector, kExcNM);
    c.cr0 &= ~(fpu::kCr0Ts | x86::kCr0Mp);
    c.cr0 |= fpu::kCr0Em;
    f = soft.run([](G& g) { g.fldz(); });
    ASSERT_TRUE(f);
    EXPECT_EQ(f->vector, kExcNM);
}

} // namespace
} // namespace vessel::soft::test
