// CPUID model, MSRs, port I/O, system flags, XCR0, HLT and the CPUID-gated #UD instructions.
#include <cstring>
#include <string>

#include "engine/soft/cpuid.h"
#include "engine/soft/msr.h"
#include "soft_sys_test_support.h"

namespace vessel::soft::systest {
namespace {

using SoftSysInsn = SoftSysTest;

struct Regs {
    uint32_t a, b, c, d;
};

Regs query(Cpu& c, uint32_t leaf, uint32_t sub = 0)
{
    uint32_t out[4];
    cpuid(c, leaf, sub, out);
    return { out[0], out[1], out[2], out[3] };
}

TEST_F(SoftSysInsn, CpuidIdentityAndFeatures)
{
    Regs r = query(c, 0);
    EXPECT_EQ(r.a, 0x16u);
    char vendor[13] = {};
    std::memcpy(vendor, &r.b, 4);
    std::memcpy(vendor + 4, &r.d, 4);
    std::memcpy(vendor + 8, &r.c, 4);
    EXPECT_STREQ(vendor, "GenuineIntel");

    c.id = 2;
    r = query(c, 1);
    EXPECT_EQ((r.a >> 8) & 0xf, 6u);
    EXPECT_EQ(r.b >> 24, 2u); // APIC ID
    EXPECT_EQ((r.b >> 8) & 0xff, 8u); // CLFLUSH line 64 bytes
    uint32_t need_edx = (1u << 0) | (1u << 4) | (1u << 5) | (1u << 6) | (1u << 8) | (1u << 9) | (1u << 11) | (1u << 13)
        | (1u << 15) | (1u << 16) | (1u << 19) | (1u << 24) | (1u << 25) | (1u << 26);
    EXPECT_EQ(r.d & need_edx, need_edx);
    EXPECT_TRUE(r.d & (1u << 23)); // MMX
    EXPECT_FALSE(r.d & (1u << 12)); // no MTRR
    EXPECT_FALSE(r.d & (1u << 7)); // no MCE
    EXPECT_FALSE(r.d & (1u << 28)); // one vCPU: no HTT
    EXPECT_TRUE(r.c & (1u << 31)); // hypervisor
    EXPECT_TRUE(r.c & (1u << 24)); // TSC deadline
    EXPECT_TRUE(r.c & (1u << 13)); // CX16
    EXPECT_FALSE(r.c & (1u << 21)); // no x2APIC
    EXPECT_FALSE(r.c & (1u << 27)); // OSXSAVE mirrors CR4
    c.cr4 |= 1ULL << 18;
    EXPECT_TRUE(query(c, 1).c & (1u << 27));

    m_machine.set_vcpu_count(3);
    r = query(c, 1);
    EXPECT_TRUE(r.d & (1u << 28));
    EXPECT_EQ((r.b >> 16) & 0xff, 4u);
    r = query(c, 0xb, 1);
    EXPECT_EQ(r.b, 3u);
    EXPECT_EQ(r.a, 2u);
    EXPECT_EQ(r.d, 2u);
    EXPECT_EQ((r.c >> 8) & 0xff, 2u);
    r = query(c, 4, 3); // L3 shared by the package
    EXPECT_EQ((r.a >> 14) & 0xfff, 3u);
    EXPECT_EQ(r.a >> 26, 3u);

    r = query(c, 7);
    EXPECT_TRUE(r.d & (1u << 29)); // ARCH_CAPABILITIES
    EXPECT_TRUE(r.d & (1u << 26)); // IBRS/IBPB (SPEC_CTRL, PRED_CMD)
    EXPECT_FALSE(r.d & (1u << 27)); // no STIBP
    EXPECT_FALSE(r.d & (1u << 31)); // no SSBD (SSB_NO instead)
    EXPECT_EQ(r.a, 2u); // subleaves 0..2
    EXPECT_EQ(query(c, 7, 2).d, 1u << 4); // BHI_CTRL
    EXPECT_EQ(query(c, 7, 1).d, 0u);
    EXPECT_FALSE(r.b & (1u << 7)); // no SMEP
    EXPECT_FALSE(r.b & (1u << 20)); // no SMAP
}

TEST_F(SoftSysInsn, CpuidSizesAndExtendedLeaves)
{
    Regs r = query(c, 0xd, 0);
    EXPECT_EQ(r.a, 3u);
    EXPECT_EQ(r.b, 576u);
    EXPECT_EQ(r.c, 576u);
    EXPECT_EQ(query(c, 0xd, 1).a, 1u); // XSAVEOPT only

    EXPECT_EQ(query(c, 0x80000000).a, 0x80000008u);
    r = query(c, 0x80000001);
    uint32_t need = (1u << 11) | (1u << 20) | (1u << 26) | (1u << 27) | (1u << 29);
    EXPECT_EQ(r.d & need, need);
    EXPECT_EQ(query(c, 0x80000008).a, 40u | (48u << 8));
    EXPECT_FALSE(query(c, 0x80000007).d & (1u << 8)); // no invariant TSC: kvm-clock describes it

    std::string brand;
    for (uint32_t leaf = 0x80000002; leaf <= 0x80000004; ++leaf) {
        r = query(c, leaf);
        brand.append(reinterpret_cast<const char*>(&r), 16);
    }
    EXPECT_STREQ(brand.c_str(), "Vessel soft CPU");

    // TSC frequency: crystal × ratio, computed the way Linux does (32-bit arithmetic).
    r = query(c, 0x15);
    uint32_t crystal_khz = r.c / 1000;
    EXPECT_EQ(static_cast<uint32_t>(crystal_khz * r.b) / r.a, guest_tsc_khz());
    EXPECT_EQ(query(c, 0x16).a, guest_tsc_khz() / 1000);
    r = query(c, 0x40000000);
    char sig[13] = {};
    std::memcpy(sig, &r.b, 4);
    std::memcpy(sig + 4, &r.c, 4);
    std::memcpy(sig + 8, &r.d, 4);
    EXPECT_STREQ(sig, "KVMKVMKVM");
    EXPECT_EQ(r.a, 0x40000010u);
    // KVM_CPUID_FEATURES: kvmclock (both MSR pairs, stable bit) and nothing else; no hints.
    r = query(c, 0x40000001);
    EXPECT_EQ(r.a, (1u << 0) | (1u << 3) | (1u << 24));
    EXPECT_EQ(r.d, 0u);
    EXPECT_EQ(query(c, 0x40000010).a, guest_tsc_khz());
    EXPECT_EQ(query(c, 0x40000011).a, 0u); // past the hypervisor range's maximum

    // Out-of-range basic leaves repeat the highest one (Intel).
    r = query(c, 0x20);
    Regs top = query(c, 0x16);
    EXPECT_EQ(r.a, top.a);

    // The instruction writes the four registers, zero-extended.
    c.gpr[RAX] = 0xffffffff00000000ULL;
    c.gpr[RCX] = 0;
    run(insn(ZYDIS_MNEMONIC_CPUID, 2));
    EXPECT_EQ(c.gpr[RAX], 0x16u);
}

TEST_F(SoftSysInsn, MsrAccess)
{
    enter_long_mode();
    c.gpr[RCX] = 0x12345; // no such MSR
    GuestFault f = fault_of(c, insn(ZYDIS_MNEMONIC_RDMSR, 2));
    EXPECT_EQ(f.vector, kExcGP);
    EXPECT_TRUE(f.has_error);
    EXPECT_EQ(f.error_code, 0u);
    EXPECT_EQ(fault_of(c, insn(ZYDIS_MNEMONIC_WRMSR, 2)).vector, kExcGP);

    c.gpr[RCX] = msr::kArchCapabilities;
    run(insn(ZYDIS_MNEMONIC_RDMSR, 2));
    EXPECT_EQ(c.gpr[RAX] & 1, 1u); // RDCL_NO
    EXPECT_EQ(c.gpr[RAX] & 2, 2u); // IBRS_ALL: Linux uses enhanced IBRS, not retpolines
    EXPECT_EQ(c.gpr[RDX] & (1u << 30), 1u << 30); // ITS_NO (bit 62): no ITS return thunks
    EXPECT_EQ(c.gpr[RAX] & (1u << 20), 1u << 20); // BHI_NO

    // SPEC_CTRL keeps IBRS and BHI_DIS_S (the bits offered); PRED_CMD takes IBPB and cannot be
    // read.
    write_msr(c, msr::kSpecCtrl, 1 | (1u << 10));
    EXPECT_EQ(read_msr(c, msr::kSpecCtrl), 1u | (1u << 10));
    write_msr(c, msr::kSpecCtrl, 1);
    EXPECT_THROW(write_msr(c, msr::kSpecCtrl, 2), GuestFault); // STIBP not offered
    EXPECT_THROW(write_msr(c, msr::kSpecCtrl, 4), GuestFault); // SSBD not offered
    EXPECT_EQ(read_msr(c, msr::kSpecCtrl), 1u);
    write_msr(c, msr::kPredCmd, 1);
    EXPECT_THROW(write_msr(c, msr::kPredCmd, 2), GuestFault);
    EXPECT_THROW(read_msr(c, msr::kPredCmd), GuestFault);
    write_msr(c, msr::kSpecCtrl, 0);
    EXPECT_EQ(read_msr(c, msr::kMtrrCap), 0u);
    EXPECT_EQ(read_msr(c, msr::kFeatureControl), 1u);

    // EFER: reserved bits and LME under paging.
    EXPECT_THROW(write_msr(c, msr::kEfer, c.efer | (1ULL << 1)), GuestFault);
    EXPECT_THROW(write_msr(c, msr::kEfer, c.efer & ~x86::kEferLme), GuestFault);
    write_msr(c, msr::kEfer, x86::kEferLme | x86::kEferSce); // LMA is kept
    EXPECT_TRUE(c.efer & x86::kEferLma);
    EXPECT_FALSE(c.efer & x86::kEferNxe);

    // Canonical checks and bases.
    EXPECT_THROW(write_msr(c, msr::kLstar, 0x0000800000000000ULL), GuestFault);
    write_msr(c, msr::kFsBase, 0x7f0000001000ULL);
    EXPECT_EQ(c.segbase[FS], 0x7f0000001000ULL);
    EXPECT_THROW(write_msr(c, msr::kPat, 0x0202020202020202ULL), GuestFault);

    // TSC and TSC_AUX through RDTSCP.
    write_msr(c, msr::kTsc, 5'000'000);
    write_msr(c, msr::kTscAux, 7);
    run(insn(ZYDIS_MNEMONIC_RDTSCP, 3));
    EXPECT_GE(c.gpr[RAX] | (c.gpr[RDX] << 32), 5'000'000u);
    EXPECT_LT(c.gpr[RAX] | (c.gpr[RDX] << 32), 5'000'000u + guest_tsc_khz() * 1000 * 10); // within 10 s
    EXPECT_EQ(c.gpr[RCX], 7u);

    // CPL 3: #GP.
    enter_user64();
    c.gpr[RCX] = msr::kEfer;
    EXPECT_EQ(fault_of(c, insn(ZYDIS_MNEMONIC_RDMSR, 2)).vector, kExcGP);
    // RDTSC at CPL 3 is fine unless CR4.TSD.
    run(insn(ZYDIS_MNEMONIC_RDTSC, 2));
    c.cr4 |= 1ULL << 2;
    EXPECT_EQ(fault_of(c, insn(ZYDIS_MNEMONIC_RDTSC, 2)).vector, kExcGP);
}

Insn io_insn(ZydisMnemonic m, uint8_t opcode, uint8_t osize)
{
    Insn in = SoftSysTest::insn(m, 1, osize);
    in.opcode = opcode;
    return in;
}

TEST_F(SoftSysInsn, PortIo)
{
    enter_long_mode();
    c.gpr[RDX] = 0x3f8;
    c.gpr[RAX] = 0x41;
    run(io_insn(ZYDIS_MNEMONIC_OUT, 0xee, 1));
    ASSERT_EQ(io.log.size(), 1u);
    EXPECT_TRUE(io.log[0].write);
    EXPECT_EQ(io.log[0].port, 0x3f8);
    EXPECT_EQ(io.log[0].size, 1u);
    EXPECT_EQ(io.log[0].value, 0x41u);

    io.next_read = 0xaabbccdd;
    c.gpr[RAX] = ~0ULL;
    Insn in32 = io_insn(ZYDIS_MNEMONIC_IN, 0xe5, 4);
    in32.imm = 0x71;
    run(in32);
    EXPECT_EQ(io.log.back().port, 0x71);
    EXPECT_EQ(c.gpr[RAX], 0xaabbccddu); // 32-bit write zero-extends

    io.next_read = 0x1234;
    c.gpr[RAX] = 0xffff0000ffff0000ULL;
    run(io_insn(ZYDIS_MNEMONIC_IN, 0xed, 2));
    EXPECT_EQ(c.gpr[RAX], 0xffff0000ffff1234ULL);

    // REP OUTSB of three bytes from DS:RSI.
    poke_bytes(0x6000, { 'a', 'b', 'c' });
    io.log.clear();
    c.gpr[RSI] = 0x6000;
    c.gpr[RCX] = 3;
    Insn outsb = io_insn(ZYDIS_MNEMONIC_OUTSB, 0x6e, 1);
    outsb.flags = kFlagRep;
    outsb.seg = DS;
    run(outsb);
    ASSERT_EQ(io.log.size(), 3u);
    EXPECT_EQ(io.log[2].value, static_cast<uint32_t>('c'));
    EXPECT_EQ(c.gpr[RSI], 0x6003u);
    EXPECT_EQ(c.gpr[RCX], 0u);

    // REP INSW backwards (DF = 1).
    io.next_read = 0x100;
    c.gpr[RDI] = 0x6102;
    c.gpr[RCX] = 2;
    c.rflags |= kDF;
    Insn insw = io_insn(ZYDIS_MNEMONIC_INSW, 0x6d, 2);
    insw.flags = kFlagRep;
    run(insw);
    EXPECT_EQ(peek<uint16_t>(0x6102), 0x100);
    EXPECT_EQ(peek<uint16_t>(0x6100), 0x101);
    EXPECT_EQ(c.gpr[RDI], 0x60feu);
}

TEST_F(SoftSysInsn, PortIoPermissionBitmap)
{
    enter_long_mode();
    // TSS with an I/O bitmap at offset 0x68 allowing port 0x80 only (of ports 0x80-0x87).
    poke<uint64_t>(
        kGdt + 0x38, make_desc(static_cast<uint32_t>(kTss), 0x68 + 0x20, 0xb, 0, false, false, false, false));
    c.tr = unpack_descriptor(kTssSel, peek<uint64_t>(kGdt + 0x38));
    poke<uint16_t>(kTss + 102, 0x68);
    for (unsigned i = 0; i < 0x20; ++i)
        poke<uint8_t>(kTss + 0x68 + i, 0xff);
    poke<uint8_t>(kTss + 0x68 + 0x80 / 8, 0xfe);
    enter_user64();
    c.gpr[RDX] = 0x80;
    run(io_insn(ZYDIS_MNEMONIC_OUT, 0xee, 1));
    EXPECT_EQ(io.log.size(), 1u);
    c.gpr[RDX] = 0x81;
    EXPECT_EQ(fault_of(c, io_insn(ZYDIS_MNEMONIC_OUT, 0xee, 1)).vector, kExcGP);
    c.gpr[RDX] = 0x80; // a 16-bit access also touches port 0x81
    EXPECT_EQ(fault_of(c, io_insn(ZYDIS_MNEMONIC_OUT, 0xef, 2)).vector, kExcGP);
    // IOPL 3 allows everything.
    c.rflags |= kIOPL;
    c.gpr[RDX] = 0x81;
    run(io_insn(ZYDIS_MNEMONIC_OUT, 0xee, 1));
    EXPECT_EQ(io.log.size(), 2u);
}

TEST_F(SoftSysInsn, InterruptFlagRules)
{
    enter_long_mode();
    run(insn(ZYDIS_MNEMONIC_STI, 1));
    EXPECT_TRUE(c.rflags & kIF);
    EXPECT_EQ(c.interrupt_shadow, 1);
    c.interrupt_shadow = 0;
    run(insn(ZYDIS_MNEMONIC_STI, 1)); // IF already set: no shadow
    EXPECT_EQ(c.interrupt_shadow, 0);
    run(insn(ZYDIS_MNEMONIC_CLI, 1));
    EXPECT_FALSE(c.rflags & kIF);

    // PUSHFQ/POPFQ at CPL 3 with IOPL 0: IF and IOPL stay, arithmetic flags change.
    c.rflags |= kIF;
    enter_user64();
    c.gpr[RSP] = 0x50000;
    EXPECT_EQ(fault_of(c, insn(ZYDIS_MNEMONIC_CLI, 1)).vector, kExcGP);
    poke<uint64_t>(0x50000, kCF | kZF | kIOPL | kAC);
    run(insn(ZYDIS_MNEMONIC_POPFQ, 1, 8));
    EXPECT_TRUE(c.rflags & kIF);
    EXPECT_FALSE(c.rflags & kIOPL);
    EXPECT_TRUE(c.rflags & kAC);
    EXPECT_TRUE(flag_cf(c));
    EXPECT_TRUE(flag_zf(c));
    EXPECT_EQ(c.gpr[RSP], 0x50008u);
    set_lazy(c, FlagOp::Sub, 4, 0, 5, 5); // ZF from a lazy result
    run(insn(ZYDIS_MNEMONIC_PUSHFQ, 1, 8));
    EXPECT_EQ(peek<uint64_t>(0x50000) & (kZF | kCF | kIF), kZF | kIF);
}

TEST_F(SoftSysInsn, XcrAndHlt)
{
    enter_long_mode();
    EXPECT_EQ(fault_of(c, insn(ZYDIS_MNEMONIC_XGETBV, 3)).vector, kExcUD); // CR4.OSXSAVE off
    c.cr4 |= 1ULL << 18;
    c.gpr[RCX] = 0;
    c.gpr[RDX] = 0;
    c.gpr[RAX] = 3;
    run(insn(ZYDIS_MNEMONIC_XSETBV, 3));
    EXPECT_EQ(c.xcr0, 3u);
    c.gpr[RAX] = 7; // AVX is not offered
    EXPECT_EQ(fault_of(c, insn(ZYDIS_MNEMONIC_XSETBV, 3)).vector, kExcGP);
    c.gpr[RAX] = 2; // x87 must stay on
    EXPECT_EQ(fault_of(c, insn(ZYDIS_MNEMONIC_XSETBV, 3)).vector, kExcGP);
    c.gpr[RAX] = 0;
    run(insn(ZYDIS_MNEMONIC_XGETBV, 3));
    EXPECT_EQ(c.gpr[RAX], 3u);

    run(insn(ZYDIS_MNEMONIC_HLT, 1));
    EXPECT_TRUE(c.halted);
    enter_user64();
    EXPECT_EQ(fault_of(c, insn(ZYDIS_MNEMONIC_HLT, 1)).vector, kExcGP);
    EXPECT_EQ(fault_of(c, insn(ZYDIS_MNEMONIC_WBINVD, 2)).vector, kExcGP);
    for (ZydisMnemonic m : { ZYDIS_MNEMONIC_UD2, ZYDIS_MNEMONIC_RDRAND, ZYDIS_MNEMONIC_MWAIT, ZYDIS_MNEMONIC_INVPCID,
             ZYDIS_MNEMONIC_RDPID })
        EXPECT_EQ(fault_of(c, insn(m, 3)).vector, kExcUD);
}

TEST_F(SoftSysInsn, LarLslVerrVerw)
{
    enter_long_mode();
    enter_user64();
    // LSL on the user data segment (the vDSO's getcpu trick uses a DPL 3 segment's limit).
    poke<uint64_t>(kGdt + 0x20, make_desc(0, 0x1005, 0x3, 3, true, false, true, false));
    c.gpr[RAX] = kUserDs;
    Insn lsl = insn(ZYDIS_MNEMONIC_LSL, 3, 4);
    lsl.op[0] = gpr(RBX, 4);
    lsl.op[1] = gpr(RAX, 2);
    lsl.nops = 2;
    run(lsl);
    EXPECT_TRUE(flag_zf(c));
    EXPECT_EQ(c.gpr[RBX], 0x1005u);
    // A DPL 0 segment is invisible from CPL 3.
    c.gpr[RAX] = kKernelDs | 3;
    c.gpr[RBX] = 99;
    run(lsl);
    EXPECT_FALSE(flag_zf(c));
    EXPECT_EQ(c.gpr[RBX], 99u);

    Insn lar = insn(ZYDIS_MNEMONIC_LAR, 3, 4);
    lar.op[0] = gpr(RBX, 4);
    lar.op[1] = gpr(RAX, 2);
    lar.nops = 2;
    c.gpr[RAX] = kUserCs;
    run(lar);
    EXPECT_TRUE(flag_zf(c));
    EXPECT_EQ(c.gpr[RBX], (code64(3) >> 32) & 0x00f0ff00);

    Insn verw = insn(ZYDIS_MNEMONIC_VERW, 3, 2);
    verw.op[0] = gpr(RAX, 2);
    verw.nops = 1;
    run(verw); // code is not writable
    EXPECT_FALSE(flag_zf(c));
    c.gpr[RAX] = kUserDs;
    run(verw);
    EXPECT_TRUE(flag_zf(c));
    Insn verr = verw;
    verr.mnemonic = ZYDIS_MNEMONIC_VERR;
    verr.exec = handler_table()[ZYDIS_MNEMONIC_VERR];
    c.gpr[RAX] = kUserCs;
    run(verr); // readable code
    EXPECT_TRUE(flag_zf(c));
}

TEST_F(SoftSysInsn, SegmentPushPopAndLss)
{
    enter_long_mode();
    Insn push = insn(ZYDIS_MNEMONIC_PUSH, 2, 8);
    push.op[0] = opkind(OpKind::Seg, FS, 2);
    push.nops = 1;
    load_raw(FS, kKernelDs);
    run(push);
    EXPECT_EQ(peek<uint64_t>(0x80000 - 8), kKernelDs);
    Insn pop = insn(ZYDIS_MNEMONIC_POP, 2, 8);
    pop.op[0] = opkind(OpKind::Seg, GS, 2);
    pop.nops = 1;
    run(pop);
    EXPECT_EQ(c.seg[GS].selector, kKernelDs);
    EXPECT_EQ(c.gpr[RSP], 0x80000u);

    // LSS rsp, m16:64.
    poke<uint64_t>(0x6000, 0x44000);
    poke<uint16_t>(0x6008, kKernelDs);
    Insn lss = insn(ZYDIS_MNEMONIC_LSS, 4, 8);
    lss.op[0] = gpr(RSP, 8);
    mem(lss, 1, kNoReg, 0x6000, 10);
    lss.nops = 2;
    run(lss);
    EXPECT_EQ(c.gpr[RSP], 0x44000u);
    EXPECT_EQ(c.seg[SS].selector, kKernelDs);
}

} // namespace
} // namespace vessel::soft::systest
