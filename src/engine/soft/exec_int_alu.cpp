// Two-operand arithmetic/logic (ADD OR ADC SBB AND SUB XOR CMP TEST) and the one-operand group
// (INC DEC NEG NOT), with LOCKed memory forms as host atomics. Flags are lazy (flags.h).
#include "engine/soft/exec_int.h"

namespace vessel::soft::integer {

namespace {

enum class Alu : uint8_t { Add, Or, Adc, Sbb, And, Sub, Xor, Cmp, Test };

template<Alu K>
inline uint64_t alu_result(uint64_t a, uint64_t b, uint64_t carry)
{
    switch (K) {
    case Alu::Add: return a + b;
    case Alu::Adc: return a + b + carry;
    case Alu::Sub:
    case Alu::Cmp: return a - b;
    case Alu::Sbb: return a - b - carry;
    case Alu::And:
    case Alu::Test: return a & b;
    case Alu::Or: return a | b;
    case Alu::Xor: return a ^ b;
    }
    return 0;
}

template<Alu K>
inline void alu_flags(Cpu& c, unsigned size, uint64_t res, uint64_t a, uint64_t b, uint64_t carry)
{
    switch (K) {
    case Alu::Add: set_lazy(c, FlagOp::Add, size, res, a, b); break;
    case Alu::Adc: set_lazy(c, FlagOp::Adc, size, res, a, b, carry); break;
    case Alu::Sub:
    case Alu::Cmp: set_lazy(c, FlagOp::Sub, size, res, a, b); break;
    case Alu::Sbb: set_lazy(c, FlagOp::Sbb, size, res, a, b, carry); break;
    default: set_lazy(c, FlagOp::Logic, size, res, a, b); break;
    }
}

// The host atomic equivalent of K on memory: returns the old value.
template<Alu K>
inline uint64_t alu_atomic(uint8_t* p, unsigned size, uint64_t b, uint64_t carry)
{
    switch (K) {
    case Alu::Add: return atomic_fetch<AtomicOp::Add>(p, size, b);
    case Alu::Adc: return atomic_fetch<AtomicOp::Add>(p, size, b + carry);
    case Alu::Sub: return atomic_fetch<AtomicOp::Sub>(p, size, b);
    case Alu::Sbb: return atomic_fetch<AtomicOp::Sub>(p, size, b + carry);
    case Alu::And: return atomic_fetch<AtomicOp::And>(p, size, b);
    case Alu::Or: return atomic_fetch<AtomicOp::Or>(p, size, b);
    case Alu::Xor: return atomic_fetch<AtomicOp::Xor>(p, size, b);
    default: return 0; // CMP/TEST never write
    }
}

template<Alu K>
void exec_alu(Cpu& c, const Insn& in)
{
    constexpr bool kWrites = K != Alu::Cmp && K != Alu::Test;
    const unsigned size = in.op[0].size;
    const uint64_t b = read_op(c, in, 1);
    const uint64_t carry = (K == Alu::Adc || K == Alu::Sbb) ? (flag_cf(c) ? 1 : 0) : 0;
    uint64_t a;
    if (op_is_mem(in, 0)) {
        uint64_t lin = mem_linear(c, in);
        if (kWrites) {
            if (uint8_t* p = locked_ptr(c, in, lin, size)) {
                a = alu_atomic<K>(p, size, b, carry);
                alu_flags<K>(c, size, alu_result<K>(a, b, carry), a, b, carry);
                return;
            }
        }
        a = read_mem(c, lin, size);
        uint64_t res = alu_result<K>(a, b, carry);
        if (kWrites)
            write_mem(c, lin, size, res);
        alu_flags<K>(c, size, res, a, b, carry);
        return;
    }
    a = read_op(c, in, 0);
    uint64_t res = alu_result<K>(a, b, carry);
    if (kWrites)
        write_op(c, in, 0, res);
    alu_flags<K>(c, size, res, a, b, carry);
}

enum class Unary : uint8_t { Inc, Dec, Neg, Not };

template<Unary K>
inline uint64_t unary_result(uint64_t a)
{
    switch (K) {
    case Unary::Inc: return a + 1;
    case Unary::Dec: return a - 1;
    case Unary::Neg: return 0 - a;
    case Unary::Not: return ~a;
    }
    return 0;
}

template<Unary K>
inline void unary_flags(Cpu& c, unsigned size, uint64_t res, uint64_t a, uint64_t cf)
{
    switch (K) {
    case Unary::Inc: set_lazy(c, FlagOp::Inc, size, res, a, 1, cf); break;
    case Unary::Dec: set_lazy(c, FlagOp::Dec, size, res, a, 1, cf); break;
    case Unary::Neg: set_lazy(c, FlagOp::Neg, size, res, a, 0); break;
    case Unary::Not: break; // no flags
    }
}

template<Unary K>
void exec_unary(Cpu& c, const Insn& in)
{
    const unsigned size = in.op[0].size;
    const uint64_t cf = (K == Unary::Inc || K == Unary::Dec) ? (flag_cf(c) ? 1 : 0) : 0;
    uint64_t a;
    if (op_is_mem(in, 0)) {
        uint64_t lin = mem_linear(c, in);
        if (uint8_t* p = locked_ptr(c, in, lin, size)) {
            switch (K) {
            case Unary::Inc: a = atomic_fetch<AtomicOp::Add>(p, size, 1); break;
            case Unary::Dec: a = atomic_fetch<AtomicOp::Sub>(p, size, 1); break;
            case Unary::Not: a = atomic_fetch<AtomicOp::Xor>(p, size, ~0ULL); break;
            default: a = atomic_update(p, size, [](uint64_t v) { return 0 - v; }); break;
            }
            unary_flags<K>(c, size, unary_result<K>(a), a, cf);
            return;
        }
        a = read_mem(c, lin, size);
        uint64_t res = unary_result<K>(a);
        write_mem(c, lin, size, res);
        unary_flags<K>(c, size, res, a, cf);
        return;
    }
    a = read_op(c, in, 0);
    uint64_t res = unary_result<K>(a);
    write_op(c, in, 0, res);
    unary_flags<K>(c, size, res, a, cf);
}

} // namespace

void register_alu(HandlerTable& t)
{
    set_handler(t, ZYDIS_MNEMONIC_ADD, &exec_alu<Alu::Add>);
    set_handler(t, ZYDIS_MNEMONIC_OR, &exec_alu<Alu::Or>);
    set_handler(t, ZYDIS_MNEMONIC_ADC, &exec_alu<Alu::Adc>);
    set_handler(t, ZYDIS_MNEMONIC_SBB, &exec_alu<Alu::Sbb>);
    set_handler(t, ZYDIS_MNEMONIC_AND, &exec_alu<Alu::And>);
    set_handler(t, ZYDIS_MNEMONIC_SUB, &exec_alu<Alu::Sub>);
    set_handler(t, ZYDIS_MNEMONIC_XOR, &exec_alu<Alu::Xor>);
    set_handler(t, ZYDIS_MNEMONIC_CMP, &exec_alu<Alu::Cmp>);
    set_handler(t, ZYDIS_MNEMONIC_TEST, &exec_alu<Alu::Test>);
    set_handler(t, ZYDIS_MNEMONIC_INC, &exec_unary<Unary::Inc>);
    set_handler(t, ZYDIS_MNEMONIC_DEC, &exec_unary<Unary::Dec>);
    set_handler(t, ZYDIS_MNEMONIC_NEG, &exec_unary<Unary::Neg>);
    set_handler(t, ZYDIS_MNEMONIC_NOT, &exec_unary<Unary::Not>);
}

} // namespace vessel::soft::integer
