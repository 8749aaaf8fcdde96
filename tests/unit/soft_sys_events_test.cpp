// Event delivery: long-mode IDT with IST and privilege change, real-mode IVT, double and
// triple faults, IRET back to user mode.
#include "soft_sys_test_support.h"

namespace vessel::soft::systest {
namespace {

constexpr uint64_t kPfHandler = 0x200000, kGpHandler = 0x210000, kDfHandler = 0x220000;

// LGDT [disp32]: a kernel instruction with a memory read we can point anywhere.
Insn lgdt_at(uint64_t addr)
{
    Insn in = SoftSysTest::insn(ZYDIS_MNEMONIC_LGDT, 8, 8);
    SoftSysTest::mem(in, 0, kNoReg, static_cast<int64_t>(addr), 10);
    in.nops = 1;
    return in;
}

using SoftSysEvents = SoftSysTest;

TEST_F(SoftSysEvents, LongModePageFaultUsesIstStackAndSetsCr2)
{
    enter_long_mode();
    set_gate64(kExcPF, kPfHandler, 0xe, 0, 1);
    poke<uint64_t>(kTss + 0x24, 0x90008); // IST1, deliberately misaligned
    c.rflags |= kIF;
    run(lgdt_at(0x40000000)); // PDPT entry 1 is not present

    EXPECT_EQ(c.rip, kPfHandler);
    EXPECT_EQ(c.cr2, 0x40000000u);
    EXPECT_EQ(c.gpr[RSP], 0x90000u - 48); // aligned down to 16, six slots
    EXPECT_EQ(peek<uint64_t>(0x90000 - 48), 0u);       // error code: read, supervisor, not present
    EXPECT_EQ(peek<uint64_t>(0x90000 - 40), kCode);    // the faulting instruction
    EXPECT_EQ(peek<uint64_t>(0x90000 - 32), kKernelCs);
    EXPECT_TRUE(peek<uint64_t>(0x90000 - 24) & kIF);
    EXPECT_EQ(peek<uint64_t>(0x90000 - 16), 0x80000u); // old RSP
    EXPECT_EQ(peek<uint64_t>(0x90000 - 8), kKernelDs); // old SS
    EXPECT_FALSE(c.rflags & kIF);                       // interrupt gate
    EXPECT_EQ(c.seg[SS].selector, kKernelDs);           // IST without privilege change keeps SS
    EXPECT_EQ(c.mode, CpuMode::Long64);
}

TEST_F(SoftSysEvents, GeneralProtectionFromUserSwitchesToRsp0)
{
    enter_long_mode();
    set_gate64(kExcGP, kGpHandler, 0xf); // trap gate: IF stays
    poke<uint64_t>(kTss + 4, 0x70000);   // RSP0
    enter_user64();
    c.gpr[RSP] = 0x50000;
    c.gpr[RAX] = 0x1003; // beyond the GDT limit
    c.rflags |= kIF;
    ASSERT_EQ(c.cpl, 3);

    Insn mov = insn(ZYDIS_MNEMONIC_MOV, 2, 2);
    mov.op[0] = opkind(OpKind::Seg, DS, 2);
    mov.op[1] = gpr(RAX, 2);
    mov.nops = 2;
    run(mov);

    EXPECT_EQ(c.rip, kGpHandler);
    EXPECT_EQ(c.cpl, 0);
    EXPECT_EQ(c.seg[CS].selector, kKernelCs);
    EXPECT_EQ(c.seg[SS].selector, 0);
    EXPECT_TRUE(c.seg[SS].unusable);
    EXPECT_EQ(c.gpr[RSP], 0x70000u - 48);
    EXPECT_EQ(peek<uint64_t>(0x70000 - 48), 0x1000u); // #GP(selector)
    EXPECT_EQ(peek<uint64_t>(0x70000 - 40), kCode);
    EXPECT_EQ(peek<uint64_t>(0x70000 - 32), kUserCs);
    EXPECT_EQ(peek<uint64_t>(0x70000 - 16), 0x50000u);
    EXPECT_EQ(peek<uint64_t>(0x70000 - 8), kUserDs);
    EXPECT_TRUE(c.rflags & kIF);

    // The handler drops the error code and returns with IRETQ to the next instruction.
    c.gpr[RSP] += 8;
    poke<uint64_t>(0x70000 - 40, kCode + 2);
    run(insn(ZYDIS_MNEMONIC_IRETQ, 2, 8));
    EXPECT_EQ(c.cpl, 3);
    EXPECT_EQ(c.rip, kCode + 2);
    EXPECT_EQ(c.seg[CS].selector, kUserCs);
    EXPECT_EQ(c.seg[SS].selector, kUserDs);
    EXPECT_EQ(c.gpr[RSP], 0x50000u);
    EXPECT_EQ(c.mode, CpuMode::Long64);
    EXPECT_TRUE(c.rflags & kIF);
}

TEST_F(SoftSysEvents, SoftwareInterruptChecksGateDpl)
{
    enter_long_mode();
    set_gate64(0x80, 0x230000, 0xe, 0); // DPL 0: INT 0x80 from CPL 3 is #GP(0x80*8+2)
    set_gate64(kExcGP, kGpHandler);
    poke<uint64_t>(kTss + 4, 0x70000);
    enter_user64();
    c.gpr[RSP] = 0x50000;
    Insn in = insn(ZYDIS_MNEMONIC_INT, 2, 4);
    in.imm = 0x80;
    in.op[0] = Operand { OpKind::Imm, 0, 1, 0 };
    in.nops = 1;
    run(in);
    EXPECT_EQ(c.rip, kGpHandler);
    EXPECT_EQ(peek<uint64_t>(c.gpr[RSP]), 0x80u * 8 + 2);
    EXPECT_EQ(peek<uint64_t>(c.gpr[RSP] + 8), kCode); // faults point at the INT

    // With DPL 3 the INT goes through and returns after the instruction.
    set_gate64(0x80, 0x230000, 0xe, 3);
    enter_user64();
    c.rip = kCode;
    c.gpr[RSP] = 0x50000;
    run(in);
    EXPECT_EQ(c.rip, 0x230000u);
    EXPECT_EQ(c.gpr[RSP], 0x70000u - 40); // no error code
    EXPECT_EQ(peek<uint64_t>(c.gpr[RSP]), kCode + 2);
}

TEST_F(SoftSysEvents, RealModeIntThroughIvtAndIret)
{
    load_segment(c, CS, 0);
    load_segment(c, SS, 0);
    c.rip = 0x7c00;
    c.gpr[RSP] = 0x8000;
    c.rflags |= kIF | kCF;
    poke<uint16_t>(0x21 * 4, 0x5678);
    poke<uint16_t>(0x21 * 4 + 2, 0x1234);
    ASSERT_EQ(c.mode, CpuMode::Real);

    Insn in = insn(ZYDIS_MNEMONIC_INT, 2, 2);
    in.imm = 0x21;
    in.nops = 1;
    in.op[0] = Operand { OpKind::Imm, 0, 1, 0 };
    run(in);
    EXPECT_EQ(c.seg[CS].selector, 0x1234);
    EXPECT_EQ(c.seg[CS].base, 0x12340u);
    EXPECT_EQ(c.rip, 0x5678u);
    EXPECT_EQ(c.gpr[RSP], 0x7ffau);
    EXPECT_EQ(peek<uint16_t>(0x7ffa), 0x7c02);
    EXPECT_EQ(peek<uint16_t>(0x7ffc), 0);
    EXPECT_TRUE(peek<uint16_t>(0x7ffe) & kIF);
    EXPECT_FALSE(c.rflags & kIF);

    run(insn(ZYDIS_MNEMONIC_IRET, 1, 2));
    EXPECT_EQ(c.seg[CS].selector, 0);
    EXPECT_EQ(c.rip, 0x7c02u);
    EXPECT_EQ(c.gpr[RSP], 0x8000u);
    EXPECT_TRUE(c.rflags & kIF);
    EXPECT_TRUE(flag_cf(c));
}

TEST_F(SoftSysEvents, PageFaultWithMissingGateBecomesDoubleFault)
{
    enter_long_mode();
    set_gate64(kExcPF, kPfHandler, 0xe, 0, 0, false); // not present → #NP during delivery
    set_gate64(kExcDF, kDfHandler, 0xe, 0, 2);
    poke<uint64_t>(kTss + 0x2c, 0x98000); // IST2
    run(lgdt_at(0x40000000));
    EXPECT_EQ(c.rip, kDfHandler);
    EXPECT_EQ(c.gpr[RSP], 0x98000u - 48);
    EXPECT_EQ(peek<uint64_t>(0x98000 - 48), 0u); // #DF error code
    EXPECT_EQ(peek<uint64_t>(0x98000 - 40), kCode);
    EXPECT_EQ(c.cr2, 0x40000000u);
}

TEST_F(SoftSysEvents, BenignExceptionWithMissingGateIsDeliveredAsNp)
{
    enter_long_mode();
    set_gate64(kExcUD, 0x240000, 0xe, 0, 0, false);
    set_gate64(kExcNP, 0x250000);
    run(insn(ZYDIS_MNEMONIC_UD2, 2));
    EXPECT_EQ(c.rip, 0x250000u);
    EXPECT_EQ(peek<uint64_t>(c.gpr[RSP]), kExcUD * 8u + 2 + 1); // IDT bit and EXT
}

TEST_F(SoftSysEvents, TripleFault)
{
    enter_long_mode();
    set_gate64(kExcPF, kPfHandler, 0xe, 0, 0, false);
    set_gate64(kExcDF, kDfHandler, 0xe, 0, 0, false);
    Insn in = lgdt_at(0x40000000);
    EXPECT_THROW(run(in), TripleFault);
}

TEST_F(SoftSysEvents, ExternalInterruptAndNmiMasking)
{
    enter_long_mode();
    set_gate64(0x30, 0x260000);
    set_gate64(kExcNMI, 0x270000);
    c.rflags |= kIF;
    c.interrupt_shadow = 1;
    deliver_event(c, 0x30, EventKind::External, false, 0);
    EXPECT_EQ(c.rip, 0x260000u);
    EXPECT_EQ(c.interrupt_shadow, 0);
    deliver_event(c, kExcNMI, EventKind::Nmi, false, 0);
    EXPECT_TRUE(c.nmi_masked);
    // IRETQ unmasks NMIs.
    run(insn(ZYDIS_MNEMONIC_IRETQ, 2, 8));
    EXPECT_FALSE(c.nmi_masked);
    EXPECT_EQ(c.rip, 0x260000u);
}

TEST_F(SoftSysEvents, ProtectedModeInterruptWithStackSwitch)
{
    build_gdt();
    c.cr0 |= x86::kCr0Pe;
    load_raw(CS, kUserCs32);
    load_raw(SS, kUserDs);
    c.rip = 0x5000;
    c.gpr[RSP] = 0x60000;
    // 32-bit TSS: ESP0 at 4, SS0 at 8. 32-bit interrupt gate for vector 0x40, DPL 3, to code32(0).
    poke<uint32_t>(kTss + 4, 0x7f000);
    poke<uint16_t>(kTss + 8, kKernelDs);
    uint64_t gate = 0x1234 | (static_cast<uint64_t>(kKernelCs32) << 16) | (0xeULL << 40) | (3ULL << 45) | (1ULL << 47)
        | (0x0012ULL << 48);
    poke<uint64_t>(kIdt + 0x40 * 8, gate);
    c.idt = { kIdt, 0x7ff };
    c.tr = unpack_descriptor(kTssSel, peek<uint64_t>(kGdt + 0x38) | (2ULL << 40));
    c.update_mode();
    ASSERT_EQ(c.mode, CpuMode::Prot32);
    ASSERT_EQ(c.cpl, 3);

    Insn in = insn(ZYDIS_MNEMONIC_INT, 2, 4);
    in.imm = 0x40;
    in.nops = 1;
    in.op[0] = Operand { OpKind::Imm, 0, 1, 0 };
    run(in);
    EXPECT_EQ(c.cpl, 0);
    EXPECT_EQ(c.rip, 0x121234u);
    EXPECT_EQ(c.seg[SS].selector, kKernelDs);
    EXPECT_EQ(c.gpr[RSP], 0x7f000u - 20);
    EXPECT_EQ(peek<uint32_t>(0x7f000 - 20), 0x5002u);
    EXPECT_EQ(peek<uint32_t>(0x7f000 - 16), kUserCs32);
    EXPECT_EQ(peek<uint32_t>(0x7f000 - 8), 0x60000u);
    EXPECT_EQ(peek<uint32_t>(0x7f000 - 4), kUserDs);

    // IRETD back to CPL 3 (outer privilege: pops ESP and SS).
    run(insn(ZYDIS_MNEMONIC_IRETD, 1, 4));
    EXPECT_EQ(c.cpl, 3);
    EXPECT_EQ(c.rip, 0x5002u);
    EXPECT_EQ(c.gpr[RSP], 0x60000u);
    EXPECT_EQ(c.seg[SS].selector, kUserDs);
}

TEST_F(SoftSysEvents, SixteenBitGateAndTaskGate)
{
    build_gdt();
    c.cr0 |= x86::kCr0Pe;
    load_raw(CS, kKernelCs32);
    load_raw(SS, kKernelDs);
    c.rip = 0x5000;
    c.gpr[RSP] = 0x60000;
    c.idt = { kIdt, 0x7ff };
    // 16-bit trap gate (type 7) for vector 0x41: pushes FLAGS, CS, IP as words.
    uint64_t gate = 0x0300 | (static_cast<uint64_t>(kKernelCs32) << 16) | (0x7ULL << 40) | (1ULL << 47);
    poke<uint64_t>(kIdt + 0x41 * 8, gate);
    // Task gate for vector 0x42.
    poke<uint64_t>(kIdt + 0x42 * 8, (static_cast<uint64_t>(kTssSel) << 16) | (0x5ULL << 40) | (1ULL << 47));
    c.update_mode();
    c.rflags |= kIF;

    deliver_event(c, 0x41, EventKind::External, false, 0);
    EXPECT_EQ(c.rip, 0x300u);
    EXPECT_EQ(c.gpr[RSP], 0x60000u - 6);
    EXPECT_EQ(peek<uint16_t>(0x60000 - 6), 0x5000);
    EXPECT_EQ(peek<uint16_t>(0x60000 - 4), kKernelCs32);
    EXPECT_TRUE(peek<uint16_t>(0x60000 - 2) & kIF);
    EXPECT_TRUE(c.rflags & kIF); // trap gate

    EXPECT_THROW(deliver_event(c, 0x42, EventKind::External, false, 0), EngineAbort);
    // Beyond the IDT limit: #GP(vector*8 + IDT + EXT).
    c.idt.limit = 0x7f;
    try {
        deliver_event(c, 0x42, EventKind::External, false, 0);
        ADD_FAILURE();
    } catch (const GuestFault& f) {
        EXPECT_EQ(f.vector, kExcGP);
        EXPECT_EQ(f.error_code, 0x42u * 8 + 3);
    }
}

TEST_F(SoftSysEvents, IntoAndInt3)
{
    enter_long_mode();
    set_gate64(kExcBP, 0x280000, 0xe, 3);
    set_gate64(kExcOF, 0x290000, 0xe, 3);
    set_lazy(c, FlagOp::Add, 1, 0x80, 0x7f, 1); // OF = 1
    run(insn(ZYDIS_MNEMONIC_INTO, 1));
    EXPECT_EQ(c.rip, 0x290000u);
    EXPECT_EQ(peek<uint64_t>(c.gpr[RSP]), kCode + 1);
    run(insn(ZYDIS_MNEMONIC_INT3, 1));
    EXPECT_EQ(c.rip, 0x280000u);
    EXPECT_EQ(peek<uint64_t>(c.gpr[RSP]), 0x290001u);
    // IRETQ with NT set in IA-32e mode is #GP.
    c.rflags |= kNT;
    set_gate64(kExcGP, kGpHandler);
    run(insn(ZYDIS_MNEMONIC_IRETQ, 2, 8));
    EXPECT_EQ(c.rip, kGpHandler);
}

} // namespace
} // namespace vessel::soft::systest
