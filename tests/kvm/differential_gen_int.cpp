// Differential CPU tests: integer instruction classes.
//
// Undefined flags (Intel SDM vol. 2 / AMD APM vol. 3; masked, and re-defined by a `cmp` before
// any instruction that reads them):
//   ADD ADC SUB SBB CMP NEG INC DEC XADD CMPXCHG CMPS SCAS  none
//   AND OR XOR TEST                 AF
//   SHL SHR (count c = masked count) c = 0: no flag changes; AF; OF if c != 1; CF if c >= width
//   SAR                             c = 0: none; AF; OF if c != 1
//   ROL ROR RCL RCR                 c = 0: none; only CF/OF written; OF if c != 1
//   SHLD SHRD                       c = 0: none; AF; OF if c != 1 (16-bit counts > 16 are not
//                                   generated: result and flags undefined)
//   MUL IMUL (all forms)            SF ZF AF PF
//   DIV IDIV                        all six (operands are chosen so no #DE happens)
//   BT BTS BTR BTC                  OF SF AF PF (ZF unaffected)
//   BSF BSR                         CF OF SF AF PF (ZF defined); the destination is left
//                                   unchanged for a zero source (AMD documents it, Intel
//                                   hardware does it, the soft engine does it) except the upper
//                                   half of a 32-bit destination, which some Intel parts clear:
//                                   32-bit scans are only generated with a nonzero source
//   LZCNT                           OF SF AF PF
//   POPCNT CMPXCHG8B/16B LAHF SAHF  none (CMPXCHG8B/16B write only ZF)
#include <stdexcept>
#include <utility>

#include "differential_gen_impl.h"

namespace vessel::difftest {

namespace {

// The immediate as Xbyak wants it for an operand of `w` bytes (sign-extended encodings).
uint32_t imm_for(unsigned w, uint64_t v)
{
    switch (w) {
    case 1: return static_cast<uint32_t>(v & 0xff);
    case 2: return static_cast<uint32_t>(static_cast<int32_t>(static_cast<int16_t>(v)));
    default: return static_cast<uint32_t>(v);
    }
}

uint64_t mask_of(unsigned w) { return w >= 8 ? ~0ULL : (1ULL << (w * 8)) - 1; }

int64_t sext(uint64_t v, unsigned w)
{
    unsigned shift = 64 - w * 8;
    return static_cast<int64_t>(v << shift) >> shift;
}

enum AluOp { kAdd, kOr, kAdc, kSbb, kAnd, kSub, kXor, kCmp, kTest };

} // namespace

void Gen::g_alu2()
{
    int op = static_cast<int>(below(9));
    unsigned w = width_any();
    bool no_rex = w == 1 && chance(40);
    bool writes = op != kCmp && op != kTest;
    GReg d = pick_reg(w, writes, no_rex);
    GReg s = pick_reg(w, false, no_rex);
    uint32_t imm = imm_for(w, interesting(w));
    uint64_t reads = (op == kAdc || op == kSbb) ? kCF : 0;
    uint64_t undefined = (op == kAnd || op == kOr || op == kXor || op == kTest) ? kAF : 0;

    auto emit_rr = [&](const Xbyak::Operand& a, const Xbyak::Operand& b) {
        switch (op) {
        case kAdd: add(a, b); break;
        case kOr: or_(a, b); break;
        case kAdc: adc(a, b); break;
        case kSbb: sbb(a, b); break;
        case kAnd: and_(a, b); break;
        case kSub: sub(a, b); break;
        case kXor: xor_(a, b); break;
        case kCmp: cmp(a, b); break;
        default: test(a.isMEM() ? a : b, a.isMEM() ? b.getReg() : a.getReg()); break;
        }
    };
    auto emit_ri = [&](const Xbyak::Operand& a) {
        switch (op) {
        case kAdd: add(a, imm); break;
        case kOr: or_(a, imm); break;
        case kAdc: adc(a, imm); break;
        case kSbb: sbb(a, imm); break;
        case kAnd: and_(a, imm); break;
        case kSub: sub(a, imm); break;
        case kXor: xor_(a, imm); break;
        case kCmp: cmp(a, imm); break;
        default: test(a, imm); break;
        }
    };

    int form = static_cast<int>(below(5));
    if (form == 0) {
        begin_main(reads);
        emit_rr(reg(d), reg(s));
    } else if (form == 1) {
        begin_main(reads);
        emit_ri(reg(d));
    } else {
        // LOCKed operands are naturally aligned: a split lock may be slow or trap on the host.
        bool locked = form >= 3 && writes && chance(30);
        Xbyak::Address m = mem(w * 8, MemSpec { .size = w, .align = locked ? w : 1, .no_rex = no_rex });
        begin_main(reads);
        if (locked)
            lock();
        if (form == 2)
            emit_rr(reg(d), m);
        else if (form == 3)
            emit_rr(m, reg(s));
        else
            emit_ri(m);
    }
    effects(kArith, undefined);
}

void Gen::g_alu1()
{
    int op = static_cast<int>(below(4)); // inc dec neg not
    unsigned w = width_any();
    bool no_rex = w == 1 && chance(40);
    auto emit = [&](const Xbyak::Operand& a) {
        switch (op) {
        case 0: inc(a); break;
        case 1: dec(a); break;
        case 2: neg(a); break;
        default: not_(a); break;
        }
    };
    if (chance(60)) {
        GReg d = pick_reg(w, true, no_rex);
        begin_main();
        emit(reg(d));
    } else {
        bool locked = chance(30);
        Xbyak::Address m = mem(w * 8, MemSpec { .size = w, .align = locked ? w : 1, .no_rex = no_rex });
        begin_main();
        if (locked)
            lock();
        emit(m);
    }
    static constexpr uint64_t written[] = { kArith & ~kCF, kArith & ~kCF, kArith, 0 };
    effects(written[op]);
}

void Gen::g_shift()
{
    enum { kRol, kRor, kRcl, kRcr, kShl, kShr, kSar };
    int op = static_cast<int>(below(7));
    unsigned w = width_any();
    unsigned bits = w * 8;
    bool no_rex = w == 1 && chance(40);
    int cform = static_cast<int>(below(3)); // by 1, by imm8, by CL
    const unsigned counts[] = { 0, 1, 2, bits - 1, bits, bits + 1, 31, 32, 33, 63, 64, 65, 255 };
    unsigned count = cform == 0 ? 1 : chance(70) ? counts[below(std::size(counts))] : static_cast<unsigned>(below(256));
    if (cform == 2) {
        pin(RCX);
        mov(cl, count);
    }
    auto emit = [&](const Xbyak::Operand& a) {
        if (cform == 2) {
            switch (op) {
            case kRol: rol(a, cl); break;
            case kRor: ror(a, cl); break;
            case kRcl: rcl(a, cl); break;
            case kRcr: rcr(a, cl); break;
            case kShl: shl(a, cl); break;
            case kShr: shr(a, cl); break;
            default: sar(a, cl); break;
            }
            return;
        }
        int c = static_cast<int>(count);
        switch (op) {
        case kRol: rol(a, c); break;
        case kRor: ror(a, c); break;
        case kRcl: rcl(a, c); break;
        case kRcr: rcr(a, c); break;
        case kShl: shl(a, c); break;
        case kShr: shr(a, c); break;
        default: sar(a, c); break;
        }
    };

    unsigned c = count & (w == 8 ? 63 : 31);
    uint64_t reads = 0, written = 0, undefined = 0;
    if (c != 0) {
        switch (op) {
        case kRcl:
        case kRcr: reads = kCF; [[fallthrough]];
        case kRol:
        case kRor:
            written = kCF | kOF;
            undefined = c != 1 ? kOF : 0;
            break;
        case kShl:
        case kShr:
            written = kArith;
            undefined = kAF | (c != 1 ? kOF : 0) | (c >= bits ? kCF : 0);
            break;
        default:
            written = kArith;
            undefined = kAF | (c != 1 ? kOF : 0);
            break;
        }
    }
    if (chance(70)) {
        GReg d = pick_reg(w, true, no_rex);
        begin_main(reads);
        emit(reg(d));
    } else {
        Xbyak::Address m = mem(w * 8, MemSpec { .size = w, .no_rex = no_rex });
        begin_main(reads);
        emit(m);
    }
    effects(written, undefined);
}

void Gen::g_shxd()
{
    bool left = chance(50);
    unsigned w = width_16up();
    unsigned bits = w * 8;
    bool by_cl = chance(50);
    const unsigned counts[] = { 0, 1, 2, bits - 1, bits, 31, 32, 63, 64 };
    unsigned count = chance(60) ? counts[below(std::size(counts))] : static_cast<unsigned>(below(256));
    if (w == 2 && (count & 31) > 16)
        count = (count & ~31u) | static_cast<unsigned>(below(17)); // > 16: undefined, not generated
    unsigned c = count & (w == 8 ? 63 : 31);
    if (by_cl) {
        pin(RCX);
        mov(cl, count);
    }
    GReg s = pick_reg(w, false, false);
    auto emit = [&](const Xbyak::Operand& a) {
        if (left) {
            if (by_cl)
                shld(a, reg(s), cl);
            else
                shld(a, reg(s), static_cast<uint8_t>(count));
        } else {
            if (by_cl)
                shrd(a, reg(s), cl);
            else
                shrd(a, reg(s), static_cast<uint8_t>(count));
        }
    };
    if (chance(60)) {
        GReg d = pick_reg(w, true, false);
        begin_main();
        emit(reg(d));
    } else {
        Xbyak::Address m = mem(w * 8, MemSpec { .size = w });
        begin_main();
        emit(m);
    }
    if (c == 0)
        effects(0);
    else
        effects(kArith, kAF | (c != 1 ? kOF : 0));
}

void Gen::g_mul()
{
    int form = static_cast<int>(below(4)); // mul, imul r/m, imul r, r/m, imul r, r/m, imm
    unsigned w = form < 2 ? width_any() : width_16up();
    bool no_rex = w == 1 && chance(40);
    bool from_mem = chance(35);
    GReg d = pick_reg(w, true, no_rex);
    GReg s = pick_reg(w, false, no_rex);
    int32_t imm = static_cast<int32_t>(sext(interesting(w == 8 ? 4 : w), w == 8 ? 4 : w));
    if (chance(40))
        imm = static_cast<int8_t>(imm);
    auto emit = [&](const Xbyak::Operand& src) {
        switch (form) {
        case 0: mul(src); break;
        case 1: imul(src); break;
        case 2: imul(reg(d), src); break;
        default: imul(reg(d), src, imm); break;
        }
    };
    if (from_mem) {
        Xbyak::Address m = mem(w * 8, MemSpec { .size = w, .no_rex = no_rex });
        begin_main();
        emit(m);
    } else {
        begin_main();
        emit(reg(s));
    }
    effects(kArith, kSF | kZF | kAF | kPF);
}

void Gen::g_div()
{
    bool is_signed = chance(50);
    unsigned w = width_any();
    unsigned bits = w * 8;
    uint64_t m = mask_of(w);
    bool from_mem = chance(35);
    bool no_rex = w == 1 && !from_mem && chance(40);

    // divisor d, quotient q, remainder r with |r| < |d|: the dividend q*d + r never overflows.
    unsigned __int128 dividend_u = 0;
    __int128 dividend_s = 0;
    uint64_t divisor = 0;
    if (!is_signed) {
        uint64_t d = interesting(w);
        if (from_mem && w == 8)
            d = static_cast<uint64_t>(static_cast<int64_t>(static_cast<int32_t>(d)));
        if (d == 0)
            d = 1 + below(m < 1000 ? m : 1000);
        uint64_t q = interesting(w);
        uint64_t r = static_cast<uint64_t>(static_cast<unsigned __int128>(rnd()) % d);
        dividend_u = static_cast<unsigned __int128>(q) * d + r;
        divisor = d;
    } else {
        int64_t d = sext(interesting(w), w);
        if (from_mem && w == 8)
            d = static_cast<int32_t>(d);
        if (d == 0)
            d = chance(50) ? 1 : -1;
        int64_t q = sext(interesting(w), w);
        __int128 p = static_cast<__int128>(q) * d;
        unsigned __int128 mag = d < 0 ? static_cast<unsigned __int128>(-static_cast<__int128>(d))
                                      : static_cast<unsigned __int128>(d);
        __int128 rmag = static_cast<__int128>(static_cast<unsigned __int128>(rnd()) % mag);
        __int128 r = p > 0 ? rmag : p < 0 ? -rmag : (chance(50) ? rmag : -rmag);
        dividend_s = p + r;
        divisor = static_cast<uint64_t>(d) & m;
    }
    uint64_t lo, hi;
    if (is_signed) {
        lo = static_cast<uint64_t>(dividend_s);
        hi = bits == 64 ? static_cast<uint64_t>(dividend_s >> 64) : static_cast<uint64_t>(dividend_s >> bits);
    } else {
        lo = static_cast<uint64_t>(dividend_u);
        hi = bits == 64 ? static_cast<uint64_t>(dividend_u >> 64) : static_cast<uint64_t>(dividend_u >> bits);
    }

    pin(RAX);
    pin(RDX);
    auto emit = [&](const Xbyak::Operand& src) {
        if (is_signed)
            idiv(src);
        else
            div(src);
    };
    auto set_dividend = [&] {
        if (w == 1) {
            set_reg(RAX, 2, ((hi & 0xff) << 8) | (lo & 0xff));
        } else {
            set_reg(RAX, w, lo);
            set_reg(RDX, w, hi);
        }
    };
    if (from_mem) {
        uint64_t addr = 0;
        Xbyak::Address a = mem(bits, MemSpec { .size = w, .align = w }, &addr);
        mov(abs(bits, addr), divisor);
        set_dividend();
        begin_main();
        emit(a);
    } else {
        GReg d = pick_reg(w, true, no_rex, (1u << RAX) | (1u << RDX));
        if (d.high)
            mov(reg(d), divisor);
        else
            set_reg(d.idx, w, divisor);
        set_dividend();
        begin_main();
        emit(reg(d));
    }
    effects(kArith, kArith);
}

void Gen::g_bt()
{
    int op = static_cast<int>(below(4)); // bt bts btr btc
    unsigned w = width_16up();
    int form = static_cast<int>(below(4)); // r,r  r,imm  m,imm  m,r
    uint8_t imm = static_cast<uint8_t>(chance(50) ? below(w * 8) : below(256));
    auto emit_r = [&](const Xbyak::Operand& a, const Xbyak::Reg& off) {
        switch (op) {
        case 0: bt(a, off); break;
        case 1: bts(a, off); break;
        case 2: btr(a, off); break;
        default: btc(a, off); break;
        }
    };
    auto emit_i = [&](const Xbyak::Operand& a) {
        switch (op) {
        case 0: bt(a, imm); break;
        case 1: bts(a, imm); break;
        case 2: btr(a, imm); break;
        default: btc(a, imm); break;
        }
    };
    if (form == 0) {
        GReg d = pick_reg(w, op != 0, false), s = pick_reg(w, false, false);
        begin_main();
        emit_r(reg(d), reg(s));
    } else if (form == 1) {
        GReg d = pick_reg(w, op != 0, false);
        begin_main();
        emit_i(reg(d));
    } else {
        // A register bit offset reaches other bytes: keep it within ±250 bytes of the operand.
        GReg off = pick_reg(w, true, false);
        if (form == 3) {
            pin(off.idx);
            set_reg(off.idx, w, static_cast<uint64_t>(range(-2000, 2000)));
        }
        bool locked = op != 0 && chance(30);
        Xbyak::Address m = mem(w * 8, MemSpec { .size = w, .align = locked ? w : 1, .lo = kDataBase + 512,
                                                .hi = kDataBase + kDataSize - 512 });
        begin_main();
        if (locked)
            lock();
        if (form == 2)
            emit_i(m);
        else
            emit_r(m, reg(off));
    }
    effects(kCF, kOF | kSF | kAF | kPF);
}

void Gen::g_bitscan()
{
    int op = static_cast<int>(below(4)); // bsf bsr popcnt lzcnt
    unsigned w = width_16up();
    bool zero = chance(25);
    // BSF/BSR r32 with a zero source: some Intel parts clear the destination's upper half, others
    // (and AMD, and the soft engine) keep it. Not comparable: 32-bit scans get a nonzero source.
    bool force_nonzero = op < 2 && w == 4;
    if (force_nonzero)
        zero = false;
    uint64_t nonzero = interesting(4) | (1ULL << below(32));
    GReg d = pick_reg(w, true, false);
    auto emit = [&](const Xbyak::Operand& src) {
        switch (op) {
        case 0: bsf(reg(d), src); break;
        case 1: bsr(reg(d), src); break;
        case 2: popcnt(reg(d), src); break;
        default: lzcnt(reg(d), src); break;
        }
    };
    if (chance(65)) {
        GReg s = pick_reg(w, zero || force_nonzero, false);
        if (zero || force_nonzero) {
            pin(s.idx);
            set_reg(s.idx, w, zero ? 0 : nonzero);
        }
        begin_main();
        emit(reg(s));
    } else {
        uint64_t addr = 0;
        Xbyak::Address m = mem(w * 8, MemSpec { .size = w, .align = w }, &addr);
        if (zero || force_nonzero)
            mov(abs(w * 8, addr), zero ? 0 : nonzero & 0xffffffff);
        begin_main();
        emit(m);
    }
    static constexpr uint64_t undefined[] = { kArith & ~kZF, kArith & ~kZF, 0, kOF | kSF | kAF | kPF };
    effects(kArith, undefined[op]);
}

void Gen::g_movx()
{
    switch (below(8)) {
    case 0:
    case 1: { // movzx / movsx from 8 or 16 bits
        bool sx = chance(50);
        bool from8 = chance(50);
        bool no_rex = from8 && chance(30);
        unsigned w = from8 ? (no_rex ? 2u << below(2) : width_16up()) : 4u << below(2);
        GReg d = pick_reg(w, true, no_rex);
        auto emit = [&](const Xbyak::Operand& src) {
            if (sx)
                movsx(reg(d), src);
            else
                movzx(reg(d), src);
        };
        if (chance(60)) {
            GReg s = pick_reg(from8 ? 1 : 2, false, no_rex);
            begin_main();
            emit(reg(s));
        } else {
            Xbyak::Address m = mem(from8 ? 8 : 16, MemSpec { .size = from8 ? 1u : 2u, .no_rex = no_rex });
            begin_main();
            emit(m);
        }
        break;
    }
    case 2: { // movsxd
        GReg d = pick_reg(8, true, false);
        if (chance(60)) {
            GReg s = pick_reg(4, false, false);
            begin_main();
            movsxd(Xbyak::Reg64(d.idx), reg(s));
        } else {
            Xbyak::Address m = mem(32, MemSpec { .size = 4 });
            begin_main();
            movsxd(Xbyak::Reg64(d.idx), m);
        }
        break;
    }
    case 3: { // bswap
        bool wide = chance(50);
        GReg d = pick_reg(wide ? 8 : 4, true, false);
        begin_main();
        if (wide)
            bswap(Xbyak::Reg64(d.idx));
        else
            bswap(Xbyak::Reg32(d.idx));
        break;
    }
    case 4: { // cbw cwde cdqe cwd cdq cqo
        int which = static_cast<int>(below(6));
        begin_main();
        switch (which) {
        case 0: cbw(); break;
        case 1: cwde(); break;
        case 2: cdqe(); break;
        case 3: cwd(); break;
        case 4: cdq(); break;
        default: cqo(); break;
        }
        break;
    }
    case 5: { // xlat
        pin(RBX);
        set_reg(RBX, 8, pick_addr(MemSpec { .size = 256 }));
        begin_main();
        xlatb();
        break;
    }
    default: { // mov in all forms
        unsigned w = width_any();
        bool no_rex = w == 1 && chance(40);
        GReg d = pick_reg(w, true, no_rex), s = pick_reg(w, false, no_rex);
        uint64_t v = interesting(w);
        switch (below(5)) {
        case 0:
            begin_main();
            mov(reg(d), reg(s));
            break;
        case 1:
            begin_main();
            if (w == 8 && chance(50))
                mov(reg(d), static_cast<uint64_t>(static_cast<int64_t>(static_cast<int32_t>(v))));
            else
                mov(reg(d), v);
            break;
        case 2: {
            Xbyak::Address m = mem(w * 8, MemSpec { .size = w, .no_rex = no_rex });
            begin_main();
            mov(reg(d), m);
            break;
        }
        case 3: {
            Xbyak::Address m = mem(w * 8, MemSpec { .size = w, .no_rex = no_rex });
            begin_main();
            mov(m, reg(s));
            break;
        }
        default: {
            Xbyak::Address m = mem(w * 8, MemSpec { .size = w, .no_rex = no_rex });
            begin_main();
            mov(m, w == 8 ? static_cast<uint64_t>(static_cast<int64_t>(static_cast<int32_t>(v))) : v);
            break;
        }
        }
        break;
    }
    }
    effects(0);
}

void Gen::g_xchg()
{
    int op = static_cast<int>(below(4)); // xchg r,r  xchg r,m  xadd  cmpxchg
    unsigned w = width_any();
    bool no_rex = w == 1 && chance(40);
    if (op == 3)
        pin(RAX);
    GReg d = pick_reg(w, true, no_rex);
    GReg s = pick_reg(w, true, no_rex);
    Xbyak::Reg acc = reg(RAX, w);
    if (op == 0) {
        begin_main();
        xchg(reg(d), reg(s));
        effects(0);
        return;
    }
    bool to_mem = op == 1 || chance(50);
    if (!to_mem) {
        if (op == 3 && chance(50))
            mov(acc, reg(d)); // make the comparison succeed
        begin_main();
        if (op == 2)
            xadd(reg(d), reg(s));
        else
            cmpxchg(reg(d), reg(s));
    } else {
        bool locked = op == 1 || chance(50); // XCHG with memory is always locked
        uint64_t addr = 0;
        Xbyak::Address m = mem(w * 8, MemSpec { .size = w, .align = locked ? w : 1, .no_rex = no_rex }, &addr);
        if (op == 3 && chance(50))
            mov(acc, abs(w * 8, addr));
        begin_main();
        if (op != 1 && locked)
            lock();
        if (op == 1) {
            if (chance(50))
                xchg(m, reg(s));
            else
                xchg(reg(s), m);
        } else if (op == 2) {
            xadd(m, reg(s));
        } else {
            cmpxchg(m, reg(s));
        }
    }
    effects(op == 1 ? 0 : kArith);
}

void Gen::g_cmpxchg8b()
{
    bool wide = chance(50);
    unsigned half = wide ? 8 : 4;
    pin(RAX);
    pin(RBX);
    pin(RCX);
    pin(RDX);
    uint64_t a = 0;
    Xbyak::Address m = mem(0, MemSpec { .size = 2 * half, .align = 2 * half }, &a);
    if (chance(50)) {
        mov(reg(RAX, half), abs(half * 8, a));
        mov(reg(RDX, half), abs(half * 8, a + half));
    }
    begin_main();
    if (chance(50))
        lock();
    if (wide)
        cmpxchg16b(m);
    else
        cmpxchg8b(m);
    effects(kZF);
}

void Gen::g_cmov_setcc()
{
    unsigned cc = static_cast<unsigned>(below(16));
    if (chance(50)) {
        unsigned w = width_16up();
        GReg d = pick_reg(w, true, false);
        if (chance(60)) {
            GReg s = pick_reg(w, false, false);
            begin_main(cc_reads(cc));
            emit_cmov(cc, reg(d), reg(s));
        } else {
            Xbyak::Address m = mem(w * 8, MemSpec { .size = w });
            begin_main(cc_reads(cc));
            emit_cmov(cc, reg(d), m);
        }
    } else {
        bool no_rex = chance(40);
        if (chance(70)) {
            GReg d = pick_reg(1, true, no_rex);
            begin_main(cc_reads(cc));
            emit_setcc(cc, reg(d));
        } else {
            Xbyak::Address m = mem(8, MemSpec { .size = 1, .no_rex = no_rex });
            begin_main(cc_reads(cc));
            emit_setcc(cc, m);
        }
    }
    effects(0);
}

void Gen::g_lea()
{
    unsigned w = width_16up();
    GReg d = pick_reg(w, true, false);
    int64_t disp = chance(30) ? 0 : chance(50) ? range(-128, 127) : static_cast<int32_t>(rnd());
    int scale = 1 << below(4);
    bool a32 = chance(25);
    int kind = static_cast<int>(below(10));
    begin_main();
    if (kind == 0) {
        lea(reg(d), ptr[rip + static_cast<int>(disp)]);
    } else {
        int b = static_cast<int>(below(16));
        int i = static_cast<int>(below(16));
        if (i == RSP)
            i = RBP;
        bool has_base = kind != 1, has_index = kind >= 5;
        Xbyak::RegExp e(static_cast<size_t>(disp));
        if (a32) {
            if (has_base)
                e = e + Xbyak::Reg32(b);
            if (has_index)
                e = e + Xbyak::Reg32(i) * scale;
        } else {
            if (has_base)
                e = e + Xbyak::Reg64(b);
            if (has_index)
                e = e + Xbyak::Reg64(i) * scale;
        }
        lea(reg(d), ptr[e]);
    }
    effects(0);
}

void Gen::g_pushpop()
{
    bool can_push = rsp_now() >= kStackLow + 512;
    bool can_pop = rsp_now() + 16 <= kStackHigh;
    bool do_push = can_push && (!can_pop || chance(50));
    bool narrow = chance(15);
    unsigned size = narrow ? 2 : 8;
    if (do_push) {
        switch (below(4)) {
        case 0: {
            GReg s = pick_reg(size, false, false);
            begin_main();
            push(reg(s));
            break;
        }
        case 1: {
            uint32_t imm = static_cast<uint32_t>(chance(50) ? static_cast<int8_t>(rnd()) : static_cast<int32_t>(rnd()));
            begin_main();
            if (narrow)
                push(word, imm & 0xffff);
            else
                push(imm);
            break;
        }
        default: {
            Xbyak::Address m = mem(size * 8, MemSpec { .size = size });
            begin_main();
            push(m);
            break;
        }
        }
        move_rsp(-static_cast<int64_t>(size));
    } else {
        if (chance(50)) {
            GReg d = pick_reg(size, true, false);
            begin_main();
            pop(reg(d));
        } else {
            // POP computes an RSP-based address with RSP already incremented.
            Xbyak::Address m = mem(size * 8, MemSpec { .size = size, .rsp_bias = static_cast<int64_t>(size) });
            begin_main();
            pop(m);
        }
        move_rsp(static_cast<int64_t>(size));
    }
    effects(0);
}

void Gen::g_string()
{
    enum { kMovs, kStos, kLods, kCmps, kScas };
    int op = static_cast<int>(below(5));
    unsigned size = 1u << below(4);
    int prefix = static_cast<int>(below(3)); // none, rep/repe, repne (cmps/scas only)
    if (prefix == 2 && op != kCmps && op != kScas)
        prefix = 1;
    bool a32 = chance(15);
    // Counts: mostly short, sometimes long enough for a bulk path (up to 2 KiB moved).
    uint64_t count = !prefix ? 0 : chance(60) ? below(13) : below(2048 / size + 1);
    uint64_t extent = (prefix ? count : 1) * size;
    bool down = df();
    // A run of `extent` bytes starting (DF=0) or ending (DF=1) near the returned address.
    auto run_start = [&]() -> uint64_t {
        uint64_t lo = kDataBase + 16 + (down ? extent : 0);
        uint64_t hi = kDataBase + kDataSize - 16 - size - (down ? 0 : extent);
        if (chance(20)) { // through the page boundary in the middle of the buffer
            uint64_t b = kDataBase + 0x1000 - (down ? 0 : below(extent + 1)) + (down ? below(extent + 1) : 0);
            if (b >= lo && b <= hi)
                return b;
        }
        return lo + below(hi - lo + 1);
    };
    auto upper = [&]() -> uint64_t { return a32 && chance(50) ? (rnd() << 32) : 0; };
    uint64_t src = run_start(), dst = run_start();
    if (op == kMovs && chance(30)) {
        // Overlapping source and destination: element by element, as the SDM defines it.
        int64_t delta = range(-3 * static_cast<int64_t>(size), 3 * static_cast<int64_t>(size));
        uint64_t d = src + static_cast<uint64_t>(delta);
        uint64_t lo = kDataBase + 16 + (down ? extent : 0), hi = kDataBase + kDataSize - 16 - size - (down ? 0 : extent);
        if (d >= lo && d <= hi)
            dst = d;
    }
    // The source (DS:RSI) may take an FS/GS override; the destination is always ES:RDI.
    uint8_t seg = 0;
    uint64_t seg_base = 0;
    if (!a32 && (op == kMovs || op == kLods || op == kCmps) && chance(15)) {
        seg = chance(50) ? 0x65 : 0x64;
        seg_base = seg == 0x65 ? m_case.gs_base : m_case.fs_base;
    }
    pin(RSI);
    pin(RDI);
    if (op == kMovs || op == kLods || op == kCmps)
        set_reg(RSI, 8, (src - seg_base) | upper());
    if (op != kLods)
        set_reg(RDI, 8, dst | upper());
    if (prefix) {
        pin(RCX);
        set_reg(RCX, 8, count | upper());
    }
    begin_main();
    // Prefixes in random order.
    uint8_t prefixes[3];
    unsigned n = 0;
    if (a32)
        prefixes[n++] = 0x67;
    if (prefix)
        prefixes[n++] = prefix == 1 ? 0xf3 : 0xf2;
    if (seg)
        prefixes[n++] = seg;
    for (unsigned i = n; i > 1; --i)
        std::swap(prefixes[i - 1], prefixes[below(i)]);
    for (unsigned i = 0; i < n; ++i)
        db(prefixes[i]);
    static constexpr uint8_t opcodes[] = { 0xa4, 0xaa, 0xac, 0xa6, 0xae }; // byte forms; +1 = wider
    if (size == 2)
        db(0x66);
    if (size == 8)
        db(0x48);
    db(opcodes[op] + (size > 1 ? 1 : 0));
    bool flags = (op == kCmps || op == kScas) && !(prefix && count == 0);
    effects(flags ? kArith : 0);
}

void Gen::g_flagops()
{
    switch (below(9)) {
    case 0:
        begin_main(kSF | kZF | kAF | kPF | kCF);
        lahf();
        effects(0);
        break;
    case 1:
        begin_main();
        sahf();
        effects(kSF | kZF | kAF | kPF | kCF);
        break;
    case 2:
        begin_main();
        clc();
        effects(kCF);
        break;
    case 3:
        begin_main();
        stc();
        effects(kCF);
        break;
    case 4:
        begin_main(kCF);
        cmc();
        effects(kCF);
        break;
    case 5:
        begin_main();
        cld();
        set_df(false);
        effects(kDF);
        break;
    case 6:
        begin_main();
        std();
        set_df(true);
        effects(kDF);
        break;
    default: {
        bool df = chance(30);
        uint32_t v = 0x2 | static_cast<uint32_t>(rnd() & kArith) | (df ? static_cast<uint32_t>(kDF) : 0);
        push(v);
        begin_main();
        popfq();
        set_df(df);
        effects(kArith | kDF);
        break;
    }
    }
}

} // namespace vessel::difftest
