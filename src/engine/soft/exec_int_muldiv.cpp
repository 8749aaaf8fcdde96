// Multiplication and division (MUL IMUL DIV IDIV, #DE on a zero divisor or a quotient that does
// not fit) and the BCD adjustments of 16/32-bit code (DAA DAS AAA AAS AAM AAD).
// MUL/IMUL: CF = OF = the product did not fit; the undefined SF/ZF/PF follow the low half of the
// product and AF = 0. DIV/IDIV leave the (undefined) flags unchanged.
#include "engine/soft/exec_int.h"

namespace vessel::soft::integer {

namespace {

using u128 = unsigned __int128;
using s128 = __int128;

inline void mul_flags(Cpu& c, uint64_t low, unsigned size, bool overflow)
{
    set_arith_flags(c, szp_flags(low, size) | (overflow ? (kCF | kOF) : 0));
}

// Writes a double-width result: AX for bytes, DX:AX / EDX:EAX / RDX:RAX otherwise.
inline void write_pair(Cpu& c, unsigned size, uint64_t low, uint64_t high)
{
    if (size == 1) {
        write_gpr(c, RAX, 2, (low & 0xff) | ((high & 0xff) << 8));
        return;
    }
    write_gpr(c, RAX, size, low);
    write_gpr(c, RDX, size, high);
}

void exec_mul(Cpu& c, const Insn& in)
{
    const unsigned size = in.op[0].size;
    const uint64_t src = read_op(c, in, 0);
    const uint64_t acc = read_gpr(c, RAX, size);
    uint64_t low, high;
    if (size == 8) {
        u128 p = static_cast<u128>(acc) * src;
        low = static_cast<uint64_t>(p);
        high = static_cast<uint64_t>(p >> 64);
    } else {
        uint64_t p = acc * src;
        low = p & size_mask(size);
        high = p >> (size * 8);
    }
    write_pair(c, size, low, high);
    mul_flags(c, low, size, high != 0);
}

// Signed product of two `size`-byte values: the low `size` bytes, the high part, and whether
// the product does not fit in `size` bytes.
struct SignedProduct {
    uint64_t low;
    uint64_t high;
    bool overflow;
};

inline SignedProduct signed_mul(uint64_t a, uint64_t b, unsigned size)
{
    if (size == 8) {
        s128 p = static_cast<s128>(static_cast<int64_t>(a)) * static_cast<int64_t>(b);
        uint64_t low = static_cast<uint64_t>(p);
        return { low, static_cast<uint64_t>(static_cast<u128>(p) >> 64), p != static_cast<int64_t>(low) };
    }
    int64_t p = sign_extend(a, size) * sign_extend(b, size);
    uint64_t low = static_cast<uint64_t>(p) & size_mask(size);
    return { low, static_cast<uint64_t>(p >> (size * 8)), p != sign_extend(low, size) };
}

void exec_imul(Cpu& c, const Insn& in)
{
    const unsigned size = in.op[0].size;
    if (in.nops <= 1) {
        SignedProduct p = signed_mul(read_gpr(c, RAX, size), read_op(c, in, 0), size);
        write_pair(c, size, p.low, p.high);
        mul_flags(c, p.low, size, p.overflow);
        return;
    }
    // IMUL r, r/m (r = r * r/m) and IMUL r, r/m, imm.
    uint64_t a = in.nops >= 3 ? read_op(c, in, 1) : read_op(c, in, 0);
    uint64_t b = in.nops >= 3 ? read_op(c, in, 2) : read_op(c, in, 1);
    SignedProduct p = signed_mul(a, b, size);
    write_op(c, in, 0, p.low);
    mul_flags(c, p.low, size, p.overflow);
}

void exec_div(Cpu& c, const Insn& in)
{
    const unsigned size = in.op[0].size;
    const uint64_t divisor = read_op(c, in, 0);
    if (divisor == 0)
        raise_fault(kExcDE);
    uint64_t q, r;
    if (size == 8) {
        uint64_t hi = c.gpr[RDX];
        if (hi >= divisor)
            raise_fault(kExcDE); // quotient ≥ 2^64
        u128 n = (static_cast<u128>(hi) << 64) | c.gpr[RAX];
        q = static_cast<uint64_t>(n / divisor);
        r = static_cast<uint64_t>(n % divisor);
    } else {
        uint64_t n
            = size == 1 ? (c.gpr[RAX] & 0xffff) : (read_gpr(c, RDX, size) << (size * 8)) | read_gpr(c, RAX, size);
        q = n / divisor;
        r = n % divisor;
        if (q > size_mask(size))
            raise_fault(kExcDE);
    }
    write_pair(c, size, q, r);
}

void exec_idiv(Cpu& c, const Insn& in)
{
    const unsigned size = in.op[0].size;
    const int64_t d = sign_extend(read_op(c, in, 0), size);
    if (d == 0)
        raise_fault(kExcDE);
    s128 n;
    if (size == 1)
        n = sign_extend(c.gpr[RAX], 2);
    else if (size == 8)
        n = static_cast<s128>((static_cast<u128>(c.gpr[RDX]) << 64) | c.gpr[RAX]);
    else
        n = sign_extend((read_gpr(c, RDX, size) << (size * 8)) | read_gpr(c, RAX, size), size * 2);
    const s128 qmax = (static_cast<s128>(1) << (size * 8 - 1)) - 1;
    const s128 qmin = -qmax - 1;
    s128 q, r;
    if (d == -1) {
        // -n, without overflowing for n = INT128_MIN.
        if (n < -qmax || n > -qmin)
            raise_fault(kExcDE);
        q = -n;
        r = 0;
    } else {
        q = n / d;
        r = n % d;
        if (q < qmin || q > qmax)
            raise_fault(kExcDE);
    }
    write_pair(c, size, static_cast<uint64_t>(q), static_cast<uint64_t>(r));
}

// BCD adjustments (AL/AH). Flags the SDM leaves undefined: SF/ZF/PF from AL, OF = 0.

inline uint64_t al(const Cpu& c)
{
    return c.gpr[RAX] & 0xff;
}

void exec_daa(Cpu& c, const Insn&)
{
    uint64_t old_al = al(c), v = old_al;
    bool old_cf = flag_cf(c), cf = false, af = false;
    if ((v & 0xf) > 9 || flag_af(c)) {
        v += 6;
        af = true;
    }
    if (old_al > 0x99 || old_cf) {
        v += 0x60;
        cf = true;
    }
    v &= 0xff;
    write_gpr(c, RAX, 1, v);
    set_arith_flags(c, szp_flags(v, 1) | (cf ? kCF : 0) | (af ? kAF : 0));
}

void exec_das(Cpu& c, const Insn&)
{
    uint64_t old_al = al(c), v = old_al;
    bool old_cf = flag_cf(c), cf = false, af = false;
    if ((v & 0xf) > 9 || flag_af(c)) {
        cf = old_cf || v < 6;
        v -= 6;
        af = true;
    }
    if (old_al > 0x99 || old_cf) {
        v -= 0x60;
        cf = true;
    }
    v &= 0xff;
    write_gpr(c, RAX, 1, v);
    set_arith_flags(c, szp_flags(v, 1) | (cf ? kCF : 0) | (af ? kAF : 0));
}

template<bool Add>
void exec_aaa(Cpu& c, const Insn&)
{
    uint64_t ax = c.gpr[RAX] & 0xffff;
    bool adjust = (ax & 0xf) > 9 || flag_af(c);
    if (adjust)
        ax = (Add ? ax + 0x106 : ax - 6 - 0x100) & 0xffff; // AAS: AX -= 6, then AH -= 1
    ax = (ax & 0xff00) | (ax & 0x0f);
    write_gpr(c, RAX, 2, ax);
    set_arith_flags(c, szp_flags(ax & 0xff, 1) | (adjust ? (kAF | kCF) : 0));
}

void exec_aam(Cpu& c, const Insn& in)
{
    uint64_t base = in.imm & 0xff;
    if (base == 0)
        raise_fault(kExcDE);
    uint64_t v = al(c);
    uint64_t ax = ((v / base) << 8) | (v % base);
    write_gpr(c, RAX, 2, ax);
    set_arith_flags(c, szp_flags(ax & 0xff, 1));
}

void exec_aad(Cpu& c, const Insn& in)
{
    uint64_t base = in.imm & 0xff;
    uint64_t v = (al(c) + ((c.gpr[RAX] >> 8) & 0xff) * base) & 0xff;
    write_gpr(c, RAX, 2, v);
    set_arith_flags(c, szp_flags(v, 1));
}

} // namespace

void register_muldiv(HandlerTable& t)
{
    set_handler(t, ZYDIS_MNEMONIC_MUL, &exec_mul);
    set_handler(t, ZYDIS_MNEMONIC_IMUL, &exec_imul);
    set_handler(t, ZYDIS_MNEMONIC_DIV, &exec_div);
    set_handler(t, ZYDIS_MNEMONIC_IDIV, &exec_idiv);
    set_handler(t, ZYDIS_MNEMONIC_DAA, &exec_daa);
    set_handler(t, ZYDIS_MNEMONIC_DAS, &exec_das);
    set_handler(t, ZYDIS_MNEMONIC_AAA, &exec_aaa<true>);
    set_handler(t, ZYDIS_MNEMONIC_AAS, &exec_aaa<false>);
    set_handler(t, ZYDIS_MNEMONIC_AAM, &exec_aam);
    set_handler(t, ZYDIS_MNEMONIC_AAD, &exec_aad);
}

} // namespace vessel::soft::integer
