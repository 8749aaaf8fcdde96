// System-level behaviour on real instruction bytes through the decoder, block cache and
// interpreter loop (SoftHarness): the real → protected → long mode switch, SYSCALL/SYSRET with
// SWAPGS and a #GP back into the kernel, real-mode INT/IRET, #PF through an IST stack, port I/O.
#include <vector>

#include <gtest/gtest.h>
#include <xbyak/xbyak.h>

#include "engine/soft/flags.h"
#include "engine/soft/msr.h"
#include "engine/soft/platform.h"
#include "engine/soft/segments.h"
#include "soft_test_support.h"

namespace vessel::soft::test {
namespace {

constexpr uint64_t kIdtBase = 0x4000, kTssBase = 0x5000;

std::vector<uint8_t> bytes_of(const Xbyak::CodeGenerator& g) { return { g.getCode(), g.getCode() + g.getSize() }; }

// 64-bit TSS in GDT slot 0x38 and an IDT at kIdtBase (gates added with gate64()).
void setup_idt_tss(SoftHarness& h)
{
    Cpu& c = h.cpu();
    uint64_t desc = 0x67 | ((kTssBase & 0xffffff) << 16) | (0x9ULL << 40) | (1ULL << 47);
    h.write<uint64_t>(kGdtBase + 0x38, desc);
    h.write<uint64_t>(kGdtBase + 0x40, 0);
    c.tr = unpack_descriptor(0x38, desc | (2ULL << 40));
    c.idt = { kIdtBase, 0xfff };
}

void gate64(SoftHarness& h, uint8_t vector, uint64_t handler, unsigned ist = 0, unsigned dpl = 0)
{
    uint64_t lo = (handler & 0xffff) | (0x08ULL << 16) | (static_cast<uint64_t>(ist) << 32) | (0xeULL << 40)
        | (static_cast<uint64_t>(dpl) << 45) | (1ULL << 47) | (((handler >> 16) & 0xffff) << 48);
    h.write<uint64_t>(kIdtBase + vector * 16u, lo);
    h.write<uint64_t>(kIdtBase + vector * 16u + 8, handler >> 32);
}

TEST(SoftSysProgram, RealToLongModeSwitch)
{
    SoftHarness h(CpuMode::Real);
    Cpu& c = h.cpu();
    // Page tables (the real-mode harness has none): 1 GiB identity page.
    h.write<uint64_t>(kPml4, kPdpt | 7);
    h.write<uint64_t>(kPdpt, 0x87);
    // GDT pseudo-descriptor for LGDT.
    h.write<uint16_t>(0x600, 0x47);
    h.write<uint32_t>(0x602, static_cast<uint32_t>(kGdtBase));
    c.gdt = { 0, 0 };

    // 16-bit: lgdtl [0x600]; mov cr0, esi; jmp dword 0x18:0x7100
    std::vector<uint8_t> real = { 0x66, 0x0f, 0x01, 0x16, 0x00, 0x06, 0x0f, 0x22, 0xc6, 0x66, 0xea, 0x00, 0x71,
        0x00, 0x00, 0x18, 0x00 };
    // 32-bit: mov cr4, ebx; mov cr3, edi; wrmsr; mov cr0, ebp; jmp 0x08:0x7200
    std::vector<uint8_t> prot = { 0x0f, 0x22, 0xe3, 0x0f, 0x22, 0xdf, 0x0f, 0x30, 0x0f, 0x22, 0xc5, 0xea, 0x00,
        0x72, 0x00, 0x00, 0x08, 0x00 };
    // 64-bit: cpuid; hlt
    std::vector<uint8_t> longm = { 0x0f, 0xa2, 0xf4 };
    h.load(prot, 0x7100);
    h.load(longm, 0x7200);
    h.load(real, 0x7000);
    c.gpr[RSI] = c.cr0 | x86::kCr0Pe;
    c.gpr[RBX] = x86::kCr4Pae;
    c.gpr[RDI] = kPml4;
    c.gpr[RCX] = msr::kEfer;
    c.gpr[RAX] = x86::kEferLme;
    c.gpr[RDX] = 0;
    c.gpr[RBP] = c.cr0 | x86::kCr0Pe | x86::kCr0Pg;

    RunResult r = h.run(100);
    ASSERT_EQ(r.kind, RunResult::Halted) << r.abort_message;
    EXPECT_EQ(c.mode, CpuMode::Long64);
    EXPECT_EQ(c.seg[CS].selector, 0x08);
    EXPECT_TRUE(c.efer & x86::kEferLma);
    EXPECT_EQ(c.gdt.base, kGdtBase);
    EXPECT_EQ(c.rip, 0x7203u);
    EXPECT_EQ(c.gpr[RAX], guest_tsc_khz() / 1000); // leaf 0x100 (RAX held LME) reads as leaf 0x16
}

TEST(SoftSysProgram, SyscallSwapgsSysretAndUserFault)
{
    SoftHarness h(CpuMode::Long64);
    Cpu& c = h.cpu();
    setup_idt_tss(h);
    constexpr uint64_t kKernel = 0x110000, kUser = 0x120000, kGpHandler = 0x130000;
    gate64(h, kExcGP, kGpHandler);
    h.write<uint64_t>(kTssBase + 4, 0x2f0000); // RSP0

    // swapgs; hlt; swapgs; sysretq (Xbyak has no system instructions)
    std::vector<uint8_t> kernel = { 0x0f, 0x01, 0xf8, 0xf4, 0x0f, 0x01, 0xf8, 0x48, 0x0f, 0x07 };
    h.load(kernel, kKernel);
    Xbyak::CodeGenerator u;
    u.syscall();
    u.hlt(); // CPL 3: #GP
    h.load(bytes_of(u), kUser);
    std::vector<uint8_t> gp_handler = { 0xf4 };
    h.load(gp_handler, kGpHandler);

    c.msrs.star = (0x20ULL << 48) | (0x08ULL << 32);
    c.msrs.lstar = kKernel;
    c.msrs.sfmask = kIF;
    c.msrs.kernel_gs_base = 0xffff888000001000ULL;
    // Enter user mode: CS 0x33, SS 0x2b.
    set_segment(c, CS, unpack_descriptor(0x33, h.read<uint64_t>(kGdtBase + 0x30)));
    set_segment(c, SS, unpack_descriptor(0x2b, h.read<uint64_t>(kGdtBase + 0x28)));
    c.rip = kUser;
    c.gpr[RSP] = 0x280000;
    c.rflags |= kIF;
    ASSERT_EQ(c.cpl, 3);

    RunResult r = h.run(100, true);
    ASSERT_EQ(r.kind, RunResult::Halted) << r.abort_message;
    EXPECT_EQ(c.cpl, 0);
    EXPECT_EQ(c.rip, kKernel + 4);
    EXPECT_EQ(c.segbase[GS], 0xffff888000001000ULL);
    EXPECT_EQ(c.gpr[RCX], kUser + 2);
    EXPECT_FALSE(c.rflags & kIF);

    r = h.run(100, true);
    ASSERT_EQ(r.kind, RunResult::Halted) << r.abort_message;
    EXPECT_EQ(c.rip, kGpHandler + 1);
    EXPECT_EQ(c.cpl, 0);
    EXPECT_EQ(c.gpr[RSP], 0x2f0000u - 48);
    EXPECT_EQ(h.read<uint64_t>(0x2f0000 - 48), 0u);           // #GP(0)
    EXPECT_EQ(h.read<uint64_t>(0x2f0000 - 40), kUser + 2);    // the user HLT
    EXPECT_EQ(h.read<uint64_t>(0x2f0000 - 32), 0x33u);
    EXPECT_EQ(h.read<uint64_t>(0x2f0000 - 16), 0x280000u);
    EXPECT_EQ(h.read<uint64_t>(0x2f0000 - 8), 0x2bu);
    EXPECT_EQ(c.segbase[GS], 0u); // swapped back before SYSRET
}

TEST(SoftSysProgram, PageFaultOnIstStackThenIretq)
{
    SoftHarness h(CpuMode::Long64);
    Cpu& c = h.cpu();
    setup_idt_tss(h);
    constexpr uint64_t kPfHandler = 0x140000;
    gate64(h, kExcPF, kPfHandler, 3);
    h.write<uint64_t>(kTssBase + 0x24 + 16, 0x2e0000); // IST3

    std::vector<uint8_t> pf_handler = { 0xf4 }; // hlt
    h.load(pf_handler, kPfHandler);
    std::vector<uint8_t> code = { 0x0f, 0x01, 0x13, 0xf4 }; // lgdt [rbx] (#PF: RBX not mapped); hlt
    h.load(code);
    c.gpr[RBX] = 0x40000000;

    RunResult r = h.run(100, true);
    ASSERT_EQ(r.kind, RunResult::Halted) << r.abort_message;
    EXPECT_EQ(c.rip, kPfHandler + 1) << std::hex << c.rip << " insns " << r.insns;
    EXPECT_EQ(c.cr2, 0x40000000u);
    EXPECT_EQ(c.gpr[RSP], 0x2e0000u - 48);
    EXPECT_EQ(h.read<uint64_t>(0x2e0000 - 48), 0u);
    EXPECT_EQ(h.read<uint64_t>(0x2e0000 - 40), kCodeBase);

    // Return with IRETQ after dropping the error code by hand; the retried LGDT now works.
    c.gpr[RSP] += 8;
    c.gpr[RBX] = kDataBase;
    h.write<uint16_t>(kDataBase, 0x47);
    h.write<uint64_t>(kDataBase + 2, kGdtBase);
    std::vector<uint8_t> iretq = { 0x48, 0xcf };
    h.load(iretq, kPfHandler + 1);
    c.rip = kPfHandler + 1;
    r = h.run(100, true);
    ASSERT_EQ(r.kind, RunResult::Halted) << r.abort_message;
    EXPECT_EQ(c.rip, kCodeBase + 4);
    EXPECT_EQ(c.gpr[RSP], kStackTop);
}

TEST(SoftSysProgram, RealModeIntAndIret)
{
    SoftHarness h(CpuMode::Real);
    Cpu& c = h.cpu();
    c.idt = { 0, 0x3ff };
    h.write<uint16_t>(0x10 * 4, 0x0100);
    h.write<uint16_t>(0x10 * 4 + 2, 0x0800); // handler at 0800:0100 = 0x8100
    std::vector<uint8_t> code = { 0xcd, 0x10, 0xf4 };   // int 0x10; hlt
    std::vector<uint8_t> handler = { 0xfa, 0xcf };       // cli; iret
    h.load(handler, 0x8100);
    h.load(code, 0x7000);
    c.rflags |= kIF;
    RunResult r = h.run(100, true);
    ASSERT_EQ(r.kind, RunResult::Halted) << r.abort_message;
    EXPECT_EQ(c.rip, 0x7003u);
    EXPECT_EQ(c.seg[CS].selector, 0);
    EXPECT_TRUE(c.rflags & kIF); // restored by IRET
    EXPECT_EQ(c.gpr[RSP], 0x8000u);
}

TEST(SoftSysProgram, PortIo)
{
    SoftHarness h(CpuMode::Long64);
    Cpu& c = h.cpu();
    Xbyak::CodeGenerator g;
    g.out_(0x80, g.al);
    g.in_(g.eax, g.dx);
    g.rep();
    g.outsb();
    g.hlt();
    h.load(bytes_of(g));
    c.gpr[RAX] = 0x5a;
    c.gpr[RDX] = 0x3f8;
    c.gpr[RCX] = 4;
    c.gpr[RSI] = kDataBase;
    h.write<uint32_t>(kDataBase, 0x64636261);
    h.io.pio_value = 0x11223344;
    RunResult r = h.run(100);
    ASSERT_EQ(r.kind, RunResult::Halted) << r.abort_message;
    EXPECT_EQ(h.io.writes, 5);
    EXPECT_EQ(h.io.reads, 1);
    EXPECT_EQ(h.io.last_port, 0x3f8);
    EXPECT_EQ(h.io.last_value, static_cast<uint64_t>('d'));
    EXPECT_EQ(c.gpr[RAX], 0x11223344u);
    EXPECT_EQ(c.gpr[RCX], 0u);
    EXPECT_EQ(c.gpr[RSI], kDataBase + 4);
}

} // namespace
} // namespace vessel::soft::test
