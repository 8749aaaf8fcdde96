// x87 instructions: loads and stores (real, integer, BCD, 80-bit), constants, arithmetic with
// the pop and integer forms, compares (FCOM/FUCOM/FICOM/FCOMI/FUCOMI, FTST, FXAM), the unary and
// transcendental operations, FXCH, FCMOVcc, FFREE, FINCSTP/FDECSTP. The control instructions are
// in exec_x87_ctl.cpp; the arithmetic itself runs on the host x87 unit (exec_x87_common.h).
#include "engine/soft/exec_x87_common.h"
#include "engine/soft/flags.h"

namespace vessel::soft::x87 {

namespace {

enum class Mem : uint8_t { F32, F64, F80, I16, I32, I64, Bcd };

// Memory operand type of the arithmetic/compare forms: D8 m32fp, DC m64fp, DA m32int, DE m16int.
MemArg arith_mem(const Insn& in)
{
    switch (in.opcode) {
    case 0xd8: return MemArg::F32;
    case 0xdc: return MemArg::F64;
    case 0xda: return MemArg::I32;
    default: return MemArg::I16;
    }
}

// Raw memory operand of an arithmetic/compare form.
uint64_t read_arith_operand(Cpu& c, const Insn& in)
{
    static constexpr unsigned kBytes[] = { 4, 8, 2, 4 };
    return read_mem(c, mem_linear(c, in), kBytes[static_cast<unsigned>(arith_mem(in))]);
}

// FLD/FST/FSTP: D9 m32fp, DD m64fp, DB m80fp.
Mem real_mem(const Insn& in)
{
    switch (in.opcode) {
    case 0xd9: return Mem::F32;
    case 0xdd: return Mem::F64;
    default: return Mem::F80;
    }
}

// FILD/FIST/FISTP/FISTTP: DF m16int (DF /5 FILD and /7 FISTP: m64int), DB m32int, DD m64int
// (FISTTP).
Mem int_mem(const Insn& in)
{
    switch (in.opcode) {
    case 0xdb: return Mem::I32;
    case 0xdd: return Mem::I64;
    default: return (in.modrm_reg == 5 || in.modrm_reg == 7) ? Mem::I64 : Mem::I16;
    }
}

unsigned mem_bytes(Mem t)
{
    switch (t) {
    case Mem::I16: return 2;
    case Mem::F32:
    case Mem::I32: return 4;
    case Mem::F64:
    case Mem::I64: return 8;
    default: return 10;
    }
}

// Reads the memory operand and converts it to 80 bits on the host (exact for every format
// but SNaN and denormal inputs, which flag IE and DE). Raises no x87 state change.
F80 load_operand(Cpu& c, const Insn& in, Mem t, uint16_t& exc)
{
    uint64_t lin = mem_linear(c, in);
    HostIo io;
    io.cw = fcw(c);
    HostOp op;
    switch (t) {
    case Mem::F80: return from_m80(read_linear<M80>(c, lin));
    case Mem::Bcd:
        io.bcd = read_linear<M80>(c, lin);
        op = HostOp::LoadBcd;
        break;
    case Mem::F32: op = HostOp::LoadF32; break;
    case Mem::F64: op = HostOp::LoadF64; break;
    case Mem::I16: op = HostOp::LoadI16; break;
    case Mem::I32: op = HostOp::LoadI32; break;
    default: op = HostOp::LoadI64; break;
    }
    if (t != Mem::Bcd)
        io.m64 = read_mem(c, lin, mem_bytes(t));
    exc = host_x87(op, io);
    return io.out0;
}

// ---- Loads ----

// Pushes `v` with the stack-overflow check; `exc` are the flags of producing v.
void push_checked(Cpu& c, const F80& v, uint16_t exc)
{
    if (!st_empty(c, 7)) {
        if (!stack_fault(c, true))
            return;
        push(c, kIndefinite);
        return;
    }
    if (!signal(c, exc))
        return;
    set_cc(c, kC1, 0);
    push(c, v);
}

void exec_fld(Cpu& c, const Insn& in)
{
    begin(c);
    uint16_t exc = 0;
    F80 v;
    unsigned sti = 0;
    if (has_mem(in)) {
        v = load_operand(c, in, real_mem(in), exc);
    } else {
        sti = st_index(in);
        if (st_empty(c, sti)) {
            if (!stack_fault(c, false))
                return note(c, in, sti);
            v = kIndefinite;
        } else {
            v = st_get(c, sti);
        }
    }
    push_checked(c, v, exc);
    note(c, in, sti);
}

void exec_fild(Cpu& c, const Insn& in)
{
    begin(c);
    uint16_t exc = 0;
    F80 v = load_operand(c, in, int_mem(in), exc);
    push_checked(c, v, exc);
    note(c, in, 0);
}

void exec_fbld(Cpu& c, const Insn& in)
{
    begin(c);
    uint16_t exc = 0;
    F80 v = load_operand(c, in, Mem::Bcd, exc);
    push_checked(c, v, exc);
    note(c, in, 0);
}

template<HostOp kOp>
void exec_fldconst(Cpu& c, const Insn& in)
{
    begin(c);
    HostIo io;
    io.cw = fcw(c);
    uint16_t sw = host_x87(kOp, io);
    push_checked(c, io.out0, sw);
    note(c, in, 0);
}

// ---- Stores ----

// Stores ST(0) to memory as `t` (FST/FSTP/FIST/FISTP/FISTTP/FBSTP, `truncate` for FISTTP).
// An unmasked exception other than precision stores nothing and does not pop.
void store_st0(Cpu& c, const Insn& in, Mem t, bool truncate, bool do_pop)
{
    begin(c);
    uint64_t lin = mem_linear(c, in);
    bool underflow = st_empty(c, 0);
    if (underflow && !(fcw(c) & kIE)) {
        stack_fault(c, false);
        return note(c, in, 0);
    }
    F80 v = underflow ? kIndefinite : st_get(c, 0);
    uint16_t sw = 0;
    if (t == Mem::F80) {
        write_linear<M80>(c, lin, to_m80(v));
    } else {
        HostIo io;
        io.cw = fcw(c);
        io.a = v;
        HostOp op;
        switch (t) {
        case Mem::F32: op = HostOp::StoreF32; break;
        case Mem::F64: op = HostOp::StoreF64; break;
        case Mem::I16: op = truncate ? HostOp::StoreTI16 : HostOp::StoreI16; break;
        case Mem::I32: op = truncate ? HostOp::StoreTI32 : HostOp::StoreI32; break;
        case Mem::I64: op = truncate ? HostOp::StoreTI64 : HostOp::StoreI64; break;
        default: op = HostOp::StoreBcd; break;
        }
        sw = host_x87(op, io);
        uint16_t unmasked = sw & ~fcw(c) & (kIE | kDE | kZE | kOE | kUE);
        if (unmasked) {
            signal(c, sw);
            return note(c, in, 0);
        }
        if (t == Mem::Bcd)
            write_linear<M80>(c, lin, io.bcd);
        else
            write_mem(c, lin, mem_bytes(t), io.m64);
    }
    if (underflow) {
        stack_fault(c, false);
    } else {
        signal(c, sw);
        set_cc(c, kC1, sw);
    }
    if (do_pop)
        pop(c);
    note(c, in, 0);
}

template<bool kPop>
void exec_fst(Cpu& c, const Insn& in)
{
    if (has_mem(in))
        return store_st0(c, in, real_mem(in), false, kPop);
    begin(c);
    unsigned sti = st_index(in);
    F80 v;
    if (st_empty(c, 0)) {
        if (!stack_fault(c, false))
            return note(c, in, sti);
        v = kIndefinite;
    } else {
        v = st_get(c, 0);
        set_cc(c, kC1, 0);
    }
    st_set(c, sti, v);
    if (kPop)
        pop(c);
    note(c, in, sti);
}

template<bool kPop, bool kTruncate>
void exec_fist(Cpu& c, const Insn& in)
{
    store_st0(c, in, int_mem(in), kTruncate, kPop);
}

void exec_fbstp(Cpu& c, const Insn& in)
{
    store_st0(c, in, Mem::Bcd, false, true);
}

// ---- Arithmetic ----

// dest = dest op src. Memory forms: dest = ST(0), src = memory. Register forms: D8 is
// ST(0) = ST(0) op ST(i); DC and DE (the pop forms) ST(i) = ST(i) op ST(0).
template<HostOp kOp, bool kPop>
void exec_farith(Cpu& c, const Insn& in)
{
    begin(c);
    bool mem = has_mem(in);
    unsigned dst = 0, src = 0, sti = 0;
    uint64_t raw = 0;
    if (mem) {
        raw = read_arith_operand(c, in);
    } else {
        sti = st_index(in);
        if (in.opcode == 0xd8)
            src = sti;
        else
            dst = sti;
    }
    F80 r;
    if (st_empty(c, dst) || (!mem && st_empty(c, src))) {
        if (!stack_fault(c, false))
            return note(c, in, sti);
        r = kIndefinite;
    } else {
        HostIo io;
        io.cw = fcw(c);
        io.a = st_get(c, dst);
        io.b = st_get(c, src);
        io.m64 = raw;
        uint16_t sw = mem ? host_x87_mem(kOp, arith_mem(in), io) : host_x87(kOp, io);
        if (!signal(c, sw))
            return note(c, in, sti);
        set_cc(c, kC1, sw);
        r = io.out0;
    }
    st_set(c, dst, r);
    if (kPop)
        pop(c);
    note(c, in, sti);
}

// ---- Compares ----

// FCOM/FCOMP/FCOMPP/FUCOM*/FICOM* set C0/C2/C3; FCOMI/FUCOMI(P) set ZF/PF/CF (OF/SF/AF
// cleared). Unordered (or a masked stack underflow) sets all three.
template<HostOp kOp, unsigned kPops, bool kEflags>
void exec_fcom(Cpu& c, const Insn& in)
{
    begin(c);
    bool mem = has_mem(in);
    unsigned sti = 1;
    uint64_t raw = 0;
    if (mem)
        raw = read_arith_operand(c, in);
    else if (in.mnemonic != ZYDIS_MNEMONIC_FCOMPP && in.mnemonic != ZYDIS_MNEMONIC_FUCOMPP)
        sti = st_index(in);
    uint16_t cc;
    if (st_empty(c, 0) || (!mem && st_empty(c, sti))) {
        if (!stack_fault(c, false))
            return note(c, in, sti);
        cc = kC0 | kC2 | kC3;
    } else {
        HostIo io;
        io.cw = fcw(c);
        io.a = st_get(c, 0);
        io.b = st_get(c, sti);
        io.m64 = raw;
        uint16_t sw = mem ? host_x87_mem(kOp, arith_mem(in), io) : host_x87(kOp, io);
        if (!signal(c, sw))
            return note(c, in, sti);
        cc = sw & (kC0 | kC2 | kC3);
    }
    if constexpr (kEflags) {
        set_arith_flags(c, ((cc & kC3) ? kZF : 0) | ((cc & kC2) ? kPF : 0) | ((cc & kC0) ? kCF : 0));
        set_cc(c, kC1, 0);
    } else {
        set_cc(c, kCcMask, cc);
    }
    for (unsigned k = 0; k < kPops; ++k)
        pop(c);
    note(c, in, sti);
}

void exec_ftst(Cpu& c, const Insn& in)
{
    begin(c);
    uint16_t cc;
    if (st_empty(c, 0)) {
        if (!stack_fault(c, false))
            return note(c, in, 0);
        cc = kC0 | kC2 | kC3;
    } else {
        HostIo io;
        io.cw = fcw(c);
        io.a = st_get(c, 0);
        uint16_t sw = host_x87(HostOp::Tst, io);
        if (!signal(c, sw))
            return note(c, in, 0);
        cc = sw & (kC0 | kC2 | kC3);
    }
    set_cc(c, kCcMask, cc);
    note(c, in, 0);
}

// FXAM: class in C3/C2/C0 (empty = C3|C0), sign in C1. Never faults on an empty register.
void exec_fxam(Cpu& c, const Insn& in)
{
    begin(c);
    F80 v = st_get(c, 0);
    uint16_t cc = (v.se & 0x8000) ? kC1 : 0;
    if (st_empty(c, 0)) {
        cc |= kC3 | kC0;
    } else {
        HostIo io;
        io.cw = fcw(c);
        io.a = v;
        cc |= host_x87(HostOp::Xam, io) & (kC0 | kC2 | kC3);
    }
    set_cc(c, kCcMask, cc);
    note(c, in, 0);
}

// ---- Unary and two-operand stack operations ----

// ST(0) = op(ST(0)): FSQRT, FRNDINT, F2XM1, FSIN, FCOS (C2 = 1 and ST(0) unchanged when the
// argument is out of range).
template<HostOp kOp>
void exec_funary(Cpu& c, const Insn& in)
{
    begin(c);
    F80 r;
    if (st_empty(c, 0)) {
        if (!stack_fault(c, false))
            return note(c, in, 0);
        r = kIndefinite;
    } else {
        HostIo io;
        io.cw = fcw(c);
        io.a = st_get(c, 0);
        uint16_t sw = host_x87(kOp, io);
        if (!signal(c, sw))
            return note(c, in, 0);
        set_cc(c, kC1 | kC2, sw);
        r = io.out0;
    }
    st_set(c, 0, r);
    note(c, in, 0);
}

// FCHS / FABS: sign bit only, C1 = 0.
template<bool kAbs>
void exec_fsign(Cpu& c, const Insn& in)
{
    begin(c);
    F80 v;
    if (st_empty(c, 0)) {
        if (!stack_fault(c, false))
            return note(c, in, 0);
        v = kIndefinite;
    } else {
        v = st_get(c, 0);
        v.se = kAbs ? static_cast<uint16_t>(v.se & 0x7fff) : static_cast<uint16_t>(v.se ^ 0x8000);
        set_cc(c, kC1, 0);
    }
    st_set(c, 0, v);
    note(c, in, 0);
}

// ST(0) = op(ST(0), ST(1)): FSCALE, FPREM, FPREM1 (C0/C1/C3 quotient bits, C2 incomplete).
// kIntoSt1: FYL2X, FYL2XP1, FPATAN store into ST(1) and pop.
template<HostOp kOp, bool kIntoSt1>
void exec_fbinary_stack(Cpu& c, const Insn& in)
{
    begin(c);
    F80 r;
    if (st_empty(c, 0) || st_empty(c, 1)) {
        if (!stack_fault(c, false))
            return note(c, in, 0);
        r = kIndefinite;
    } else {
        HostIo io;
        io.cw = fcw(c);
        io.a = st_get(c, 0);
        io.b = st_get(c, 1);
        uint16_t sw = host_x87(kOp, io);
        if (!signal(c, sw))
            return note(c, in, 0);
        set_cc(c, (kOp == HostOp::Prem || kOp == HostOp::Prem1) ? kCcMask : kC1, sw);
        r = io.out0;
    }
    if constexpr (kIntoSt1) {
        st_set(c, 1, r);
        pop(c);
    } else {
        st_set(c, 0, r);
    }
    note(c, in, 0);
}

// FPTAN (ST(0) = tan, push 1.0), FSINCOS (ST(0) = sin, push cos), FXTRACT (ST(0) = exponent,
// push significand). FPTAN/FSINCOS out of range: C2 = 1, nothing else changes.
template<HostOp kOp>
void exec_fpush2(Cpu& c, const Insn& in)
{
    begin(c);
    F80 below, pushed;
    if (st_empty(c, 0) || !st_empty(c, 7)) {
        if (!stack_fault(c, !st_empty(c, 7)))
            return note(c, in, 0);
        below = pushed = kIndefinite;
    } else {
        HostIo io;
        io.cw = fcw(c);
        io.a = st_get(c, 0);
        uint16_t sw = host_x87(kOp, io);
        if (kOp != HostOp::Xtract && (sw & kC2)) {
            set_cc(c, kC1 | kC2, sw);
            return note(c, in, 0);
        }
        if (!signal(c, sw))
            return note(c, in, 0);
        set_cc(c, kC1 | kC2, sw);
        below = io.out1;
        pushed = io.out0;
    }
    st_set(c, 0, below);
    push(c, pushed);
    note(c, in, 0);
}

// ---- Register management ----

void exec_fxch(Cpu& c, const Insn& in)
{
    begin(c);
    unsigned sti = st_index(in);
    F80 a = st_get(c, 0), b = st_get(c, sti);
    if (st_empty(c, 0) || st_empty(c, sti)) {
        bool a_empty = st_empty(c, 0), b_empty = st_empty(c, sti);
        if (!stack_fault(c, false))
            return note(c, in, sti);
        if (a_empty)
            a = kIndefinite;
        if (b_empty)
            b = kIndefinite;
    } else {
        set_cc(c, kC1, 0);
    }
    st_set(c, 0, b);
    st_set(c, sti, a);
    note(c, in, sti);
}

bool fcmov_condition(const Cpu& c, uint16_t mnemonic)
{
    switch (mnemonic) {
    case ZYDIS_MNEMONIC_FCMOVB: return flag_cf(c);
    case ZYDIS_MNEMONIC_FCMOVE: return flag_zf(c);
    case ZYDIS_MNEMONIC_FCMOVBE: return flag_cf(c) || flag_zf(c);
    case ZYDIS_MNEMONIC_FCMOVU: return flag_pf(c);
    case ZYDIS_MNEMONIC_FCMOVNB: return !flag_cf(c);
    case ZYDIS_MNEMONIC_FCMOVNE: return !flag_zf(c);
    case ZYDIS_MNEMONIC_FCMOVNBE: return !flag_cf(c) && !flag_zf(c);
    default: return !flag_pf(c); // FCMOVNU
    }
}

void exec_fcmov(Cpu& c, const Insn& in)
{
    begin(c);
    unsigned sti = st_index(in);
    if (st_empty(c, 0) || st_empty(c, sti)) {
        if (!stack_fault(c, false))
            return note(c, in, sti);
        st_set(c, 0, kIndefinite);
        return note(c, in, sti);
    }
    set_cc(c, kC1, 0);
    if (fcmov_condition(c, in.mnemonic))
        st_set(c, 0, st_get(c, sti));
    note(c, in, sti);
}

template<bool kPop>
void exec_ffree(Cpu& c, const Insn& in)
{
    begin(c);
    unsigned sti = st_index(in, 0);
    ftw(c) = static_cast<uint8_t>(ftw(c) & ~(1u << phys(c, sti)));
    if (kPop)
        pop(c);
    note(c, in, sti);
}

template<int kDelta>
void exec_fstp_move(Cpu& c, const Insn& in)
{
    begin(c);
    set_top(c, (top(c) + kDelta) & 7);
    set_cc(c, kC1, 0);
    note(c, in, 0);
}

void exec_fnop(Cpu& c, const Insn& in)
{
    begin(c);
    note(c, in, 0);
}

} // namespace

} // namespace vessel::soft::x87

namespace vessel::soft {

void register_x87_handlers(HandlerTable& t)
{
    using namespace x87;
    struct Entry {
        ZydisMnemonic m;
        ExecFn fn;
    };
    static constexpr Entry entries[] = {
        { ZYDIS_MNEMONIC_FLD, &exec_fld },
        { ZYDIS_MNEMONIC_FILD, &exec_fild },
        { ZYDIS_MNEMONIC_FBLD, &exec_fbld },
        { ZYDIS_MNEMONIC_FLD1, &exec_fldconst<HostOp::Ld1> },
        { ZYDIS_MNEMONIC_FLDL2T, &exec_fldconst<HostOp::Ldl2t> },
        { ZYDIS_MNEMONIC_FLDL2E, &exec_fldconst<HostOp::Ldl2e> },
        { ZYDIS_MNEMONIC_FLDPI, &exec_fldconst<HostOp::Ldpi> },
        { ZYDIS_MNEMONIC_FLDLG2, &exec_fldconst<HostOp::Ldlg2> },
        { ZYDIS_MNEMONIC_FLDLN2, &exec_fldconst<HostOp::Ldln2> },
        { ZYDIS_MNEMONIC_FLDZ, &exec_fldconst<HostOp::Ldz> },
        { ZYDIS_MNEMONIC_FST, &exec_fst<false> },
        { ZYDIS_MNEMONIC_FSTP, &exec_fst<true> },
        { ZYDIS_MNEMONIC_FIST, &exec_fist<false, false> },
        { ZYDIS_MNEMONIC_FISTP, &exec_fist<true, false> },
        { ZYDIS_MNEMONIC_FISTTP, &exec_fist<true, true> },
        { ZYDIS_MNEMONIC_FBSTP, &exec_fbstp },
        { ZYDIS_MNEMONIC_FADD, &exec_farith<HostOp::Add, false> },
        { ZYDIS_MNEMONIC_FADDP, &exec_farith<HostOp::Add, true> },
        { ZYDIS_MNEMONIC_FIADD, &exec_farith<HostOp::Add, false> },
        { ZYDIS_MNEMONIC_FSUB, &exec_farith<HostOp::Sub, false> },
        { ZYDIS_MNEMONIC_FSUBP, &exec_farith<HostOp::Sub, true> },
        { ZYDIS_MNEMONIC_FISUB, &exec_farith<HostOp::Sub, false> },
        { ZYDIS_MNEMONIC_FSUBR, &exec_farith<HostOp::Subr, false> },
        { ZYDIS_MNEMONIC_FSUBRP, &exec_farith<HostOp::Subr, true> },
        { ZYDIS_MNEMONIC_FISUBR, &exec_farith<HostOp::Subr, false> },
        { ZYDIS_MNEMONIC_FMUL, &exec_farith<HostOp::Mul, false> },
        { ZYDIS_MNEMONIC_FMULP, &exec_farith<HostOp::Mul, true> },
        { ZYDIS_MNEMONIC_FIMUL, &exec_farith<HostOp::Mul, false> },
        { ZYDIS_MNEMONIC_FDIV, &exec_farith<HostOp::Div, false> },
        { ZYDIS_MNEMONIC_FDIVP, &exec_farith<HostOp::Div, true> },
        { ZYDIS_MNEMONIC_FIDIV, &exec_farith<HostOp::Div, false> },
        { ZYDIS_MNEMONIC_FDIVR, &exec_farith<HostOp::Divr, false> },
        { ZYDIS_MNEMONIC_FDIVRP, &exec_farith<HostOp::Divr, true> },
        { ZYDIS_MNEMONIC_FIDIVR, &exec_farith<HostOp::Divr, false> },
        { ZYDIS_MNEMONIC_FCOM, &exec_fcom<HostOp::Com, 0, false> },
        { ZYDIS_MNEMONIC_FCOMP, &exec_fcom<HostOp::Com, 1, false> },
        { ZYDIS_MNEMONIC_FCOMPP, &exec_fcom<HostOp::Com, 2, false> },
        { ZYDIS_MNEMONIC_FICOM, &exec_fcom<HostOp::Com, 0, false> },
        { ZYDIS_MNEMONIC_FICOMP, &exec_fcom<HostOp::Com, 1, false> },
        { ZYDIS_MNEMONIC_FUCOM, &exec_fcom<HostOp::Ucom, 0, false> },
        { ZYDIS_MNEMONIC_FUCOMP, &exec_fcom<HostOp::Ucom, 1, false> },
        { ZYDIS_MNEMONIC_FUCOMPP, &exec_fcom<HostOp::Ucom, 2, false> },
        { ZYDIS_MNEMONIC_FCOMI, &exec_fcom<HostOp::Com, 0, true> },
        { ZYDIS_MNEMONIC_FCOMIP, &exec_fcom<HostOp::Com, 1, true> },
        { ZYDIS_MNEMONIC_FUCOMI, &exec_fcom<HostOp::Ucom, 0, true> },
        { ZYDIS_MNEMONIC_FUCOMIP, &exec_fcom<HostOp::Ucom, 1, true> },
        { ZYDIS_MNEMONIC_FTST, &exec_ftst },
        { ZYDIS_MNEMONIC_FXAM, &exec_fxam },
        { ZYDIS_MNEMONIC_FSQRT, &exec_funary<HostOp::Sqrt> },
        { ZYDIS_MNEMONIC_FRNDINT, &exec_funary<HostOp::Rndint> },
        { ZYDIS_MNEMONIC_F2XM1, &exec_funary<HostOp::F2xm1> },
        { ZYDIS_MNEMONIC_FSIN, &exec_funary<HostOp::Sin> },
        { ZYDIS_MNEMONIC_FCOS, &exec_funary<HostOp::Cos> },
        { ZYDIS_MNEMONIC_FCHS, &exec_fsign<false> },
        { ZYDIS_MNEMONIC_FABS, &exec_fsign<true> },
        { ZYDIS_MNEMONIC_FSCALE, &exec_fbinary_stack<HostOp::Scale, false> },
        { ZYDIS_MNEMONIC_FPREM, &exec_fbinary_stack<HostOp::Prem, false> },
        { ZYDIS_MNEMONIC_FPREM1, &exec_fbinary_stack<HostOp::Prem1, false> },
        { ZYDIS_MNEMONIC_FYL2X, &exec_fbinary_stack<HostOp::Yl2x, true> },
        { ZYDIS_MNEMONIC_FYL2XP1, &exec_fbinary_stack<HostOp::Yl2xp1, true> },
        { ZYDIS_MNEMONIC_FPATAN, &exec_fbinary_stack<HostOp::Patan, true> },
        { ZYDIS_MNEMONIC_FPTAN, &exec_fpush2<HostOp::Ptan> },
        { ZYDIS_MNEMONIC_FSINCOS, &exec_fpush2<HostOp::Sincos> },
        { ZYDIS_MNEMONIC_FXTRACT, &exec_fpush2<HostOp::Xtract> },
        { ZYDIS_MNEMONIC_FXCH, &exec_fxch },
        { ZYDIS_MNEMONIC_FCMOVB, &exec_fcmov },
        { ZYDIS_MNEMONIC_FCMOVE, &exec_fcmov },
        { ZYDIS_MNEMONIC_FCMOVBE, &exec_fcmov },
        { ZYDIS_MNEMONIC_FCMOVU, &exec_fcmov },
        { ZYDIS_MNEMONIC_FCMOVNB, &exec_fcmov },
        { ZYDIS_MNEMONIC_FCMOVNE, &exec_fcmov },
        { ZYDIS_MNEMONIC_FCMOVNBE, &exec_fcmov },
        { ZYDIS_MNEMONIC_FCMOVNU, &exec_fcmov },
        { ZYDIS_MNEMONIC_FFREE, &exec_ffree<false> },
        { ZYDIS_MNEMONIC_FFREEP, &exec_ffree<true> },
        { ZYDIS_MNEMONIC_FINCSTP, &exec_fstp_move<1> },
        { ZYDIS_MNEMONIC_FDECSTP, &exec_fstp_move<-1> },
        { ZYDIS_MNEMONIC_FNOP, &exec_fnop },
    };
    for (const Entry& e : entries)
        t[e.m] = e.fn;
    register_x87_control(t);
}

} // namespace vessel::soft
