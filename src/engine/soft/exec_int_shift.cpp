// Shifts and rotates: SHL/SAL SHR SAR ROL ROR RCL RCR SHLD SHRD. The count is masked to 5 bits
// (6 for 64-bit operands); a masked count of 0 leaves the flags alone. Flags the SDM leaves
// undefined get fixed, documented values: OF as for a count of 1 (from the result and CF), AF = 0.
#include "engine/soft/exec_int.h"

namespace vessel::soft::integer {

namespace {

enum class Shift : uint8_t { Shl, Shr, Sar, Rol, Ror, Rcl, Rcr };

inline uint64_t msb(uint64_t v, unsigned bits)
{
    return (v >> (bits - 1)) & 1;
}

// Operand 0 for a shift: the value and, for memory, its linear address.
struct Dest {
    bool mem;
    uint64_t linear;
    uint64_t value;
};

inline Dest read_dest(Cpu& c, const Insn& in)
{
    if (op_is_mem(in, 0)) {
        uint64_t lin = mem_linear(c, in);
        return { true, lin, read_mem(c, lin, in.op[0].size) };
    }
    return { false, 0, read_op(c, in, 0) };
}

inline void write_dest(Cpu& c, const Insn& in, const Dest& d, uint64_t v)
{
    if (d.mem)
        write_mem(c, d.linear, in.op[0].size, v);
    else
        write_op(c, in, 0, v);
}

inline uint64_t count_mask(unsigned size)
{
    return size == 8 ? 63 : 31;
}

template<Shift K>
void exec_shift(Cpu& c, const Insn& in)
{
    const unsigned size = in.op[0].size;
    const unsigned bits = size * 8;
    const uint64_t m = size_mask(size);
    // D0/D1 forms: Zydis lists the count 1 as an explicit immediate; accept it missing too.
    const unsigned count = static_cast<unsigned>((in.nops >= 2 ? read_op(c, in, 1) : 1) & count_mask(size));
    const Dest d = read_dest(c, in);
    const uint64_t a = d.value & m;
    if (count == 0) {
        // No flags; a 32-bit register destination is still written (zero-extended).
        if (!d.mem)
            write_op(c, in, 0, a);
        return;
    }
    uint64_t res = a, cf = 0, of = 0;
    bool rotate = false;
    switch (K) {
    case Shift::Shl:
        res = (a << count) & m;
        cf = count <= bits ? (a >> (bits - count)) & 1 : 0;
        of = msb(res, bits) ^ cf;
        break;
    case Shift::Shr:
        res = a >> count;
        cf = (a >> (count - 1)) & 1;
        of = count == 1 ? msb(a, bits) : 0;
        break;
    case Shift::Sar: {
        int64_t sa = sign_extend(a, size);
        res = static_cast<uint64_t>(sa >> count) & m;
        cf = static_cast<uint64_t>(sa >> (count - 1)) & 1;
        of = 0;
        break;
    }
    case Shift::Rol: {
        unsigned r = count % bits;
        res = r ? ((a << r) | (a >> (bits - r))) & m : a;
        cf = res & 1;
        of = msb(res, bits) ^ cf;
        rotate = true;
        break;
    }
    case Shift::Ror: {
        unsigned r = count % bits;
        res = r ? ((a >> r) | (a << (bits - r))) & m : a;
        cf = msb(res, bits);
        of = cf ^ ((res >> (bits - 2)) & 1);
        rotate = true;
        break;
    }
    case Shift::Rcl:
    case Shift::Rcr: {
        // Rotation through CF over bits+1 bits; 8/16-bit counts are taken mod 9/17.
        unsigned r = size == 1 ? count % 9 : size == 2 ? count % 17 : count;
        if (r == 0) {
            // A count that is a multiple of 9/17: nothing rotates, CF and OF stay.
            if (!d.mem)
                write_op(c, in, 0, a);
            return;
        }
        const unsigned w = bits + 1;
        const unsigned __int128 wmask = (static_cast<unsigned __int128>(1) << w) - 1;
        unsigned __int128 v = (static_cast<unsigned __int128>(flag_cf(c) ? 1 : 0) << bits) | a;
        if (K == Shift::Rcl)
            v = ((v << r) | (v >> (w - r))) & wmask;
        else
            v = ((v >> r) | (v << (w - r))) & wmask;
        res = static_cast<uint64_t>(v) & m;
        cf = static_cast<uint64_t>(v >> bits) & 1;
        if (K == Shift::Rcl)
            of = msb(res, bits) ^ cf;
        else
            of = msb(res, bits) ^ ((res >> (bits - 2)) & 1);
        rotate = true;
        break;
    }
    }
    write_dest(c, in, d, res);
    uint64_t f = (cf ? kCF : 0) | (of ? kOF : 0);
    if (rotate)
        set_rflags_bits(c, f, kCF | kOF); // rotates change only CF and OF
    else
        set_arith_flags(c, f | szp_flags(res, size));
}

// SHLD/SHRD dest, src, count. 16-bit counts above 16 (undefined) shift dest:src:dest as P6 and
// later processors do.
template<bool Left>
void exec_shxd(Cpu& c, const Insn& in)
{
    const unsigned size = in.op[0].size;
    const unsigned bits = size * 8;
    const uint64_t m = size_mask(size);
    const uint64_t src = read_op(c, in, 1);
    const unsigned count = static_cast<unsigned>(read_op(c, in, 2) & count_mask(size));
    const Dest d = read_dest(c, in);
    const uint64_t a = d.value & m;
    if (count == 0) {
        if (!d.mem)
            write_op(c, in, 0, a);
        return;
    }
    uint64_t res, cf, of;
    if (size == 2) {
        uint64_t t = (a << 32) | ((src & 0xffff) << 16) | a;
        if (Left) {
            res = (t >> (32 - count)) & 0xffff;
            cf = (t >> (48 - count)) & 1;
        } else {
            res = (t >> count) & 0xffff;
            cf = (t >> (count - 1)) & 1;
        }
    } else if (Left) {
        res = ((a << count) | (src >> (bits - count))) & m;
        cf = (a >> (bits - count)) & 1;
    } else {
        res = ((a >> count) | (src << (bits - count))) & m;
        cf = (a >> (count - 1)) & 1;
    }
    if (Left)
        of = msb(res, bits) ^ cf;
    else
        of = msb(res, bits) ^ ((res >> (bits - 2)) & 1);
    write_dest(c, in, d, res);
    set_arith_flags(c, (cf ? kCF : 0) | (of ? kOF : 0) | szp_flags(res, size));
}

} // namespace

void register_shift(HandlerTable& t)
{
    set_handler(t, ZYDIS_MNEMONIC_SHL, &exec_shift<Shift::Shl>);
    set_handler(t, ZYDIS_MNEMONIC_SHR, &exec_shift<Shift::Shr>);
    set_handler(t, ZYDIS_MNEMONIC_SAR, &exec_shift<Shift::Sar>);
    set_handler(t, ZYDIS_MNEMONIC_ROL, &exec_shift<Shift::Rol>);
    set_handler(t, ZYDIS_MNEMONIC_ROR, &exec_shift<Shift::Ror>);
    set_handler(t, ZYDIS_MNEMONIC_RCL, &exec_shift<Shift::Rcl>);
    set_handler(t, ZYDIS_MNEMONIC_RCR, &exec_shift<Shift::Rcr>);
    set_handler(t, ZYDIS_MNEMONIC_SHLD, &exec_shxd<true>);
    set_handler(t, ZYDIS_MNEMONIC_SHRD, &exec_shxd<false>);
}

} // namespace vessel::soft::integer
