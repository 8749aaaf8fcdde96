// Bit instructions: BT BTS BTR BTC (register, immediate and memory forms; LOCKed forms as host
// atomics), BSF BSR TZCNT LZCNT POPCNT.
#include "engine/soft/exec_int.h"

namespace vessel::soft::integer {

namespace {

enum class BitOp : uint8_t { Test, Set, Reset, Complement };

template<BitOp K>
inline uint64_t bit_update(uint64_t v, uint64_t mask)
{
    switch (K) {
    case BitOp::Set: return v | mask;
    case BitOp::Reset: return v & ~mask;
    case BitOp::Complement: return v ^ mask;
    default: return v;
    }
}

template<BitOp K>
void exec_bt(Cpu& c, const Insn& in)
{
    const unsigned size = in.op[0].size;
    const unsigned bits = size * 8;
    const uint64_t offset = read_op(c, in, 1);
    unsigned bit = static_cast<unsigned>(offset & (bits - 1));
    const uint64_t mask = 1ULL << bit;
    uint64_t old;
    if (op_is_mem(in, 0)) {
        uint64_t ea = effective_address(c, in);
        if (in.op[1].kind != OpKind::Imm) {
            // A register bit offset is signed and selects the operand-sized unit around the
            // address: ea + (offset >> log2(bits)) * size.
            int64_t off = sign_extend(offset, in.op[1].size);
            int64_t unit = off >> __builtin_ctz(bits);
            ea = (ea + static_cast<uint64_t>(unit) * size) & addr_mask(in.asize);
        }
        uint64_t lin = seg_linear(c, in.seg, ea);
        if (K == BitOp::Test) {
            old = read_mem(c, lin, size);
        } else if (uint8_t* p = locked_ptr(c, in, lin, size)) {
            switch (K) {
            case BitOp::Set: old = atomic_fetch<AtomicOp::Or>(p, size, mask); break;
            case BitOp::Reset: old = atomic_fetch<AtomicOp::And>(p, size, ~mask); break;
            default: old = atomic_fetch<AtomicOp::Xor>(p, size, mask); break;
            }
        } else {
            old = read_mem(c, lin, size);
            write_mem(c, lin, size, bit_update<K>(old, mask));
        }
    } else {
        old = read_op(c, in, 0);
        if (K != BitOp::Test)
            write_op(c, in, 0, bit_update<K>(old, mask));
    }
    // Only CF changes (OF/SF/AF/PF are undefined and kept, ZF is unaffected).
    set_rflags_bits(c, (old & mask) ? kCF : 0, kCF);
}

// BSF/BSR: ZF = (source == 0), the destination is left unchanged then. The undefined flags
// follow the source as a logic result (CF = OF = AF = 0, SF/PF of the source).
template<bool Forward>
void exec_bsf(Cpu& c, const Insn& in)
{
    const unsigned size = in.op[0].size;
    const uint64_t src = read_op(c, in, 1);
    if (src != 0)
        write_op(c, in, 0, Forward ? __builtin_ctzll(src) : 63 - __builtin_clzll(src));
    set_lazy(c, FlagOp::Logic, size, src, src, src);
}

// TZCNT/LZCNT: CF = (source == 0), ZF = (result == 0); the undefined SF/PF follow the result,
// OF = AF = 0.
template<bool Trailing>
void exec_tzcnt(Cpu& c, const Insn& in)
{
    const unsigned size = in.op[0].size;
    const unsigned bits = size * 8;
    const uint64_t src = read_op(c, in, 1);
    uint64_t res;
    if (src == 0)
        res = bits;
    else if (Trailing)
        res = __builtin_ctzll(src);
    else
        res = __builtin_clzll(src) - (64 - bits);
    write_op(c, in, 0, res);
    set_arith_flags(c, szp_flags(res, size) | (src == 0 ? kCF : 0));
}

void exec_popcnt(Cpu& c, const Insn& in)
{
    const uint64_t src = read_op(c, in, 1);
    write_op(c, in, 0, __builtin_popcountll(src));
    set_arith_flags(c, src == 0 ? kZF : 0);
}

} // namespace

void register_bits(HandlerTable& t)
{
    set_handler(t, ZYDIS_MNEMONIC_BT, &exec_bt<BitOp::Test>);
    set_handler(t, ZYDIS_MNEMONIC_BTS, &exec_bt<BitOp::Set>);
    set_handler(t, ZYDIS_MNEMONIC_BTR, &exec_bt<BitOp::Reset>);
    set_handler(t, ZYDIS_MNEMONIC_BTC, &exec_bt<BitOp::Complement>);
    set_handler(t, ZYDIS_MNEMONIC_BSF, &exec_bsf<true>);
    set_handler(t, ZYDIS_MNEMONIC_BSR, &exec_bsf<false>);
    set_handler(t, ZYDIS_MNEMONIC_TZCNT, &exec_tzcnt<true>);
    set_handler(t, ZYDIS_MNEMONIC_LZCNT, &exec_tzcnt<false>);
    set_handler(t, ZYDIS_MNEMONIC_POPCNT, &exec_popcnt);
}

} // namespace vessel::soft::integer
