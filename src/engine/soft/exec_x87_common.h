// Shared pieces of the x87 handlers (exec_x87*.cpp). Arithmetic runs on the host x87 unit
// (host_x87): the guest's 80-bit values are loaded with FLD m80, the same operation executes
// under the guest's precision and rounding control with every exception masked, and the result,
// the exception flags and the condition codes are read back. So every result — NaN propagation,
// pseudo-denormals, unsupported formats, transcendental accuracy, integer indefinite — is what an
// x86 CPU gives. Unmasked exceptions are then applied to the guest's FSW: an unmasked invalid,
// denormal or zero-divide leaves the destination (and TOP) unchanged and sets ES, so the next
// waiting x87 instruction raises #MF. (Unmasked overflow/underflow store the masked result
// instead of the exponent-biased one.)
#pragma once

#include <cstdint>
#include <cstring>

#include <Zydis/Zydis.h>

#include "engine/soft/cpu.h"
#include "engine/soft/fpu_state.h"
#include "engine/soft/handlers.h"
#include "engine/soft/operand.h"

namespace vessel::soft::x87 {

using namespace fpu;

// An 80-bit extended-precision value as stored in memory and in the register slots.
struct F80 {
    uint64_t mant { 0 };
    uint16_t se { 0 }; // sign and exponent
    bool operator==(const F80&) const = default;
};

// 10 bytes in memory (m80fp, m80bcd).
struct M80 {
    uint8_t b[10];
};

inline F80 from_m80(const M80& m)
{
    F80 v;
    std::memcpy(&v.mant, m.b, 8);
    std::memcpy(&v.se, m.b + 8, 2);
    return v;
}

inline M80 to_m80(const F80& v)
{
    M80 m;
    std::memcpy(m.b, &v.mant, 8);
    std::memcpy(m.b + 8, &v.se, 2);
    return m;
}

constexpr F80 kIndefinite { 0xc000000000000000ULL, 0xffff };

// clang-format off
enum class HostOp : uint8_t {
    LoadF32, LoadF64, LoadI16, LoadI32, LoadI64, LoadBcd,
    Ld1, Ldl2t, Ldl2e, Ldpi, Ldlg2, Ldln2, Ldz,
    StoreF32, StoreF64, StoreI16, StoreI32, StoreI64, StoreTI16, StoreTI32, StoreTI64, StoreBcd,
    Add, Sub, Subr, Mul, Div, Divr,
    Scale, Prem, Prem1, Yl2x, Yl2xp1, Patan,
    Sqrt, Rndint, F2xm1, Sin, Cos, Ptan, Sincos, Xtract,
    Com, Ucom, Tst, Xam,
};
// clang-format on

// Operands and results of one host operation. `a` is ST(0) (or the value stored), `b` ST(1) or
// the second operand; out0 the new ST(0), out1 the value below it (FPTAN, FSINCOS, FXTRACT).
struct alignas(16) HostIo {
    F80 a, b, out0, out1;
    uint64_t m64 { 0 }; // integer/float memory operand of loads and stores
    M80 bcd {};
    uint16_t cw { 0 }; // guest FCW (exceptions are masked for the host)
    uint16_t sw { 0 }; // host FSW after the operation: exception flags and C0-C3
    uint8_t env[28] {}; // host environment, restored afterwards
};

// Runs `op` on the host x87 unit; returns the host status word (io.sw).
uint16_t host_x87(HostOp op, HostIo& io);

// Memory operand types of the arithmetic and compare forms.
enum class MemArg : uint8_t { F32, F64, I16, I32 };

// ST(0) op memory (io.m64) with the memory-operand form of the instruction itself, so that
// exception priorities between the conversion and the operation are the hardware's. `op` is
// Add..Divr (result in out0) or Com (condition codes only).
uint16_t host_x87_mem(HostOp op, MemArg type, HostIo& io);

// ---- Guest register stack ----

inline F80 st_get(const Cpu& c, unsigned i)
{
    F80 v;
    std::memcpy(&v.mant, c.fx.data() + kSt + 16 * (i & 7), 8);
    std::memcpy(&v.se, c.fx.data() + kSt + 16 * (i & 7) + 8, 2);
    return v;
}

// Writes ST(i) and tags it valid.
inline void st_set(Cpu& c, unsigned i, const F80& v)
{
    std::memcpy(c.fx.data() + kSt + 16 * (i & 7), &v.mant, 8);
    std::memcpy(c.fx.data() + kSt + 16 * (i & 7) + 8, &v.se, 2);
    ftw(c) = static_cast<uint8_t>(ftw(c) | (1u << phys(c, i)));
}

inline void set_cc(Cpu& c, uint16_t mask, uint16_t bits)
{
    set_fsw(c, static_cast<uint16_t>((fsw(c) & ~mask) | (bits & mask)));
}

// Pushes v (the caller checked that ST(7) is free or chose the overflow response).
inline void push(Cpu& c, const F80& v)
{
    set_top(c, (top(c) - 1) & 7);
    st_set(c, 0, v);
}

// Pops: ST(0) becomes empty, TOP moves up.
inline void pop(Cpu& c)
{
    ftw(c) = static_cast<uint8_t>(ftw(c) & ~(1u << top(c)));
    set_top(c, (top(c) + 1) & 7);
}

// Merges exception flags into FSW (ES/B from the unmasked ones). Returns whether the result may
// be written: not after an unmasked invalid-operation, denormal or zero-divide exception.
inline bool signal(Cpu& c, uint16_t exc)
{
    exc &= 0x3f;
    if (!exc)
        return true;
    set_fsw(c, static_cast<uint16_t>(fsw(c) | exc));
    update_es(c);
    return !(exc & ~fcw(c) & (kIE | kDE | kZE));
}

// Stack underflow (an operand register is empty) or overflow (push onto a full register):
// invalid operation with SF, C1 = 0 for underflow, 1 for overflow. Returns whether the masked
// response (QNaN indefinite as the operand/result) applies.
inline bool stack_fault(Cpu& c, bool overflow)
{
    set_fsw(c, static_cast<uint16_t>(fsw(c) | kIE | kStackFault));
    set_cc(c, kC1, overflow ? kC1 : 0);
    update_es(c);
    return (fcw(c) & kIE) != 0;
}

inline bool has_mem(const Insn& in)
{
    if (in.flags & kFlagHasMem)
        return true;
    for (unsigned k = 0; k < in.nops; ++k)
        if (in.op[k].kind == OpKind::Mem)
            return true;
    return false;
}

// Records FOP/FIP/FDP for a non-control instruction.
inline void note(Cpu& c, const Insn& in, unsigned sti)
{
    bool mem = has_mem(in);
    unsigned modrm = mem ? ((in.modrm_reg & 7) << 3) : (0xc0 | ((in.modrm_reg & 7) << 3) | (sti & 7));
    fx_set<uint16_t>(c, kFop, static_cast<uint16_t>(((in.opcode & 7) << 8) | modrm));
    fx_set<uint64_t>(c, kFip, c.insn_start - c.segbase[CS]);
    if (mem)
        fx_set<uint64_t>(c, kFdp, effective_address(c, in));
}

// Start of a waiting x87 instruction: #NM with CR0.EM/TS, #MF with a pending exception.
inline void begin(const Cpu& c)
{
    check_x87(c);
    check_pending_x87(c);
}

// ST(i) operand of a register form: the largest St operand index (the other one, when the
// decoder lists it, is ST(0)); `fallback` when there is none.
inline unsigned st_index(const Insn& in, unsigned fallback = 1)
{
    unsigned idx = 0;
    bool found = false;
    for (unsigned k = 0; k < in.nops; ++k) {
        if (in.op[k].kind == OpKind::St) {
            found = true;
            idx = in.op[k].reg > idx ? in.op[k].reg : idx;
        }
    }
    return found ? (idx & 7) : fallback;
}

void register_x87_control(HandlerTable& t); // exec_x87_ctl.cpp

} // namespace vessel::soft::x87
