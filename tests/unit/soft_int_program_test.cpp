// Soft engine integer group: instruction sequences (real encodings: 66/REX/LOCK/REP prefixes,
// high-byte registers, immediates of every size, ModRM/SIB forms) run in the guest through the
// decoder and interpreter and on the host CPU from the same registers, flags and data; results
// must agree.
#include "soft_int_test_support.h"

namespace vessel::soft::testing {
namespace {

using Xbyak::CodeGenerator;
using namespace Xbyak::util;

class SoftIntProgramDiff : public SoftIntProgram { };

uint64_t splitmix(uint64_t& s)
{
    uint64_t z = (s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

struct Fragment {
    const char* name;
    std::function<void(CodeGenerator&)> emit;
    uint64_t flags; // flags defined at the end
};

const uint64_t kAll = kArithFlags;

std::vector<Fragment> fragments()
{
    return {
        { "alu widths and immediates",
            [](CodeGenerator& g) {
                g.add(ax, 0x1234);
                g.adc(bl, 0x80);
                g.sub(ecx, -1);
                g.sbb(rdx, 0x7fffffff);
                g.and_(r8w, 0x7f0f);
                g.or_(r9b, 1);
                g.xor_(r10d, r11d);
                g.add(ah, bh);
                g.sub(ch, dl);
                g.adc(r12, r13);
                g.sbb(r14d, -128);
                g.cmp(r15w, ax);
            },
            kAll },
        { "alu memory, lock, xchg, xadd, cmpxchg",
            [](CodeGenerator& g) {
                g.add(byte[rdi], 0x7f);
                g.lock();
                g.add(dword[rdi + 4], ecx);
                g.lock();
                g.xadd(qword[rdi + 8], rdx);
                g.xchg(word[rdi + 16], ax);
                g.lock();
                g.cmpxchg(dword[rdi + 24], ebx);
                g.lock();
                g.sub(qword[rdi + rsi * 1 + 32], r8); // rsi is a small offset below
                g.lock();
                g.inc(word[rdi + 40]);
                g.lock();
                g.neg(byte[rdi + 41]);
                g.lock();
                g.not_(dword[rdi + 44]);
                g.lock();
                g.btr(dword[rdi + 48], 5);
                g.or_(r10, qword[rdi + 56]);
                g.test(byte[rdi + 1], 0x81);
            },
            kAll & ~kAF },
        { "inc dec neg not on high bytes and 16 bits",
            [](CodeGenerator& g) {
                g.inc(ah);
                g.dec(bh);
                g.neg(ch);
                g.not_(dh);
                g.inc(r8w);
                g.dec(r9d);
                g.neg(r10);
                g.dec(byte[rdi + 3]);
            },
            kAll },
        { "shifts and rotates",
            [](CodeGenerator& g) {
                g.shl(eax, 1);
                g.sar(word[rdi], cl);
                g.rol(r8, 13);
                g.rcr(bl, 1);
                g.shld(ax, bx, 5);
                g.shrd(qword[rdi + 8], rcx, cl);
                g.ror(r9d, 1);
                g.rcl(r10w, 1);
                g.shr(r11b, 1);
            },
            kCF | kSF | kZF | kPF | kOF },
        { "multiply and divide",
            [](CodeGenerator& g) {
                g.mul(rcx);
                g.imul(eax, ebx, -7);
                g.imul(r8w, word[rdi]);
                g.imul(r9, r10, 0x12345);
                g.mov(r11, rax);
                g.xor_(edx, edx);
                g.or_(r12, 1);
                g.div(r12);
                g.mov(r13, rdx);
                g.mov(rax, r14);
                g.cqo();
                g.mov(rcx, -3);
                g.idiv(rcx);
                g.mov(r15w, 0x7fff);
                g.imul(r15w, r15w, 3);
            },
            kCF | kOF },
        { "bit instructions",
            [](CodeGenerator& g) {
                g.and_(rcx, 0x3ff);
                g.bt(qword[rdi], rcx);
                g.mov(rdx, -100);
                g.bts(dword[rdi + 0x200], edx);
                g.btc(r8d, r9d);
                g.btr(word[rdi + 0x300], 9);
                g.bsf(rax, rbx);
                g.bsr(r10d, r11d);
                g.popcnt(r12, r13);
                g.lzcnt(r15d, edx);
                g.lzcnt(rsi, r8);
                g.bts(r14, 63);
            },
            kCF },
        { "moves, extensions, lea, cmov, setcc, bswap",
            [](CodeGenerator& g) {
                g.movzx(eax, bh);
                g.movsx(rcx, word[rdi + 6]);
                g.movsxd(rdx, r8d);
                g.movsx(r9w, r10b);
                g.lea(r11, ptr[rbx + rcx * 4 - 0x55]);
                g.lea(r12d, ptr[r13 + r14 * 8 + 0x12345678]);
                g.cmp(eax, ecx);
                g.cmovl(r15d, edx);
                g.cmovae(rbx, qword[rdi + 16]);
                g.setg(byte[rdi + 24]);
                g.setbe(ah);
                g.bswap(r13);
                g.bswap(r14d);
                g.mov(word[rdi + 30], r14w);
                g.mov(byte[rdi + 31], 0xff);
            },
            kAll },
        { "accumulator extension and flag instructions",
            [](CodeGenerator& g) {
                g.cbw();
                g.mov(r8, rax);
                g.cwde();
                g.cdqe();
                g.cwd();
                g.mov(r9, rdx);
                g.cdq();
                g.mov(r10, rdx);
                g.cqo();
                g.add(bl, cl);
                g.lahf();
                g.mov(r11, rax);
                g.stc();
                g.cmc();
                g.mov(ah, 0xd5);
                g.sahf();
            },
            kAll },
        { "stack",
            [](CodeGenerator& g) {
                g.push(rax);
                g.push(word, 0x1234);
                g.pop(cx);
                g.pop(rbx);
                g.push(qword[rdi]);
                g.pop(rdx);
                g.push(-5);
                g.pop(qword[rdi + 8]);
                g.push(0x7fffffff);
                g.pop(r8);
                g.push(rsp);
                g.pop(r9);
                g.sub(r9, rsp); // the old RSP was pushed: 0
            },
            kAll },
        { "calls, loops and conditional branches",
            [](CodeGenerator& g) {
                Xbyak::Label f, done, top, skip;
                g.and_(ecx, 15);
                g.inc(ecx);
                g.xor_(eax, eax);
                g.L(top);
                g.call(f);
                g.loop(top);
                g.jrcxz(skip);
                g.inc(eax);
                g.L(skip);
                g.cmp(rbx, rdx);
                g.jl(done);
                g.add(eax, 0x100);
                g.jmp(done);
                g.L(f);
                g.add(eax, 3);
                g.ret();
                g.L(done);
                g.xor_(ecx, ecx);
            },
            kAll },
        { "strings",
            [](CodeGenerator& g) {
                g.mov(rsi, rdi);
                g.add(rdi, 0x800);
                g.mov(ecx, 100);
                g.rep();
                g.movsb();
                g.mov(rax, 0x1122334455667788);
                g.mov(ecx, 17);
                g.rep();
                g.stosq();
                g.std();
                g.lea(rsi, ptr[rdi - 8]);
                g.mov(ecx, 9);
                g.rep();
                g.movsw();
                g.cld();
                g.sub(rdi, 0x300);
                g.mov(rsi, rdi);
                g.add(rsi, 2);
                g.mov(ecx, 200);
                g.rep();
                g.movsb(); // overlapping, source ahead
                g.lodsd();
                g.mov(ecx, 300);
                g.lea(rdi, ptr[rsi - 0x100]);
                g.repe();
                g.cmpsb();
                g.mov(r8, rcx);
                g.mov(al, 0x88);
                g.mov(ecx, 1000);
                g.repne();
                g.scasb();
            },
            kAll },
        { "xlat",
            [](CodeGenerator& g) {
                g.mov(rbx, rdi);
                g.xlatb();
                g.mov(r8b, al);
                g.add(al, 0x40);
                g.xlatb();
            },
            kAll },
    };
}

TEST_F(SoftIntProgramDiff, FragmentsMatchHost)
{
    uint64_t seed = 12345;
    for (const Fragment& f : fragments()) {
        for (int round = 0; round < 12; ++round) {
            ProgState s;
            for (auto& r : s.gpr)
                r = splitmix(seed);
            // Mix in small and boundary values.
            if (round % 3 == 1) {
                s.gpr[RAX] = 0x80;
                s.gpr[RBX] = 0x7fff'ffff;
                s.gpr[RCX] = 0xffff'ffff'ffff'ffff;
                s.gpr[RDX] = 0;
            }
            if (round % 3 == 2) {
                for (auto& r : s.gpr)
                    r &= 0xff;
            }
            s.gpr[RSI] = splitmix(seed) & 0x1f8; // small offset for [rdi + rsi]
            s.gpr[RDI] = 0x100; // RDI = buffer + 0x100
            s.rflags = splitmix(seed) & kArithFlags;
            for (auto& b : s.data)
                b = static_cast<uint8_t>(splitmix(seed));
            try {
                ASSERT_TRUE(matches_host_program(f.emit, s, f.flags)) << f.name << " round " << round;
            } catch (const std::exception& e) {
                FAIL() << f.name << ": " << e.what();
            }
        }
    }
}

} // namespace
} // namespace vessel::soft::testing
