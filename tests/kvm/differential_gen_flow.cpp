// Differential CPU tests: control flow (forward branches over an instruction, LOOP/JRCXZ,
// CALL/RET, indirect jumps) and the steps that end a case with an exception on purpose (#DE,
// #UD, #GP, #PF incl. straddling accesses and REP strings that run into a bad page, #XM). A
// faulting step is always the last one; the CPL0 stub reports its vector and both engines' fault
// frames, registers and memory are compared.
#include <cstring>
#include <stdexcept>

#include "differential_gen_impl.h"

namespace vessel::difftest {

namespace {

void emit_jcc(Gen& g, unsigned cc, const Xbyak::Label& l, Xbyak::CodeGenerator::LabelType t)
{
    switch (cc) {
    case 0: g.jo(l, t); break;
    case 1: g.jno(l, t); break;
    case 2: g.jb(l, t); break;
    case 3: g.jnb(l, t); break;
    case 4: g.jz(l, t); break;
    case 5: g.jnz(l, t); break;
    case 6: g.jbe(l, t); break;
    case 7: g.jnbe(l, t); break;
    case 8: g.js(l, t); break;
    case 9: g.jns(l, t); break;
    case 10: g.jp(l, t); break;
    case 11: g.jnp(l, t); break;
    case 12: g.jl(l, t); break;
    case 13: g.jnl(l, t); break;
    case 14: g.jle(l, t); break;
    default: g.jnle(l, t); break;
    }
}

} // namespace

void Gen::g_branch()
{
    // What a taken branch skips: a flag-neutral change the comparison sees.
    GReg victim = pick_reg(8, true, false);
    auto skipped = [&] { not_(reg(victim)); };
    auto kind = [&] { return chance(50) ? T_SHORT : T_NEAR; };
    Xbyak::Label target;
    switch (below(6)) {
    case 0: { // Jcc
        unsigned cc = static_cast<unsigned>(below(16));
        begin_main(cc_reads(cc));
        emit_jcc(*this, cc, target, kind());
        effects(0);
        break;
    }
    case 1: { // LOOP LOOPE LOOPNE JRCXZ JECXZ, 64- or 32-bit counter
        pin(RCX);
        const uint64_t counts[] = { 0, 1, 2, 0x100000000ULL, 0x100000001ULL, ~0ULL };
        set_reg(RCX, 8, chance(70) ? counts[below(std::size(counts))] : rnd());
        int which = static_cast<int>(below(5));
        begin_main(which == 1 || which == 2 ? kZF : 0);
        if (which < 3 && chance(30))
            db(0x67); // ECX as the counter
        switch (which) {
        case 0: loop(target); break;
        case 1: loope(target); break;
        case 2: loopne(target); break;
        case 3: jrcxz(target); break;
        default: jecxz(target); break;
        }
        effects(0);
        break;
    }
    case 2: { // CALL rel32 to the next instruction, POP the return address
        if (rsp_now() < kStackLow + 512)
            break;
        GReg r = pick_reg(8, true, false);
        begin_main();
        call(target);
        effects(0);
        L(target);
        pop(reg(r));
        return;
    }
    case 3: { // JMP through a register or memory
        GReg r = pick_reg(8, true, false);
        pin(r.idx);
        lea(reg(r), ptr[rip + target]);
        if (chance(50)) {
            begin_main();
            jmp(reg(r));
        } else {
            uint64_t a = 0;
            Xbyak::Address m = mem(64, MemSpec { .size = 8 }, &a);
            mov(abs(64, a), reg(r));
            begin_main();
            jmp(m);
        }
        effects(0);
        break;
    }
    case 4: { // PUSH target; RET (imm16 releases more stack)
        if (rsp_now() < kStackLow + 512)
            break;
        GReg r = pick_reg(8, true, false);
        lea(reg(r), ptr[rip + target]);
        push(reg(r));
        int release = rsp_now() + 40 <= kStackHigh && chance(30) ? 8 * static_cast<int>(below(3)) : 0;
        begin_main();
        ret(release);
        effects(0);
        move_rsp(release);
        break;
    }
    default: // JMP rel8/rel32
        begin_main();
        jmp(target, kind());
        effects(0);
        break;
    }
    if (!in_main()) { // not enough stack for CALL/RET: a plain branch instead
        begin_main();
        jmp(target, kind());
        effects(0);
    }
    skipped();
    L(target);
}

void Gen::g_smc()
{
    // Self-modifying code: the instruction under test stores into the immediate of the very next
    // instruction (same decoded block in the soft engine), which must then run with the new value.
    GReg r = pick_reg(4, true, false);
    bool rex = r.idx >= 8;
    uint32_t imm = static_cast<uint32_t>(rnd());
    unsigned which = static_cast<unsigned>(below(4)); // immediate byte to patch
    uint8_t value = static_cast<uint8_t>(rnd());
    begin_main();
    // mov byte [rip + disp32], imm8 is 7 bytes; the target's immediate follows its opcode (and REX).
    uint64_t target = getSize() + 7 + (rex ? 2 : 1) + which;
    // SAFETY: inside the code buffer, and only used for Xbyak's RIP-relative arithmetic.
    auto host = reinterpret_cast<const uint8_t*>(getCode()) + target;
    mov(byte[rip + static_cast<const void*>(host)], value);
    effects(0);
    if (getSize() + (rex ? 2 : 1) + which != target)
        throw std::logic_error("smc: unexpected store encoding");
    mov(Xbyak::Reg32(r.idx), imm);
}

void Gen::g_fault()
{
    switch (below(9)) {
    case 0: { // #DE: divide by zero
        unsigned w = width_any();
        GReg d = pick_reg(w, true, false, (1u << RAX) | (1u << RDX));
        pin(RAX);
        pin(RDX);
        pin(d.idx);
        set_reg(d.idx, w, 0);
        begin_main();
        if (chance(50))
            div(reg(d));
        else
            idiv(reg(d));
        break;
    }
    case 1: { // #DE: quotient too large (unsigned high half >= divisor; signed MIN / -1)
        unsigned w = width_any();
        unsigned bits = w * 8;
        GReg d = pick_reg(w, true, false, (1u << RAX) | (1u << RDX));
        pin(RAX);
        pin(RDX);
        pin(d.idx);
        bool is_signed = chance(50);
        uint64_t m = w >= 8 ? ~0ULL : (1ULL << bits) - 1;
        if (is_signed) {
            set_reg(d.idx, w, m); // -1
            if (w == 1) {
                set_reg(RAX, 2, 0xff80); // AX = -128
            } else {
                set_reg(RAX, w, 1ULL << (bits - 1));
                set_reg(RDX, w, m); // sign extension of the minimum
            }
        } else {
            uint64_t dv = 1 + below(std::min<uint64_t>(m, 1000));
            set_reg(d.idx, w, dv);
            uint64_t hi = dv + below(100);
            if (w == 1)
                set_reg(RAX, 2, (std::min<uint64_t>(hi, 0xff) << 8) | below(256));
            else
                set_reg(RDX, w, hi);
        }
        begin_main();
        if (is_signed)
            idiv(reg(d));
        else
            div(reg(d));
        break;
    }
    case 2: { // #UD: UD2, LOCK on a register destination or on an instruction that takes none
        int k = static_cast<int>(below(3));
        begin_main();
        if (k == 0) {
            ud2();
        } else if (k == 1) {
            lock();
            add(reg(pick_reg(4, true, false)), reg(pick_reg(4, false, false)));
        } else {
            lock();
            mov(reg(pick_reg(8, true, false)), reg(pick_reg(8, false, false)));
        }
        break;
    }
    case 3: { // #GP(0): a misaligned 16-byte SSE access, or a non-canonical address
        Xbyak::Xmm x(static_cast<int>(below(16)));
        if (chance(50)) {
            MemSpec spec { .size = 17 };
            uint64_t a = pick_addr(spec);
            if ((a & 15) == 0)
                a += 1 + below(15);
            GReg b = pick_reg(8, true, false);
            set_reg(b.idx, 8, a);
            begin_main();
            switch (below(options().pvm_reference ? 2 : 4)) {
            case 0: movdqa(x, ptr[Xbyak::Reg64(b.idx)]); break;
            case 1: movaps(ptr[Xbyak::Reg64(b.idx)], x); break;
            case 2: paddd(x, ptr[Xbyak::Reg64(b.idx)]); break;
            default: addpd(x, ptr[Xbyak::Reg64(b.idx)]); break;
            }
        } else {
            GReg b = pick_reg(8, true, false);
            set_reg(b.idx, 8, (chance(50) ? 0x0000800000000000ULL : 0xffff7ffffffff000ULL) + below(4096));
            begin_main();
            if (chance(50))
                mov(reg(pick_reg(4, true, false)), dword[Xbyak::Reg64(b.idx)]);
            else
                add(qword[Xbyak::Reg64(b.idx)], reg(pick_reg(8, false, false)));
        }
        break;
    }
    case 4: { // #PF: not present, read-only or supervisor page; or a store straddling into one
        static constexpr uint64_t pages[] = { kNotPresentPage, kReadOnlyPage, kSupervisorPage };
        uint64_t page = pages[below(3)];
        unsigned w = width_any();
        bool store = page == kReadOnlyPage || chance(60); // reading the read-only page is fine
        bool straddle = chance(40) && w > 1 && page == kNotPresentPage;
        // A straddling access starts in the last bytes of the window (the top of the stack
        // area): a store that faults on its second page must not have written the first.
        uint64_t a = straddle ? page - 1 - below(w - 1) : page + below(4096 - w);
        GReg b = pick_reg(8, true, false);
        GReg v = pick_reg(w, false, false);
        pin(b.idx);
        set_reg(b.idx, 8, a);
        Xbyak::Address m = w == 1 ? byte[Xbyak::Reg64(b.idx)] : w == 2 ? word[Xbyak::Reg64(b.idx)]
                         : w == 4 ? dword[Xbyak::Reg64(b.idx)] : qword[Xbyak::Reg64(b.idx)];
        begin_main();
        if (store)
            mov(m, reg(v));
        else
            mov(reg(pick_reg(w, true, false, 1u << b.idx)), m);
        break;
    }
    case 5: { // #PF in the middle of a REP string: the registers tell how far it got
        bool is_movs = chance(50);
        unsigned size = 1u << below(4);
        uint64_t done = below(40);
        uint64_t count = done + 1 + below(40);
        pin(RSI);
        pin(RDI);
        pin(RCX);
        bool up = !df();
        // DF=0 runs up into the not-present page; DF=1 runs down from the read-only page into
        // the window... so for DF=1 the fault comes from the first store (read-only page).
        uint64_t dst = up ? kNotPresentPage - done * size : kReadOnlyPage + 0x800;
        uint64_t src = kDataBase + 0x800 + below(0x400);
        if (is_movs && chance(40) && up) {
            // The source runs into the not-present page instead (a read fault).
            src = kNotPresentPage - done * size;
            dst = kDataBase + 0x400 + below(0x400);
        }
        set_reg(RSI, 8, src);
        set_reg(RDI, 8, dst);
        set_reg(RCX, 8, count);
        begin_main();
        db(0xf3);
        if (size == 2)
            db(0x66);
        if (size == 8)
            db(0x48);
        db((is_movs ? 0xa4 : 0xaa) + (size > 1 ? 1 : 0));
        break;
    }
    case 6: { // #XM: an unmasked SIMD exception (CR4.OSXMMEXCPT is set)
        enum { kInvalid, kDenormal, kZeroDivide, kOverflow, kUnderflow, kPrecision };
        int e = static_cast<int>(below(6));
        static constexpr unsigned mask_bit[] = { 7, 8, 9, 10, 11, 12 };
        uint32_t mx = random_mxcsr() & ~(1u << mask_bit[e]) & ~0x3fu; // no sticky flags either
        if (e == kDenormal)
            mx &= ~0x40u; // DAZ would turn the denormal operand into zero
        uint64_t a = constant(&mx, 4, 4);
        // Operands (single precision): sqrt(-1); 1 + denormal; 1 / 0; max * max; 1 / 3; and for
        // underflow the smallest normal * 0.5, an exact tiny result: it faults with UE alone on
        // any vendor (whether PE joins UE for an inexact one was only measured on AMD; the unit
        // tests pin that down).
        static constexpr uint32_t lhs[] = { 0xbf800000, 0x3f800000, 0x3f800000, 0x7f7fffff, 0x00800000, 0x3f800000 };
        static constexpr uint32_t rhs[] = { 0xbf800000, 0x00000001, 0x00000000, 0x7f7fffff, 0x3f000000, 0x40400000 };
        Xbyak::Xmm d(static_cast<int>(below(16))), s(static_cast<int>(below(16)));
        if (d.getIdx() == s.getIdx())
            s = Xbyak::Xmm((d.getIdx() + 1) % 16);
        GReg t = pick_reg(4, true, false);
        mov(reg(t), lhs[e]);
        movd(d, Xbyak::Reg32(t.idx));
        mov(reg(t), rhs[e]);
        movd(s, Xbyak::Reg32(t.idx));
        ldmxcsr(abs(32, a));
        begin_main();
        switch (e) {
        case kInvalid: sqrtss(d, s); break;
        case kDenormal: addss(d, s); break;
        case kZeroDivide:
        case kPrecision: divss(d, s); break;
        default: mulss(d, s); break;
        }
        break;
    }
    case 7: { // #GP(0): privileged at CPL3 (IOPL 0), or a port the I/O bitmap closes
        int k = static_cast<int>(below(6));
        begin_main();
        switch (k) {
        case 0: cli(); break;
        case 1: sti(); break;
        case 2: hlt(); break;
        case 3: out_(static_cast<uint8_t>(kDonePort + 1 + below(8)), al); break;
        case 4: in_(al, static_cast<uint8_t>(kDonePort + 1 + below(8))); break;
        default: db(0x0f); db(0x32); break;                        // rdmsr
        }
        break;
    }
    default: { // #PF on the stack: PUSH/CALL below a not-present page, POP from one
        GReg r = pick_reg(8, false, false);
        bool push_side = chance(60);
        // RSP may be changed freely: the case ends here.
        set_reg(RSP, 8, push_side ? kNotPresentPage + 0x1000 - 8 * below(2) : kNotPresentPage + 8 * below(4));
        begin_main();
        if (push_side) {
            if (chance(50))
                push(reg(r));
            else
                push(qword[Xbyak::RegExp(static_cast<size_t>(kDataBase + 8 * below(64)))]);
        } else {
            pop(reg(pick_reg(8, true, false)));
        }
        break;
    }
    }
    effects(0);
}

} // namespace vessel::difftest
