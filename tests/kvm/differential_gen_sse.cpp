// Differential CPU tests: SSE/SSE2 instruction classes (integer, floating point, conversions,
// MXCSR). None of them writes RFLAGS except COMISS/COMISD/UCOMISS/UCOMISD, which define all six
// arithmetic flags. MXCSR (rounding mode, FTZ, DAZ, sticky exception flags) is compared after
// every case; exceptions stay masked so none faults. RCPPS/RSQRTPS are not generated: their
// results are implementation-specific approximations.
#include "differential_gen_impl.h"

namespace vessel::difftest {

namespace {

using Xbyak::CodeGenerator;
using Xbyak::Mmx;
using Xbyak::Operand;
using Xbyak::Xmm;

using MmxOp = void (CodeGenerator::*)(const Mmx&, const Operand&);
using XmmOp = void (CodeGenerator::*)(const Xmm&, const Operand&);
using XmmImmOp = void (CodeGenerator::*)(const Xmm&, const Operand&, uint8_t);
using MmxImmOp = void (CodeGenerator::*)(const Mmx&, const Operand&, uint8_t);
using MmxShiftImm = void (CodeGenerator::*)(const Mmx&, int);

struct MmxEntry {
    MmxOp fn;
    bool shift; // count in the source (an xmm or m128: the low 64 bits)
};

const MmxEntry kIntOps[] = {
    { &CodeGenerator::paddb, false },    { &CodeGenerator::paddw, false },   { &CodeGenerator::paddd, false },
    { &CodeGenerator::paddq, false },    { &CodeGenerator::psubb, false },   { &CodeGenerator::psubw, false },
    { &CodeGenerator::psubd, false },    { &CodeGenerator::psubq, false },   { &CodeGenerator::paddsb, false },
    { &CodeGenerator::paddsw, false },   { &CodeGenerator::paddusb, false }, { &CodeGenerator::paddusw, false },
    { &CodeGenerator::psubsb, false },   { &CodeGenerator::psubsw, false },  { &CodeGenerator::psubusb, false },
    { &CodeGenerator::psubusw, false },  { &CodeGenerator::pcmpeqb, false }, { &CodeGenerator::pcmpeqw, false },
    { &CodeGenerator::pcmpeqd, false },  { &CodeGenerator::pcmpgtb, false }, { &CodeGenerator::pcmpgtw, false },
    { &CodeGenerator::pcmpgtd, false },  { &CodeGenerator::pminub, false },  { &CodeGenerator::pmaxub, false },
    { &CodeGenerator::pminsw, false },   { &CodeGenerator::pmaxsw, false },  { &CodeGenerator::pavgb, false },
    { &CodeGenerator::pavgw, false },    { &CodeGenerator::psadbw, false },  { &CodeGenerator::pmullw, false },
    { &CodeGenerator::pmulhw, false },   { &CodeGenerator::pmulhuw, false }, { &CodeGenerator::pmuludq, false },
    { &CodeGenerator::pmaddwd, false },  { &CodeGenerator::punpcklbw, false }, { &CodeGenerator::punpcklwd, false },
    { &CodeGenerator::punpckldq, false }, { &CodeGenerator::punpckhbw, false }, { &CodeGenerator::punpckhwd, false },
    { &CodeGenerator::punpckhdq, false }, { &CodeGenerator::packsswb, false }, { &CodeGenerator::packssdw, false },
    { &CodeGenerator::packuswb, false }, { &CodeGenerator::pand, false },    { &CodeGenerator::pandn, false },
    { &CodeGenerator::por, false },      { &CodeGenerator::pxor, false },    { &CodeGenerator::psllw, true },
    { &CodeGenerator::pslld, true },     { &CodeGenerator::psllq, true },    { &CodeGenerator::psrlw, true },
    { &CodeGenerator::psrld, true },     { &CodeGenerator::psrlq, true },    { &CodeGenerator::psraw, true },
    { &CodeGenerator::psrad, true },
};

const XmmOp kQdqOps[] = { &CodeGenerator::punpcklqdq, &CodeGenerator::punpckhqdq };

struct ShiftImmEntry {
    MmxShiftImm fn;
    unsigned elem_bits;
};
const ShiftImmEntry kShiftImm[] = {
    { &CodeGenerator::psllw, 16 }, { &CodeGenerator::pslld, 32 }, { &CodeGenerator::psllq, 64 },
    { &CodeGenerator::psrlw, 16 }, { &CodeGenerator::psrld, 32 }, { &CodeGenerator::psrlq, 64 },
    { &CodeGenerator::psraw, 16 }, { &CodeGenerator::psrad, 32 },
};

// FP arithmetic: {ss, sd, ps, pd} for each operation.
struct FpEntry {
    XmmOp fn[4];
};
const FpEntry kFpOps[] = {
    { { &CodeGenerator::addss, &CodeGenerator::addsd, &CodeGenerator::addps, &CodeGenerator::addpd } },
    { { &CodeGenerator::subss, &CodeGenerator::subsd, &CodeGenerator::subps, &CodeGenerator::subpd } },
    { { &CodeGenerator::mulss, &CodeGenerator::mulsd, &CodeGenerator::mulps, &CodeGenerator::mulpd } },
    { { &CodeGenerator::divss, &CodeGenerator::divsd, &CodeGenerator::divps, &CodeGenerator::divpd } },
    { { &CodeGenerator::minss, &CodeGenerator::minsd, &CodeGenerator::minps, &CodeGenerator::minpd } },
    { { &CodeGenerator::maxss, &CodeGenerator::maxsd, &CodeGenerator::maxps, &CodeGenerator::maxpd } },
    { { &CodeGenerator::sqrtss, &CodeGenerator::sqrtsd, &CodeGenerator::sqrtps, &CodeGenerator::sqrtpd } },
};

const XmmOp kLogicOps[] = {
    &CodeGenerator::andps,    &CodeGenerator::andnps,   &CodeGenerator::orps,     &CodeGenerator::xorps,
    &CodeGenerator::andpd,    &CodeGenerator::andnpd,   &CodeGenerator::orpd,     &CodeGenerator::xorpd,
    &CodeGenerator::unpcklps, &CodeGenerator::unpckhps, &CodeGenerator::unpcklpd, &CodeGenerator::unpckhpd,
};

// Memory operand sizes for scalar (ss, sd) and packed (ps, pd) forms.
constexpr unsigned kFpMemSize[] = { 4, 8, 16, 16 };

} // namespace

void Gen::g_sse_int()
{
    Xmm d(static_cast<int>(below(16)));
    Xmm s(static_cast<int>(below(16)));
    bool qdq = chance(4);
    const MmxEntry& e = kIntOps[below(std::size(kIntOps))];
    bool from_mem = chance(35);
    // Shift counts: mostly small ones (a random 64-bit count clears everything).
    uint64_t count = chance(70) ? below(70) : interesting(8);
    if (from_mem) {
        uint64_t a = 0;
        Xbyak::Address m = mem(128, MemSpec { .size = 16, .align = 16 }, &a);
        if (!qdq && e.shift && chance(70)) {
            mov(abs(32, a), count & 0xffffffff);
            mov(abs(32, a + 4), count >> 32);
        }
        begin_main();
        if (qdq)
            (this->*kQdqOps[below(2)])(d, m);
        else
            (this->*e.fn)(d, m);
    } else {
        if (!qdq && e.shift && chance(70)) {
            GReg t = pick_reg(8, true, false);
            mov(Xbyak::Reg64(t.idx), count);
            movq(s, Xbyak::Reg64(t.idx));
        }
        begin_main();
        if (qdq)
            (this->*kQdqOps[below(2)])(d, s);
        else
            (this->*e.fn)(d, s);
    }
    effects(0);
}

void Gen::g_sse_shift()
{
    Xmm d(static_cast<int>(below(16)));
    if (chance(25)) {
        int imm = chance(80) ? static_cast<int>(below(18)) : static_cast<int>(below(256));
        begin_main();
        if (chance(50))
            pslldq(d, imm);
        else
            psrldq(d, imm);
    } else {
        const ShiftImmEntry& e = kShiftImm[below(std::size(kShiftImm))];
        const unsigned picks[] = { 0, 1, e.elem_bits - 1, e.elem_bits, e.elem_bits + 1, 255 };
        int imm = static_cast<int>(chance(50) ? picks[below(std::size(picks))] : below(e.elem_bits + 4));
        begin_main();
        (this->*e.fn)(d, imm);
    }
    effects(0);
}

void Gen::g_sse_shuffle()
{
    Xmm d(static_cast<int>(below(16)));
    Xmm s(static_cast<int>(below(16)));
    uint8_t imm = static_cast<uint8_t>(rnd());
    int op = static_cast<int>(below(7));
    if (op == 5) { // pextrw r32/r64, xmm, imm (register form: the memory form is SSE4.1)
        GReg r = pick_reg(chance(50) ? 4 : 8, true, false);
        begin_main();
        pextrw(reg(r), s, imm);
        effects(0);
        return;
    }
    if (op == 6) { // pinsrw xmm, r32/m16, imm
        if (chance(50)) {
            GReg r = pick_reg(4, false, false);
            begin_main();
            pinsrw(d, reg(r), imm);
        } else {
            Xbyak::Address m = mem(16, MemSpec { .size = 2 });
            begin_main();
            pinsrw(d, m, imm);
        }
        effects(0);
        return;
    }
    static const MmxImmOp kMmxImm[] = { &CodeGenerator::pshufd, &CodeGenerator::pshuflw, &CodeGenerator::pshufhw };
    static const XmmImmOp kXmmImm[] = { &CodeGenerator::shufps, &CodeGenerator::shufpd };
    auto emit = [&](const Operand& src) {
        if (op < 3)
            (this->*kMmxImm[op])(d, src, imm);
        else
            (this->*kXmmImm[op - 3])(d, src, imm);
    };
    if (chance(35)) {
        Xbyak::Address m = mem(128, MemSpec { .size = 16, .align = 16 });
        begin_main();
        emit(m);
    } else {
        begin_main();
        emit(s);
    }
    effects(0);
}

void Gen::g_sse_move()
{
    Xmm d(static_cast<int>(below(16)));
    Xmm s(static_cast<int>(below(16)));
    switch (below(16)) {
    case 0: { // movd xmm, r32/m32 and back
        GReg r = pick_reg(4, true, false);
        int form = static_cast<int>(below(4));
        if (form < 2) {
            begin_main();
            if (form == 0)
                movd(d, Xbyak::Reg32(r.idx));
            else
                movd(Xbyak::Reg32(r.idx), s);
        } else {
            Xbyak::Address m = mem(32, MemSpec { .size = 4 });
            begin_main();
            if (form == 2)
                movd(d, m);
            else
                movd(m, s);
        }
        break;
    }
    case 1: { // movq with a GPR
        GReg r = pick_reg(8, true, false);
        begin_main();
        if (chance(50))
            movq(d, Xbyak::Reg64(r.idx));
        else
            movq(Xbyak::Reg64(r.idx), s);
        break;
    }
    case 2: { // movq xmm, xmm/m64; movq m64, xmm
        int form = static_cast<int>(below(3));
        if (form == 0) {
            begin_main();
            movq(d, s);
        } else {
            Xbyak::Address m = mem(64, MemSpec { .size = 8 });
            begin_main();
            if (form == 1)
                movq(d, m);
            else
                movq(m, s);
        }
        break;
    }
    case 3:
    case 4: { // movdqa/movdqu/movaps/movups/movapd/movupd: reg, load, store
        int kind = static_cast<int>(below(6));
        bool aligned = kind % 2 == 0;
        int form = static_cast<int>(below(3));
        auto load = [&](const Operand& src) {
            switch (kind) {
            case 0: movdqa(d, src); break;
            case 1: movdqu(d, src); break;
            case 2: movaps(d, src); break;
            case 3: movups(d, src); break;
            case 4: movapd(d, src); break;
            default: movupd(d, src); break;
            }
        };
        if (form == 0) {
            begin_main();
            load(s);
        } else {
            Xbyak::Address m = mem(128, MemSpec { .size = 16, .align = aligned || chance(30) ? 16u : 1u });
            begin_main();
            if (form == 1) {
                load(m);
            } else {
                switch (kind) {
                case 0: movdqa(m, s); break;
                case 1: movdqu(m, s); break;
                case 2: movaps(m, s); break;
                case 3: movups(m, s); break;
                case 4: movapd(m, s); break;
                default: movupd(m, s); break;
                }
            }
        }
        break;
    }
    case 5:
    case 6: { // movss / movsd: reg (merge), load (zero the rest), store
        bool dbl = chance(50);
        int form = static_cast<int>(below(3));
        if (form == 0) {
            begin_main();
            if (dbl)
                movsd(d, s);
            else
                movss(d, s);
        } else {
            Xbyak::Address m = mem(dbl ? 64 : 32, MemSpec { .size = dbl ? 8u : 4u });
            begin_main();
            if (form == 1) {
                if (dbl)
                    movsd(d, m);
                else
                    movss(d, m);
            } else {
                if (dbl)
                    movsd(m, s);
                else
                    movss(m, s);
            }
        }
        break;
    }
    case 7: // movhlps / movlhps
        begin_main();
        if (chance(50))
            movhlps(d, s);
        else
            movlhps(d, s);
        break;
    case 8:
    case 9: { // movlps/movhps/movlpd/movhpd, load and store
        int kind = static_cast<int>(below(4));
        bool store = chance(50);
        Xbyak::Address m = mem(64, MemSpec { .size = 8 });
        begin_main();
        const Operand& a = store ? static_cast<const Operand&>(m) : static_cast<const Operand&>(d);
        const Operand& b = store ? static_cast<const Operand&>(s) : static_cast<const Operand&>(m);
        switch (kind) {
        case 0: movlps(a, b); break;
        case 1: movhps(a, b); break;
        case 2: movlpd(a, b); break;
        default: movhpd(a, b); break;
        }
        break;
    }
    case 10:
    case 11: { // pmovmskb / movmskps / movmskpd
        GReg r = pick_reg(chance(50) ? 4 : 8, true, false);
        int kind = static_cast<int>(below(3));
        begin_main();
        if (kind == 0 && r.width == 8)
            pmovmskb(Xbyak::Reg64(r.idx), s);
        else if (kind == 0)
            pmovmskb(Xbyak::Reg32(r.idx), s);
        else if (kind == 1)
            movmskps(Xbyak::Reg32(r.idx), s);
        else
            movmskpd(Xbyak::Reg32(r.idx), s);
        break;
    }
    case 12: { // maskmovdqu: byte-masked store to [rdi]
        pin(RDI);
        set_reg(RDI, 8, pick_addr(MemSpec { .size = 16 }));
        begin_main();
        maskmovdqu(d, s);
        break;
    }
    case 13: { // movnti
        bool wide = chance(50);
        GReg r = pick_reg(wide ? 8 : 4, false, false);
        Xbyak::Address m = mem(wide ? 64 : 32, MemSpec { .size = wide ? 8u : 4u, .align = wide ? 8u : 4u });
        begin_main();
        if (wide)
            movnti(m, Xbyak::Reg64(r.idx));
        else
            movnti(m, Xbyak::Reg32(r.idx));
        break;
    }
    default: { // movntdq / movntps / movntpd
        Xbyak::Address m = mem(128, MemSpec { .size = 16, .align = 16 });
        int kind = static_cast<int>(below(3));
        begin_main();
        if (kind == 0)
            movntdq(m, s);
        else if (kind == 1)
            movntps(m, s);
        else
            movntpd(m, s);
        break;
    }
    }
    effects(0);
}

void Gen::g_sse_fp()
{
    Xmm d(static_cast<int>(below(16)));
    Xmm s(static_cast<int>(below(16)));
    const FpEntry& e = kFpOps[below(std::size(kFpOps))];
    int form = static_cast<int>(below(4));
    if (chance(35)) {
        unsigned size = kFpMemSize[form];
        Xbyak::Address m = mem(size * 8, MemSpec { .size = size, .align = size == 16 ? 16u : 1u });
        begin_main();
        (this->*e.fn[form])(d, m);
    } else {
        begin_main();
        (this->*e.fn[form])(d, s);
    }
    effects(0);
}

void Gen::g_sse_cmp()
{
    Xmm d(static_cast<int>(below(16)));
    Xmm s(static_cast<int>(below(16)));
    int form = static_cast<int>(below(4)); // ss sd ps pd
    bool from_mem = chance(35);
    unsigned size = kFpMemSize[form];
    if (chance(35)) {
        // COMISS COMISD UCOMISS UCOMISD: ZF PF CF from the comparison, OF SF AF cleared.
        static const XmmOp kCom[] = { &CodeGenerator::comiss, &CodeGenerator::comisd, &CodeGenerator::ucomiss,
                                      &CodeGenerator::ucomisd };
        int k = static_cast<int>(below(4));
        unsigned msize = (k & 1) ? 8 : 4;
        if (from_mem) {
            Xbyak::Address m = mem(msize * 8, MemSpec { .size = msize });
            begin_main();
            (this->*kCom[k])(d, m);
        } else {
            begin_main();
            (this->*kCom[k])(d, s);
        }
        effects(kArith);
        return;
    }
    static const XmmImmOp kCmp[] = { &CodeGenerator::cmpss, &CodeGenerator::cmpsd, &CodeGenerator::cmpps,
                                     &CodeGenerator::cmppd };
    uint8_t pred = static_cast<uint8_t>(below(8));
    if (from_mem) {
        Xbyak::Address m = mem(size * 8, MemSpec { .size = size, .align = size == 16 ? 16u : 1u });
        begin_main();
        (this->*kCmp[form])(d, m, pred);
    } else {
        begin_main();
        (this->*kCmp[form])(d, s, pred);
    }
    effects(0);
}

void Gen::g_sse_cvt()
{
    Xmm d(static_cast<int>(below(16)));
    Xmm s(static_cast<int>(below(16)));
    bool from_mem = chance(35);
    switch (below(5)) {
    case 0: { // cvtsi2ss / cvtsi2sd from r32/r64/m32/m64
        bool dbl = chance(50);
        bool wide = chance(50);
        auto emit = [&](const Operand& src) {
            if (dbl)
                cvtsi2sd(d, src);
            else
                cvtsi2ss(d, src);
        };
        if (from_mem) {
            Xbyak::Address m = mem(wide ? 64 : 32, MemSpec { .size = wide ? 8u : 4u });
            begin_main();
            emit(m);
        } else {
            GReg r = pick_reg(wide ? 8 : 4, false, false);
            begin_main();
            emit(reg(r));
        }
        break;
    }
    case 1: { // cvt(t)ss2si / cvt(t)sd2si to r32/r64
        int k = static_cast<int>(below(4)); // cvtss2si cvttss2si cvtsd2si cvttsd2si
        bool wide = chance(50);
        GReg r = pick_reg(wide ? 8 : 4, true, false);
        auto emit = [&](const Operand& src) {
            switch (k) {
            case 0: cvtss2si(reg(r), src); break;
            case 1: cvttss2si(reg(r), src); break;
            case 2: cvtsd2si(reg(r), src); break;
            default: cvttsd2si(reg(r), src); break;
            }
        };
        if (from_mem) {
            unsigned size = k < 2 ? 4 : 8;
            Xbyak::Address m = mem(size * 8, MemSpec { .size = size });
            begin_main();
            emit(m);
        } else {
            begin_main();
            emit(s);
        }
        break;
    }
    case 2: { // cvtss2sd / cvtsd2ss
        bool up = chance(50);
        if (from_mem) {
            Xbyak::Address m = mem(up ? 32 : 64, MemSpec { .size = up ? 4u : 8u });
            begin_main();
            if (up)
                cvtss2sd(d, m);
            else
                cvtsd2ss(d, m);
        } else {
            begin_main();
            if (up)
                cvtss2sd(d, s);
            else
                cvtsd2ss(d, s);
        }
        break;
    }
    default: { // packed conversions
        struct Packed {
            XmmOp fn;
            unsigned mem_size;
        };
        static const Packed kPacked[] = {
            { &CodeGenerator::cvtdq2ps, 16 },  { &CodeGenerator::cvtps2dq, 16 }, { &CodeGenerator::cvttps2dq, 16 },
            { &CodeGenerator::cvtdq2pd, 8 },   { &CodeGenerator::cvtpd2dq, 16 }, { &CodeGenerator::cvttpd2dq, 16 },
            { &CodeGenerator::cvtps2pd, 8 },   { &CodeGenerator::cvtpd2ps, 16 },
        };
        const Packed& p = kPacked[below(std::size(kPacked))];
        if (from_mem) {
            Xbyak::Address m = mem(p.mem_size * 8, MemSpec { .size = p.mem_size, .align = p.mem_size == 16 ? 16u : 1u });
            begin_main();
            (this->*p.fn)(d, m);
        } else {
            begin_main();
            (this->*p.fn)(d, s);
        }
        break;
    }
    }
    effects(0);
}

void Gen::g_sse_logic()
{
    Xmm d(static_cast<int>(below(16)));
    Xmm s(static_cast<int>(below(16)));
    XmmOp fn = kLogicOps[below(std::size(kLogicOps))];
    if (chance(35)) {
        Xbyak::Address m = mem(128, MemSpec { .size = 16, .align = 16 });
        begin_main();
        (this->*fn)(d, m);
    } else {
        begin_main();
        (this->*fn)(d, s);
    }
    effects(0);
}

void Gen::g_mxcsr()
{
    if (chance(60)) {
        uint32_t v = random_mxcsr();
        uint64_t a = constant(&v, 4, 4);
        begin_main();
        ldmxcsr(abs(32, a));
    } else {
        Xbyak::Address m = mem(32, MemSpec { .size = 4 });
        begin_main();
        stmxcsr(m);
    }
    effects(0);
}

} // namespace vessel::difftest
