// Soft engine translator: targeted tests on real guest code through the block cache and
// execute(): faults inside translated blocks (propagated and delivered through the IDT),
// self-modifying code, host writes to code pages, remapped code pages, the instruction budget
// and attention requests, CALL/RET chains and recursion. Each test runs with JitMode::Eager
// (translated before the first run) and JitMode::On (translated once hot).
#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <xbyak/xbyak.h>

#include "engine/soft/flags.h"
#include "engine/soft/segments.h"
#include "soft_test_support.h"

namespace vessel::soft::test {
namespace {

using Xbyak::CodeGenerator;
using namespace Xbyak::util;

constexpr uint64_t kIdtBase = 0x4000, kTssBase = 0x5000;
constexpr uint64_t kPtArea = 0xc00000; // 4 KiB page tables for split 2 MiB pages

std::vector<uint8_t> bytes_of(const CodeGenerator& g)
{
    return { g.getCode(), g.getCode() + g.getSize() };
}

// 64-bit TSS in GDT slot 0x38 and an IDT at kIdtBase.
void setup_idt_tss(SoftHarness& h)
{
    Cpu& c = h.cpu();
    uint64_t desc = 0x67 | ((kTssBase & 0xffffff) << 16) | (0x9ULL << 40) | (1ULL << 47);
    h.write<uint64_t>(kGdtBase + 0x38, desc);
    h.write<uint64_t>(kGdtBase + 0x40, 0);
    c.tr = unpack_descriptor(0x38, desc | (2ULL << 40));
    c.idt = { kIdtBase, 0xfff };
}

void gate64(SoftHarness& h, uint8_t vector, uint64_t handler)
{
    uint64_t lo
        = (handler & 0xffff) | (0x08ULL << 16) | (0xeULL << 40) | (1ULL << 47) | (((handler >> 16) & 0xffff) << 48);
    h.write<uint64_t>(kIdtBase + vector * 16u, lo);
    h.write<uint64_t>(kIdtBase + vector * 16u + 8, handler >> 32);
}

// The 4 KiB page table of the 2 MiB region holding `gpa` (identity; split on first use).
uint64_t page_table(SoftHarness& h, uint64_t gpa)
{
    uint64_t i = gpa >> 21;
    uint64_t pde = h.read<uint64_t>(kPd + i * 8);
    if (!(pde & 0x80))
        return pde & ~0xfffULL;
    uint64_t pt = kPtArea + i * 0x1000;
    for (uint64_t j = 0; j < 512; ++j)
        h.write<uint64_t>(pt + j * 8, (i << 21) | (j << 12) | 7);
    h.write<uint64_t>(kPd + i * 8, pt | 7);
    h.cpu().tlb.flush();
    return pt;
}
uint64_t pte_address(SoftHarness& h, uint64_t linear)
{
    return page_table(h, linear) + ((linear >> 12) & 511) * 8;
}

class SoftJit : public ::testing::TestWithParam<JitMode> {
protected:
    SoftHarness h { CpuMode::Long64, 16 << 20, GetParam() };
    Cpu& c { h.cpu() };

    uint64_t translations() { return h.cache().jit() ? h.cache().jit()->translations() : 0; }
    // The write observer a SoftEngine installs (SoftEngine::memory_written).
    void observe_host_writes()
    {
        SoftMachine& m = h.machine();
        h.memory().set_write_observer([&m](uint64_t gpa, uint64_t len) {
            for (uint64_t page = gpa & ~0xfffULL; page < gpa + len; page += 0x1000)
                if (m.is_code_page(page))
                    m.code_page_written(page);
        });
    }
};

// (a) #PF on a data read inside a hot translated loop, propagated: RIP at the faulting MOV,
// registers and flags as the instructions before it left them, CR2 the address.
TEST_P(SoftJit, PageFaultInTranslatedBlockPropagates)
{
    constexpr uint64_t kPages = 0x400000;
    for (int i = 0; i < 6; ++i)
        h.write<uint64_t>(kPages + i * 0x1000, i + 1);
    h.write<uint64_t>(pte_address(h, kPages + 6 * 0x1000), 0); // the 7th page is not present

    CodeGenerator g;
    Xbyak::Label top, fault;
    g.L(top);
    g.inc(rax);
    g.cmp(rax, 100);
    g.L(fault);
    g.add(rbx, qword[rsi]);
    g.add(rsi, 0x1000);
    g.jmp(top);
    h.load(bytes_of(g));
    c.gpr[RSI] = kPages;
    uint64_t fault_rip = kCodeBase + (fault.getAddress() - g.getCode());

    RunResult r = h.run(10'000);
    ASSERT_EQ(r.kind, RunResult::Fault) << int(r.kind) << " " << r.abort_message;
    EXPECT_EQ(r.fault.vector, kExcPF);
    EXPECT_EQ(r.fault.error_code, 0u); // not present, read, supervisor
    EXPECT_EQ(r.fault.cr2, kPages + 6 * 0x1000);
    EXPECT_EQ(c.rip, fault_rip);
    EXPECT_EQ(c.gpr[RAX], 7u);
    EXPECT_EQ(c.gpr[RBX], 21u); // 1 + ... + 6
    EXPECT_EQ(c.gpr[RSI], kPages + 6 * 0x1000);
    EXPECT_EQ(get_rflags(c) & kArithFlags, kCF | kSF | kPF); // cmp 7, 100: 0x...a3
    EXPECT_GT(translations(), 0u);
}

// The same for a write, with an earlier store in the same block already done.
TEST_P(SoftJit, PageFaultOnWriteKeepsEarlierStores)
{
    constexpr uint64_t kPages = 0x400000;
    h.write<uint64_t>(pte_address(h, kPages + 5 * 0x1000), 0);
    CodeGenerator g;
    Xbyak::Label top, fault;
    g.L(top);
    g.inc(rax);
    g.mov(qword[rdi + rax * 8], rax); // data area
    g.sub(rcx, 3);
    g.L(fault);
    g.mov(dword[rsi + 8], ecx);
    g.add(rsi, 0x1000);
    g.jmp(top);
    h.load(bytes_of(g));
    c.gpr[RSI] = kPages;
    c.gpr[RDI] = kDataBase;
    uint64_t fault_rip = kCodeBase + (fault.getAddress() - g.getCode());

    RunResult r = h.run(10'000);
    ASSERT_EQ(r.kind, RunResult::Fault);
    EXPECT_EQ(r.fault.vector, kExcPF);
    EXPECT_EQ(r.fault.error_code, kPfWrite);
    EXPECT_EQ(r.fault.cr2, kPages + 5 * 0x1000 + 8);
    EXPECT_EQ(c.rip, fault_rip);
    EXPECT_EQ(c.gpr[RAX], 6u);
    EXPECT_EQ(c.gpr[RCX], static_cast<uint64_t>(-18));
    EXPECT_EQ(h.read<uint64_t>(kDataBase + 6 * 8), 6u);
    EXPECT_EQ(h.read<uint32_t>(kPages + 4 * 0x1000 + 8), static_cast<uint32_t>(-15));
}

// (a) #PF delivered through the IDT: the handler maps the page CR2 names and returns with IRETQ;
// the retried load succeeds and the loop finishes with the right sum.
TEST_P(SoftJit, PageFaultDeliveredHandlerMapsPageAndReturns)
{
    constexpr uint64_t kPages = 0x400000, kHandler = 0x140000, kCount = kDataBase + 0x800;
    setup_idt_tss(h);
    gate64(h, kExcPF, kHandler);
    uint64_t pt = page_table(h, kPages);
    for (int i = 0; i < 8; ++i)
        h.write<uint64_t>(kPages + i * 0x1000, i + 1);
    h.write<uint64_t>(pte_address(h, kPages + 3 * 0x1000), 0);
    h.write<uint64_t>(pte_address(h, kPages + 6 * 0x1000), 0);

    CodeGenerator hg;
    hg.push(rax);
    hg.push(rcx);
    hg.db(0x0f), hg.db(0x20), hg.db(0xd0); // mov rax, cr2
    hg.mov(rcx, rax);
    hg.shr(rcx, 12);
    hg.and_(ecx, 511);
    hg.and_(rax, -4096);
    hg.or_(rax, 7);
    hg.mov(qword[rcx * 8 + static_cast<int>(pt)], rax);
    hg.db(0x0f), hg.db(0x01), hg.db(0x38); // invlpg [rax]
    hg.inc(qword[reinterpret_cast<const void*>(kCount)]);
    hg.pop(rcx);
    hg.pop(rax);
    hg.add(rsp, 8); // the error code
    hg.db(0x48), hg.db(0xcf); // iretq
    h.load(bytes_of(hg), kHandler);

    CodeGenerator g;
    Xbyak::Label top;
    g.L(top);
    g.inc(rax);
    g.mov(rdx, qword[rsi]);
    g.add(rbx, rdx);
    g.add(rsi, 0x1000);
    g.cmp(rax, 8);
    g.jne(top);
    g.hlt();
    h.load(bytes_of(g));
    c.gpr[RSI] = kPages;

    RunResult r = h.run(10'000, true);
    ASSERT_EQ(r.kind, RunResult::Halted) << int(r.kind) << " " << r.abort_message;
    EXPECT_EQ(c.gpr[RBX], 36u);
    EXPECT_EQ(c.gpr[RAX], 8u);
    EXPECT_EQ(c.gpr[RSP], kStackTop);
    EXPECT_EQ(h.read<uint64_t>(kCount), 2u);
    EXPECT_EQ(c.cr2, kPages + 6 * 0x1000);
    EXPECT_GT(translations(), 0u);
}

// (b) #GP(0) raised by a generic handler (RDMSR of an unknown MSR) in the middle of a hot block.
TEST_P(SoftJit, GeneralProtectionFromGenericHandlerMidBlock)
{
    CodeGenerator g;
    Xbyak::Label top, fault;
    g.L(top);
    g.inc(r10);
    g.mov(ecx, 0xc0000080); // EFER
    g.cmp(r10, 6);
    g.cmove(ecx, r9d); // 6th run: an MSR that does not exist
    g.L(fault);
    g.rdmsr();
    g.inc(r11);
    g.jmp(top);
    h.load(bytes_of(g));
    c.gpr[R9] = 0xdeadbeef;
    uint64_t fault_rip = kCodeBase + (fault.getAddress() - g.getCode());

    RunResult r = h.run(10'000);
    ASSERT_EQ(r.kind, RunResult::Fault);
    EXPECT_EQ(r.fault.vector, kExcGP);
    EXPECT_EQ(r.fault.error_code, 0u);
    EXPECT_EQ(c.rip, fault_rip);
    EXPECT_EQ(c.gpr[R10], 6u);
    EXPECT_EQ(c.gpr[R11], 5u);
    EXPECT_EQ(c.gpr[RCX], 0xdeadbeefu);
    EXPECT_EQ(get_rflags(c) & (kZF | kCF), kZF);

    // Delivered: the handler skips the RDMSR (2 bytes) and returns; the loop ends at r10 = 8.
    constexpr uint64_t kHandler = 0x140000;
    setup_idt_tss(h);
    gate64(h, kExcGP, kHandler);
    CodeGenerator hg;
    hg.add(rsp, 8);
    hg.add(qword[rsp], 2);
    hg.db(0x48), hg.db(0xcf); // iretq
    h.load(bytes_of(hg), kHandler);
    CodeGenerator g2;
    Xbyak::Label top2;
    g2.L(top2);
    g2.inc(r10);
    g2.mov(ecx, 0xc0000080);
    g2.test(r10, 1);
    g2.cmovnz(ecx, r9d); // odd runs fault
    g2.rdmsr();
    g2.inc(r11);
    g2.cmp(r10, 8);
    g2.jne(top2);
    g2.hlt();
    h.load(bytes_of(g2));
    h.cache().flush();
    c.gpr[R10] = 0;
    c.gpr[R11] = 0;
    r = h.run(10'000, true);
    ASSERT_EQ(r.kind, RunResult::Halted) << int(r.kind) << " " << r.abort_message;
    EXPECT_EQ(c.gpr[R11], 8u);
    EXPECT_EQ(c.fault_counts[kExcGP], 4u);
    EXPECT_EQ(c.gpr[RSP], kStackTop);
}

// (b) #UD from a generic handler (an SSE instruction once CR4.OSFXSR is clear) in the middle of
// a block that is already translated.
TEST_P(SoftJit, InvalidOpcodeFromGenericHandlerMidBlock)
{
    CodeGenerator g;
    Xbyak::Label top, fault;
    g.L(top);
    g.inc(rax);
    g.add(rdx, rax);
    g.L(fault);
    g.movaps(xmm0, xmm1);
    g.inc(rbx);
    g.jmp(top);
    h.load(bytes_of(g));
    uint64_t fault_rip = kCodeBase + (fault.getAddress() - g.getCode());
    RunResult r = h.run(1'000);
    ASSERT_EQ(r.kind, RunResult::Budget);
    EXPECT_GT(translations(), 0u);
    c.cr4 &= ~x86::kCr4Osfxsr;
    uint64_t before = c.gpr[RBX];
    r = h.run(1'000);
    ASSERT_EQ(r.kind, RunResult::Fault);
    EXPECT_EQ(r.fault.vector, kExcUD);
    EXPECT_EQ(c.rip, fault_rip);
    EXPECT_EQ(c.gpr[RAX], before + 1);
    EXPECT_EQ(c.gpr[RBX], before);
    EXPECT_EQ(c.gpr[RDX], (before + 1) * (before + 2) / 2);
}

// (c) Self-modifying code: a hot loop rewrites the immediate of its own first instruction.
TEST_P(SoftJit, SelfModifyingLoopSeesNewImmediate)
{
    CodeGenerator g;
    Xbyak::Label top;
    g.L(top);
    g.mov(ebx, 0x11111111); // BB imm32: the immediate is at top + 1
    g.add(rax, rbx);
    g.mov(dword[rip + top + 1], ecx);
    g.inc(ecx);
    g.cmp(ecx, 20);
    g.jne(top);
    g.hlt();
    h.load(bytes_of(g));
    c.gpr[RCX] = 1;
    RunResult r = h.run(10'000);
    ASSERT_EQ(r.kind, RunResult::Halted) << int(r.kind) << " " << r.abort_message;
    EXPECT_EQ(c.gpr[RAX], 0x11111111u + 171); // then 1 + 2 + ... + 18
}

// (c) ... and the immediate of the instruction right after the store, in the same block.
TEST_P(SoftJit, SelfModifyingStoreToNextInstruction)
{
    CodeGenerator g;
    Xbyak::Label top, next;
    g.L(top);
    g.mov(dword[rip + next + 1], ecx);
    g.L(next);
    g.mov(ebx, 0x11111111);
    g.add(rax, rbx);
    g.inc(ecx);
    g.cmp(ecx, 20);
    g.jne(top);
    g.hlt();
    h.load(bytes_of(g));
    c.gpr[RCX] = 1;
    RunResult r = h.run(10'000);
    ASSERT_EQ(r.kind, RunResult::Halted) << int(r.kind) << " " << r.abort_message;
    EXPECT_EQ(c.gpr[RAX], 190u); // 1 + ... + 19
}

// (d) The host rewrites a hot loop's code through GuestMemory (the write observer drops the
// page's blocks): the next run executes the new code.
TEST_P(SoftJit, HostWriteToCodePageRunsNewCode)
{
    CodeGenerator g;
    Xbyak::Label top;
    g.L(top);
    g.mov(ebx, 1);
    g.add(rax, rbx);
    g.cmp(ebx, 2);
    g.jne(top);
    g.hlt();
    h.load(bytes_of(g));
    observe_host_writes();
    RunResult r = h.run(1'000);
    ASSERT_EQ(r.kind, RunResult::Budget);
    EXPECT_GT(translations(), 0u);
    uint64_t sum = c.gpr[RAX];
    ASSERT_TRUE(h.memory().write_obj<uint32_t>(kCodeBase + 1, 2).ok());
    r = h.run(1'000);
    ASSERT_EQ(r.kind, RunResult::Halted) << int(r.kind) << " " << r.abort_message;
    EXPECT_EQ(c.gpr[RAX], sum + 2);
}

// (e) Remapping: the loop's linear page is pointed at another physical page (same code but for
// an immediate) by a PTE write + INVLPG, or by a CR3 write, inside the guest.
enum class Remap { Invlpg, Cr3 };
void remap_test(SoftHarness& h, Remap how)
{
    Cpu& c = h.cpu();
    constexpr uint64_t kLinear = 0x400000, kPhys1 = 0x500000, kPhys2 = 0x600000;
    uint64_t pte = pte_address(h, kLinear);
    if (how == Remap::Cr3) {
        // A second hierarchy: everything identity as before except kLinear → kPhys2.
        constexpr uint64_t kPml4b = 0x700000, kPdptb = 0x701000, kPdb = 0x702000, kPtb = 0x703000;
        h.write<uint64_t>(kPml4b, kPdptb | 7);
        h.write<uint64_t>(kPdptb, kPdb | 7);
        for (uint64_t i = 0; i < 512; ++i)
            h.write<uint64_t>(kPdb + i * 8, h.read<uint64_t>(kPd + i * 8));
        for (uint64_t j = 0; j < 512; ++j)
            h.write<uint64_t>(kPtb + j * 8, h.read<uint64_t>(pte - ((kLinear >> 12) & 511) * 8 + j * 8));
        h.write<uint64_t>(kPtb, kPhys2 | 7);
        h.write<uint64_t>(kPdb + (kLinear >> 21) * 8, kPtb | 7);
        c.gpr[RBP] = kPml4b;
    }
    h.write<uint64_t>(pte, kPhys1 | 7);
    c.tlb.flush();
    for (uint32_t imm : { 1u, 2u }) {
        CodeGenerator g;
        Xbyak::Label top, done;
        g.L(top);
        g.mov(ebx, imm);
        g.add(rax, rbx);
        g.dec(rcx);
        g.jnz(top);
        g.test(rdx, rdx);
        g.jnz(done);
        g.mov(edx, 1);
        g.mov(rcx, 10);
        if (how == Remap::Invlpg) {
            g.mov(qword[rdi], rsi);
            g.db(0x41), g.db(0x0f), g.db(0x01), g.db(0x38); // invlpg [r8]
        } else {
            g.db(0x0f), g.db(0x22), g.db(0xdd); // mov cr3, rbp
        }
        g.jmp(top);
        g.L(done);
        g.hlt();
        h.load(bytes_of(g), imm == 1 ? kPhys1 : kPhys2);
    }
    c.rip = kLinear;
    c.gpr[RCX] = 10;
    c.gpr[RDI] = pte;
    c.gpr[RSI] = kPhys2 | 7;
    c.gpr[R8] = kLinear;
    RunResult r = h.run(10'000);
    ASSERT_EQ(r.kind, RunResult::Halted) << int(r.kind) << " " << r.abort_message;
    EXPECT_EQ(c.gpr[RAX], 30u); // 10 runs of the old code, 10 of the new
}

TEST_P(SoftJit, RemapCodePageWithInvlpg)
{
    remap_test(h, Remap::Invlpg);
}
TEST_P(SoftJit, RemapCodePageWithCr3Write)
{
    remap_test(h, Remap::Cr3);
}

// (e2) A block whose last instruction spills into the next page, which is then remapped by a
// PTE write + INVLPG of that page only: the next runs use the new page's bytes (the upper half
// of MOV EBX's immediate lives there).
TEST_P(SoftJit, RemapSecondPageOfASpillingBlock)
{
    constexpr uint64_t kLinear = 0x400000, kFirst = 0x500000, kPhys1 = 0x600000, kPhys2 = 0x700000;
    constexpr uint64_t kStart = 0xff0; // the loop starts 16 bytes before the page end
    h.write<uint64_t>(pte_address(h, kLinear), kFirst | 7);
    uint64_t pte2 = pte_address(h, kLinear + 0x1000);
    h.write<uint64_t>(pte2, kPhys1 | 7);
    c.tlb.flush();
    for (uint32_t high : { 1u, 2u }) {
        CodeGenerator g;
        Xbyak::Label top, done;
        g.L(top);
        for (int i = 0; i < 13; ++i)
            g.nop();
        g.mov(ebx, (high << 16) | 1); // BB at 0xffd; imm32 low half at 0xffe..0xfff, high half in page 2
        g.add(rax, rbx);
        g.dec(rcx);
        g.jnz(top, CodeGenerator::T_NEAR);
        g.test(rdx, rdx);
        g.jnz(done, CodeGenerator::T_NEAR);
        g.mov(edx, 1);
        g.mov(rcx, 10);
        g.mov(qword[rdi], rsi);
        g.db(0x41), g.db(0x0f), g.db(0x01), g.db(0x38); // invlpg [r8]
        g.jmp(top, CodeGenerator::T_NEAR);
        g.L(done);
        g.hlt();
        std::vector<uint8_t> code = bytes_of(g);
        // Bytes up to the page end go to the first page, the rest to this version's second page.
        size_t split = 0x1000 - kStart;
        h.load(std::vector<uint8_t>(code.begin(), code.begin() + static_cast<long>(split)), kFirst + kStart);
        h.load(std::vector<uint8_t>(code.begin() + static_cast<long>(split), code.end()), high == 1 ? kPhys1 : kPhys2);
    }
    c.rip = kLinear + kStart;
    c.gpr[RCX] = 10;
    c.gpr[RAX] = 0;
    c.gpr[RDX] = 0;
    c.gpr[RDI] = pte2;
    c.gpr[RSI] = kPhys2 | 7;
    c.gpr[R8] = kLinear + 0x1000; // INVLPG of the second page only
    RunResult r = h.run(10'000);
    ASSERT_EQ(r.kind, RunResult::Halted) << int(r.kind) << " " << r.abort_message;
    EXPECT_EQ(c.gpr[RAX], 10u * 0x10001 + 10u * 0x20001); // 10 runs of each version
}

// (f) The budget: an endless translated loop stops after about `budget` instructions.
TEST_P(SoftJit, BudgetEndsEndlessLoop)
{
    CodeGenerator g;
    Xbyak::Label top;
    g.L(top);
    g.inc(rax);
    g.add(rbx, 3);
    g.jmp(top);
    h.load(bytes_of(g));
    uint64_t total = 0;
    for (uint64_t budget : { 1ULL, 2ULL, 7ULL, 100ULL, 1000ULL, 12345ULL, 1000000ULL }) {
        uint64_t n = execute(c, h.cache(), budget, Faults::Propagate);
        EXPECT_GE(n, budget);
        EXPECT_LT(n, budget + 64);
        total += n;
        EXPECT_EQ(c.gpr[RAX] * 3, total) << "budget " << budget; // whole iterations: 3 instructions each
        EXPECT_EQ(c.gpr[RBX], c.gpr[RAX] * 3);
    }
    EXPECT_GT(translations(), 0u);
}

// (f) c.attention raised from another thread ends an endless translated loop.
TEST_P(SoftJit, AttentionFromAnotherThreadEndsRun)
{
    CodeGenerator g;
    Xbyak::Label top;
    g.L(top);
    g.inc(rax);
    g.jmp(top);
    h.load(bytes_of(g));
    (void)execute(c, h.cache(), 100, Faults::Propagate); // hot and translated
    std::thread kick([this] {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        c.attention.store(true);
    });
    uint64_t n = execute(c, h.cache(), ~0ULL >> 1, Faults::Propagate);
    kick.join();
    EXPECT_TRUE(c.attention.load());
    EXPECT_GT(n, 0u);
    EXPECT_LT(n, ~0ULL >> 2);
    c.attention.store(false);
    EXPECT_GT(translations(), 0u);
}

// (g) CALL/RET chains and deep recursion.
TEST_P(SoftJit, RecursiveFibonacci)
{
    CodeGenerator g;
    Xbyak::Label fib, base;
    g.mov(edi, 20);
    g.call(fib);
    g.hlt();
    g.L(fib);
    g.cmp(rdi, 2);
    g.jb(base);
    g.push(rdi);
    g.dec(rdi);
    g.call(fib);
    g.pop(rdi);
    g.push(rax);
    g.lea(rdi, ptr[rdi - 2]);
    g.call(fib);
    g.pop(rcx);
    g.add(rax, rcx);
    g.ret();
    g.L(base);
    g.mov(rax, rdi);
    g.ret();
    h.load(bytes_of(g));
    RunResult r = h.run(10'000'000);
    ASSERT_EQ(r.kind, RunResult::Halted) << int(r.kind) << " " << r.abort_message;
    EXPECT_EQ(c.gpr[RAX], 6765u);
    EXPECT_EQ(c.gpr[RSP], kStackTop);
    EXPECT_GT(translations(), 0u);
}

TEST_P(SoftJit, CallRetChainAcrossPages)
{
    // f0 calls f1 ... f9, each in its own page, each adding its number before and after the call.
    constexpr int kDepth = 10;
    constexpr uint64_t kFuncs = 0x180000;
    for (int i = 0; i < kDepth; ++i) {
        CodeGenerator f;
        f.add(rax, i + 1);
        if (i + 1 < kDepth) {
            f.mov(rdx, kFuncs + (i + 1) * 0x1000);
            f.call(rdx); // indirect (generic)
            f.db(0xe8); // call rel32 to the next function's second entry
            f.dd(static_cast<uint32_t>(kFuncs + (i + 1) * 0x1000 + 0x800 - (kFuncs + i * 0x1000 + f.getSize() + 4)));
        }
        f.imul(rax, rax, 3);
        f.ret();
        h.load(bytes_of(f), kFuncs + i * 0x1000);
        CodeGenerator e; // second entry: just counts
        e.inc(rbx);
        e.ret();
        h.load(bytes_of(e), kFuncs + i * 0x1000 + 0x800);
    }
    CodeGenerator g;
    Xbyak::Label top;
    g.L(top);
    g.mov(rdx, kFuncs);
    g.call(rdx);
    g.dec(rcx);
    g.jnz(top);
    g.hlt();
    h.load(bytes_of(g));
    c.gpr[RCX] = 8;
    RunResult r = h.run(1'000'000);
    ASSERT_EQ(r.kind, RunResult::Halted) << int(r.kind) << " " << r.abort_message;

    // The same with the interpreter only.
    SoftHarness ref(CpuMode::Long64, 16 << 20, JitMode::Off);
    for (uint64_t a = kFuncs; a < kFuncs + kDepth * 0x1000; a += 0x800)
        ASSERT_TRUE(ref.memory().write(a, std::span(h.memory().host_ptr(a, 0x800), 0x800)).ok());
    ref.load(bytes_of(g));
    ref.cpu().gpr[RCX] = 8;
    RunResult rr = ref.run(1'000'000);
    ASSERT_EQ(rr.kind, RunResult::Halted);
    EXPECT_EQ(c.gpr[RAX], ref.cpu().gpr[RAX]);
    EXPECT_EQ(c.gpr[RBX], 8u * (kDepth - 1));
    EXPECT_EQ(c.gpr[RSP], kStackTop);
    EXPECT_EQ(r.insns, rr.insns);
    EXPECT_GT(translations(), 0u);
}

INSTANTIATE_TEST_SUITE_P(Soft, SoftJit, ::testing::Values(JitMode::Eager, JitMode::On),
    [](const ::testing::TestParamInfo<JitMode>& i) { return i.param == JitMode::Eager ? "Eager" : "On"; });

} // namespace
} // namespace vessel::soft::test
