// Soft engine: Jcc JMP CALL RET LOOP* JCXZ/JECXZ/JRCXZ, PUSH POP ENTER LEAVE — real instruction
// bytes (Xbyak) through the decoder and the integer handlers.
#include "soft_int_test_support.h"

namespace vessel::soft::testing {
namespace {

using Xbyak::CodeGenerator;
using Xbyak::Label;

class SoftIntFlow : public SoftIntProgram { };

void host_jcc(CodeGenerator& g, unsigned cc, const Label& l, CodeGenerator::LabelType type)
{
    switch (cc) {
    case 0: g.jo(l, type); break;
    case 1: g.jno(l, type); break;
    case 2: g.jb(l, type); break;
    case 3: g.jnb(l, type); break;
    case 4: g.jz(l, type); break;
    case 5: g.jnz(l, type); break;
    case 6: g.jbe(l, type); break;
    case 7: g.jnbe(l, type); break;
    case 8: g.js(l, type); break;
    case 9: g.jns(l, type); break;
    case 10: g.jp(l, type); break;
    case 11: g.jnp(l, type); break;
    case 12: g.jl(l, type); break;
    case 13: g.jnl(l, type); break;
    case 14: g.jle(l, type); break;
    default: g.jnle(l, type); break;
    }
}

// The SDM's condition table, independent of the engine's test_cc.
bool condition(unsigned cc, uint64_t f)
{
    bool cf = f & kCF, zf = f & kZF, sf = f & kSF, of = f & kOF, pf = f & kPF;
    bool r = false;
    switch (cc >> 1) {
    case 0: r = of; break;
    case 1: r = cf; break;
    case 2: r = zf; break;
    case 3: r = cf || zf; break;
    case 4: r = sf; break;
    case 5: r = pf; break;
    case 6: r = sf != of; break;
    default: r = zf || sf != of; break;
    }
    return (cc & 1) ? !r : r;
}

TEST_F(SoftIntFlow, ConditionalJumpsFollowTheFlags)
{
    const uint64_t bits[] = { kCF, kPF, kZF, kSF, kOF };
    for (unsigned cc = 0; cc < 16; ++cc) {
        for (bool near : { false, true }) {
            CodeGenerator g;
            Label taken;
            host_jcc(g, cc, taken, near ? CodeGenerator::T_NEAR : CodeGenerator::T_SHORT);
            g.mov(g.eax, 2);
            g.hlt();
            g.L(taken);
            g.mov(g.eax, 1);
            g.hlt();
            for (unsigned combo = 0; combo < 32; ++combo) {
                uint64_t f = 0;
                for (unsigned b = 0; b < 5; ++b)
                    f |= (combo >> b) & 1 ? bits[b] : 0;
                set_flags(f);
                ASSERT_FALSE(run_code(g).has_value());
                EXPECT_EQ(cpu().gpr[RAX], condition(cc, f) ? 1u : 2u) << "cc " << cc << " flags " << f;
            }
        }
    }
    // Backward branch (negative displacement) with lazy flags from DEC.
    CodeGenerator loop;
    Label top;
    loop.mov(loop.ecx, 10);
    loop.xor_(loop.eax, loop.eax);
    loop.L(top);
    loop.add(loop.eax, 3);
    loop.dec(loop.ecx);
    loop.jnz(top);
    loop.hlt();
    ASSERT_FALSE(run_code(loop).has_value());
    EXPECT_EQ(cpu().gpr[RAX], 30u);
}

TEST_F(SoftIntFlow, CallRetAndIndirectBranches)
{
    CodeGenerator g;
    Label f1, f2, f3, after, after_mem, tail;
    g.mov(g.rsp, kStackTop);
    g.xor_(g.ebx, g.ebx);
    g.call(f1); // rel32
    g.lea(g.rax, g.ptr[g.rip + f2]);
    g.call(g.rax); // call r64
    g.mov(g.edx, kData);
    g.mov(g.qword[g.rdx], g.rax);
    g.call(g.qword[g.rdx]); // call m64
    g.lea(g.rcx, g.ptr[g.rip + after]);
    g.jmp(g.rcx); // jmp r64
    g.ud2();
    g.L(after);
    g.lea(g.rcx, g.ptr[g.rip + after_mem]);
    g.mov(g.qword[g.rdx + 8], g.rcx);
    g.jmp(g.qword[g.rdx + 8]); // jmp m64
    g.ud2();
    g.L(after_mem);
    g.push(7);
    g.push(8);
    g.call(f3); // ret 16 releases the two pushes
    g.mov(g.r8, g.rsp);
    g.lea(g.rcx, g.ptr[g.rip + tail]);
    g.push(g.rcx);
    g.ret();
    g.ud2();
    g.L(tail);
    g.hlt();
    g.L(f1);
    g.add(g.ebx, 1);
    g.ret();
    g.L(f2);
    g.add(g.ebx, 0x10);
    g.ret();
    g.L(f3);
    g.add(g.ebx, 0x100);
    g.ret(16);
    ASSERT_FALSE(run_code(g).has_value());
    EXPECT_EQ(cpu().gpr[RBX], 0x121u);
    EXPECT_EQ(cpu().gpr[R8], kStackTop);
    EXPECT_EQ(cpu().gpr[RSP], kStackTop);
}

TEST_F(SoftIntFlow, LoopsAndCounterJumps)
{
    CodeGenerator g;
    Label l1, l2, l3, z1, z2, z3, end;
    g.mov(g.rcx, 0x1'0000'0005); // LOOP with 64-bit counter: runs 2^32 + 5 times? Use ECX form below.
    g.mov(g.ecx, 5);
    g.xor_(g.eax, g.eax);
    g.L(l1);
    g.inc(g.eax);
    g.loop(l1); // 5 iterations
    // LOOPE: stops when ZF = 0.
    g.mov(g.ecx, 10);
    g.xor_(g.edx, g.edx);
    g.L(l2);
    g.inc(g.edx);
    g.cmp(g.edx, 3);
    g.loope(l2); // taken while edx == 3 ... only the first compare (1 != 3) ends it
    // LOOPNE: runs until edx == 7 or the count ends.
    g.mov(g.ecx, 100);
    g.L(l3);
    g.inc(g.edx);
    g.cmp(g.edx, 7);
    g.loopne(l3);
    g.mov(g.r8, g.rcx);
    // JRCXZ / JECXZ (67 prefix).
    g.xor_(g.ebx, g.ebx);
    g.mov(g.rcx, 0x1'0000'0000);
    g.jecxz(z1); // ECX = 0: taken
    g.or_(g.ebx, 1);
    g.L(z1);
    g.jrcxz(z2); // RCX != 0: not taken
    g.or_(g.ebx, 2);
    g.L(z2);
    g.xor_(g.ecx, g.ecx);
    g.jrcxz(z3);
    g.or_(g.ebx, 4);
    g.L(z3);
    // LOOP with a 32-bit counter (67 prefix) leaves RCX's upper half zero.
    g.mov(g.rcx, 0xffff'ffff'0000'0001);
    g.db(0x67);
    g.loop(end); // ECX 1 → 0: not taken; RCX = 0
    g.L(end);
    g.hlt();
    ASSERT_FALSE(run_code(g).has_value());
    EXPECT_EQ(cpu().gpr[RAX], 5u);
    EXPECT_EQ(cpu().gpr[RDX], 7u);
    EXPECT_EQ(cpu().gpr[R8], 100u - 6);
    EXPECT_EQ(cpu().gpr[RBX], 2u);
    EXPECT_EQ(cpu().gpr[RCX], 0u);
}

TEST_F(SoftIntFlow, PushPopForms)
{
    CodeGenerator g;
    g.mov(g.rsp, kStackTop);
    g.push(g.rsp); // pushes the old RSP
    g.pop(g.rax); // = kStackTop
    g.push(-2); // 6A: sign-extended to 64 bits
    g.pop(g.rbx);
    g.push(0x12345678); // 68
    g.pop(g.rcx);
    g.db(0x66);
    g.push(0x1234); // 66 68 iw: 16-bit push, RSP - 2
    g.mov(g.rdx, g.rsp);
    g.pop(g.si); // 16-bit pop merges
    g.mov(g.qword[g.rsp - 8], 0x55);
    g.push(g.qword[g.rsp - 8]); // push m64: the address uses RSP before the decrement
    g.pop(g.r9);
    g.push(0x77);
    g.pop(g.qword[g.rsp]); // pop m64: the address uses RSP after the increment
    g.mov(g.r10, g.qword[g.rsp]);
    g.push(g.r11);
    g.pop(g.rsp); // POP RSP: the popped value wins
    g.hlt();
    cpu().gpr[RSI] = 0xaaaa'aaaa'aaaa'aaaa;
    cpu().gpr[R11] = 0x4000;
    ASSERT_FALSE(run_code(g).has_value());
    EXPECT_EQ(cpu().gpr[RAX], kStackTop);
    EXPECT_EQ(cpu().gpr[RBX], ~1ULL);
    EXPECT_EQ(cpu().gpr[RCX], 0x12345678u);
    EXPECT_EQ(cpu().gpr[RDX], kStackTop - 2);
    EXPECT_EQ(cpu().gpr[RSI], 0xaaaa'aaaa'aaaa'1234u);
    EXPECT_EQ(cpu().gpr[R9], 0x55u);
    EXPECT_EQ(cpu().gpr[R10], 0x77u);
    EXPECT_EQ(peek<uint64_t>(kStackTop), 0x77u);
    EXPECT_EQ(cpu().gpr[RSP], 0x4000u);
}

TEST_F(SoftIntFlow, PushSegmentAndPopMemoryFault)
{
    cpu().seg[FS].selector = 0x33;
    CodeGenerator g;
    g.mov(g.rsp, kStackTop);
    g.mov(g.qword[g.rsp - 8], -1);
    g.push(g.fs); // system group: the selector (16 or 64 bits written), RSP - 8
    g.mov(g.rax, g.qword[g.rsp]);
    g.hlt();
    ASSERT_FALSE(run_code(g).has_value());
    EXPECT_EQ(cpu().gpr[RAX] & 0xffff, 0x0033u);
    EXPECT_EQ(cpu().gpr[RSP], kStackTop - 8);

    // POP m64 to a read-only page: #PF with RSP unchanged.
    make_readonly(kData);
    CodeGenerator q;
    q.mov(q.rsp, kStackTop);
    q.push(0x99);
    q.mov(q.rax, kData);
    q.pop(q.qword[q.rax]);
    q.hlt();
    auto f = run_code(q);
    ASSERT_TRUE(f.has_value());
    EXPECT_EQ(f->vector, kExcPF);
    EXPECT_EQ(cpu().gpr[RSP], kStackTop - 8);
}

TEST_F(SoftIntFlow, EnterLeave)
{
    CodeGenerator g;
    g.mov(g.rsp, kStackTop);
    g.mov(g.rbp, 0x1111);
    g.enter(0x20, 0); // push rbp; rbp = rsp; rsp -= 0x20
    g.mov(g.r8, g.rbp);
    g.mov(g.r9, g.rsp);
    g.enter(0x10, 3); // nested: copies 2 frame pointers from the old frame, then pushes the new one
    g.mov(g.r10, g.rbp);
    g.mov(g.r11, g.rsp);
    g.leave();
    g.mov(g.r12, g.rsp);
    g.mov(g.r13, g.rbp);
    g.leave();
    g.hlt();
    // The old frame's display entries at [rbp-8] and [rbp-16].
    poke<uint64_t>(kStackTop - 8 - 8, 0xaaaa);
    poke<uint64_t>(kStackTop - 8 - 16, 0xbbbb);
    ASSERT_FALSE(run_code(g).has_value());
    uint64_t frame1 = kStackTop - 8;
    EXPECT_EQ(cpu().gpr[R8], frame1);
    EXPECT_EQ(cpu().gpr[R9], frame1 - 0x20);
    EXPECT_EQ(peek<uint64_t>(frame1), 0x1111u);
    uint64_t frame2 = frame1 - 0x20 - 8;
    EXPECT_EQ(cpu().gpr[R10], frame2);
    EXPECT_EQ(peek<uint64_t>(frame2), frame1); // pushed RBP
    EXPECT_EQ(peek<uint64_t>(frame2 - 8), 0xaaaau); // [frame1 - 8]
    EXPECT_EQ(peek<uint64_t>(frame2 - 16), 0xbbbbu); // [frame1 - 16]
    EXPECT_EQ(peek<uint64_t>(frame2 - 24), frame2); // the new frame pointer
    EXPECT_EQ(cpu().gpr[R11], frame2 - 24 - 0x10);
    EXPECT_EQ(cpu().gpr[R12], frame2 + 8);
    EXPECT_EQ(cpu().gpr[R13], frame1);
    EXPECT_EQ(cpu().gpr[RSP], kStackTop);
    EXPECT_EQ(cpu().gpr[RBP], 0x1111u);
}

TEST_F(SoftIntFlow, NonCanonicalTargetsFaultAtTheBranch)
{
    CodeGenerator g;
    Label ret;
    g.mov(g.rsp, kStackTop);
    g.mov(g.rax, 0x0000'8000'0000'0000);
    g.push(g.rax);
    g.L(ret);
    g.ret();
    g.hlt();
    auto f = run_code(g);
    ASSERT_TRUE(f.has_value());
    EXPECT_EQ(f->vector, kExcGP);
    EXPECT_EQ(f->error_code, 0u);
    EXPECT_EQ(cpu().gpr[RSP], kStackTop - 8); // RET did not pop
    EXPECT_EQ(cpu().rip, kCodeAddr + (ret.getAddress() - g.getCode()));
    CodeGenerator j;
    j.mov(j.rsp, kStackTop);
    j.mov(j.rax, 0xffff'7fff'ffff'ffff);
    j.call(j.rax);
    j.hlt();
    f = run_code(j);
    ASSERT_TRUE(f.has_value());
    EXPECT_EQ(f->vector, kExcGP);
    EXPECT_EQ(cpu().gpr[RSP], kStackTop); // nothing pushed
}

} // namespace
} // namespace vessel::soft::testing
