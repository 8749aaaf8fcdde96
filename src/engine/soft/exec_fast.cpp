// Specialised handlers for the hottest instruction forms (MOV and two-operand ALU ops on 32- and
// 64-bit registers, memory and immediates). The generic handlers decode operand kinds on every
// execution; these are chosen once, at decode time, when the operand kinds are known. Semantics
// are the generic ones (exec_int_*.cpp) restricted to forms without LOCK, segment-register or
// high-byte operands; the differential tests run through both.
#include "engine/soft/exec_fast.h"

#include <Zydis/Zydis.h>

#include "engine/soft/flags.h"
#include "engine/soft/operand.h"

namespace vessel::soft {

namespace {

template<unsigned S>
using Word = std::conditional_t<S == 8, uint64_t, uint32_t>;

template<unsigned S>
void mov_rr(Cpu& c, const Insn& in)
{
    write_gpr(c, in.op[0].reg, S, c.gpr[in.op[1].reg]);
}

template<unsigned S>
void mov_rm(Cpu& c, const Insn& in)
{
    uint64_t v = read_linear<Word<S>>(c, mem_linear(c, in));
    write_gpr(c, in.op[0].reg, S, v);
}

template<unsigned S>
void mov_mr(Cpu& c, const Insn& in)
{
    write_linear<Word<S>>(c, mem_linear(c, in), static_cast<Word<S>>(c.gpr[in.op[1].reg]));
}

template<unsigned S>
void mov_ri(Cpu& c, const Insn& in)
{
    write_gpr(c, in.op[0].reg, S, in.imm);
}

enum class Op : uint8_t { Add, Sub, Cmp, And, Or, Xor, Test };

template<Op K>
constexpr bool writes() { return K != Op::Cmp && K != Op::Test; }

template<Op K, unsigned S>
inline void alu(Cpu& c, unsigned dst_reg, uint64_t a, uint64_t b)
{
    uint64_t res;
    FlagOp op;
    switch (K) {
    case Op::Add: res = a + b; op = FlagOp::Add; break;
    case Op::Sub:
    case Op::Cmp: res = a - b; op = FlagOp::Sub; break;
    case Op::And:
    case Op::Test: res = a & b; op = FlagOp::Logic; break;
    case Op::Or: res = a | b; op = FlagOp::Logic; break;
    case Op::Xor: res = a ^ b; op = FlagOp::Logic; break;
    }
    set_lazy(c, op, S, res, a, b);
    if constexpr (writes<K>())
        write_gpr(c, dst_reg, S, res);
}

template<Op K, unsigned S>
void alu_rr(Cpu& c, const Insn& in)
{
    alu<K, S>(c, in.op[0].reg, c.gpr[in.op[0].reg] & size_mask(S), c.gpr[in.op[1].reg] & size_mask(S));
}

template<Op K, unsigned S>
void alu_ri(Cpu& c, const Insn& in)
{
    alu<K, S>(c, in.op[0].reg, c.gpr[in.op[0].reg] & size_mask(S), in.imm & size_mask(S));
}

template<Op K, unsigned S>
void alu_rm(Cpu& c, const Insn& in)
{
    uint64_t b = read_linear<Word<S>>(c, mem_linear(c, in));
    alu<K, S>(c, in.op[0].reg, c.gpr[in.op[0].reg] & size_mask(S), b);
}

template<Op K>
ExecFn pick_alu(const Insn& in, unsigned size, OpKind k0, OpKind k1)
{
    bool s8 = size == 8;
    if (k0 != OpKind::Gpr)
        return nullptr;
    if (k1 == OpKind::Gpr)
        return s8 ? &alu_rr<K, 8> : &alu_rr<K, 4>;
    if (k1 == OpKind::Imm)
        return s8 ? &alu_ri<K, 8> : &alu_ri<K, 4>;
    if (k1 == OpKind::Mem && !(in.flags & kFlagLock))
        return s8 ? &alu_rm<K, 8> : &alu_rm<K, 4>;
    return nullptr;
}

} // namespace

ExecFn specialize(const Insn& in)
{
    if (in.nops != 2)
        return nullptr;
    unsigned size = in.op[0].size;
    if ((size != 4 && size != 8) || in.op[1].size != size)
        return nullptr;
    OpKind k0 = in.op[0].kind, k1 = in.op[1].kind;
    bool s8 = size == 8;
    switch (in.mnemonic) {
    case ZYDIS_MNEMONIC_MOV:
        if (k0 == OpKind::Gpr && k1 == OpKind::Gpr)
            return s8 ? &mov_rr<8> : &mov_rr<4>;
        if (k0 == OpKind::Gpr && k1 == OpKind::Mem)
            return s8 ? &mov_rm<8> : &mov_rm<4>;
        if (k0 == OpKind::Mem && k1 == OpKind::Gpr)
            return s8 ? &mov_mr<8> : &mov_mr<4>;
        if (k0 == OpKind::Gpr && k1 == OpKind::Imm)
            return s8 ? &mov_ri<8> : &mov_ri<4>;
        return nullptr;
    case ZYDIS_MNEMONIC_ADD: return pick_alu<Op::Add>(in, size, k0, k1);
    case ZYDIS_MNEMONIC_SUB: return pick_alu<Op::Sub>(in, size, k0, k1);
    case ZYDIS_MNEMONIC_CMP: return pick_alu<Op::Cmp>(in, size, k0, k1);
    case ZYDIS_MNEMONIC_AND: return pick_alu<Op::And>(in, size, k0, k1);
    case ZYDIS_MNEMONIC_OR: return pick_alu<Op::Or>(in, size, k0, k1);
    case ZYDIS_MNEMONIC_XOR: return pick_alu<Op::Xor>(in, size, k0, k1);
    case ZYDIS_MNEMONIC_TEST: return pick_alu<Op::Test>(in, size, k0, k1);
    default: return nullptr;
    }
}

} // namespace vessel::soft
