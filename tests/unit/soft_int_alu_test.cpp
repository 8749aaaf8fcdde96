// Soft engine: ADD OR ADC SBB AND SUB XOR CMP TEST INC DEC NEG NOT, against the host CPU for
// every width and edge value, plus explicit SDM expectations and LOCK/fault behaviour.
#include <thread>

#include "soft_int_test_support.h"

namespace vessel::soft::testing {
namespace {

using Xbyak::CodeGenerator;

constexpr ZydisMnemonic kBinary[] = { ZYDIS_MNEMONIC_ADD, ZYDIS_MNEMONIC_OR, ZYDIS_MNEMONIC_ADC, ZYDIS_MNEMONIC_SBB,
    ZYDIS_MNEMONIC_AND, ZYDIS_MNEMONIC_SUB, ZYDIS_MNEMONIC_XOR, ZYDIS_MNEMONIC_CMP, ZYDIS_MNEMONIC_TEST };
constexpr unsigned kSizes[] = { 1, 2, 4, 8 };

void emit_binary(CodeGenerator& g, ZydisMnemonic m, const Xbyak::Operand& d, const Xbyak::Reg& s)
{
    switch (m) {
    case ZYDIS_MNEMONIC_ADD: g.add(d, s); break;
    case ZYDIS_MNEMONIC_OR: g.or_(d, s); break;
    case ZYDIS_MNEMONIC_ADC: g.adc(d, s); break;
    case ZYDIS_MNEMONIC_SBB: g.sbb(d, s); break;
    case ZYDIS_MNEMONIC_AND: g.and_(d, s); break;
    case ZYDIS_MNEMONIC_SUB: g.sub(d, s); break;
    case ZYDIS_MNEMONIC_XOR: g.xor_(d, s); break;
    case ZYDIS_MNEMONIC_CMP: g.cmp(d, s); break;
    default: g.test(d, s); break;
    }
}

bool is_logic(ZydisMnemonic m)
{
    return m == ZYDIS_MNEMONIC_OR || m == ZYDIS_MNEMONIC_AND || m == ZYDIS_MNEMONIC_XOR || m == ZYDIS_MNEMONIC_TEST;
}

// AF is undefined after logic instructions.
uint64_t binary_mask(ZydisMnemonic m)
{
    return is_logic(m) ? kArithFlags & ~kAF : kArithFlags;
}

// Input flags: the carry under test plus other bits that must be overwritten.
uint64_t flags_in(bool cf)
{
    return cf ? (kCF | kZF | kOF) : (kSF | kAF | kPF);
}

class SoftIntAlu : public SoftIntTest { };

TEST_F(SoftIntAlu, OracleDetectsMismatch)
{
    HostOracle add([](CodeGenerator& g) { g.add(g.eax, g.ecx); });
    Insn sub = make_insn(ZYDIS_MNEMONIC_SUB, { R(RAX, 4), R(RCX, 4) });
    Insn add_insn = make_insn(ZYDIS_MNEMONIC_ADD, { R(RAX, 4), R(RCX, 4) });
    EXPECT_FALSE(matches_host(sub, add, { 5, 3, 0, 0, 0, 0 }, kArithFlags));
    EXPECT_TRUE(matches_host(add_insn, add, { 5, 3, 0, 0, 0, 0 }, kArithFlags));
    EXPECT_EQ(cpu().gpr[RAX], 8u);
}

TEST_F(SoftIntAlu, RegisterFormsMatchHost)
{
    for (ZydisMnemonic m : kBinary) {
        for (unsigned size : kSizes) {
            HostOracle host([&](CodeGenerator& g) { emit_binary(g, m, host_reg(0, size), host_reg(1, size)); });
            Insn in = make_insn(m, { R(RAX, size), R(RCX, size) });
            for (uint64_t a : edge_values())
                for (uint64_t b : edge_values())
                    for (bool cf : { false, true })
                        ASSERT_TRUE(matches_host(in, host, { a, b, 0x5555, 0x6666, flags_in(cf), 0 }, binary_mask(m)));
        }
    }
}

TEST_F(SoftIntAlu, MemoryDestinationMatchesHost)
{
    for (bool lock : { false, true }) {
        for (ZydisMnemonic m : kBinary) {
            if (lock && (m == ZYDIS_MNEMONIC_CMP || m == ZYDIS_MNEMONIC_TEST))
                continue;
            for (unsigned size : kSizes) {
                HostOracle host([&](CodeGenerator& g) {
                    if (lock)
                        g.lock();
                    emit_binary(g, m, host_mem(g, size), host_reg(1, size));
                });
                Insn in = mem_data(make_insn(m, { M(size), R(RCX, size) }));
                if (lock)
                    in.flags |= kFlagLock;
                for (uint64_t a : edge_values())
                    for (uint64_t b : edge_values())
                        for (bool cf : { false, true })
                            ASSERT_TRUE(matches_host(in, host, { 0x1111, b, 0, 0, flags_in(cf), a }, binary_mask(m)))
                                << "lock " << lock;
            }
        }
    }
}

TEST_F(SoftIntAlu, MemorySourceMatchesHost)
{
    for (ZydisMnemonic m : kBinary) {
        if (m == ZYDIS_MNEMONIC_TEST)
            continue;
        for (unsigned size : kSizes) {
            HostOracle host([&](CodeGenerator& g) {
                Xbyak::Reg d = host_reg(0, size);
                switch (m) {
                case ZYDIS_MNEMONIC_ADD: g.add(d, host_mem(g, size)); break;
                case ZYDIS_MNEMONIC_OR: g.or_(d, host_mem(g, size)); break;
                case ZYDIS_MNEMONIC_ADC: g.adc(d, host_mem(g, size)); break;
                case ZYDIS_MNEMONIC_SBB: g.sbb(d, host_mem(g, size)); break;
                case ZYDIS_MNEMONIC_AND: g.and_(d, host_mem(g, size)); break;
                case ZYDIS_MNEMONIC_SUB: g.sub(d, host_mem(g, size)); break;
                case ZYDIS_MNEMONIC_XOR: g.xor_(d, host_mem(g, size)); break;
                default: g.cmp(d, host_mem(g, size)); break;
                }
            });
            Insn in = mem_data(make_insn(m, { R(RAX, size), M(size) }));
            for (uint64_t a : edge_values())
                for (uint64_t b : { 0ULL, 1ULL, 0x7fULL, 0x80ULL, 0xffffULL, 0x80000000ULL, ~0ULL })
                    ASSERT_TRUE(matches_host(in, host, { a, 0, 0, 0, flags_in(true), b }, binary_mask(m)));
        }
    }
}

TEST_F(SoftIntAlu, HighByteRegistersMatchHost)
{
    for (ZydisMnemonic m : kBinary) {
        // AH op CH, AL op BH, BH op DL.
        HostOracle ah_ch([&](CodeGenerator& g) { emit_binary(g, m, g.ah, g.ch); });
        HostOracle al_bh([&](CodeGenerator& g) { emit_binary(g, m, g.al, g.bh); });
        HostOracle bh_dl([&](CodeGenerator& g) { emit_binary(g, m, g.bh, g.dl); });
        Insn i1 = make_insn(m, { H(RAX), H(RCX) });
        Insn i2 = make_insn(m, { R(RAX, 1), H(RBX) });
        Insn i3 = make_insn(m, { H(RBX), R(RDX, 1) });
        for (uint64_t a : edge_values()) {
            for (uint64_t b : edge_values()) {
                HostState s { a, b, b << 8 | a, (a << 8) ^ b, flags_in(true), 0 };
                ASSERT_TRUE(matches_host(i1, ah_ch, s, binary_mask(m)));
                ASSERT_TRUE(matches_host(i2, al_bh, s, binary_mask(m)));
                ASSERT_TRUE(matches_host(i3, bh_dl, s, binary_mask(m)));
            }
        }
    }
}

TEST_F(SoftIntAlu, ImmediateFormsMatchHost)
{
    struct Form {
        unsigned size;
        int32_t imm;
    };
    // The Imm operand has the size it is used at, sign-extended (imm8/imm32 encodings).
    for (Form f : { Form { 1, 0x7f }, Form { 1, -128 }, Form { 2, -1 }, Form { 2, 0x1234 }, Form { 4, -2 },
             Form { 4, 0x7fffffff }, Form { 8, -1 }, Form { 8, INT32_MIN }, Form { 8, 0x40 } }) {
        for (ZydisMnemonic m : kBinary) {
            HostOracle host([&](CodeGenerator& g) {
                Xbyak::Reg d = host_reg(0, f.size);
                switch (m) {
                case ZYDIS_MNEMONIC_ADD: g.add(d, f.imm); break;
                case ZYDIS_MNEMONIC_OR: g.or_(d, f.imm); break;
                case ZYDIS_MNEMONIC_ADC: g.adc(d, f.imm); break;
                case ZYDIS_MNEMONIC_SBB: g.sbb(d, f.imm); break;
                case ZYDIS_MNEMONIC_AND: g.and_(d, f.imm); break;
                case ZYDIS_MNEMONIC_SUB: g.sub(d, f.imm); break;
                case ZYDIS_MNEMONIC_XOR: g.xor_(d, f.imm); break;
                case ZYDIS_MNEMONIC_CMP: g.cmp(d, f.imm); break;
                default: g.test(d, f.imm); break;
                }
            });
            Insn in = make_insn(m, { R(RAX, f.size), I(f.size) }, static_cast<uint64_t>(static_cast<int64_t>(f.imm)));
            for (uint64_t a : edge_values())
                for (bool cf : { false, true })
                    ASSERT_TRUE(matches_host(in, host, { a, 0, 0, 0, flags_in(cf), 0 }, binary_mask(m)));
        }
    }
}

TEST_F(SoftIntAlu, UnaryMatchesHost)
{
    const ZydisMnemonic ops[] = { ZYDIS_MNEMONIC_INC, ZYDIS_MNEMONIC_DEC, ZYDIS_MNEMONIC_NEG, ZYDIS_MNEMONIC_NOT };
    auto emit = [](CodeGenerator& g, ZydisMnemonic m, const Xbyak::Operand& d) {
        switch (m) {
        case ZYDIS_MNEMONIC_INC: g.inc(d); break;
        case ZYDIS_MNEMONIC_DEC: g.dec(d); break;
        case ZYDIS_MNEMONIC_NEG: g.neg(d); break;
        default: g.not_(d); break;
        }
    };
    for (ZydisMnemonic m : ops) {
        for (unsigned size : kSizes) {
            HostOracle reg([&](CodeGenerator& g) { emit(g, m, host_reg(0, size)); });
            HostOracle mem([&](CodeGenerator& g) { emit(g, m, host_mem(g, size)); });
            HostOracle locked([&](CodeGenerator& g) {
                g.lock();
                emit(g, m, host_mem(g, size));
            });
            Insn r = make_insn(m, { R(RAX, size) });
            Insn mm = mem_data(make_insn(m, { M(size) }));
            Insn l = with_flags(mm, kFlagLock);
            for (uint64_t a : edge_values()) {
                for (bool cf : { false, true }) {
                    ASSERT_TRUE(matches_host(r, reg, { a, 0, 0, 0, flags_in(cf), 0 }, kArithFlags));
                    ASSERT_TRUE(matches_host(mm, mem, { 0, 0, 0, 0, flags_in(cf), a }, kArithFlags));
                    ASSERT_TRUE(matches_host(l, locked, { 0, 0, 0, 0, flags_in(cf), a }, kArithFlags));
                }
            }
        }
    }
}

// Explicit SDM expectations, independent of the host.
struct Expect {
    ZydisMnemonic m;
    unsigned size;
    uint64_t a, b;
    bool cf_in;
    uint64_t res, flags;
};

TEST_F(SoftIntAlu, SdmEdgeCases)
{
    const Expect cases[] = {
        { ZYDIS_MNEMONIC_ADD, 1, 0x7f, 1, false, 0x80, kOF | kSF | kAF },
        { ZYDIS_MNEMONIC_ADD, 1, 0xff, 1, false, 0x00, kCF | kZF | kAF | kPF },
        { ZYDIS_MNEMONIC_ADD, 2, 0x7fff, 1, false, 0x8000, kOF | kSF | kAF | kPF },
        { ZYDIS_MNEMONIC_ADD, 4, 0xffffffff, 1, false, 0, kCF | kZF | kAF | kPF },
        { ZYDIS_MNEMONIC_ADD, 8, 0x7fffffffffffffff, 1, false, 0x8000000000000000, kOF | kSF | kAF | kPF },
        { ZYDIS_MNEMONIC_SUB, 1, 0x80, 1, false, 0x7f, kOF | kAF },
        { ZYDIS_MNEMONIC_SUB, 1, 0, 1, false, 0xff, kCF | kSF | kAF | kPF },
        { ZYDIS_MNEMONIC_SUB, 8, 0, 1, false, ~0ULL, kCF | kSF | kAF | kPF },
        { ZYDIS_MNEMONIC_CMP, 4, 5, 5, true, 5, kZF | kPF },
        { ZYDIS_MNEMONIC_ADC, 1, 0xff, 0xff, true, 0xff, kCF | kSF | kAF | kPF },
        { ZYDIS_MNEMONIC_ADC, 8, ~0ULL, 0, true, 0, kCF | kZF | kAF | kPF },
        { ZYDIS_MNEMONIC_ADC, 1, 0x7f, 0, true, 0x80, kOF | kSF | kAF },
        { ZYDIS_MNEMONIC_SBB, 1, 0, 0, true, 0xff, kCF | kSF | kAF | kPF },
        { ZYDIS_MNEMONIC_SBB, 2, 0x8000, 0, true, 0x7fff, kOF | kAF | kPF },
        { ZYDIS_MNEMONIC_SBB, 4, 5, 5, true, 0xffffffff, kCF | kSF | kAF | kPF },
        { ZYDIS_MNEMONIC_AND, 1, 0xf0, 0x0f, true, 0, kZF | kPF },
        { ZYDIS_MNEMONIC_XOR, 8, ~0ULL, 1, true, ~1ULL, kSF },
        { ZYDIS_MNEMONIC_OR, 2, 0x8000, 1, false, 0x8001, kSF },
    };
    for (const Expect& e : cases) {
        Insn in = make_insn(e.m, { R(RBX, e.size), R(RDX, e.size) });
        cpu().gpr[RBX] = e.a;
        cpu().gpr[RDX] = e.b;
        set_flags(e.cf_in ? kCF : 0);
        run(in);
        EXPECT_EQ(cpu().gpr[RBX], e.res) << ZydisMnemonicGetString(e.m) << " " << e.size;
        EXPECT_EQ(flags() & ~(is_logic(e.m) ? kAF : 0), e.flags) << ZydisMnemonicGetString(e.m) << " " << e.size;
    }
    // INC/DEC keep CF; NEG sets CF for a nonzero operand.
    Insn inc = make_insn(ZYDIS_MNEMONIC_INC, { R(RAX, 1) });
    cpu().gpr[RAX] = 0xff;
    set_flags(kCF);
    run(inc);
    EXPECT_EQ(cpu().gpr[RAX], 0u);
    EXPECT_EQ(flags(), kCF | kZF | kAF | kPF);
    Insn dec = make_insn(ZYDIS_MNEMONIC_DEC, { R(RAX, 4) });
    cpu().gpr[RAX] = 0xdead'0000'8000'0000;
    set_flags(0);
    run(dec);
    EXPECT_EQ(cpu().gpr[RAX], 0x7fffffffu); // 32-bit result zero-extended
    EXPECT_EQ(flags(), kOF | kAF | kPF);
    Insn neg = make_insn(ZYDIS_MNEMONIC_NEG, { R(RAX, 2) });
    cpu().gpr[RAX] = 0x1234'0000'0000'8000;
    run(neg);
    EXPECT_EQ(cpu().gpr[RAX], 0x1234'0000'0000'8000u); // -0x8000 = 0x8000, upper bits kept
    EXPECT_EQ(flags(), kCF | kOF | kSF | kPF);
    cpu().gpr[RAX] = 0;
    run(neg);
    EXPECT_EQ(flags(), kZF | kPF);
}

TEST_F(SoftIntAlu, OperandSizeWritesAndConditionCodes)
{
    Insn add32 = make_insn(ZYDIS_MNEMONIC_ADD, { R(RAX, 4), R(RCX, 4) });
    cpu().gpr[RAX] = 0xffff'ffff'0000'0001;
    cpu().gpr[RCX] = 1;
    run(add32);
    EXPECT_EQ(cpu().gpr[RAX], 2u);
    Insn add16 = make_insn(ZYDIS_MNEMONIC_ADD, { R(RAX, 2), R(RCX, 2) });
    cpu().gpr[RAX] = 0xffff'ffff'0000'ffff;
    run(add16);
    EXPECT_EQ(cpu().gpr[RAX], 0xffff'ffff'0000'0000u);
    // CMP feeds the condition codes (signed and unsigned).
    Insn cmp = make_insn(ZYDIS_MNEMONIC_CMP, { R(RAX, 1), R(RCX, 1) });
    cpu().gpr[RAX] = 0x80;
    cpu().gpr[RCX] = 0x01;
    run(cmp);
    EXPECT_TRUE(test_cc(cpu(), 12)); // L: -128 < 1
    EXPECT_FALSE(test_cc(cpu(), 2)); // B: 0x80 < 1 is false
    EXPECT_TRUE(test_cc(cpu(), 0)); // O
    EXPECT_TRUE(test_cc(cpu(), 7)); // A
    // TEST does not write.
    Insn test = make_insn(ZYDIS_MNEMONIC_TEST, { R(RAX, 8), R(RCX, 8) });
    run(test);
    EXPECT_EQ(cpu().gpr[RAX], 0x80u);
    EXPECT_TRUE(test_cc(cpu(), 4)); // Z: 0x80 & 1 == 0
}

TEST_F(SoftIntAlu, LockedAddIsAtomicAcrossThreads)
{
    // Two vCPUs on two host threads do LOCK ADD on the same qword.
    constexpr int kIterations = 100000;
    Insn in = with_flags(mem_data(make_insn(ZYDIS_MNEMONIC_ADD, { M(8), I(8) }, 1)), kFlagLock);
    poke<uint64_t>(kData, 0);
    SoftMachine& machine = *cpu().machine;
    auto worker = [&] {
        Cpu c;
        c.machine = &machine;
        c.cr0 = cpu().cr0;
        c.mode = CpuMode::Long64;
        c.stack_size = 8;
        c.tlb.flush();
        for (int i = 0; i < kIterations; ++i)
            in.exec(c, in);
    };
    std::thread t(worker);
    worker();
    t.join();
    EXPECT_EQ(peek<uint64_t>(kData), 2u * kIterations);
}

TEST_F(SoftIntAlu, FaultingStoreLeavesFlagsAndRegisters)
{
    enable_paging();
    make_readonly(kData);
    Insn add = mem_data(make_insn(ZYDIS_MNEMONIC_ADD, { M(4), R(RCX, 4) }));
    Insn xadd_locked = with_flags(mem_data(make_insn(ZYDIS_MNEMONIC_SUB, { M(4), R(RCX, 4) })), kFlagLock);
    poke<uint32_t>(kData, 7);
    cpu().gpr[RCX] = 1;
    set_flags(kCF | kZF);
    for (const Insn& in : { add, xadd_locked }) {
        auto f = run_fault(in);
        ASSERT_TRUE(f.has_value());
        EXPECT_EQ(f->vector, kExcPF);
        EXPECT_EQ(f->error_code, kPfPresent | kPfWrite);
        EXPECT_EQ(f->cr2, kData);
        EXPECT_EQ(flags(), kCF | kZF);
        EXPECT_EQ(peek<uint32_t>(kData), 7u);
        EXPECT_EQ(cpu().rip, kCodeAddr);
    }
    // CMP only reads.
    run(mem_data(make_insn(ZYDIS_MNEMONIC_CMP, { M(4), R(RCX, 4) })));
    EXPECT_FALSE(test_cc(cpu(), 4));
}

} // namespace
} // namespace vessel::soft::testing
