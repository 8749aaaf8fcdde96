// Soft engine translator: randomized differential test. Random programs built from the forms the
// translator handles inline (jit_emit.cpp: MOV, ALU, shifts/rotates, INC/DEC/NEG/NOT, MOVZX/MOVSX/
// MOVSXD, LEA, IMUL, CMOVcc, SETcc, BT*, XCHG, BSWAP, CBW..CQO, PUSH/POP, Jcc/JMP/CALL/RET) with
// every operand size, high-byte and REX registers, all immediate sizes and memory operands of
// every addressing form (base/index/scale/disp, RIP-relative, 0x67, FS/GS), plus a few generic
// instructions, run in a loop (so blocks get hot and chained) with the interpreter (JitMode::Off)
// and the translator (Eager and On) from the same state; all GPRs, RIP, the defined arithmetic
// flags and the data memory must agree.
//
// Reproducing a failure: the message names the seed; VESSEL_JIT_DIFF_SEED=<seed> runs only that
// program, VESSEL_JIT_DIFF_COUNT=<n> changes the number of programs.
#include <Zydis/Zydis.h>
#include <gtest/gtest.h>
#include <xbyak/xbyak.h>

#include <array>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "engine/soft/flags.h"
#include "soft_test_support.h"

namespace vessel::soft::test {
namespace {

using Xbyak::CodeGenerator;
using Xbyak::Reg;

constexpr uint64_t kDataSize = 0x2000; // two pages: accesses may cross between them
constexpr uint64_t kCounter = kDataBase + 0x3000;
constexpr uint64_t kStackCompare = 0x400; // bytes below kStackTop that are compared
constexpr uint64_t kFsBase = kDataBase - 0x100;
constexpr uint64_t kGsBase = kDataBase - 0x12340;
constexpr unsigned kLoopRuns = 6; // JitMode::On translates a block on its kJitThreshold-th run
constexpr uint64_t kMemBytes = 16 << 20; // the smallest GuestMemory takes

uint64_t splitmix(uint64_t& s)
{
    uint64_t z = (s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

class Rng {
public:
    explicit Rng(uint64_t seed)
        : m_s(seed)
    {
    }
    uint64_t next() { return splitmix(m_s); }
    uint64_t below(uint64_t n) { return next() % n; }
    bool chance(unsigned percent) { return below(100) < percent; }
    // Values with interesting carries at every width, small numbers and random ones.
    uint64_t value()
    {
        static const uint64_t edges[] = { 0, 1, 2, 0x7f, 0x80, 0xff, 0x100, 0x7fff, 0x8000, 0xffff, 0x7fffffff,
            0x80000000, 0xffffffff, 0x100000000ULL, 0x7fffffffffffffffULL, 0x8000000000000000ULL, 0xffffffffffffffffULL,
            0xfffffffffffffffeULL };
        switch (below(4)) {
        case 0: return edges[below(std::size(edges))];
        case 1: return below(64) - 32;
        default: return next();
        }
    }

private:
    uint64_t m_s;
};

// Initial machine state of one program.
struct InitialState {
    std::array<uint64_t, 16> gpr {};
    uint64_t flags { 0 };
    std::vector<uint8_t> data;
};

// Register constraints inside one instruction: AH..BH cannot be encoded with a REX prefix.
struct Enc {
    bool no_rex { false }; // an AH..BH operand was picked
    bool no_high { false }; // a REX-only operand (r8+, SPL..DIL, 64-bit size) was picked
};

class ProgramGen {
public:
    explicit ProgramGen(uint64_t seed)
        : m_r(seed)
        , g(1 << 16)
    {
    }

    // The program: a loop (kLoopRuns times, counter in memory) around random code, then HLT.
    std::vector<uint8_t> generate()
    {
        g.L(m_start);
        Xbyak::Label top, out;
        g.L(top);
        unsigned n = 10 + static_cast<unsigned>(m_r.below(31));
        for (unsigned i = 0; i < n; ++i)
            any_insn();
        while (m_depth > 0) {
            g.pop(Xbyak::Reg64(dst_index()));
            --m_depth;
        }
        if (m_undef)
            define_flags();
        g.pushfq(); // the flags survive the loop counter
        g.dec(g.qword[reinterpret_cast<const void*>(kCounter)]);
        g.jz(out, CodeGenerator::T_NEAR);
        g.popfq();
        g.jmp(top, CodeGenerator::T_NEAR);
        g.L(out);
        g.popfq();
        g.hlt();
        return { g.getCode(), g.getCode() + g.getSize() };
    }

private:
    Rng m_r;
    CodeGenerator g;
    Xbyak::Label m_start; // the code's first byte (guest kCodeBase): anchor for RIP-relative data
    uint64_t m_undef { 0 }; // arithmetic flags whose value is undefined here
    int m_depth { 0 }; // pushes not yet popped
    bool m_in_sub { false };
    bool m_in_skip { false };

    // ----- operands -----
    unsigned dst_index()
    {
        unsigned i;
        do
            i = static_cast<unsigned>(m_r.below(16));
        while (i == 4); // RSP
        return i;
    }
    unsigned any_size() { return 1u << m_r.below(4); }

    // A register of `size` bytes (a destination never touches RSP).
    Reg reg(unsigned size, bool dst, Enc& e)
    {
        for (;;) {
            unsigned i = static_cast<unsigned>(m_r.below(16));
            if (dst && i == 4)
                continue;
            if (size == 1 && i >= 4 && i < 8) {
                if (m_r.chance(50)) { // AH is fine as a destination; SPL is not
                    if (e.no_high)
                        continue;
                    e.no_rex = true;
                    return Xbyak::Reg8(static_cast<int>(i)); // AH CH DH BH
                }
                if (e.no_rex || (dst && i == 4))
                    continue;
                e.no_high = true;
                return Xbyak::Reg8(static_cast<int>(i), true); // SPL BPL SIL DIL
            }
            if (i >= 8 || size == 8) {
                if (e.no_rex)
                    continue;
                e.no_high = true;
            }
            switch (size) {
            case 1: return Xbyak::Reg8(static_cast<int>(i));
            case 2: return Xbyak::Reg16(static_cast<int>(i));
            case 4: return Xbyak::Reg32(static_cast<int>(i));
            default: return Xbyak::Reg64(static_cast<int>(i));
            }
        }
    }
    bool m_keep_rcx { false }; // CL holds a shift count
    unsigned addr_reg(const Enc& e, int avoid = -1)
    {
        for (;;) {
            unsigned i = static_cast<unsigned>(m_r.below(e.no_rex ? 8 : 16));
            if (i != 4 && static_cast<int>(i) != avoid && !(m_keep_rcx && i == 1))
                return i;
        }
    }
    int32_t disp()
    {
        switch (m_r.below(4)) {
        case 0: return 0;
        case 1: return static_cast<int32_t>(m_r.below(256)) - 128;
        default: return static_cast<int32_t>(m_r.next() % 0x20000000) - 0x10000000;
        }
    }

    // A memory operand of `size` bytes somewhere in the data area, with the instructions that set
    // its address registers emitted now (before the instruction using it). `e` constrains the
    // registers of the instruction; the address registers are picked after them.
    // An operand of `size` bytes at a random place in the data pages (or at `fixed`).
    Xbyak::Address mem(unsigned size, Enc& e, std::optional<uint64_t> fixed = {})
    {
        uint64_t target = fixed ? *fixed : kDataBase + m_r.below(kDataSize - size + 1);
        if (!fixed && m_r.chance(15))
            target = kDataBase + 0x1000 - m_r.below(size ? size : 1) - (m_r.chance(50) ? 0 : 1); // crossing
        if (target + size > kDataBase + kDataSize)
            target = kDataBase + kDataSize - size;
        unsigned form = static_cast<unsigned>(m_r.below(8));
        uint8_t seg = 0;
        uint64_t segbase = 0;
        if (form == 6 || (form < 5 && m_r.chance(12))) {
            seg = m_r.chance(50) ? 0x64 : 0x65;
            segbase = seg == 0x64 ? kFsBase : kGsBase;
        }
        uint64_t ea = target - segbase;
        const Xbyak::AddressFrame& af = frame(size);
        auto set = [&](unsigned r, uint64_t v) { g.mov(Xbyak::Reg64(static_cast<int>(r)), v); };
        Xbyak::Address a = af[g.rax];
        switch (form) {
        case 0: // [base + disp]
        case 6: {
            unsigned b = addr_reg(e);
            int32_t d = disp();
            set(b, ea - static_cast<int64_t>(d));
            a = af[Xbyak::Reg64(static_cast<int>(b)) + d];
            break;
        }
        case 1:
        case 2: { // [base + index*scale + disp]
            unsigned b = addr_reg(e), x = addr_reg(e, static_cast<int>(b));
            int scale = 1 << m_r.below(4);
            int32_t d = disp();
            uint64_t iv
                = m_r.chance(50) ? m_r.below(64) : static_cast<uint64_t>(static_cast<int64_t>(m_r.below(64)) - 32);
            set(x, iv);
            set(b, ea - static_cast<int64_t>(d) - iv * scale);
            a = af[Xbyak::Reg64(static_cast<int>(b)) + Xbyak::Reg64(static_cast<int>(x)) * scale + d];
            break;
        }
        case 3: { // [index*scale + disp32]
            unsigned x = addr_reg(e);
            int scale = 1 << m_r.below(4);
            int32_t d = disp();
            uint64_t iv = (ea - static_cast<int64_t>(d)) / scale;
            int32_t d2 = static_cast<int32_t>(ea - iv * scale);
            set(x, iv);
            a = af[Xbyak::Reg64(static_cast<int>(x)) * scale + d2];
            break;
        }
        case 4: // [disp32] absolute
            if (ea < 0x80000000ULL) {
                a = af[reinterpret_cast<const void*>(ea)];
                break;
            }
            [[fallthrough]];
        case 5: { // 0x67: [base32 + index32*scale + disp], garbage above bit 31
            unsigned b = addr_reg(e), x = addr_reg(e, static_cast<int>(b));
            int scale = 1 << m_r.below(4);
            int32_t d = disp();
            uint32_t iv = static_cast<uint32_t>(m_r.below(64));
            uint32_t bv = static_cast<uint32_t>(ea - static_cast<int64_t>(d) - static_cast<uint64_t>(iv) * scale);
            set(x, (m_r.next() << 32) | iv);
            set(b, (m_r.next() << 32) | bv);
            if (m_r.chance(50))
                a = af[Xbyak::Reg32(static_cast<int>(b)) + Xbyak::Reg32(static_cast<int>(x)) * scale + d];
            else
                a = af[Xbyak::Reg32(static_cast<int>(b)) + d + static_cast<int32_t>(iv * scale)];
            break;
        }
        default: // RIP-relative
            seg = 0;
            a = af[g.rip + m_start + static_cast<int64_t>(target - kCodeBase)];
            break;
        }
        m_seg_prefix = seg;
        return a;
    }
    uint8_t m_seg_prefix { 0 };
    // Emits the segment override picked by the last mem() (call right before the instruction).
    void prefix()
    {
        if (m_seg_prefix)
            g.db(m_seg_prefix);
        m_seg_prefix = 0;
    }

    const Xbyak::AddressFrame& frame(unsigned size)
    {
        switch (size) {
        case 1: return g.byte;
        case 2: return g.word;
        case 4: return g.dword;
        default: return g.qword;
        }
    }

    uint32_t imm_for(unsigned size)
    {
        uint64_t v = m_r.value();
        switch (size) {
        case 1: return static_cast<uint32_t>(v & 0xff);
        case 2: // Xbyak wants 16-bit immediates sign-extended to 32 bits
            return static_cast<uint32_t>(static_cast<int32_t>(
                static_cast<int16_t>(m_r.chance(50) ? v : static_cast<uint64_t>(static_cast<int8_t>(v)))));
        default:
            return m_r.chance(40) ? static_cast<uint32_t>(static_cast<int32_t>(static_cast<int8_t>(v)))
                                  : static_cast<uint32_t>(v);
        }
    }

    // MOV's immediate: the operand size's bits (sign-extended imm32 for 64-bit memory).
    uint64_t mov_imm(unsigned size)
    {
        auto imm = static_cast<int64_t>(static_cast<int32_t>(imm_for(size)));
        return size == 8 ? static_cast<uint64_t>(imm) : static_cast<uint64_t>(imm) & ((1ULL << (8 * size)) - 1);
    }

    // ----- flags -----
    static constexpr uint64_t kAll = kArithFlags;
    void effects(uint64_t written, uint64_t undefined) { m_undef = (m_undef & ~written) | undefined; }
    // Before an instruction that reads flags: none of them may be undefined.
    void reads_flags()
    {
        if (m_undef)
            define_flags();
    }
    void define_flags()
    {
        Enc e;
        unsigned size = any_size();
        Reg a = reg(size, false, e), b = reg(size, false, e);
        g.cmp(a, b);
        m_undef = 0;
    }

    // ----- instructions -----
    void any_insn()
    {
        unsigned k = static_cast<unsigned>(m_r.below(100));
        if (k < 14)
            mov();
        else if (k < 34)
            alu();
        else if (k < 42)
            shift();
        else if (k < 48)
            unary();
        else if (k < 53)
            extend();
        else if (k < 57)
            lea();
        else if (k < 61)
            imul();
        else if (k < 65)
            cmov();
        else if (k < 68)
            setcc();
        else if (k < 71)
            bt();
        else if (k < 73)
            xchg();
        else if (k < 75)
            bswap();
        else if (k < 77)
            convert();
        else if (k < 83)
            push_pop();
        else if (k < 88)
            skip();
        else if (k < 91)
            jmp_over();
        else if (k < 93)
            call();
        else if (k < 94)
            system();
        else if (k < 96)
            muldiv();
        else if (k < 98)
            bitscan();
        else if (k < 99)
            generic();
        else
            system();
    }

    static Reg sized_reg(int i, unsigned size)
    {
        switch (size) {
        case 1: return Xbyak::Reg8(i, i >= 4);
        case 2: return Xbyak::Reg16(i);
        case 4: return Xbyak::Reg32(i);
        default: return Xbyak::Reg64(i);
        }
    }

    // MUL / IMUL / DIV with one operand (rDX:rAX implicit). DIV is made not to fault: the divisor
    // (a register other than rAX, rDX, rSP) is made odd and the high half of the dividend 0.
    void muldiv()
    {
        unsigned size = any_size();
        unsigned kind = static_cast<unsigned>(m_r.below(3));
        if (kind == 2) {
            int i = 0;
            while (i == 0 || i == 2 || i == 4 || (m_keep_rcx && i == 1))
                i = static_cast<int>(m_r.below(16));
            Reg d = sized_reg(i, size);
            g.or_(d, 1);
            if (size == 1)
                g.and_(g.eax, 0xff);
            else
                g.xor_(g.edx, g.edx);
            g.div(d);
            effects(kAll, kAll);
            return;
        }
        Enc e;
        if (m_r.chance(30)) {
            Xbyak::Address m = mem(size, e);
            prefix();
            kind ? g.imul(m) : g.mul(m);
        } else {
            Reg s = reg(size, false, e);
            kind ? g.imul(s) : g.mul(s);
        }
        effects(kAll, kSF | kZF | kAF | kPF);
    }

    // BSF / BSR (a zero source leaves the destination as it was, on both sides).
    void bitscan()
    {
        Enc e;
        unsigned size = 2u << m_r.below(3);
        Reg d = reg(size, true, e);
        bool forward = m_r.chance(50);
        if (m_r.chance(35)) {
            Xbyak::Address m = mem(size, e);
            prefix();
            forward ? g.bsf(d, m) : g.bsr(d, m);
        } else {
            Reg s = reg(size, false, e);
            forward ? g.bsf(d, s) : g.bsr(d, s);
        }
        effects(kAll, kAll & ~kZF);
    }

    void mov()
    {
        Enc e;
        unsigned size = any_size();
        switch (m_r.below(5)) {
        case 0: {
            Reg d = reg(size, true, e);
            if (size == 8 && m_r.chance(50))
                g.mov(d, m_r.value()); // imm64 or sign-extended imm32
            else
                g.mov(d, mov_imm(size));
            break;
        }
        case 1: {
            Reg d = reg(size, true, e), s = reg(size, false, e);
            g.mov(d, s);
            break;
        }
        case 2: {
            Reg d = reg(size, true, e);
            Xbyak::Address m = mem(size, e);
            prefix();
            g.mov(d, m);
            break;
        }
        case 3: {
            Reg s = reg(size, false, e);
            Xbyak::Address m = mem(size, e);
            prefix();
            g.mov(m, s);
            break;
        }
        default: {
            Xbyak::Address m = mem(size, e);
            prefix();
            g.mov(m, mov_imm(size));
            break;
        }
        }
    }

    void alu_emit(unsigned op, const Xbyak::Operand& d, const Xbyak::Operand& s)
    {
        switch (op) {
        case 0: g.add(d, s); break;
        case 1: g.or_(d, s); break;
        case 2: g.adc(d, s); break;
        case 3: g.sbb(d, s); break;
        case 4: g.and_(d, s); break;
        case 5: g.sub(d, s); break;
        case 6: g.xor_(d, s); break;
        case 7: g.cmp(d, s); break;
        default: g.test(d, static_cast<const Reg&>(s)); break;
        }
    }
    void alu_imm(unsigned op, const Xbyak::Operand& d, uint32_t imm)
    {
        switch (op) {
        case 0: g.add(d, imm); break;
        case 1: g.or_(d, imm); break;
        case 2: g.adc(d, imm); break;
        case 3: g.sbb(d, imm); break;
        case 4: g.and_(d, imm); break;
        case 5: g.sub(d, imm); break;
        case 6: g.xor_(d, imm); break;
        case 7: g.cmp(d, imm); break;
        default: g.test(d, imm); break;
        }
    }
    void alu()
    {
        unsigned op = static_cast<unsigned>(m_r.below(9));
        Enc e;
        unsigned size = any_size();
        bool reads = op == 2 || op == 3;
        unsigned form = static_cast<unsigned>(m_r.below(5));
        auto pre = [&] {
            if (reads)
                reads_flags();
        };
        switch (form) {
        case 0: { // r, imm
            Reg d = reg(size, op != 7 && op != 8, e);
            pre();
            alu_imm(op, d, imm_for(size));
            break;
        }
        case 1: { // r, r
            Reg d = reg(size, op != 7 && op != 8, e), s = reg(size, false, e);
            pre();
            alu_emit(op, d, s);
            break;
        }
        case 2: { // r, m (TEST: m, r)
            Reg d = reg(size, op != 7 && op != 8, e);
            Xbyak::Address m = mem(size, e);
            pre();
            prefix();
            if (op == 8)
                g.test(m, d);
            else
                alu_emit(op, d, m);
            break;
        }
        case 3: { // m, r
            Reg s = reg(size, false, e);
            Xbyak::Address m = mem(size, e);
            pre();
            prefix();
            alu_emit(op, m, s);
            break;
        }
        default: { // m, imm
            Xbyak::Address m = mem(size, e);
            pre();
            prefix();
            alu_imm(op, m, imm_for(size));
            break;
        }
        }
        bool logic = op == 1 || op == 4 || op == 6 || op == 8;
        effects(kAll, logic ? kAF : 0);
    }

    void shift()
    {
        unsigned op = static_cast<unsigned>(m_r.below(7)); // rol ror rcl rcr shl shr sar
        Enc e;
        unsigned size = any_size();
        unsigned bits = size * 8;
        const unsigned counts[] = { 0, 1, 2, bits - 1, bits, 31, 32, 63, 64 };
        unsigned count = m_r.chance(60) ? counts[m_r.below(std::size(counts))] : static_cast<unsigned>(m_r.below(256));
        bool by_cl = m_r.chance(40);
        bool in_mem = m_r.chance(30);
        std::optional<Reg> d;
        std::optional<Xbyak::Address> m;
        if (by_cl)
            g.mov(g.cl, count);
        m_keep_rcx = by_cl;
        if (in_mem)
            m = mem(size, e);
        else
            d = reg(size, true, e);
        m_keep_rcx = false;
        unsigned c = count & (size == 8 ? 63 : 31);
        uint64_t written = 0, undefined = 0;
        if (c) {
            if (op < 4) {
                written = kCF | kOF;
                undefined = c != 1 ? kOF : 0;
            } else {
                written = kAll;
                undefined = kAF | (c != 1 ? kOF : 0) | (op != 6 && c >= bits ? kCF : 0);
            }
        }
        if (op == 2 || op == 3)
            reads_flags();
        const Xbyak::Operand& o = in_mem ? static_cast<const Xbyak::Operand&>(*m) : *d;
        if (in_mem)
            prefix();
        auto go = [&](auto&& f) {
            if (by_cl)
                f(o, g.cl);
            else
                f(o, static_cast<int>(count));
        };
        switch (op) {
        case 0: go([&](auto& x, auto y) { g.rol(x, y); }); break;
        case 1: go([&](auto& x, auto y) { g.ror(x, y); }); break;
        case 2: go([&](auto& x, auto y) { g.rcl(x, y); }); break;
        case 3: go([&](auto& x, auto y) { g.rcr(x, y); }); break;
        case 4: go([&](auto& x, auto y) { g.shl(x, y); }); break;
        case 5: go([&](auto& x, auto y) { g.shr(x, y); }); break;
        default: go([&](auto& x, auto y) { g.sar(x, y); }); break;
        }
        effects(written, undefined);
    }

    void unary()
    {
        unsigned op = static_cast<unsigned>(m_r.below(4)); // inc dec neg not
        Enc e;
        unsigned size = any_size();
        auto emit = [&](const Xbyak::Operand& o) {
            switch (op) {
            case 0: g.inc(o); break;
            case 1: g.dec(o); break;
            case 2: g.neg(o); break;
            default: g.not_(o); break;
            }
        };
        if (m_r.chance(30)) {
            Xbyak::Address m = mem(size, e);
            prefix();
            emit(m);
        } else {
            emit(reg(size, true, e));
        }
        if (op < 2)
            effects(kAll & ~kCF, 0);
        else if (op == 2)
            effects(kAll, 0);
    }

    void extend()
    {
        Enc e;
        unsigned kind = static_cast<unsigned>(m_r.below(3)); // movzx movsx movsxd
        unsigned dsize, ssize;
        if (kind == 2) {
            dsize = 8;
            ssize = 4;
        } else {
            dsize = 2u << m_r.below(3);
            ssize = dsize == 2 ? 1 : (1u << m_r.below(2));
            if (ssize >= dsize)
                ssize = 1;
        }
        Reg d = reg(dsize, true, e);
        auto emit = [&](const Xbyak::Operand& s) {
            if (kind == 0)
                g.movzx(d, s);
            else if (kind == 1)
                g.movsx(d, s);
            else
                g.movsxd(Xbyak::Reg64(d.getIdx()), s);
        };
        if (m_r.chance(40)) {
            Xbyak::Address m = mem(ssize, e);
            prefix();
            emit(m);
        } else {
            emit(reg(ssize, false, e));
        }
    }

    void lea()
    {
        Enc e;
        unsigned size = 2u << m_r.below(3);
        Reg d = reg(size, true, e);
        int32_t dd = disp();
        unsigned b = static_cast<unsigned>(m_r.below(16)), x = addr_reg(e);
        int scale = 1 << m_r.below(4);
        switch (m_r.below(5)) {
        case 0: g.lea(d, g.ptr[Xbyak::Reg64(static_cast<int>(b)) + dd]); break;
        case 1:
            g.lea(d, g.ptr[Xbyak::Reg64(static_cast<int>(b)) + Xbyak::Reg64(static_cast<int>(x)) * scale + dd]);
            break;
        case 2: g.lea(d, g.ptr[Xbyak::Reg64(static_cast<int>(x)) * scale + dd]); break;
        case 3:
            g.lea(d, g.ptr[Xbyak::Reg32(static_cast<int>(b)) + Xbyak::Reg32(static_cast<int>(x)) * scale + dd]);
            break;
        default: g.lea(d, g.ptr[g.rip + m_start + dd]); break;
        }
    }

    void imul()
    {
        Enc e;
        unsigned size = 2u << m_r.below(3);
        Reg d = reg(size, true, e);
        bool three = m_r.chance(50);
        bool in_mem = m_r.chance(35);
        std::optional<Xbyak::Address> m;
        std::optional<Reg> s;
        if (in_mem)
            m = mem(size, e);
        else
            s = reg(size, false, e);
        const Xbyak::Operand& src = in_mem ? static_cast<const Xbyak::Operand&>(*m) : *s;
        if (in_mem)
            prefix();
        if (three)
            g.imul(d, src, static_cast<int>(imm_for(size == 2 ? 2 : 4)));
        else
            g.imul(d, src);
        effects(kAll, kSF | kZF | kAF | kPF);
    }

    void cmov()
    {
        Enc e;
        unsigned size = 2u << m_r.below(3);
        int cc = static_cast<int>(m_r.below(16));
        Reg d = reg(size, true, e);
        std::optional<Xbyak::Address> m;
        std::optional<Reg> s;
        if (m_r.chance(35))
            m = mem(size, e);
        else
            s = reg(size, false, e);
        reads_flags();
        if (m)
            prefix();
        const Xbyak::Operand& src = m ? static_cast<const Xbyak::Operand&>(*m) : *s;
        // CMOVcc is 0F 40+cc /r: Xbyak's cmovcc helpers by index.
        switch (cc) {
        case 0: g.cmovo(d, src); break;
        case 1: g.cmovno(d, src); break;
        case 2: g.cmovb(d, src); break;
        case 3: g.cmovae(d, src); break;
        case 4: g.cmove(d, src); break;
        case 5: g.cmovne(d, src); break;
        case 6: g.cmovbe(d, src); break;
        case 7: g.cmova(d, src); break;
        case 8: g.cmovs(d, src); break;
        case 9: g.cmovns(d, src); break;
        case 10: g.cmovp(d, src); break;
        case 11: g.cmovnp(d, src); break;
        case 12: g.cmovl(d, src); break;
        case 13: g.cmovge(d, src); break;
        case 14: g.cmovle(d, src); break;
        default: g.cmovg(d, src); break;
        }
    }

    void setcc()
    {
        Enc e;
        int cc = static_cast<int>(m_r.below(16));
        std::optional<Xbyak::Address> m;
        std::optional<Reg> d;
        if (m_r.chance(30))
            m = mem(1, e);
        else
            d = reg(1, true, e);
        reads_flags();
        if (m)
            prefix();
        const Xbyak::Operand& o = m ? static_cast<const Xbyak::Operand&>(*m) : *d;
        switch (cc) {
        case 0: g.seto(o); break;
        case 1: g.setno(o); break;
        case 2: g.setb(o); break;
        case 3: g.setae(o); break;
        case 4: g.sete(o); break;
        case 5: g.setne(o); break;
        case 6: g.setbe(o); break;
        case 7: g.seta(o); break;
        case 8: g.sets(o); break;
        case 9: g.setns(o); break;
        case 10: g.setp(o); break;
        case 11: g.setnp(o); break;
        case 12: g.setl(o); break;
        case 13: g.setge(o); break;
        case 14: g.setle(o); break;
        default: g.setg(o); break;
        }
    }

    void bt()
    {
        Enc e;
        unsigned op = static_cast<unsigned>(m_r.below(4));
        unsigned size = 2u << m_r.below(3);
        Reg d = reg(size, op != 0, e);
        auto emit = [&](const auto& s) {
            switch (op) {
            case 0: g.bt(d, s); break;
            case 1: g.bts(d, s); break;
            case 2: g.btr(d, s); break;
            default: g.btc(d, s); break;
            }
        };
        if (m_r.chance(50))
            emit(static_cast<uint8_t>(m_r.below(256)));
        else
            emit(reg(size, false, e));
        effects(kCF | kOF | kSF | kAF | kPF, kOF | kSF | kAF | kPF);
    }

    void xchg()
    {
        Enc e;
        unsigned size = any_size();
        Reg a = reg(size, true, e), b = reg(size, true, e);
        g.xchg(a, b);
    }

    void bswap()
    {
        int i = static_cast<int>(dst_index());
        if (m_r.chance(50))
            g.bswap(Xbyak::Reg32(i));
        else
            g.bswap(Xbyak::Reg64(i));
    }

    void convert()
    {
        switch (m_r.below(6)) {
        case 0: g.cbw(); break;
        case 1: g.cwde(); break;
        case 2: g.cdqe(); break;
        case 3: g.cwd(); break;
        case 4: g.cdq(); break;
        default: g.cqo(); break;
        }
    }

    void push_pop()
    {
        if (m_in_sub || m_in_skip) {
            mov();
            return;
        }
        if (m_depth > 0 && (m_depth >= 8 || m_r.chance(45))) {
            g.pop(Xbyak::Reg64(static_cast<int>(dst_index())));
            --m_depth;
            return;
        }
        switch (m_r.below(3)) {
        case 0: g.push(Xbyak::Reg64(static_cast<int>(m_r.below(16)))); break;
        case 1: g.push(static_cast<uint32_t>(static_cast<int32_t>(static_cast<int8_t>(m_r.next())))); break;
        default: g.push(static_cast<uint32_t>(m_r.next())); break; // imm32, sign-extended
        }
        ++m_depth;
    }

    // Jcc over a few instructions.
    void skip()
    {
        if (m_in_skip) {
            alu();
            return;
        }
        reads_flags();
        Xbyak::Label l;
        int cc = static_cast<int>(m_r.below(16));
        Xbyak::CodeGenerator::LabelType t = m_r.chance(70) ? CodeGenerator::T_SHORT : CodeGenerator::T_NEAR;
        switch (cc) {
        case 0: g.jo(l, t); break;
        case 1: g.jno(l, t); break;
        case 2: g.jb(l, t); break;
        case 3: g.jae(l, t); break;
        case 4: g.je(l, t); break;
        case 5: g.jne(l, t); break;
        case 6: g.jbe(l, t); break;
        case 7: g.ja(l, t); break;
        case 8: g.js(l, t); break;
        case 9: g.jns(l, t); break;
        case 10: g.jp(l, t); break;
        case 11: g.jnp(l, t); break;
        case 12: g.jl(l, t); break;
        case 13: g.jge(l, t); break;
        case 14: g.jle(l, t); break;
        default: g.jg(l, t); break;
        }
        uint64_t before = m_undef;
        m_in_skip = true;
        unsigned n = 1 + static_cast<unsigned>(m_r.below(3));
        for (unsigned i = 0; i < n; ++i)
            any_insn();
        m_in_skip = false;
        m_undef |= before; // either path
        g.L(l);
    }

    // JMP over bytes that must never run.
    void jmp_over()
    {
        Xbyak::Label l;
        g.jmp(l, m_r.chance(50) ? CodeGenerator::T_SHORT : CodeGenerator::T_NEAR);
        g.ud2();
        g.L(l);
    }

    // CALL to a subroutine of random instructions ending in RET (emitted inline, jumped over).
    void call()
    {
        if (m_in_sub || m_in_skip) {
            alu();
            return;
        }
        Xbyak::Label sub, over;
        g.jmp(over, CodeGenerator::T_NEAR);
        g.L(sub);
        m_in_sub = true;
        unsigned n = 1 + static_cast<unsigned>(m_r.below(6));
        for (unsigned i = 0; i < n; ++i)
            any_insn();
        m_in_sub = false;
        g.ret();
        g.L(over);
        g.call(sub);
    }

    // Memory bit strings, stack forms, segment reads, fences, hints, CLI and SWAPGS.
    void system()
    {
        Enc e;
        switch (m_r.below(12)) {
        case 9: { // CMPXCHG16B: RDX:RAX loaded from the memory first (success) or random
            uint64_t target = kDataBase + 16 * m_r.below(kDataSize / 16);
            if (m_r.chance(50)) {
                g.mov(g.rax, g.qword[reinterpret_cast<const void*>(target)]);
                g.mov(g.rdx, g.qword[reinterpret_cast<const void*>(target + 8)]);
            }
            Xbyak::Address m = mem(16, e, target);
            if (m_r.chance(50))
                g.lock();
            prefix();
            g.cmpxchg16b(m);
            effects(kZF, 0);
            break;
        }
        case 10: { // SHLD / SHRD by an immediate (or CL: the handler's)
            unsigned size = m_r.chance(50) ? 4 : 8;
            Reg s = reg(size, false, e);
            std::optional<Xbyak::Address> m;
            std::optional<Reg> d;
            if (m_r.chance(30))
                m = mem(size, e);
            else
                d = reg(size, true, e);
            if (m)
                prefix();
            const Xbyak::Operand& o = m ? static_cast<const Xbyak::Operand&>(*m) : *d;
            bool left = m_r.chance(50);
            if (m_r.chance(80)) {
                auto count = static_cast<uint8_t>(1 + m_r.below(size * 8 - 1));
                left ? g.shld(o, s, count) : g.shrd(o, s, count);
                effects(kCF | kPF | kZF | kSF | kAF | kOF, count == 1 ? kAF : kAF | kOF);
            } else {
                reads_flags(); // a zero count in CL leaves them
                left ? g.shld(o, s, g.cl) : g.shrd(o, s, g.cl);
                effects(0, kAF | kOF | kCF); // CF undefined when the count exceeds the width
            }
            break;
        }
        case 11:
            if (m_r.chance(50))
                g.cld();
            else
                g.std();
            break;
        case 0: { // BT* m, imm8 / m, r (a register offset moves the address by whole operands)
            unsigned op = static_cast<unsigned>(m_r.below(4));
            unsigned size = 2u << m_r.below(3), bits = size * 8;
            bool by_reg = m_r.chance(50);
            int64_t offset = static_cast<int64_t>(m_r.below(6 * bits)) - 3 * static_cast<int64_t>(bits);
            uint64_t at = kDataBase + 0x400 + m_r.below(0x1800); // the moves stay inside the data
            std::optional<Reg> r;
            if (by_reg) {
                // The offset in RCX, which the address then leaves alone.
                r = sized_reg(1, size);
                g.mov(g.rcx, static_cast<uint64_t>(offset));
                m_keep_rcx = true;
            }
            Xbyak::Address m = mem(size, e, at);
            m_keep_rcx = false;
            if (op != 0 && m_r.chance(30))
                g.lock();
            prefix();
            auto emit = [&](const auto& src) {
                switch (op) {
                case 0: g.bt(m, src); break;
                case 1: g.bts(m, src); break;
                case 2: g.btr(m, src); break;
                default: g.btc(m, src); break;
                }
            };
            if (by_reg)
                emit(*r);
            else
                emit(static_cast<uint8_t>(m_r.below(256)));
            effects(kCF | kOF | kSF | kAF | kPF, kOF | kSF | kAF | kPF);
            break;
        }
        case 1: // PUSH m64
            if (m_in_sub || m_in_skip || m_depth >= 8) {
                mov();
                break;
            }
            {
                Xbyak::Address m = mem(8, e);
                prefix();
                g.push(m);
                ++m_depth;
            }
            break;
        case 2: // PUSHFQ (arithmetic flags, IF, the fixed bit)
            if (m_in_sub || m_in_skip || m_depth >= 8) {
                mov();
                break;
            }
            reads_flags();
            g.pushfq();
            ++m_depth;
            break;
        case 3: // LEAVE: RSP := RBP, RBP := pop; RBP points into what was pushed
            if (m_in_sub || m_in_skip || m_depth == 0) {
                mov();
                break;
            }
            {
                int k = static_cast<int>(m_r.below(static_cast<uint64_t>(m_depth)));
                g.lea(g.rbp, g.ptr[g.rsp + 8 * k]);
                g.leave();
                m_depth -= k + 1;
            }
            break;
        case 4: { // MOV r, Sreg
            static const Xbyak::Segment* segs[] = { &g.es, &g.cs, &g.ss, &g.ds, &g.fs, &g.gs };
            unsigned size = 2u << m_r.below(3);
            g.mov(reg(size, true, e), *segs[m_r.below(6)]);
            break;
        }
        case 5:
            switch (m_r.below(3)) {
            case 0: g.lfence(); break;
            case 1: g.mfence(); break;
            default: g.sfence(); break;
            }
            break;
        case 6: { // prefetches: hints at any address
            Xbyak::Address m = mem(1, e);
            prefix();
            switch (m_r.below(5)) {
            case 0: g.prefetcht0(m); break;
            case 1: g.prefetcht1(m); break;
            case 2: g.prefetcht2(m); break;
            case 3: g.prefetchnta(m); break;
            default: g.prefetchw(m); break;
            }
            break;
        }
        case 7:
            if (m_r.chance(50))
                g.cli();
            else
                g.sti(); // the translation ends after the next instruction
            break;
        default: { // SWAPGS, a GS access through the other base (kFsBase), SWAPGS
            uint64_t target = kDataBase + m_r.below(kDataSize - 8);
            Reg d = reg(8, true, e);
            g.db(0xf8010f, 3); // SWAPGS (0F 01 F8; not in Xbyak)
            g.db(0x65);
            g.mov(d, g.qword[reinterpret_cast<const void*>(target - kFsBase)]);
            g.db(0xf8010f, 3); // SWAPGS (0F 01 F8; not in Xbyak)
            break;
        }
        }
    }

    // A few instructions the translator leaves to the interpreter's handlers.
    void generic()
    {
        Enc e;
        switch (m_r.below(6)) {
        case 0:
            g.stc();
            effects(kCF, 0);
            break;
        case 1:
            g.clc();
            effects(kCF, 0);
            break;
        case 2:
            reads_flags();
            g.cmc();
            effects(kCF, 0);
            break;
        case 3: {
            unsigned size = any_size();
            Reg s = reg(size, true, e);
            Xbyak::Address m = mem(size, e);
            prefix();
            g.xadd(m, s);
            effects(kAll, 0);
            break;
        }
        case 4: {
            unsigned size = any_size();
            g.mul(reg(size, false, e));
            effects(kAll, kSF | kZF | kAF | kPF);
            break;
        }
        default: {
            Reg d = reg(8, true, e);
            g.mov(d, g.qword[g.rsp + static_cast<int>(8 * m_r.below(4))]);
            break;
        }
        }
    }
};

InitialState random_state(uint64_t seed)
{
    Rng r(seed ^ 0x5eed5eed5eedULL);
    InitialState s;
    for (auto& v : s.gpr)
        v = r.value();
    s.gpr[RSP] = kStackTop;
    s.flags = (r.next() & kArithFlags) | (r.chance(50) ? kIF : 0);
    s.data.resize(kDataSize);
    for (auto& b : s.data)
        b = static_cast<uint8_t>(r.next());
    return s;
}

struct Outcome {
    RunResult::Kind kind { RunResult::Budget };
    GuestFault fault {};
    std::string abort;
    std::array<uint64_t, 16> gpr {};
    uint64_t rip { 0 };
    uint64_t flags { 0 };
    uint64_t gs_base { 0 }, kernel_gs_base { 0 };
    std::vector<uint8_t> data, stack;
    uint64_t translations { 0 };
};

Outcome run_program(const std::vector<uint8_t>& code, const InitialState& s, JitMode mode)
{
    SoftHarness h(CpuMode::Long64, kMemBytes, mode);
    Cpu& c = h.cpu();
    h.load(code);
    (void)h.memory().write(kDataBase, s.data);
    h.write<uint64_t>(kCounter, kLoopRuns);
    c.gpr = s.gpr;
    c.lf.op = FlagOp::None;
    c.rflags = x86::kRflagsFixed | s.flags;
    c.seg[FS].base = kFsBase;
    c.seg[GS].base = kGsBase;
    c.msrs.kernel_gs_base = kFsBase; // what SWAPGS swaps in
    c.update_mode();
    RunResult r = h.run(200'000);
    Outcome o;
    o.kind = r.kind;
    o.fault = r.fault;
    o.abort = r.abort_message;
    o.gpr = c.gpr;
    o.rip = c.rip;
    o.flags = get_rflags(c) & (kArithFlags | kIF | kDF);
    o.gs_base = c.seg[GS].base;
    o.kernel_gs_base = c.msrs.kernel_gs_base;
    o.data.resize(kDataSize);
    (void)h.memory().read(kDataBase, o.data);
    o.stack.resize(kStackCompare);
    (void)h.memory().read(kStackTop - kStackCompare, o.stack);
    o.translations = h.cache().jit() ? h.cache().jit()->translations() : 0;
    return o;
}

std::string disassemble(const std::vector<uint8_t>& code)
{
    std::ostringstream os;
    size_t off = 0;
    while (off < code.size()) {
        ZydisDisassembledInstruction insn;
        if (!ZYAN_SUCCESS(ZydisDisassembleIntel(
                ZYDIS_MACHINE_MODE_LONG_64, kCodeBase + off, code.data() + off, code.size() - off, &insn))) {
            os << "  " << std::hex << kCodeBase + off << ": (bad) " << int(code[off]) << std::dec << "\n";
            ++off;
            continue;
        }
        os << "  " << std::hex << kCodeBase + off << std::dec << ": " << insn.text << "\n";
        off += insn.info.length;
    }
    return os.str();
}

std::string differences(const Outcome& want, const Outcome& got)
{
    std::ostringstream os;
    os << std::hex;
    if (want.kind != got.kind)
        os << " end: " << int(want.kind) << " vs " << int(got.kind) << " (vector " << int(got.fault.vector) << " "
           << got.abort << ")";
    for (unsigned i = 0; i < 16; ++i)
        if (want.gpr[i] != got.gpr[i])
            os << " gpr" << std::dec << i << std::hex << ": " << want.gpr[i] << " vs " << got.gpr[i];
    if (want.rip != got.rip)
        os << " rip: " << want.rip << " vs " << got.rip;
    if (want.flags != got.flags)
        os << " flags: " << want.flags << " vs " << got.flags;
    if (want.gs_base != got.gs_base || want.kernel_gs_base != got.kernel_gs_base)
        os << " gs base / kernel gs base: " << want.gs_base << "/" << want.kernel_gs_base << " vs " << got.gs_base
           << "/" << got.kernel_gs_base;
    for (size_t i = 0; i < want.data.size(); ++i)
        if (want.data[i] != got.data[i]) {
            os << " data[" << i << "]: " << int(want.data[i]) << " vs " << int(got.data[i]);
            break;
        }
    for (size_t i = 0; i < want.stack.size(); ++i)
        if (want.stack[i] != got.stack[i]) {
            os << " stack[top-" << kStackCompare - i << "]: " << int(want.stack[i]) << " vs " << int(got.stack[i]);
            break;
        }
    return os.str();
}

uint64_t env_u64(const char* name, uint64_t fallback)
{
    const char* s = std::getenv(name);
    return s ? std::strtoull(s, nullptr, 0) : fallback;
}

TEST(SoftJitDiff, RandomProgramsMatchTheInterpreter)
{
    const uint64_t base_seed = env_u64("VESSEL_JIT_DIFF_SEED", 0);
    const uint64_t count = base_seed ? 1 : env_u64("VESSEL_JIT_DIFF_COUNT", 2000);
    unsigned failures = 0;
    uint64_t translations = 0, halted = 0;
    for (uint64_t i = 0; i < count && failures < 3; ++i) {
        uint64_t seed = base_seed ? base_seed : 0x1000 + i;
        std::vector<uint8_t> code;
        try {
            code = ProgramGen(seed).generate();
        } catch (const Xbyak::Error& e) {
            ADD_FAILURE() << "seed " << seed << ": generator produced an unencodable form: " << e.what();
            ++failures;
            continue;
        }
        InitialState s = random_state(seed);
        Outcome want = run_program(code, s, JitMode::Off);
        if (want.kind == RunResult::Halted)
            ++halted;
        else
            ADD_FAILURE() << "seed " << seed << ": the interpreter did not reach HLT (" << int(want.kind) << " vector "
                          << int(want.fault.vector) << " at " << std::hex << want.rip << ")\n"
                          << disassemble(code);
        for (JitMode mode : { JitMode::Eager, JitMode::On }) {
            Outcome got = run_program(code, s, mode);
            translations += got.translations;
            std::string diff = differences(want, got);
            if (!diff.empty()) {
                ++failures;
                ADD_FAILURE() << "seed " << seed << " (VESSEL_JIT_DIFF_SEED=" << seed << "), JitMode "
                              << (mode == JitMode::Eager ? "Eager" : "On") << ": interpreter vs translator:" << diff
                              << "\nprogram:\n"
                              << disassemble(code);
                break;
            }
        }
    }
    EXPECT_EQ(halted, count);
    EXPECT_GT(translations, count); // the translator really ran
}

} // namespace
} // namespace vessel::soft::test
