// Soft engine: MUL IMUL DIV IDIV (results and CF/OF against the host, #DE cases), CBW..CQO and
// the BCD adjustments.
#include "soft_int_test_support.h"

namespace vessel::soft::testing {
namespace {

using Xbyak::CodeGenerator;
using s128 = __int128;
using u128 = unsigned __int128;

constexpr unsigned kSizes[] = { 1, 2, 4, 8 };

class SoftIntMulDiv : public SoftIntTest { };

TEST_F(SoftIntMulDiv, MultiplyMatchesHost)
{
    for (unsigned size : kSizes) {
        HostOracle mul([&](CodeGenerator& g) { g.mul(host_reg(1, size)); });
        HostOracle imul1([&](CodeGenerator& g) { g.imul(host_reg(1, size)); });
        HostOracle mul_mem([&](CodeGenerator& g) { g.mul(host_mem(g, size)); });
        Insn i_mul = make_insn(ZYDIS_MNEMONIC_MUL, { R(RCX, size) });
        Insn i_imul1 = make_insn(ZYDIS_MNEMONIC_IMUL, { R(RCX, size) });
        Insn i_mul_mem = mem_data(make_insn(ZYDIS_MNEMONIC_MUL, { M(size) }));
        for (uint64_t a : edge_values()) {
            for (uint64_t b : edge_values()) {
                HostState s { a, b, 0xdddd'dddd'dddd'dddd, 0, 0, b };
                ASSERT_TRUE(matches_host(i_mul, mul, s, kCF | kOF));
                ASSERT_TRUE(matches_host(i_imul1, imul1, s, kCF | kOF));
                ASSERT_TRUE(matches_host(i_mul_mem, mul_mem, s, kCF | kOF));
            }
        }
        if (size == 1)
            continue;
        HostOracle imul2([&](CodeGenerator& g) { g.imul(host_reg(0, size), host_reg(1, size)); });
        HostOracle imul3([&](CodeGenerator& g) { g.imul(host_reg(0, size), host_reg(1, size), -3); });
        HostOracle imul3m([&](CodeGenerator& g) { g.imul(host_reg(0, size), host_mem(g, size), 0x70); });
        Insn i_imul2 = make_insn(ZYDIS_MNEMONIC_IMUL, { R(RAX, size), R(RCX, size) });
        Insn i_imul3 = make_insn(ZYDIS_MNEMONIC_IMUL, { R(RAX, size), R(RCX, size), I(size) }, ~2ULL);
        Insn i_imul3m = mem_data(make_insn(ZYDIS_MNEMONIC_IMUL, { R(RAX, size), M(size), I(size) }, 0x70));
        for (uint64_t a : edge_values()) {
            for (uint64_t b : edge_values()) {
                HostState s { a, b, 0x1234, 0, 0, b };
                ASSERT_TRUE(matches_host(i_imul2, imul2, s, kCF | kOF));
                ASSERT_TRUE(matches_host(i_imul3, imul3, s, kCF | kOF));
                ASSERT_TRUE(matches_host(i_imul3m, imul3m, s, kCF | kOF));
            }
        }
    }
}

// Whether DIV/IDIV of size `size` with these registers raises #DE (computed independently).
bool divide_faults(bool is_signed, unsigned size, uint64_t rax, uint64_t rdx, uint64_t divisor)
{
    unsigned bits = size * 8;
    u128 m = size == 8 ? ~u128 { 0 } >> 64 : (u128 { 1 } << bits) - 1;
    u128 d = divisor & m;
    if (d == 0)
        return true;
    u128 n = size == 1 ? (rax & 0xffff) : ((u128 { rdx & m } << bits) | (rax & m));
    if (!is_signed)
        return n / d > m;
    // Signed: sign-extend from 2*bits and bits.
    unsigned nbits = bits * 2;
    s128 sn = nbits == 128 ? static_cast<s128>(n) : static_cast<s128>(n << (128 - nbits)) >> (128 - nbits);
    s128 sd = static_cast<s128>(d << (128 - bits)) >> (128 - bits);
    const s128 limit = s128 { 1 } << (bits - 1);
    if (sd == -1) // quotient -sn fits iff sn is in [-(limit - 1), limit]
        return !(sn >= -(limit - 1) && sn <= limit);
    s128 q = sn / sd;
    return q > limit - 1 || q < -limit;
}

TEST_F(SoftIntMulDiv, DivideMatchesHostAndFaults)
{
    const uint64_t highs[]
        = { 0, 1, 0x7f, 0xffff'ffff'ffff'ffff, 0x8000'0000'0000'0000, 0x0000'0000'0000'7fff, 0xffff'ffff'ffff'ff80 };
    for (bool is_signed : { false, true }) {
        for (unsigned size : kSizes) {
            HostOracle host([&](CodeGenerator& g) {
                if (is_signed)
                    g.idiv(host_reg(1, size));
                else
                    g.div(host_reg(1, size));
            });
            Insn in = make_insn(is_signed ? ZYDIS_MNEMONIC_IDIV : ZYDIS_MNEMONIC_DIV, { R(RCX, size) });
            for (uint64_t a : edge_values()) {
                for (uint64_t d : edge_values()) {
                    for (uint64_t hi : highs) {
                        if (divide_faults(is_signed, size, a, hi, d)) {
                            cpu().gpr[RAX] = a;
                            cpu().gpr[RDX] = hi;
                            cpu().gpr[RCX] = d;
                            auto f = run_fault(in);
                            ASSERT_TRUE(f.has_value()) << is_signed << " " << size << " " << a << " " << hi << " " << d;
                            ASSERT_EQ(f->vector, kExcDE);
                            ASSERT_EQ(cpu().gpr[RAX], a);
                            ASSERT_EQ(cpu().gpr[RDX], hi);
                            continue;
                        }
                        ASSERT_TRUE(matches_host(in, host, { a, d, hi, 0, kCF | kZF, 0 }, 0));
                    }
                }
            }
        }
    }
}

TEST_F(SoftIntMulDiv, DivideErrorEdges)
{
    struct Case {
        ZydisMnemonic m;
        unsigned size;
        uint64_t rdx, rax, divisor;
    };
    const Case faults[] = {
        { ZYDIS_MNEMONIC_DIV, 4, 0, 5, 0 },
        { ZYDIS_MNEMONIC_DIV, 1, 0, 0x100, 1 }, // quotient 0x100 > 0xff
        { ZYDIS_MNEMONIC_DIV, 8, 1, 0, 1 }, // quotient 2^64
        { ZYDIS_MNEMONIC_IDIV, 1, 0, 0xff80, 0xff }, // -128 / -1
        { ZYDIS_MNEMONIC_IDIV, 2, 0xffff, 0x8000, 0xffff }, // -32768 / -1
        { ZYDIS_MNEMONIC_IDIV, 4, 0xffffffff, 0x80000000, 0xffffffff }, // INT32_MIN / -1
        { ZYDIS_MNEMONIC_IDIV, 8, ~0ULL, 0x8000000000000000, ~0ULL }, // INT64_MIN / -1
        { ZYDIS_MNEMONIC_IDIV, 8, 0x8000000000000000, 0, ~0ULL }, // INT128_MIN / -1
        { ZYDIS_MNEMONIC_IDIV, 1, 0, 0x80, 1 }, // +128 does not fit
        { ZYDIS_MNEMONIC_IDIV, 4, 0, 0, 0 },
    };
    for (const Case& c : faults) {
        Insn in = make_insn(c.m, { R(RCX, c.size) });
        cpu().gpr[RAX] = c.rax;
        cpu().gpr[RDX] = c.rdx;
        cpu().gpr[RCX] = c.divisor;
        auto f = run_fault(in);
        ASSERT_TRUE(f.has_value()) << ZydisMnemonicGetString(c.m) << " " << c.size;
        EXPECT_EQ(f->vector, kExcDE);
        EXPECT_FALSE(f->has_error);
        EXPECT_EQ(cpu().gpr[RAX], c.rax);
    }
    // Largest quotients that fit.
    Insn idiv8 = make_insn(ZYDIS_MNEMONIC_IDIV, { R(RCX, 1) });
    cpu().gpr[RAX] = 0xff81; // -127
    cpu().gpr[RCX] = 0xff; // -1
    run(idiv8);
    EXPECT_EQ(cpu().gpr[RAX] & 0xffff, 0x007fu); // AL = 127, AH = 0
    Insn idiv64 = make_insn(ZYDIS_MNEMONIC_IDIV, { R(RCX, 8) });
    cpu().gpr[RDX] = ~0ULL;
    cpu().gpr[RAX] = 0x8000'0000'0000'0000; // INT64_MIN
    cpu().gpr[RCX] = 1;
    run(idiv64);
    EXPECT_EQ(cpu().gpr[RAX], 0x8000'0000'0000'0000u);
    EXPECT_EQ(cpu().gpr[RDX], 0u);
    // Remainder takes the dividend's sign.
    cpu().gpr[RDX] = ~0ULL;
    cpu().gpr[RAX] = static_cast<uint64_t>(-7);
    cpu().gpr[RCX] = 2;
    run(idiv64);
    EXPECT_EQ(cpu().gpr[RAX], static_cast<uint64_t>(-3));
    EXPECT_EQ(cpu().gpr[RDX], static_cast<uint64_t>(-1));
    // 32-bit DIV zero-extends RAX and RDX.
    Insn div32 = make_insn(ZYDIS_MNEMONIC_DIV, { R(RCX, 4) });
    cpu().gpr[RAX] = 0xffff'ffff'0000'0007;
    cpu().gpr[RDX] = 0xffff'ffff'0000'0000;
    cpu().gpr[RCX] = 2;
    run(div32);
    EXPECT_EQ(cpu().gpr[RAX], 3u);
    EXPECT_EQ(cpu().gpr[RDX], 1u);
}

TEST_F(SoftIntMulDiv, MultiplyFlagsPerSdm)
{
    Insn mul8 = make_insn(ZYDIS_MNEMONIC_MUL, { R(RCX, 1) });
    cpu().gpr[RAX] = 0x1234'0010;
    cpu().gpr[RCX] = 0x10;
    run(mul8);
    EXPECT_EQ(cpu().gpr[RAX], 0x1234'0100u); // AX = 0x100
    EXPECT_EQ(flags() & (kCF | kOF), kCF | kOF);
    Insn imul2 = make_insn(ZYDIS_MNEMONIC_IMUL, { R(RAX, 2), R(RCX, 2) });
    cpu().gpr[RAX] = 0xffff; // -1
    cpu().gpr[RCX] = 0x8000; // -32768
    run(imul2);
    EXPECT_EQ(cpu().gpr[RAX], 0x8000u); // +32768 truncated
    EXPECT_EQ(flags() & (kCF | kOF), kCF | kOF);
    Insn imul64 = make_insn(ZYDIS_MNEMONIC_IMUL, { R(RCX, 8) });
    cpu().gpr[RAX] = static_cast<uint64_t>(-2);
    cpu().gpr[RCX] = 3;
    run(imul64);
    EXPECT_EQ(cpu().gpr[RAX], static_cast<uint64_t>(-6));
    EXPECT_EQ(cpu().gpr[RDX], ~0ULL);
    EXPECT_EQ(flags() & (kCF | kOF), 0u);
}

TEST_F(SoftIntMulDiv, AccumulatorSignExtension)
{
    struct Case {
        ZydisMnemonic m;
        uint64_t rax_in, rax_out, rdx_out;
    };
    const Case cases[] = {
        { ZYDIS_MNEMONIC_CBW, 0xaaaa'aaaa'aaaa'0080, 0xaaaa'aaaa'aaaa'ff80, 0x5555 },
        { ZYDIS_MNEMONIC_CWDE, 0xaaaa'aaaa'aaaa'8000, 0xffff'8000, 0x5555 },
        { ZYDIS_MNEMONIC_CDQE, 0xaaaa'aaaa'8000'0000, 0xffff'ffff'8000'0000, 0x5555 },
        { ZYDIS_MNEMONIC_CWD, 0x8000, 0x8000, 0xffff },
        { ZYDIS_MNEMONIC_CDQ, 0x7fff'ffff, 0x7fff'ffff, 0 },
        { ZYDIS_MNEMONIC_CDQ, 0x8000'0000, 0x8000'0000, 0xffff'ffff },
        { ZYDIS_MNEMONIC_CQO, 0x8000'0000'0000'0000, 0x8000'0000'0000'0000, ~0ULL },
    };
    for (const Case& c : cases) {
        cpu().gpr[RAX] = c.rax_in;
        cpu().gpr[RDX] = c.m == ZYDIS_MNEMONIC_CWD ? 0x1111'2222'3333'4444 : 0x5555;
        run(make_insn(c.m, {}));
        EXPECT_EQ(cpu().gpr[RAX], c.rax_out) << ZydisMnemonicGetString(c.m);
        EXPECT_EQ(cpu().gpr[RDX], c.m == ZYDIS_MNEMONIC_CWD ? 0x1111'2222'3333'ffff : c.rdx_out)
            << ZydisMnemonicGetString(c.m);
    }
}

TEST_F(SoftIntMulDiv, DecimalAdjust)
{
    auto run_bcd = [&](ZydisMnemonic m, uint64_t ax, uint64_t f, uint64_t imm = 10) {
        cpu().gpr[RAX] = ax;
        set_flags(f);
        run(make_insn(m, {}, imm));
        return cpu().gpr[RAX] & 0xffff;
    };
    // 0x79 + 0x35 = 0xae → DAA → 0x14, CF (BCD 79 + 35 = 114).
    EXPECT_EQ(run_bcd(ZYDIS_MNEMONIC_DAA, 0xae, 0), 0x14u);
    EXPECT_EQ(flags() & (kCF | kAF), kCF | kAF);
    // 0x38 + 0x49 = 0x81 with AF → 0x87.
    EXPECT_EQ(run_bcd(ZYDIS_MNEMONIC_DAA, 0x81, kAF), 0x87u);
    EXPECT_EQ(flags() & (kCF | kAF | kSF), kAF | kSF);
    // 0x35 - 0x47 = 0xee with CF, AF → DAS → 0x88, CF.
    EXPECT_EQ(run_bcd(ZYDIS_MNEMONIC_DAS, 0xee, kCF | kAF), 0x88u);
    EXPECT_EQ(flags() & (kCF | kAF), kCF | kAF);
    // AAA: AL = 0x0b → AH += 1, AL = 1.
    EXPECT_EQ(run_bcd(ZYDIS_MNEMONIC_AAA, 0x050b, 0), 0x0601u);
    EXPECT_EQ(flags() & (kCF | kAF), kCF | kAF);
    EXPECT_EQ(run_bcd(ZYDIS_MNEMONIC_AAA, 0x0505, 0), 0x0505u);
    EXPECT_EQ(flags() & (kCF | kAF), 0u);
    // AAS: AL = 0xff (with AF) → AX - 6, AH - 1.
    EXPECT_EQ(run_bcd(ZYDIS_MNEMONIC_AAS, 0x0502, kAF), 0x030cu);
    EXPECT_EQ(flags() & (kCF | kAF), kCF | kAF);
    // AAM 10: 63 → AH = 6, AL = 3; AAD 10 → 63.
    EXPECT_EQ(run_bcd(ZYDIS_MNEMONIC_AAM, 63, 0), 0x0603u);
    EXPECT_EQ(run_bcd(ZYDIS_MNEMONIC_AAD, 0x0603, 0), 63u);
    EXPECT_EQ(flags() & (kZF | kSF), 0u);
    EXPECT_EQ(run_bcd(ZYDIS_MNEMONIC_AAM, 0x12, 0, 16), 0x0102u);
    cpu().gpr[RAX] = 5;
    auto f = run_fault(make_insn(ZYDIS_MNEMONIC_AAM, {}, 0));
    ASSERT_TRUE(f.has_value());
    EXPECT_EQ(f->vector, kExcDE);
}

} // namespace
} // namespace vessel::soft::testing
