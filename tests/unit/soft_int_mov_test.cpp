// Soft engine: MOV MOVZX MOVSX MOVSXD LEA XCHG CMPXCHG CMPXCHG8B CMPXCHG16B XADD BSWAP CMOVcc
// SETcc LAHF SAHF CLC STC CMC CLD STD XLAT NOP.
#include <thread>

#include "soft_int_test_support.h"

namespace vessel::soft::testing {
namespace {

using Xbyak::CodeGenerator;

constexpr unsigned kSizes[] = { 1, 2, 4, 8 };

class SoftIntMov : public SoftIntTest { };

TEST_F(SoftIntMov, MovForms)
{
    // 8/16-bit writes merge, 32-bit writes zero-extend, AH..BH address bits 15:8.
    cpu().gpr[RAX] = 0x1111'1111'1111'1111;
    cpu().gpr[RCX] = 0x2222'2222'2222'2222;
    run(make_insn(ZYDIS_MNEMONIC_MOV, { R(RAX, 1), R(RCX, 1) }));
    EXPECT_EQ(cpu().gpr[RAX], 0x1111'1111'1111'1122u);
    run(make_insn(ZYDIS_MNEMONIC_MOV, { H(RAX), R(RCX, 1) }));
    EXPECT_EQ(cpu().gpr[RAX], 0x1111'1111'1111'2222u);
    cpu().gpr[RCX] = 0x2222'2222'2222'3344;
    run(make_insn(ZYDIS_MNEMONIC_MOV, { R(RAX, 1), H(RCX) }));
    EXPECT_EQ(cpu().gpr[RAX], 0x1111'1111'1111'2233u);
    run(make_insn(ZYDIS_MNEMONIC_MOV, { R(RAX, 2), R(RCX, 2) }));
    EXPECT_EQ(cpu().gpr[RAX], 0x1111'1111'1111'3344u);
    run(make_insn(ZYDIS_MNEMONIC_MOV, { R(RAX, 4), R(RCX, 4) }));
    EXPECT_EQ(cpu().gpr[RAX], 0x2222'3344u);
    // SPL (REX form of register 4, size 1) is the low byte of RSP.
    cpu().gpr[RSP] = 0x8000;
    run(make_insn(ZYDIS_MNEMONIC_MOV, { R(RSP, 1), I(1) }, 0x44));
    EXPECT_EQ(cpu().gpr[RSP], 0x8044u);
    // Immediates: sign-extended imm32 for 64-bit, full imm64.
    run(make_insn(ZYDIS_MNEMONIC_MOV, { R(RDX, 8), I(8) }, ~0ULL));
    EXPECT_EQ(cpu().gpr[RDX], ~0ULL);
    run(make_insn(ZYDIS_MNEMONIC_MOV, { R(RDX, 4), I(4) }, 0xffff'ffff'8000'0000));
    EXPECT_EQ(cpu().gpr[RDX], 0x8000'0000u);
    // Memory both ways, RIP-relative and SIB addressing.
    run(mem_data(make_insn(ZYDIS_MNEMONIC_MOV, { M(8), R(RCX, 8) })));
    EXPECT_EQ(peek<uint64_t>(kData), 0x2222'2222'2222'3344u);
    cpu().gpr[RBX] = kData - 0x100;
    cpu().gpr[RSI] = 0x40;
    run(with_mem(make_insn(ZYDIS_MNEMONIC_MOV, { R(R9, 2), M(2) }), RBX, 0, RSI, 4));
    EXPECT_EQ(cpu().gpr[R9], 0x3344u);
    cpu().rip = kCodeAddr;
    Insn riprel = with_mem(make_insn(ZYDIS_MNEMONIC_MOV, { M(4), I(4) }, 0xcafe), kRipReg,
        static_cast<int64_t>(kData) + 8 - static_cast<int64_t>(kCodeAddr) - 4);
    run(riprel);
    EXPECT_EQ(peek<uint32_t>(kData + 8), 0xcafeu);
    // MOV with segment/control registers is passed on to the system group's handler.
    cpu().seg[FS].selector = 0x2b;
    cpu().gpr[RAX] = ~0ULL;
    run(make_insn(ZYDIS_MNEMONIC_MOV, { R(RAX, 4), Operand { OpKind::Seg, FS, 2, 0 } }));
    EXPECT_EQ(cpu().gpr[RAX], 0x2bu);
    run(make_insn(ZYDIS_MNEMONIC_MOV, { R(RDX, 8), Operand { OpKind::Cr, 0, 8, 0 } }));
    EXPECT_EQ(cpu().gpr[RDX], cpu().cr0);
}

// A non-canonical address reached through SS (an RSP/RBP base, PUSH/POP) is #SS(0); through
// DS, or an FS override on an RBP base, it is #GP(0).
class SoftIntMovProgram : public SoftIntProgram { };

TEST_F(SoftIntMovProgram, NonCanonicalAddressThroughStackSegmentIsStackFault)
{
    struct Probe {
        unsigned base;
        uint8_t prefix; // 0 or a segment override
        uint8_t vector;
    };
    for (Probe p : { Probe { RBP, 0, kExcSS }, Probe { RSP, 0, kExcSS }, Probe { RBX, 0, kExcGP },
             Probe { RBP, 0x64, kExcGP } }) {
        CodeGenerator g;
        if (p.prefix)
            g.db(p.prefix);
        g.mov(g.eax, g.dword[Xbyak::Reg64(p.base) + 8]);
        g.hlt();
        uint64_t saved_rsp = cpu().gpr[RSP];
        cpu().gpr[p.base] = 0x0000'8000'0000'0000;
        auto f = run_code(g);
        ASSERT_TRUE(f.has_value()) << "base " << p.base;
        EXPECT_EQ(f->vector, p.vector) << "base " << p.base;
        EXPECT_EQ(f->error_code, 0u);
        EXPECT_EQ(cpu().rip, kCodeAddr);
        cpu().gpr[RSP] = saved_rsp;
    }
    CodeGenerator push;
    push.push(push.rax);
    push.hlt();
    cpu().gpr[RSP] = 0xffff'7fff'ffff'fff8;
    auto f = run_code(push);
    ASSERT_TRUE(f.has_value());
    EXPECT_EQ(f->vector, kExcSS);
    EXPECT_EQ(cpu().gpr[RSP], 0xffff'7fff'ffff'fff8u);
}

TEST_F(SoftIntMov, ExtensionsMatchHost)
{
    struct Form {
        ZydisMnemonic m;
        unsigned dst, src;
    };
    const Form forms[] = { { ZYDIS_MNEMONIC_MOVZX, 2, 1 }, { ZYDIS_MNEMONIC_MOVZX, 4, 1 },
        { ZYDIS_MNEMONIC_MOVZX, 8, 1 }, { ZYDIS_MNEMONIC_MOVZX, 4, 2 }, { ZYDIS_MNEMONIC_MOVZX, 8, 2 },
        { ZYDIS_MNEMONIC_MOVSX, 2, 1 }, { ZYDIS_MNEMONIC_MOVSX, 4, 1 }, { ZYDIS_MNEMONIC_MOVSX, 8, 1 },
        { ZYDIS_MNEMONIC_MOVSX, 4, 2 }, { ZYDIS_MNEMONIC_MOVSX, 8, 2 }, { ZYDIS_MNEMONIC_MOVSXD, 8, 4 } };
    for (const Form& f : forms) {
        HostOracle reg([&](CodeGenerator& g) {
            Xbyak::Reg d = host_reg(0, f.dst), s = host_reg(1, f.src);
            if (f.m == ZYDIS_MNEMONIC_MOVZX)
                g.movzx(d, s);
            else if (f.m == ZYDIS_MNEMONIC_MOVSX)
                g.movsx(d, s);
            else
                g.movsxd(d.cvt64(), s.cvt32());
        });
        Insn in = make_insn(f.m, { R(RAX, f.dst), R(RCX, f.src) });
        for (uint64_t v : edge_values())
            ASSERT_TRUE(matches_host(in, reg, { 0x5555'5555'5555'5555, v, 0, 0, 0, 0 }, kArithFlags));
    }
    // MOVZX from AH.
    cpu().gpr[RAX] = 0x8180;
    run(make_insn(ZYDIS_MNEMONIC_MOVSX, { R(RDX, 8), H(RAX) }));
    EXPECT_EQ(cpu().gpr[RDX], 0xffff'ffff'ffff'ff81u);
}

TEST_F(SoftIntMov, Lea)
{
    cpu().gpr[RBX] = 0xffff'ffff'ffff'fff0;
    cpu().gpr[RCX] = 3;
    run(with_mem(make_insn(ZYDIS_MNEMONIC_LEA, { R(RAX, 8), M(8) }), RBX, 0x20, RCX, 8));
    EXPECT_EQ(cpu().gpr[RAX], 0x28u);
    // 32-bit destination truncates; 16-bit merges.
    cpu().gpr[RAX] = ~0ULL;
    run(with_mem(make_insn(ZYDIS_MNEMONIC_LEA, { R(RAX, 4), M(8) }), RBX, -1));
    EXPECT_EQ(cpu().gpr[RAX], 0xffff'ffefu);
    run(with_mem(make_insn(ZYDIS_MNEMONIC_LEA, { R(RAX, 2), M(8) }), RCX, 0x10000));
    EXPECT_EQ(cpu().gpr[RAX], 0xffff'0003u);
    // 32-bit address size (67 prefix) wraps at 4 GiB before zero-extension to 64 bits.
    Insn lea32 = with_mem(make_insn(ZYDIS_MNEMONIC_LEA, { R(RAX, 8), M(4) }), RBX, 0x20);
    lea32.asize = 4;
    run(lea32);
    EXPECT_EQ(cpu().gpr[RAX], 0x10u);
}

TEST_F(SoftIntMov, Exchange)
{
    cpu().gpr[RAX] = 0x1111'1111'1111'1111;
    cpu().gpr[RCX] = 0x2222'2222'2222'2222;
    run(make_insn(ZYDIS_MNEMONIC_XCHG, { R(RAX, 4), R(RCX, 4) }));
    EXPECT_EQ(cpu().gpr[RAX], 0x2222'2222u);
    EXPECT_EQ(cpu().gpr[RCX], 0x1111'1111u);
    run(make_insn(ZYDIS_MNEMONIC_XCHG, { H(RAX), R(RCX, 1) }));
    EXPECT_EQ(cpu().gpr[RAX], 0x2222'1122u);
    EXPECT_EQ(cpu().gpr[RCX], 0x1111'1122u);
    poke<uint64_t>(kData, 0xaaaa'bbbb'cccc'dddd);
    run(mem_data(make_insn(ZYDIS_MNEMONIC_XCHG, { M(2), R(RCX, 2) })));
    EXPECT_EQ(peek<uint64_t>(kData), 0xaaaa'bbbb'cccc'1122u);
    EXPECT_EQ(cpu().gpr[RCX], 0x1111'dddd);
    run(mem_data(make_insn(ZYDIS_MNEMONIC_XCHG, { R(RCX, 8), M(8) })));
    EXPECT_EQ(cpu().gpr[RCX], 0xaaaa'bbbb'cccc'1122u);
    EXPECT_EQ(peek<uint64_t>(kData), 0x1111'ddddu);
}

TEST_F(SoftIntMov, CmpxchgAndXaddMatchHost)
{
    for (unsigned size : kSizes) {
        for (bool lock : { false, true }) {
            HostOracle cx_reg([&](CodeGenerator& g) { g.cmpxchg(host_reg(3, size), host_reg(1, size)); });
            HostOracle cx_mem([&](CodeGenerator& g) {
                if (lock)
                    g.lock();
                g.cmpxchg(host_mem(g, size), host_reg(1, size));
            });
            HostOracle xa_reg([&](CodeGenerator& g) { g.xadd(host_reg(3, size), host_reg(1, size)); });
            HostOracle xa_mem([&](CodeGenerator& g) {
                if (lock)
                    g.lock();
                g.xadd(host_mem(g, size), host_reg(1, size));
            });
            uint16_t lf = lock ? kFlagLock : 0;
            Insn i_cx_reg = make_insn(ZYDIS_MNEMONIC_CMPXCHG, { R(RBX, size), R(RCX, size) });
            Insn i_cx_mem = with_flags(mem_data(make_insn(ZYDIS_MNEMONIC_CMPXCHG, { M(size), R(RCX, size) })), lf);
            Insn i_xa_reg = make_insn(ZYDIS_MNEMONIC_XADD, { R(RBX, size), R(RCX, size) });
            Insn i_xa_mem = with_flags(mem_data(make_insn(ZYDIS_MNEMONIC_XADD, { M(size), R(RCX, size) })), lf);
            for (uint64_t a : edge_values()) {
                for (uint64_t d : edge_values()) {
                    // Equal (success) and different (failure) accumulators.
                    for (uint64_t acc : { d, a }) {
                        HostState s { acc, 0x7777'6666'5555'4444, 0, d, 0, d };
                        ASSERT_TRUE(matches_host(i_cx_reg, cx_reg, s, kArithFlags));
                        ASSERT_TRUE(matches_host(i_cx_mem, cx_mem, s, kArithFlags));
                    }
                    HostState s { 0, a, 0, d, 0, d };
                    ASSERT_TRUE(matches_host(i_xa_reg, xa_reg, s, kArithFlags));
                    ASSERT_TRUE(matches_host(i_xa_mem, xa_mem, s, kArithFlags));
                }
            }
        }
    }
}

TEST_F(SoftIntMov, CmpxchgRegisterFormWritesOnlyWhatChanges)
{
    Insn in = make_insn(ZYDIS_MNEMONIC_CMPXCHG, { R(RBX, 4), R(RCX, 4) });
    cpu().gpr[RAX] = 0xffff'ffff'0000'0001;
    cpu().gpr[RBX] = 0xffff'ffff'0000'0002;
    cpu().gpr[RCX] = 9;
    run(in); // fails: EAX = 2 (RAX zero-extended), RBX untouched
    EXPECT_EQ(cpu().gpr[RAX], 2u);
    EXPECT_EQ(cpu().gpr[RBX], 0xffff'ffff'0000'0002u);
    EXPECT_FALSE(flags() & kZF);
    cpu().gpr[RAX] = 0xffff'ffff'0000'0002;
    run(in); // succeeds: EBX = 9 (RBX zero-extended), RAX untouched
    EXPECT_EQ(cpu().gpr[RBX], 9u);
    EXPECT_EQ(cpu().gpr[RAX], 0xffff'ffff'0000'0002u);
    EXPECT_TRUE(flags() & kZF);
}

TEST_F(SoftIntMov, Cmpxchg8bAnd16b)
{
    Insn c8 = mem_data(make_insn(ZYDIS_MNEMONIC_CMPXCHG8B, { M(8) }));
    poke<uint64_t>(kData, 0x1111'1111'2222'2222);
    cpu().gpr[RDX] = 0xaaaa'aaaa'1111'1111;
    cpu().gpr[RAX] = 0xbbbb'bbbb'2222'2222;
    cpu().gpr[RCX] = 0x3333'3333;
    cpu().gpr[RBX] = 0x4444'4444;
    set_flags(kCF);
    run(c8);
    EXPECT_EQ(peek<uint64_t>(kData), 0x3333'3333'4444'4444u);
    EXPECT_EQ(flags(), kCF | kZF); // only ZF changes
    EXPECT_EQ(cpu().gpr[RAX], 0xbbbb'bbbb'2222'2222u);
    run(c8); // now fails: EDX:EAX = memory (zero-extended)
    EXPECT_EQ(flags(), kCF);
    EXPECT_EQ(cpu().gpr[RDX], 0x3333'3333u);
    EXPECT_EQ(cpu().gpr[RAX], 0x4444'4444u);

    constexpr uint64_t kAligned = kData + 0x100;
    Insn c16 = with_mem(make_insn(ZYDIS_MNEMONIC_CMPXCHG16B, { M(16) }), kNoReg, kAligned);
    poke<uint64_t>(kAligned, 1);
    poke<uint64_t>(kAligned + 8, 2);
    cpu().gpr[RAX] = 1;
    cpu().gpr[RDX] = 2;
    cpu().gpr[RBX] = 0x5555'5555'5555'5555;
    cpu().gpr[RCX] = 0x6666'6666'6666'6666;
    run(c16);
    EXPECT_TRUE(flags() & kZF);
    EXPECT_EQ(peek<uint64_t>(kAligned), 0x5555'5555'5555'5555u);
    EXPECT_EQ(peek<uint64_t>(kAligned + 8), 0x6666'6666'6666'6666u);
    run(c16);
    EXPECT_FALSE(flags() & kZF);
    EXPECT_EQ(cpu().gpr[RAX], 0x5555'5555'5555'5555u);
    EXPECT_EQ(cpu().gpr[RDX], 0x6666'6666'6666'6666u);
    // #GP(0) on a misaligned operand, nothing changed.
    Insn bad = with_mem(c16, kNoReg, kAligned + 8);
    auto f = run_fault(bad);
    ASSERT_TRUE(f.has_value());
    EXPECT_EQ(f->vector, kExcGP);
    EXPECT_EQ(f->error_code, 0u);
    EXPECT_EQ(cpu().gpr[RAX], 0x5555'5555'5555'5555u);
}

TEST_F(SoftIntMov, LockedCmpxchgCounterAcrossThreads)
{
    // A CAS-loop increment on two host threads (lock cmpxchg with a retry, as a guest would).
    constexpr int kIterations = 50000;
    poke<uint64_t>(kData, 0);
    SoftMachine& machine = *cpu().machine;
    auto worker = [&] {
        Cpu c;
        c.machine = &machine;
        c.cr0 = cpu().cr0;
        c.mode = CpuMode::Long64;
        c.tlb.flush();
        Insn cx = with_flags(mem_data(make_insn(ZYDIS_MNEMONIC_CMPXCHG, { M(8), R(RCX, 8) })), kFlagLock);
        Insn load = mem_data(make_insn(ZYDIS_MNEMONIC_MOV, { R(RAX, 8), M(8) }));
        for (int i = 0; i < kIterations; ++i) {
            load.exec(c, load);
            do {
                c.gpr[RCX] = c.gpr[RAX] + 1;
                cx.exec(c, cx);
            } while (!flag_zf(c));
        }
    };
    std::thread t(worker);
    worker();
    t.join();
    EXPECT_EQ(peek<uint64_t>(kData), 2u * kIterations);
}

TEST_F(SoftIntMov, Bswap)
{
    cpu().gpr[RAX] = 0x1122'3344'5566'7788;
    run(make_insn(ZYDIS_MNEMONIC_BSWAP, { R(RAX, 8) }));
    EXPECT_EQ(cpu().gpr[RAX], 0x8877'6655'4433'2211u);
    run(make_insn(ZYDIS_MNEMONIC_BSWAP, { R(RAX, 4) }));
    EXPECT_EQ(cpu().gpr[RAX], 0x1122'3344u);
}

const ZydisMnemonic kCmov[16] = { ZYDIS_MNEMONIC_CMOVO, ZYDIS_MNEMONIC_CMOVNO, ZYDIS_MNEMONIC_CMOVB,
    ZYDIS_MNEMONIC_CMOVNB, ZYDIS_MNEMONIC_CMOVZ, ZYDIS_MNEMONIC_CMOVNZ, ZYDIS_MNEMONIC_CMOVBE, ZYDIS_MNEMONIC_CMOVNBE,
    ZYDIS_MNEMONIC_CMOVS, ZYDIS_MNEMONIC_CMOVNS, ZYDIS_MNEMONIC_CMOVP, ZYDIS_MNEMONIC_CMOVNP, ZYDIS_MNEMONIC_CMOVL,
    ZYDIS_MNEMONIC_CMOVNL, ZYDIS_MNEMONIC_CMOVLE, ZYDIS_MNEMONIC_CMOVNLE };
const ZydisMnemonic kSet[16] = { ZYDIS_MNEMONIC_SETO, ZYDIS_MNEMONIC_SETNO, ZYDIS_MNEMONIC_SETB, ZYDIS_MNEMONIC_SETNB,
    ZYDIS_MNEMONIC_SETZ, ZYDIS_MNEMONIC_SETNZ, ZYDIS_MNEMONIC_SETBE, ZYDIS_MNEMONIC_SETNBE, ZYDIS_MNEMONIC_SETS,
    ZYDIS_MNEMONIC_SETNS, ZYDIS_MNEMONIC_SETP, ZYDIS_MNEMONIC_SETNP, ZYDIS_MNEMONIC_SETL, ZYDIS_MNEMONIC_SETNL,
    ZYDIS_MNEMONIC_SETLE, ZYDIS_MNEMONIC_SETNLE };

// cmovcc / setcc by condition code (a switch: member-function-pointer tables trip GCC's
// maybe-uninitialized analysis under the sanitizers).
void host_cmov(CodeGenerator& g, unsigned cc, const Xbyak::Reg& d, const Xbyak::Operand& s)
{
    switch (cc) {
    case 0: g.cmovo(d, s); break;
    case 1: g.cmovno(d, s); break;
    case 2: g.cmovb(d, s); break;
    case 3: g.cmovnb(d, s); break;
    case 4: g.cmovz(d, s); break;
    case 5: g.cmovnz(d, s); break;
    case 6: g.cmovbe(d, s); break;
    case 7: g.cmovnbe(d, s); break;
    case 8: g.cmovs(d, s); break;
    case 9: g.cmovns(d, s); break;
    case 10: g.cmovp(d, s); break;
    case 11: g.cmovnp(d, s); break;
    case 12: g.cmovl(d, s); break;
    case 13: g.cmovnl(d, s); break;
    case 14: g.cmovle(d, s); break;
    default: g.cmovnle(d, s); break;
    }
}

void host_set(CodeGenerator& g, unsigned cc, const Xbyak::Operand& d)
{
    switch (cc) {
    case 0: g.seto(d); break;
    case 1: g.setno(d); break;
    case 2: g.setb(d); break;
    case 3: g.setnb(d); break;
    case 4: g.setz(d); break;
    case 5: g.setnz(d); break;
    case 6: g.setbe(d); break;
    case 7: g.setnbe(d); break;
    case 8: g.sets(d); break;
    case 9: g.setns(d); break;
    case 10: g.setp(d); break;
    case 11: g.setnp(d); break;
    case 12: g.setl(d); break;
    case 13: g.setnl(d); break;
    case 14: g.setle(d); break;
    default: g.setnle(d); break;
    }
}

TEST_F(SoftIntMov, ConditionalMovesAndSetsMatchHost)
{
    const uint64_t bits[] = { kCF, kPF, kZF, kSF, kOF };
    for (unsigned cc = 0; cc < 16; ++cc) {
        HostOracle set_reg([&](CodeGenerator& g) { host_set(g, cc, g.dl); });
        HostOracle set_mem([&](CodeGenerator& g) { host_set(g, cc, host_mem(g, 1)); });
        Insn i_set_reg = make_insn(kSet[cc], { R(RDX, 1) });
        Insn i_set_mem = mem_data(make_insn(kSet[cc], { M(1) }));
        for (unsigned size : { 2u, 4u, 8u }) {
            HostOracle cmov([&](CodeGenerator& g) { host_cmov(g, cc, host_reg(0, size), host_reg(1, size)); });
            HostOracle cmov_mem([&](CodeGenerator& g) { host_cmov(g, cc, host_reg(0, size), host_mem(g, size)); });
            Insn i_cmov = make_insn(kCmov[cc], { R(RAX, size), R(RCX, size) });
            Insn i_cmov_mem = mem_data(make_insn(kCmov[cc], { R(RAX, size), M(size) }));
            for (unsigned combo = 0; combo < 32; ++combo) {
                uint64_t f = kAF;
                for (unsigned b = 0; b < 5; ++b)
                    f |= (combo >> b) & 1 ? bits[b] : 0;
                // The 32-bit form zero-extends even when the condition is false.
                HostState s { 0xaaaa'aaaa'aaaa'aaaa, 0x5555'5555'5555'5555, 0x1234'5678'9abc'def0, 0, f,
                    0x1111'2222'3333'4444 };
                ASSERT_TRUE(matches_host(i_cmov, cmov, s, kArithFlags)) << "cc " << cc;
                ASSERT_TRUE(matches_host(i_cmov_mem, cmov_mem, s, kArithFlags)) << "cc " << cc;
                if (size == 2) {
                    ASSERT_TRUE(matches_host(i_set_reg, set_reg, s, kArithFlags)) << "cc " << cc;
                    ASSERT_TRUE(matches_host(i_set_mem, set_mem, s, kArithFlags)) << "cc " << cc;
                }
            }
        }
        // After CMP/SUB (the lazy fast path) and after ADD/logic (the generic path).
        for (unsigned size : { 1u, 2u, 4u, 8u }) {
            HostOracle after_cmp([&](CodeGenerator& g) {
                g.cmp(host_reg(0, size), host_reg(1, size));
                host_set(g, cc, g.dl);
            });
            HostOracle after_add([&](CodeGenerator& g) {
                g.add(host_reg(0, size), host_reg(1, size));
                host_set(g, cc, g.dl);
            });
            Insn cmp = make_insn(ZYDIS_MNEMONIC_CMP, { R(RAX, size), R(RCX, size) });
            Insn add = make_insn(ZYDIS_MNEMONIC_ADD, { R(RAX, size), R(RCX, size) });
            for (uint64_t a : edge_values()) {
                for (uint64_t b : edge_values()) {
                    HostState s { a, b, 0, 0, 0, 0 };
                    ASSERT_TRUE(matches_host({ cmp, i_set_reg }, after_cmp, s, kArithFlags)) << "cc " << cc;
                    ASSERT_TRUE(matches_host({ add, i_set_reg }, after_add, s, kArithFlags)) << "cc " << cc;
                }
            }
        }
    }
}

TEST_F(SoftIntMov, FlagInstructions)
{
    set_flags(kSF | kZF | kAF | kPF | kCF | kOF);
    cpu().gpr[RAX] = 0xffff'ffff'ffff'00ff;
    run(make_insn(ZYDIS_MNEMONIC_LAHF, {}));
    EXPECT_EQ(cpu().gpr[RAX], 0xffff'ffff'ffff'd7ffu); // SF ZF 0 AF 0 PF 1 CF
    cpu().gpr[RAX] = 0x4100; // ZF, CF
    run(make_insn(ZYDIS_MNEMONIC_SAHF, {}));
    EXPECT_EQ(flags(), kZF | kCF | kOF); // OF is not in AH
    run(make_insn(ZYDIS_MNEMONIC_CMC, {}));
    EXPECT_EQ(flags(), kZF | kOF);
    run(make_insn(ZYDIS_MNEMONIC_STC, {}));
    EXPECT_EQ(flags(), kZF | kOF | kCF);
    run(make_insn(ZYDIS_MNEMONIC_CLC, {}));
    EXPECT_EQ(flags(), kZF | kOF);
    run(make_insn(ZYDIS_MNEMONIC_STD, {}));
    EXPECT_TRUE(get_rflags(cpu()) & kDF);
    run(make_insn(ZYDIS_MNEMONIC_CLD, {}));
    EXPECT_FALSE(get_rflags(cpu()) & kDF);
    // CMC on lazy flags.
    run(make_insn(ZYDIS_MNEMONIC_CMP, { R(RAX, 8), I(8) }, 0x4101));
    run(make_insn(ZYDIS_MNEMONIC_CMC, {}));
    EXPECT_FALSE(flags() & kCF);
    EXPECT_TRUE(flags() & kSF);
}

TEST_F(SoftIntMov, XlatAndNop)
{
    for (unsigned i = 0; i < 256; ++i)
        *ram(kData + i) = static_cast<uint8_t>(255 - i);
    cpu().gpr[RBX] = kData;
    cpu().gpr[RAX] = 0x1234'5603;
    run(make_insn(ZYDIS_MNEMONIC_XLAT, {}));
    EXPECT_EQ(cpu().gpr[RAX], 0x1234'56fcu);
    // With an FS override (segment base) and 32-bit addressing.
    cpu().segbase[FS] = 0x100;
    cpu().gpr[RBX] = 0xffff'ffff'0000'0000 | (kData - 0x100);
    Insn x = make_insn(ZYDIS_MNEMONIC_XLAT, {});
    x.flags |= kFlagSegOverride;
    x.seg = FS;
    x.asize = 4;
    cpu().gpr[RAX] = 0x80;
    run(x);
    EXPECT_EQ(cpu().gpr[RAX], 0x7fu);
    // NOP with a memory operand does not touch memory; PAUSE is a NOP.
    auto before = cpu().gpr;
    run(with_mem(make_insn(ZYDIS_MNEMONIC_NOP, { M(4) }), kNoReg, 0x7fff'ffff));
    run(make_insn(ZYDIS_MNEMONIC_PAUSE, {}));
    EXPECT_EQ(cpu().gpr, before);
}

} // namespace
} // namespace vessel::soft::testing
