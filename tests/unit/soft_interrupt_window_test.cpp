// The soft engine returns to the vCPU as soon as a pending interrupt becomes deliverable
// (platform.h: interrupt_window_opened), not only at the end of its slice. Guest code that keeps
// interrupts enabled for a few instructions at a time (Linux's try_to_generate_entropy(): a loop
// of schedule() and mix_pool_bytes() under spinlocks) otherwise never takes its timer interrupt.
// The CPU runs real instruction bytes (SoftHarness) with a LAPIC from a whole soft irqchip.
#include <vector>

#include <gtest/gtest.h>
#include <xbyak/xbyak.h>

#include "engine/soft/flags.h"
#include "engine/soft/interpreter.h"
#include "irqchip_test_support.h"
#include "soft_test_support.h"

namespace vessel::soft::test {
namespace {

constexpr uint64_t kBudget = 1'000'000;

class SoftInterruptWindow : public ::testing::Test {
protected:
    SoftInterruptWindow()
    {
        chip.enable_lapics();
        h.cpu().lapic = &chip.lapic(0);
    }

    void load(const Xbyak::CodeGenerator& g) { h.load(std::vector<uint8_t>(g.getCode(), g.getCode() + g.getSize())); }

    void make_pending(uint8_t vector = 0x40)
    {
        ApicMessage m;
        m.dest = 0;
        m.vector = vector;
        chip.lapic(0).accept(m);
        h.cpu().attention.store(false); // what the vCPU loop does before it runs a slice
    }

    // Instructions one execute() call runs before it returns to the vCPU.
    uint64_t run_slice() { return execute(h.cpu(), h.cache(), kBudget); }

    irqchip_test::ChipHarness chip { 1 };
    SoftHarness h { CpuMode::Long64 };
};

// cli; 32 x nop; <open>; nop; cli; jmp back: interrupts are enabled for two instructions out of ~36.
void window_loop(Xbyak::CodeGenerator& g, void (*open)(Xbyak::CodeGenerator&))
{
    Xbyak::Label top;
    g.L(top);
    g.cli();
    for (int i = 0; i < 32; ++i)
        g.nop();
    open(g);
    g.nop();
    g.cli();
    g.jmp(top);
}

TEST_F(SoftInterruptWindow, StiWithAPendingInterruptEndsTheSlice)
{
    Xbyak::CodeGenerator g;
    window_loop(g, [](Xbyak::CodeGenerator& c) { c.sti(); });
    load(g);
    make_pending();
    ASSERT_TRUE(chip.lapic(0).has_pending_interrupt());
    uint64_t done = run_slice();
    EXPECT_LT(done, 100u) << "the slice ran on past the STI";
    EXPECT_TRUE(h.cpu().attention.load());
    EXPECT_TRUE(h.cpu().rflags & kIF);
}

TEST_F(SoftInterruptWindow, PopfSettingIfWithAPendingInterruptEndsTheSlice)
{
    Xbyak::CodeGenerator g;
    window_loop(g, [](Xbyak::CodeGenerator& c) {
        c.push(0x202); // IF | reserved bit 1
        c.popfq();
    });
    load(g);
    make_pending();
    ASSERT_TRUE(chip.lapic(0).has_pending_interrupt());
    uint64_t done = run_slice();
    EXPECT_LT(done, 100u) << "the slice ran on past the POPF";
    EXPECT_TRUE(h.cpu().attention.load());
    EXPECT_TRUE(h.cpu().rflags & kIF);
}

// mov cr8, <register 0-7> (Xbyak has no CR8 operand): REX.R 0F 22 /r.
void mov_cr8(Xbyak::CodeGenerator& g, uint8_t reg)
{
    for (uint8_t b : { uint8_t { 0x44 }, uint8_t { 0x0f }, uint8_t { 0x22 }, static_cast<uint8_t>(0xc0 | reg) })
        g.db(b);
}

TEST_F(SoftInterruptWindow, LoweringTheTprWithAPendingInterruptEndsTheSlice)
{
    // IF stays set; the TPR (CR8) masks vector 0x40 except for a short window.
    Xbyak::CodeGenerator g;
    Xbyak::Label top;
    g.mov(g.eax, 15);
    g.mov(g.ecx, 0);
    g.L(top);
    mov_cr8(g, 0); // rax
    for (int i = 0; i < 32; ++i)
        g.nop();
    mov_cr8(g, 1); // rcx
    g.nop();
    g.jmp(top);
    load(g);
    h.cpu().rflags |= kIF;
    chip.lapic(0).set_tpr(15);
    make_pending();
    EXPECT_FALSE(chip.lapic(0).has_pending_interrupt()); // masked by the TPR
    uint64_t done = run_slice();
    EXPECT_LT(done, 100u) << "the slice ran on past the TPR write";
    EXPECT_TRUE(chip.lapic(0).has_pending_interrupt());
}

// The STI shadow: with an interrupt pending, the first point where the vCPU loop (modelled here:
// budget 1 while a shadow is open, as SoftVcpu::run) may deliver it comes after the instruction
// that follows STI has run — never before it (the interpreter may run the rest of that block too).
// VESSEL_JIT=eager runs this through the translator's inline STI.
TEST_F(SoftInterruptWindow, StiShadowCoversTheNextInstruction)
{
    using namespace Xbyak::util;
    Xbyak::CodeGenerator g;
    Xbyak::Label top;
    g.L(top); // IF clear here
    g.sti();
    g.inc(rax);
    g.inc(rbx);
    g.cli();
    g.jmp(top);
    load(g);
    Cpu& c = h.cpu();
    c.gpr[RAX] = c.gpr[RBX] = 0;
    c.rflags &= ~kIF;
    EXPECT_GE(execute(c, h.cache(), 400), 400u); // nothing pending: runs on (and gets hot)
    while (c.rip != kCodeBase)
        execute(c, h.cache(), 1);
    uint64_t rounds = c.gpr[RAX];
    ASSERT_EQ(c.gpr[RBX], rounds);
    make_pending();
    Lapic& lapic = chip.lapic(0);
    for (int i = 0; i < 8; ++i) {
        if ((c.rflags & kIF) && !c.interrupt_shadow && lapic.has_pending_interrupt())
            break;
        c.attention.store(false);
        execute(c, h.cache(), c.interrupt_shadow ? 1 : kBudget);
    }
    EXPECT_TRUE((c.rflags & kIF) && !c.interrupt_shadow) << "never deliverable";
    EXPECT_EQ(c.gpr[RAX], rounds + 1) << "the instruction after STI ran, once";
    EXPECT_LE(c.gpr[RBX], rounds + 1);
}

TEST_F(SoftInterruptWindow, NothingPendingRunsTheWholeSlice)
{
    Xbyak::CodeGenerator g;
    window_loop(g, [](Xbyak::CodeGenerator& c) { c.sti(); });
    load(g);
    h.cpu().attention.store(false);
    EXPECT_GE(run_slice(), kBudget);
    EXPECT_FALSE(h.cpu().attention.load());
}

} // namespace
} // namespace vessel::soft::test
