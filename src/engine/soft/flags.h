// Lazy arithmetic flags: ALU instructions record (op, size, result, operands); CF/PF/AF/ZF/SF/OF
// are computed only when read. Most flag results are never read (the next ALU instruction
// overwrites them), so this saves most of the flag work of an interpreter.
#pragma once

#include <cstdint>

#include "engine/soft/cpu.h"

namespace vessel::soft {

constexpr uint64_t kCF = 1 << 0, kPF = 1 << 2, kAF = 1 << 4, kZF = 1 << 6, kSF = 1 << 7, kTF = 1 << 8, kIF = 1 << 9,
                   kDF = 1 << 10, kOF = 1 << 11, kIOPL = 3 << 12, kNT = 1 << 14, kRF = 1 << 16, kVM = 1 << 17,
                   kAC = 1 << 18, kVIF = 1 << 19, kVIP = 1 << 20, kID = 1 << 21;
constexpr uint64_t kArithFlags = kCF | kPF | kAF | kZF | kSF | kOF;

constexpr uint64_t size_mask(unsigned size)
{
    return size >= 8 ? ~0ULL : (1ULL << (size * 8)) - 1;
}
constexpr uint64_t sign_bit(unsigned size)
{
    return 1ULL << (size * 8 - 1);
}
inline int64_t sign_extend(uint64_t v, unsigned size)
{
    unsigned shift = 64 - size * 8;
    return static_cast<int64_t>(v << shift) >> shift;
}

// Records the flags of an ALU result (values need not be masked).
inline void set_lazy(Cpu& c, FlagOp op, unsigned size, uint64_t res, uint64_t a, uint64_t b, uint64_t aux = 0)
{
    c.lf.op = op;
    c.lf.size = static_cast<uint8_t>(size);
    c.lf.res = res;
    c.lf.a = a;
    c.lf.b = b;
    c.lf.aux = aux;
}

inline bool flag_cf(const Cpu& c)
{
    const LazyFlags& f = c.lf;
    uint64_t m = size_mask(f.size);
    switch (f.op) {
    case FlagOp::None: return c.rflags & kCF;
    case FlagOp::Add: return (f.res & m) < (f.a & m);
    case FlagOp::Adc: return f.aux ? (f.res & m) <= (f.a & m) : (f.res & m) < (f.a & m);
    case FlagOp::Sub: return (f.a & m) < (f.b & m);
    case FlagOp::Sbb: return f.aux ? (f.a & m) <= (f.b & m) : (f.a & m) < (f.b & m);
    case FlagOp::Logic: return false;
    case FlagOp::Inc:
    case FlagOp::Dec: return f.aux != 0;
    case FlagOp::Neg: return (f.a & m) != 0;
    case FlagOp::Host: return f.res & kCF;
    }
    return false;
}

inline bool flag_zf(const Cpu& c)
{
    if (c.lf.op == FlagOp::None)
        return c.rflags & kZF;
    if (c.lf.op == FlagOp::Host)
        return c.lf.res & kZF;
    return (c.lf.res & size_mask(c.lf.size)) == 0;
}

inline bool flag_sf(const Cpu& c)
{
    if (c.lf.op == FlagOp::None)
        return c.rflags & kSF;
    if (c.lf.op == FlagOp::Host)
        return c.lf.res & kSF;
    return (c.lf.res & sign_bit(c.lf.size)) != 0;
}

inline bool flag_pf(const Cpu& c)
{
    if (c.lf.op == FlagOp::None)
        return c.rflags & kPF;
    if (c.lf.op == FlagOp::Host)
        return c.lf.res & kPF;
    return !__builtin_parity(static_cast<unsigned>(c.lf.res & 0xff));
}

inline bool flag_af(const Cpu& c)
{
    const LazyFlags& f = c.lf;
    switch (f.op) {
    case FlagOp::None: return c.rflags & kAF;
    case FlagOp::Host: return f.res & kAF;
    case FlagOp::Logic: return false;
    case FlagOp::Neg: return ((f.a ^ f.res) & 0x10) != 0;
    default: return ((f.a ^ f.b ^ f.res) & 0x10) != 0;
    }
}

inline bool flag_of(const Cpu& c)
{
    const LazyFlags& f = c.lf;
    uint64_t sb = sign_bit(f.size);
    uint64_t m = size_mask(f.size);
    switch (f.op) {
    case FlagOp::None: return c.rflags & kOF;
    case FlagOp::Add:
    case FlagOp::Adc: return ((f.a ^ f.res) & (f.b ^ f.res) & sb) != 0;
    case FlagOp::Sub:
    case FlagOp::Sbb: return ((f.a ^ f.b) & (f.a ^ f.res) & sb) != 0;
    case FlagOp::Logic: return false;
    case FlagOp::Inc: return (f.res & m) == sb;
    case FlagOp::Dec: return (f.res & m) == sb - 1;
    case FlagOp::Neg: return (f.res & m) == sb;
    case FlagOp::Host: return f.res & kOF;
    }
    return false;
}

// Folds the lazy flags into c.rflags and returns the full RFLAGS value.
inline uint64_t get_rflags(Cpu& c)
{
    if (c.lf.op == FlagOp::Host) {
        c.rflags = (c.rflags & ~kArithFlags) | (c.lf.res & kArithFlags);
        c.lf.op = FlagOp::None;
    } else if (c.lf.op != FlagOp::None) {
        uint64_t f = c.rflags & ~kArithFlags;
        f |= flag_cf(c) ? kCF : 0;
        f |= flag_pf(c) ? kPF : 0;
        f |= flag_af(c) ? kAF : 0;
        f |= flag_zf(c) ? kZF : 0;
        f |= flag_sf(c) ? kSF : 0;
        f |= flag_of(c) ? kOF : 0;
        c.rflags = f;
        c.lf.op = FlagOp::None;
    }
    return c.rflags;
}

// Replaces the RFLAGS bits in `mask` with those of `value` (arithmetic flags included).
inline void set_rflags_bits(Cpu& c, uint64_t value, uint64_t mask)
{
    uint64_t f = get_rflags(c);
    c.rflags = ((f & ~mask) | (value & mask)) | x86::kRflagsFixed;
}

// Sets the arithmetic flags eagerly (shifts, rotates, multiplies, BT*, ...).
inline void set_arith_flags(Cpu& c, uint64_t flags)
{
    set_rflags_bits(c, flags, kArithFlags);
}

// Parity flag of a result's low byte, for eager flag computations.
inline uint64_t parity_flag(uint64_t res)
{
    return __builtin_parity(static_cast<unsigned>(res & 0xff)) ? 0 : kPF;
}

// Evaluates condition code cc (0..15, the Jcc/SETcc/CMOVcc encoding).
inline bool test_cc(const Cpu& c, unsigned cc)
{
    const LazyFlags& f = c.lf;
    if (f.op == FlagOp::Sub) {
        // CMP/SUB fast paths: compare the operands directly.
        uint64_t m = size_mask(f.size);
        uint64_t a = f.a & m, b = f.b & m;
        int64_t sa = sign_extend(a, f.size), sb = sign_extend(b, f.size);
        switch (cc) {
        case 2: return a < b;
        case 3: return a >= b;
        case 4: return a == b;
        case 5: return a != b;
        case 6: return a <= b;
        case 7: return a > b;
        case 12: return sa < sb;
        case 13: return sa >= sb;
        case 14: return sa <= sb;
        case 15: return sa > sb;
        default: break;
        }
    }
    bool r;
    switch (cc >> 1) {
    case 0: r = flag_of(c); break;
    case 1: r = flag_cf(c); break;
    case 2: r = flag_zf(c); break;
    case 3: r = flag_cf(c) || flag_zf(c); break;
    case 4: r = flag_sf(c); break;
    case 5: r = flag_pf(c); break;
    case 6: r = flag_sf(c) != flag_of(c); break;
    default: r = flag_zf(c) || (flag_sf(c) != flag_of(c)); break;
    }
    return (cc & 1) ? !r : r;
}

} // namespace vessel::soft
