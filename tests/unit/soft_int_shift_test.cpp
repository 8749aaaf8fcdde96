// Soft engine: SHL SHR SAR ROL ROR RCL RCR SHLD SHRD against the host CPU (architecturally
// defined results and flags for every count class), plus explicit SDM expectations.
#include "soft_int_test_support.h"

namespace vessel::soft::testing {
namespace {

using Xbyak::CodeGenerator;

constexpr ZydisMnemonic kShifts[] = { ZYDIS_MNEMONIC_SHL, ZYDIS_MNEMONIC_SHR, ZYDIS_MNEMONIC_SAR, ZYDIS_MNEMONIC_ROL,
    ZYDIS_MNEMONIC_ROR, ZYDIS_MNEMONIC_RCL, ZYDIS_MNEMONIC_RCR };
constexpr unsigned kSizes[] = { 1, 2, 4, 8 };
constexpr uint64_t kCounts[] = { 0, 1, 2, 3, 7, 8, 9, 15, 16, 17, 18, 31, 32, 33, 63, 64, 65, 0xff };

bool is_rotate(ZydisMnemonic m)
{
    return m != ZYDIS_MNEMONIC_SHL && m != ZYDIS_MNEMONIC_SHR && m != ZYDIS_MNEMONIC_SAR;
}

void emit_shift(CodeGenerator& g, ZydisMnemonic m, const Xbyak::Operand& d, const Xbyak::Reg8& count)
{
    switch (m) {
    case ZYDIS_MNEMONIC_SHL: g.shl(d, count); break;
    case ZYDIS_MNEMONIC_SHR: g.shr(d, count); break;
    case ZYDIS_MNEMONIC_SAR: g.sar(d, count); break;
    case ZYDIS_MNEMONIC_ROL: g.rol(d, count); break;
    case ZYDIS_MNEMONIC_ROR: g.ror(d, count); break;
    case ZYDIS_MNEMONIC_RCL: g.rcl(d, count); break;
    default: g.rcr(d, count); break;
    }
}

// The flags the SDM defines after a shift/rotate of `size` bytes by `count`.
uint64_t defined_flags(ZydisMnemonic m, unsigned size, uint64_t count)
{
    unsigned masked = static_cast<unsigned>(count & (size == 8 ? 63 : 31));
    if (masked == 0)
        return kArithFlags; // unchanged
    uint64_t mask = kCF | (masked == 1 ? kOF : 0);
    if (is_rotate(m))
        return mask | kSF | kZF | kPF | kAF; // rotates leave SF/ZF/PF/AF alone
    if ((m == ZYDIS_MNEMONIC_SHL || m == ZYDIS_MNEMONIC_SHR) && masked >= size * 8)
        mask &= ~kCF;
    return mask | kSF | kZF | kPF;
}

class SoftIntShift : public SoftIntTest { };

TEST_F(SoftIntShift, CountInClMatchesHost)
{
    for (ZydisMnemonic m : kShifts) {
        for (unsigned size : kSizes) {
            HostOracle reg([&](CodeGenerator& g) { emit_shift(g, m, host_reg(0, size), g.cl); });
            HostOracle mem([&](CodeGenerator& g) { emit_shift(g, m, host_mem(g, size), g.cl); });
            Insn r = make_insn(m, { R(RAX, size), R(RCX, 1) });
            Insn mm = mem_data(make_insn(m, { M(size), R(RCX, 1) }));
            for (uint64_t count : kCounts) {
                for (uint64_t v : edge_values()) {
                    for (uint64_t f : { uint64_t { 0 }, kCF, kArithFlags }) {
                        uint64_t mask = defined_flags(m, size, count);
                        ASSERT_TRUE(matches_host(r, reg, { v, count | 0x1200, 0, 0, f, 0 }, mask)) << "count " << count;
                        ASSERT_TRUE(matches_host(mm, mem, { 0, count, 0, 0, f, v }, mask)) << "count " << count;
                    }
                }
            }
        }
    }
}

TEST_F(SoftIntShift, ImmediateAndImplicitOneCountsMatchHost)
{
    for (ZydisMnemonic m : kShifts) {
        for (unsigned size : kSizes) {
            for (uint8_t count : { 1, 4, 13, 40 }) {
                HostOracle host([&](CodeGenerator& g) {
                    Xbyak::Reg d = host_reg(0, size);
                    switch (m) {
                    case ZYDIS_MNEMONIC_SHL: g.shl(d, count); break;
                    case ZYDIS_MNEMONIC_SHR: g.shr(d, count); break;
                    case ZYDIS_MNEMONIC_SAR: g.sar(d, count); break;
                    case ZYDIS_MNEMONIC_ROL: g.rol(d, count); break;
                    case ZYDIS_MNEMONIC_ROR: g.ror(d, count); break;
                    case ZYDIS_MNEMONIC_RCL: g.rcl(d, count); break;
                    default: g.rcr(d, count); break;
                    }
                });
                Insn imm = make_insn(m, { R(RAX, size), I(1) }, count);
                Insn one = make_insn(m, { R(RAX, size) }); // D0/D1 without the explicit 1
                for (uint64_t v : edge_values()) {
                    for (uint64_t f : { uint64_t { 0 }, kCF }) {
                        uint64_t mask = defined_flags(m, size, count);
                        ASSERT_TRUE(matches_host(imm, host, { v, 0, 0, 0, f, 0 }, mask)) << "count " << int(count);
                        if (count == 1) {
                            ASSERT_TRUE(matches_host(one, host, { v, 0, 0, 0, f, 0 }, mask));
                        }
                    }
                }
            }
        }
    }
}

TEST_F(SoftIntShift, DoubleShiftsMatchHost)
{
    for (bool left : { true, false }) {
        for (unsigned size : { 2u, 4u, 8u }) {
            HostOracle host([&](CodeGenerator& g) {
                if (left)
                    g.shld(host_reg(0, size), host_reg(2, size), g.cl);
                else
                    g.shrd(host_reg(0, size), host_reg(2, size), g.cl);
            });
            HostOracle mem([&](CodeGenerator& g) {
                if (left)
                    g.shld(host_mem(g, size), host_reg(2, size), g.cl);
                else
                    g.shrd(host_mem(g, size), host_reg(2, size), g.cl);
            });
            ZydisMnemonic mn = left ? ZYDIS_MNEMONIC_SHLD : ZYDIS_MNEMONIC_SHRD;
            Insn r = make_insn(mn, { R(RAX, size), R(RDX, size), R(RCX, 1) });
            Insn mm = mem_data(make_insn(mn, { M(size), R(RDX, size), R(RCX, 1) }));
            for (uint64_t count : kCounts) {
                unsigned masked = static_cast<unsigned>(count & (size == 8 ? 63 : 31));
                if (masked > size * 8)
                    continue; // result and flags undefined
                uint64_t mask = masked == 0 ? kArithFlags : (kCF | kSF | kZF | kPF | (masked == 1 ? kOF : 0));
                for (uint64_t a : edge_values()) {
                    for (uint64_t b : { 0ULL, 1ULL, 0x8000ULL, 0xdeadbeefcafef00dULL, ~0ULL }) {
                        ASSERT_TRUE(matches_host(r, host, { a, count, b, 0, kCF, 0 }, mask)) << "count " << count;
                        ASSERT_TRUE(matches_host(mm, mem, { 0, count, b, 0, 0, a }, mask)) << "count " << count;
                    }
                }
            }
        }
    }
}

struct Expect {
    ZydisMnemonic m;
    unsigned size;
    uint64_t value, count;
    bool cf_in;
    uint64_t res, flags; // CF (SF/ZF/PF for shifts; OF for count 1)
};

TEST_F(SoftIntShift, SdmEdgeCases)
{
    const Expect cases[] = {
        // SHL: CF = last bit out, OF (count 1) = MSB(result) ^ CF.
        { ZYDIS_MNEMONIC_SHL, 1, 0x80, 1, false, 0x00, kCF | kOF | kZF | kPF },
        { ZYDIS_MNEMONIC_SHL, 1, 0x40, 1, false, 0x80, kOF | kSF },
        { ZYDIS_MNEMONIC_SHL, 1, 0x01, 8, false, 0x00, kCF | kZF | kPF }, // count == width: CF = bit 0
        { ZYDIS_MNEMONIC_SHL, 8, 1, 63, false, 0x8000000000000000, kSF | kPF },
        { ZYDIS_MNEMONIC_SHL, 4, 3, 32, true, 3, kCF }, // masked count 0: flags kept
        // SHR: OF (count 1) = MSB of the original.
        { ZYDIS_MNEMONIC_SHR, 1, 0x81, 1, false, 0x40, kCF | kOF },
        { ZYDIS_MNEMONIC_SHR, 2, 0x8000, 15, false, 1, 0 },
        // SAR: sign fills; OF = 0 for count 1.
        { ZYDIS_MNEMONIC_SAR, 1, 0x81, 1, false, 0xc0, kCF | kSF | kPF },
        { ZYDIS_MNEMONIC_SAR, 1, 0x80, 20, false, 0xff, kCF | kSF | kPF },
        { ZYDIS_MNEMONIC_SAR, 8, 0x8000000000000000, 63, false, ~0ULL, kSF | kPF },
        // ROL/ROR: only CF/OF change.
        { ZYDIS_MNEMONIC_ROL, 1, 0x81, 1, false, 0x03, kCF | kOF },
        { ZYDIS_MNEMONIC_ROL, 1, 0x81, 8, false, 0x81, kCF },
        { ZYDIS_MNEMONIC_ROR, 1, 0x01, 1, false, 0x80, kCF | kOF },
        { ZYDIS_MNEMONIC_ROR, 4, 0x1, 32, true, 0x1, kCF }, // masked count 0
        // RCL/RCR through CF; 8/16-bit counts mod 9/17.
        { ZYDIS_MNEMONIC_RCL, 1, 0x80, 1, true, 0x01, kCF | kOF },
        { ZYDIS_MNEMONIC_RCL, 1, 0x55, 9, true, 0x55, kCF }, // 9 mod 9 = 0: nothing moves
        { ZYDIS_MNEMONIC_RCL, 1, 0x01, 8, false, 0x00, kCF },
        { ZYDIS_MNEMONIC_RCL, 2, 0x8000, 17, false, 0x8000, 0 },
        { ZYDIS_MNEMONIC_RCL, 2, 0x8000, 16, true, 0xc000, 0 },
        { ZYDIS_MNEMONIC_RCR, 1, 0x01, 1, false, 0x00, kCF },
        { ZYDIS_MNEMONIC_RCR, 1, 0x00, 1, true, 0x80, kOF },
        { ZYDIS_MNEMONIC_RCR, 8, 1, 1, true, 0x8000000000000000, kCF | kOF },
        { ZYDIS_MNEMONIC_RCR, 4, 0, 31, true, 2, 0 },
    };
    for (const Expect& e : cases) {
        Insn in = make_insn(e.m, { R(RBX, e.size), R(RCX, 1) });
        cpu().gpr[RBX] = e.value;
        cpu().gpr[RCX] = e.count;
        set_flags(e.cf_in ? kCF : 0);
        run(in);
        const char* name = ZydisMnemonicGetString(e.m);
        EXPECT_EQ(cpu().gpr[RBX], e.res) << name << " " << e.size << " by " << e.count;
        // OF is defined for a count of 1 only.
        uint64_t mask = (is_rotate(e.m) ? kCF : (kCF | kSF | kZF | kPF)) | (e.count == 1 ? kOF : 0);
        EXPECT_EQ(flags() & mask, e.flags) << name << " " << e.size << " by " << e.count;
    }
}

TEST_F(SoftIntShift, CountZeroStillZeroExtends32BitRegister)
{
    Insn shl = make_insn(ZYDIS_MNEMONIC_SHL, { R(RAX, 4), R(RCX, 1) });
    cpu().gpr[RAX] = 0xffff'ffff'8000'0001;
    cpu().gpr[RCX] = 0;
    set_flags(kOF | kCF);
    run(shl);
    EXPECT_EQ(cpu().gpr[RAX], 0x8000'0001u);
    EXPECT_EQ(flags(), kOF | kCF);
    Insn shl16 = make_insn(ZYDIS_MNEMONIC_SHL, { R(RAX, 2), R(RCX, 1) });
    cpu().gpr[RAX] = 0xffff'ffff'8000'0001;
    run(shl16);
    EXPECT_EQ(cpu().gpr[RAX], 0xffff'ffff'8000'0001u);
}

TEST_F(SoftIntShift, DoubleShiftEdgeCases)
{
    Insn shld = make_insn(ZYDIS_MNEMONIC_SHLD, { R(RAX, 4), R(RDX, 4), I(1) }, 4);
    cpu().gpr[RAX] = 0x1234'5678;
    cpu().gpr[RDX] = 0x9abc'def0;
    run(shld);
    EXPECT_EQ(cpu().gpr[RAX], 0x2345'6789u);
    EXPECT_EQ(flags() & kCF, kCF); // bit 28 of 0x12345678 = 1
    Insn shrd = make_insn(ZYDIS_MNEMONIC_SHRD, { R(RAX, 8), R(RDX, 8), I(1) }, 1);
    cpu().gpr[RAX] = 1;
    cpu().gpr[RDX] = 1;
    run(shrd);
    EXPECT_EQ(cpu().gpr[RAX], 0x8000'0000'0000'0000u);
    EXPECT_EQ(flags() & (kCF | kOF | kSF), kCF | kOF | kSF);
    // A 16-bit count of 20 shifts dest:src:dest (undefined; P6+ behaviour).
    Insn shld16 = make_insn(ZYDIS_MNEMONIC_SHLD, { R(RAX, 2), R(RDX, 2), I(1) }, 20);
    cpu().gpr[RAX] = 0x1234;
    cpu().gpr[RDX] = 0x5678;
    run(shld16);
    EXPECT_EQ(cpu().gpr[RAX], 0x6781u);
}

} // namespace
} // namespace vessel::soft::testing
