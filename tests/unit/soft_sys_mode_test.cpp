// Mode changes and segments: the long-mode activation sequence, CR checks, segment loads,
// far transfers, SYSCALL/SYSRET, SYSENTER/SYSEXIT, SWAPGS, descriptor-table instructions.
#include "engine/soft/msr.h"
#include "soft_sys_test_support.h"

namespace vessel::soft::systest {
namespace {

using SoftSysMode = SoftSysTest;

Insn mov_to_cr(unsigned cr, uint8_t gpr_reg, uint8_t size)
{
    Insn in = SoftSysTest::insn(ZYDIS_MNEMONIC_MOV, 3, size);
    in.op[0] = SoftSysTest::opkind(OpKind::Cr, static_cast<uint8_t>(cr), size);
    in.op[1] = SoftSysTest::gpr(gpr_reg, size);
    in.nops = 2;
    return in;
}

Insn mov_from_cr(unsigned cr, uint8_t gpr_reg, uint8_t size)
{
    Insn in = SoftSysTest::insn(ZYDIS_MNEMONIC_MOV, 3, size);
    in.op[0] = SoftSysTest::gpr(gpr_reg, size);
    in.op[1] = SoftSysTest::opkind(OpKind::Cr, static_cast<uint8_t>(cr), size);
    in.nops = 2;
    return in;
}

Insn mov_to_seg(uint8_t seg, uint8_t gpr_reg)
{
    Insn in = SoftSysTest::insn(ZYDIS_MNEMONIC_MOV, 2, 2);
    in.op[0] = SoftSysTest::opkind(OpKind::Seg, seg, 2);
    in.op[1] = SoftSysTest::gpr(gpr_reg, 2);
    in.nops = 2;
    return in;
}

Insn far_jmp_ptr(uint16_t sel, uint32_t offset)
{
    Insn in = SoftSysTest::insn(ZYDIS_MNEMONIC_JMP, 7, 4);
    in.opcode = 0xea;
    in.op[0] = Operand { OpKind::Ptr, 0, 6, 0 };
    in.imm = offset;
    in.imm2 = sel;
    in.nops = 1;
    return in;
}

// Flat 32-bit protected mode at CPL 0, paging off.
void enter_protected(SoftSysTest& t, Cpu& c)
{
    (void)t;
    c.cr0 |= x86::kCr0Pe;
}

TEST_F(SoftSysMode, LongModeActivationSequence)
{
    build_gdt();
    build_page_tables();
    enter_protected(*this, c);
    load_raw(CS, kKernelCs32);
    load_raw(SS, kKernelDs);
    c.rip = 0x8000;
    ASSERT_EQ(c.mode, CpuMode::Prot32);

    c.gpr[RAX] = x86::kCr4Pae;
    run(mov_to_cr(4, RAX, 4));
    EXPECT_EQ(c.cr4, x86::kCr4Pae);

    c.gpr[RCX] = msr::kEfer;
    c.gpr[RAX] = x86::kEferLme;
    c.gpr[RDX] = 0;
    run(insn(ZYDIS_MNEMONIC_WRMSR, 2));
    EXPECT_EQ(c.efer, x86::kEferLme);

    c.gpr[RAX] = kPml4;
    run(mov_to_cr(3, RAX, 4));
    EXPECT_EQ(c.cr3, kPml4);

    c.gpr[RAX] = c.cr0 | x86::kCr0Pg;
    run(mov_to_cr(0, RAX, 4));
    EXPECT_TRUE(c.efer & x86::kEferLma);
    EXPECT_EQ(c.mode, CpuMode::Prot32); // compatibility mode until CS changes
    EXPECT_TRUE(c.stop_block);

    run(far_jmp_ptr(kKernelCs, 0x200000));
    EXPECT_EQ(c.mode, CpuMode::Long64);
    EXPECT_EQ(c.rip, 0x200000u);
    EXPECT_EQ(c.seg[CS].selector, kKernelCs);
    EXPECT_EQ(c.stack_size, 8);
    EXPECT_EQ(c.segbase[DS], 0u);

    // Reading CR0 back in 64-bit mode gives the full register.
    c.gpr[RBX] = ~0ULL;
    run(mov_from_cr(0, RBX, 8));
    EXPECT_EQ(c.gpr[RBX], c.cr0);
}

TEST_F(SoftSysMode, ControlRegisterChecks)
{
    enter_protected(*this, c);
    build_gdt();
    load_raw(CS, kKernelCs32);
    c.rip = 0x8000;

    // PG without PE.
    c.gpr[RAX] = x86::kCr0Pg | x86::kCr0Et;
    GuestFault f = fault_of(c, mov_to_cr(0, RAX, 4));
    EXPECT_EQ(f.vector, kExcGP);
    // PG with LME but without PAE.
    c.efer = x86::kEferLme;
    c.gpr[RAX] = c.cr0 | x86::kCr0Pg;
    EXPECT_EQ(fault_of(c, mov_to_cr(0, RAX, 4)).vector, kExcGP);
    EXPECT_FALSE(c.cr0 & x86::kCr0Pg);
    // Reserved CR4 bits (VMXE, SMEP).
    c.gpr[RAX] = 1u << 13;
    EXPECT_EQ(fault_of(c, mov_to_cr(4, RAX, 4)).vector, kExcGP);
    c.gpr[RAX] = 1u << 20;
    EXPECT_EQ(fault_of(c, mov_to_cr(4, RAX, 4)).vector, kExcGP);
    // CR5 does not exist.
    EXPECT_EQ(fault_of(c, mov_to_cr(5, RAX, 4)).vector, kExcUD);
    // CPL 3 may not read CR0.
    load_raw(CS, kUserCs32);
    EXPECT_EQ(fault_of(c, mov_from_cr(0, RAX, 4)).vector, kExcGP);
}

TEST_F(SoftSysMode, LongModeCrRulesAndTlbFlush)
{
    enter_long_mode();
    // Clearing PG or PAE in 64-bit mode is #GP.
    c.gpr[RAX] = c.cr0 & ~x86::kCr0Pg;
    EXPECT_EQ(fault_of(c, mov_to_cr(0, RAX, 8)).vector, kExcGP);
    c.gpr[RAX] = 0;
    EXPECT_EQ(fault_of(c, mov_to_cr(4, RAX, 8)).vector, kExcGP);
    // Upper CR0 bits are reserved.
    c.gpr[RAX] = c.cr0 | (1ULL << 40);
    EXPECT_EQ(fault_of(c, mov_to_cr(0, RAX, 8)).vector, kExcGP);

    // A CR3 write drops the TLB.
    (void)read_linear<uint64_t>(c, 0x1000);
    EXPECT_EQ(tlb_entry(c, 0x1000, false).tag_read, 0x1000u);
    c.gpr[RAX] = kPml4;
    run(mov_to_cr(3, RAX, 8));
    EXPECT_EQ(tlb_entry(c, 0x1000, false).tag_read, kTlbInvalid);

    // CR8 goes to the TPR hook; bits above 3 are reserved.
    c.gpr[RAX] = 9;
    run(mov_to_cr(8, RAX, 8));
    EXPECT_EQ(get_cr8(c), 9);
    c.gpr[RAX] = 0x10;
    EXPECT_EQ(fault_of(c, mov_to_cr(8, RAX, 8)).vector, kExcGP);
}

TEST_F(SoftSysMode, SegmentLoadChecks)
{
    build_gdt();
    enter_protected(*this, c);
    load_raw(CS, kKernelCs32);
    load_raw(SS, kKernelDs);
    c.rip = 0x8000;

    c.gpr[RAX] = 0x48; // beyond the GDT limit
    GuestFault f = fault_of(c, mov_to_seg(DS, RAX));
    EXPECT_EQ(f.vector, kExcGP);
    EXPECT_EQ(f.error_code, 0x48u);

    c.gpr[RAX] = kKernelCs32; // SS must be writable data
    f = fault_of(c, mov_to_seg(SS, RAX));
    EXPECT_EQ(f.vector, kExcGP);
    EXPECT_EQ(f.error_code, kKernelCs32);

    c.gpr[RAX] = 0; // null SS outside 64-bit mode
    f = fault_of(c, mov_to_seg(SS, RAX));
    EXPECT_EQ(f.vector, kExcGP);
    EXPECT_EQ(f.error_code, 0u);

    // Not present data segment: #NP(selector).
    poke<uint64_t>(kGdt + 0x20, data32(3) & ~(1ULL << 47));
    c.gpr[RAX] = kUserDs;
    f = fault_of(c, mov_to_seg(ES, RAX));
    EXPECT_EQ(f.vector, kExcNP);
    EXPECT_EQ(f.error_code, 0x20u);

    // A good load sets the accessed bit in the GDT and the hidden part.
    poke<uint64_t>(kGdt + 0x10, data32(0) & ~(1ULL << 40));
    c.gpr[RAX] = kKernelDs;
    run(mov_to_seg(DS, RAX));
    EXPECT_EQ(c.seg[DS].selector, kKernelDs);
    EXPECT_EQ(c.seg[DS].limit, 0xffffffffu);
    EXPECT_TRUE(peek<uint64_t>(kGdt + 0x10) & (1ULL << 40));

    // Null DS is fine and unusable.
    c.gpr[RAX] = 0;
    run(mov_to_seg(DS, RAX));
    EXPECT_TRUE(c.seg[DS].unusable);

    // DPL 0 data from CPL 3: #GP.
    load_raw(CS, kUserCs32);
    c.gpr[RAX] = kKernelDs | 3;
    f = fault_of(c, mov_to_seg(FS, RAX));
    EXPECT_EQ(f.vector, kExcGP);
    EXPECT_EQ(f.error_code, kKernelDs);
}

TEST_F(SoftSysMode, NullSsAllowedInLongModeKernel)
{
    enter_long_mode();
    c.gpr[RAX] = 0;
    run(mov_to_seg(SS, RAX));
    EXPECT_TRUE(c.seg[SS].unusable);
    EXPECT_EQ(c.interrupt_shadow, 1);
    enter_user64();
    EXPECT_EQ(fault_of(c, mov_to_seg(SS, RAX)).vector, kExcGP);
}

TEST_F(SoftSysMode, RealModeSegmentsAndFarTransfers)
{
    ASSERT_EQ(c.mode, CpuMode::Real);
    EXPECT_EQ(c.seg[CS].base, 0xffff0000u);
    EXPECT_EQ(c.rip, 0xfff0u);
    c.gpr[RAX] = 0x2000;
    run(mov_to_seg(DS, RAX));
    EXPECT_EQ(c.segbase[DS], 0x20000u);

    Insn jmp = far_jmp_ptr(0x1000, 0x0100);
    jmp.op[0].size = 4;
    jmp.osize = 2;
    run(jmp);
    EXPECT_EQ(c.seg[CS].base, 0x10000u);
    EXPECT_EQ(c.rip, 0x100u);

    // Far CALL then RETF.
    load_segment(c, SS, 0);
    c.gpr[RSP] = 0x9000;
    Insn call = insn(ZYDIS_MNEMONIC_CALL, 5, 2);
    call.opcode = 0x9a;
    call.op[0] = Operand { OpKind::Ptr, 0, 4, 0 };
    call.imm = 0x0200;
    call.imm2 = 0x3000;
    call.nops = 1;
    run(call);
    EXPECT_EQ(c.seg[CS].selector, 0x3000);
    EXPECT_EQ(c.rip, 0x200u);
    EXPECT_EQ(peek<uint16_t>(0x8ffe), 0x1000);
    EXPECT_EQ(peek<uint16_t>(0x8ffc), 0x105);

    Insn ret = insn(ZYDIS_MNEMONIC_RET, 1, 2);
    ret.opcode = 0xcb;
    run(ret);
    EXPECT_EQ(c.seg[CS].selector, 0x1000);
    EXPECT_EQ(c.rip, 0x105u);
    EXPECT_EQ(c.gpr[RSP], 0x9000u);
}

TEST_F(SoftSysMode, FarCallAndRetfInLongMode)
{
    enter_long_mode();
    // CALL m16:64 to the same code segment.
    poke<uint64_t>(0x6000, 0x123456);
    poke<uint16_t>(0x6008, kKernelCs);
    Insn call = insn(ZYDIS_MNEMONIC_CALL, 3, 8);
    call.opcode = 0xff;
    call.modrm_reg = 3;
    mem(call, 0, kNoReg, 0x6000, 10);
    call.nops = 1;
    run(call);
    EXPECT_EQ(c.rip, 0x123456u);
    EXPECT_EQ(c.gpr[RSP], 0x80000u - 16);
    EXPECT_EQ(peek<uint64_t>(0x80000 - 16), kCode + 3);
    EXPECT_EQ(peek<uint64_t>(0x80000 - 8), kKernelCs);

    // RETF to CPL 3 64-bit code pops RSP and SS too.
    c.gpr[RSP] = 0x80000 - 32;
    poke<uint64_t>(0x80000 - 32, 0x400000);
    poke<uint64_t>(0x80000 - 24, kUserCs);
    poke<uint64_t>(0x80000 - 16, 0x55000);
    poke<uint64_t>(0x80000 - 8, kUserDs);
    Insn ret = insn(ZYDIS_MNEMONIC_RET, 2, 8);
    ret.opcode = 0xcb;
    ret.flags = kFlagRexW;
    run(ret);
    EXPECT_EQ(c.cpl, 3);
    EXPECT_EQ(c.rip, 0x400000u);
    EXPECT_EQ(c.gpr[RSP], 0x55000u);
    EXPECT_EQ(c.seg[SS].selector, kUserDs);
    // DS held a DPL 0 segment: nulled on the way out.
    EXPECT_TRUE(c.seg[DS].unusable);

    // A far JMP through a call gate is not supported.
    poke<uint64_t>(kGdt + 0x30, (0xcULL << 40) | (3ULL << 45) | (1ULL << 47));
    EXPECT_THROW(run(far_jmp_ptr(kKernelCs32 | 3, 0)), EngineAbort);
}

TEST_F(SoftSysMode, SyscallSysretRoundTrip)
{
    enter_long_mode();
    c.msrs.star = (static_cast<uint64_t>(0x18) << 48) | (static_cast<uint64_t>(kKernelCs) << 32);
    c.msrs.lstar = 0x300000;
    c.msrs.sfmask = kIF | kTF | kDF | kAC;
    enter_user64();
    c.rflags |= kIF | kDF;
    c.rip = 0x400000;

    run(insn(ZYDIS_MNEMONIC_SYSCALL, 2));
    EXPECT_EQ(c.cpl, 0);
    EXPECT_EQ(c.rip, 0x300000u);
    EXPECT_EQ(c.gpr[RCX], 0x400002u);
    EXPECT_TRUE(c.gpr[R11] & kIF);
    EXPECT_FALSE(c.rflags & (kIF | kDF));
    EXPECT_EQ(c.seg[CS].selector, kKernelCs);
    EXPECT_EQ(c.seg[SS].selector, kKernelDs);
    EXPECT_EQ(c.mode, CpuMode::Long64);

    Insn sysret = insn(ZYDIS_MNEMONIC_SYSRET, 3, 8);
    sysret.flags = kFlagRexW;
    run(sysret);
    EXPECT_EQ(c.cpl, 3);
    EXPECT_EQ(c.rip, 0x400002u);
    EXPECT_EQ(c.seg[CS].selector, kUserCs);
    EXPECT_EQ(c.seg[SS].selector, kUserDs);
    EXPECT_TRUE(c.rflags & kIF);
    EXPECT_TRUE(c.rflags & kDF);
    EXPECT_EQ(c.mode, CpuMode::Long64);

    // SYSRET without REX.W returns to compatibility mode.
    run(insn(ZYDIS_MNEMONIC_SYSCALL, 2));
    c.gpr[RCX] = 0x1234;
    Insn sysret32 = insn(ZYDIS_MNEMONIC_SYSRET, 2, 4);
    run(sysret32);
    EXPECT_EQ(c.seg[CS].selector, kUserCs32);
    EXPECT_EQ(c.mode, CpuMode::Prot32);
    EXPECT_EQ(c.rip, 0x1234u);

    // SYSRET to a non-canonical RCX faults at CPL 0.
    enter_long_mode();
    c.gpr[RCX] = 0x0000800000000000ULL;
    EXPECT_EQ(fault_of(c, sysret).vector, kExcGP);
    // SYSCALL without EFER.SCE is #UD.
    c.efer &= ~x86::kEferSce;
    EXPECT_EQ(fault_of(c, insn(ZYDIS_MNEMONIC_SYSCALL, 2)).vector, kExcUD);
}

TEST_F(SoftSysMode, SysenterSysexit)
{
    enter_long_mode();
    c.msrs.sysenter_cs = kKernelCs;
    c.msrs.sysenter_esp = 0x66000;
    c.msrs.sysenter_eip = 0x310000;
    // From compatibility mode at CPL 3.
    load_raw(CS, kUserCs32);
    load_raw(SS, kUserDs);
    c.rflags |= kIF;
    ASSERT_EQ(c.mode, CpuMode::Prot32);
    run(insn(ZYDIS_MNEMONIC_SYSENTER, 2));
    EXPECT_EQ(c.mode, CpuMode::Long64);
    EXPECT_EQ(c.cpl, 0);
    EXPECT_EQ(c.rip, 0x310000u);
    EXPECT_EQ(c.gpr[RSP], 0x66000u);
    EXPECT_FALSE(c.rflags & kIF);
    EXPECT_EQ(c.seg[SS].selector, kKernelDs);

    c.gpr[RCX] = 0x5000;
    c.gpr[RDX] = 0x6000;
    run(insn(ZYDIS_MNEMONIC_SYSEXIT, 2));
    EXPECT_EQ(c.mode, CpuMode::Prot32);
    EXPECT_EQ(c.cpl, 3);
    EXPECT_EQ(c.seg[CS].selector, kUserCs32);
    EXPECT_EQ(c.seg[SS].selector, kUserDs);
    EXPECT_EQ(c.rip, 0x6000u);
    EXPECT_EQ(c.gpr[RSP], 0x5000u);
}

TEST_F(SoftSysMode, Swapgs)
{
    enter_long_mode();
    c.gpr[RCX] = msr::kGsBase;
    c.gpr[RAX] = 0x1111;
    c.gpr[RDX] = 0;
    run(insn(ZYDIS_MNEMONIC_WRMSR, 2));
    c.msrs.kernel_gs_base = 0xffff888000002222ULL;
    run(insn(ZYDIS_MNEMONIC_SWAPGS, 3));
    EXPECT_EQ(c.seg[GS].base, 0xffff888000002222ULL);
    EXPECT_EQ(c.segbase[GS], 0xffff888000002222ULL);
    EXPECT_EQ(c.msrs.kernel_gs_base, 0x1111u);
    run(insn(ZYDIS_MNEMONIC_SWAPGS, 3));
    EXPECT_EQ(c.segbase[GS], 0x1111u);
    enter_user64();
    EXPECT_EQ(fault_of(c, insn(ZYDIS_MNEMONIC_SWAPGS, 3)).vector, kExcGP);
    load_raw(CS, kKernelCs32);
    EXPECT_EQ(fault_of(c, insn(ZYDIS_MNEMONIC_SWAPGS, 3)).vector, kExcUD);
}

TEST_F(SoftSysMode, DescriptorTableInstructions)
{
    enter_long_mode();
    // SGDT/SIDT store 10 bytes in 64-bit mode; LIDT loads them back.
    Insn sgdt = insn(ZYDIS_MNEMONIC_SGDT, 8, 8);
    mem(sgdt, 0, kNoReg, 0x7000, 10);
    sgdt.nops = 1;
    run(sgdt);
    EXPECT_EQ(peek<uint16_t>(0x7000), 0x47);
    EXPECT_EQ(peek<uint64_t>(0x7002), kGdt);

    poke<uint16_t>(0x7100, 0x1ff);
    poke<uint64_t>(0x7102, 0xffffffff81000000ULL);
    Insn lidt = insn(ZYDIS_MNEMONIC_LIDT, 8, 8);
    mem(lidt, 0, kNoReg, 0x7100, 10);
    lidt.nops = 1;
    run(lidt);
    EXPECT_EQ(c.idt.base, 0xffffffff81000000ULL);
    EXPECT_EQ(c.idt.limit, 0x1ff);
    poke<uint64_t>(0x7102, 0x0000800000000000ULL); // non-canonical
    EXPECT_EQ(fault_of(c, lidt).vector, kExcGP);

    // LTR marks the TSS busy; loading a busy TSS is #GP.
    poke<uint64_t>(kGdt + 0x38, make_desc(static_cast<uint32_t>(kTss), 0x67, 0x9, 0, false, false, false, false));
    c.gpr[RAX] = kTssSel;
    Insn ltr = insn(ZYDIS_MNEMONIC_LTR, 3, 2);
    ltr.op[0] = gpr(RAX, 2);
    ltr.nops = 1;
    run(ltr);
    EXPECT_EQ(c.tr.selector, kTssSel);
    EXPECT_EQ(c.tr.type, 0xb);
    EXPECT_EQ((peek<uint64_t>(kGdt + 0x38) >> 40) & 0xf, 0xbu);
    GuestFault f = fault_of(c, ltr);
    EXPECT_EQ(f.vector, kExcGP);
    EXPECT_EQ(f.error_code, kTssSel);

    Insn str = insn(ZYDIS_MNEMONIC_STR, 3, 4);
    str.op[0] = gpr(RBX, 4);
    str.nops = 1;
    c.gpr[RBX] = ~0ULL;
    run(str);
    EXPECT_EQ(c.gpr[RBX], kTssSel);

    // LLDT with a null selector makes the LDT unusable; a non-LDT descriptor is #GP.
    Insn lldt = insn(ZYDIS_MNEMONIC_LLDT, 3, 2);
    lldt.op[0] = gpr(RAX, 2);
    lldt.nops = 1;
    c.gpr[RAX] = 0;
    run(lldt);
    EXPECT_TRUE(c.ldtr.unusable);
    c.gpr[RAX] = kKernelDs;
    EXPECT_EQ(fault_of(c, lldt).vector, kExcGP);
}

TEST_F(SoftSysMode, InvlpgAndCr0Wp)
{
    enter_long_mode();
    (void)read_linear<uint64_t>(c, 0x5000);
    c.tlb_has_large = false;
    Insn invlpg = insn(ZYDIS_MNEMONIC_INVLPG, 8, 8);
    mem(invlpg, 0, kNoReg, 0x5000, 1);
    invlpg.nops = 1;
    run(invlpg);
    EXPECT_EQ(tlb_entry(c, 0x5000, false).tag_read, kTlbInvalid);
    enter_user64();
    EXPECT_EQ(fault_of(c, invlpg).vector, kExcGP);
}

TEST_F(SoftSysMode, ResetState)
{
    c.gpr[RAX] = 5;
    c.cr0 = 0x80000011;
    reset_cpu(c);
    EXPECT_EQ(c.mode, CpuMode::Real);
    EXPECT_EQ(c.seg[CS].selector, 0xf000);
    EXPECT_EQ(c.seg[CS].base, 0xffff0000u);
    EXPECT_EQ(c.rip, 0xfff0u);
    EXPECT_EQ(c.cr0, 0x60000010u);
    EXPECT_EQ(c.gpr[RAX], 0u);
    EXPECT_EQ(c.gpr[RDX] & 0xf00, 0x600u); // family 6
    EXPECT_EQ(c.rflags, 2u);
    EXPECT_EQ(c.idt.limit, 0xffff);
}

TEST_F(SoftSysMode, DebugRegistersAndMsw)
{
    enter_long_mode();
    Insn to_dr = insn(ZYDIS_MNEMONIC_MOV, 3, 8);
    to_dr.op[0] = opkind(OpKind::Dr, 7, 8);
    to_dr.op[1] = gpr(RAX, 8);
    to_dr.nops = 2;
    c.gpr[RAX] = 0x1;
    run(to_dr);
    EXPECT_EQ(c.dr7, 0x401u);
    c.gpr[RAX] = 1ULL << 40;
    EXPECT_EQ(fault_of(c, to_dr).vector, kExcGP);
    to_dr.op[0].reg = 2;
    c.gpr[RAX] = 0xffffffff81000000ULL;
    run(to_dr);
    EXPECT_EQ(c.dr[2], 0xffffffff81000000ULL);
    Insn from_dr = insn(ZYDIS_MNEMONIC_MOV, 3, 8);
    from_dr.op[0] = gpr(RBX, 8);
    from_dr.op[1] = opkind(OpKind::Dr, 4, 8); // DR4 aliases DR6 without CR4.DE
    from_dr.nops = 2;
    run(from_dr);
    EXPECT_EQ(c.gpr[RBX], 0xffff0ff0u);
    c.cr4 |= 1ULL << 3;
    EXPECT_EQ(fault_of(c, from_dr).vector, kExcUD);

    // CLTS, SMSW, LMSW (cannot clear PE).
    c.cr0 |= 1ULL << 3;
    run(insn(ZYDIS_MNEMONIC_CLTS, 2));
    EXPECT_FALSE(c.cr0 & (1ULL << 3));
    Insn smsw = insn(ZYDIS_MNEMONIC_SMSW, 3, 2);
    smsw.op[0] = gpr(RCX, 2);
    smsw.nops = 1;
    c.gpr[RCX] = 0xabcd0000;
    run(smsw);
    EXPECT_EQ(c.gpr[RCX], 0xabcd0000u | (c.cr0 & 0xffff));
    Insn lmsw = insn(ZYDIS_MNEMONIC_LMSW, 3, 2);
    lmsw.op[0] = gpr(RDX, 2);
    lmsw.nops = 1;
    c.gpr[RDX] = 0x8; // TS, PE clear
    run(lmsw);
    EXPECT_TRUE(c.cr0 & (1ULL << 3));
    EXPECT_TRUE(c.cr0 & x86::kCr0Pe);
}

TEST_F(SoftSysMode, RetfImmAndSameLevelIretInProtectedMode)
{
    build_gdt();
    c.cr0 |= x86::kCr0Pe;
    load_raw(CS, kKernelCs32);
    load_raw(SS, kKernelDs);
    c.rip = 0x5000;
    c.gpr[RSP] = 0x60000;
    poke<uint32_t>(0x60000, 0x7000);
    poke<uint32_t>(0x60004, kKernelCs32);
    Insn ret = insn(ZYDIS_MNEMONIC_RET, 3, 4);
    ret.opcode = 0xca;
    ret.imm = 8;
    ret.op[0] = Operand { OpKind::Imm, 0, 2, 0 };
    ret.nops = 1;
    run(ret);
    EXPECT_EQ(c.rip, 0x7000u);
    EXPECT_EQ(c.gpr[RSP], 0x60000u + 16);

    // IRETD at the same level pops EIP, CS, EFLAGS only.
    c.gpr[RSP] = 0x61000;
    poke<uint32_t>(0x61000, 0x7100);
    poke<uint32_t>(0x61004, kKernelCs32);
    poke<uint32_t>(0x61008, static_cast<uint32_t>(kIF | kCF | 2 | (3u << 12)));
    run(insn(ZYDIS_MNEMONIC_IRETD, 1, 4));
    EXPECT_EQ(c.rip, 0x7100u);
    EXPECT_EQ(c.gpr[RSP], 0x6100cu);
    EXPECT_TRUE(c.rflags & kIF);
    EXPECT_EQ(c.rflags & kIOPL, kIOPL); // CPL 0 may change IOPL
    // RETF to a less privileged level whose RPL is below CPL: #GP(selector).
    load_raw(CS, kUserCs32);
    load_raw(SS, kUserDs);
    c.gpr[RSP] = 0x62000;
    poke<uint32_t>(0x62000, 0x7000);
    poke<uint32_t>(0x62004, kKernelCs32);
    GuestFault f = fault_of(c, ret);
    EXPECT_EQ(f.vector, kExcGP);
    EXPECT_EQ(f.error_code, kKernelCs32);
}

} // namespace
} // namespace vessel::soft::systest
