// Shared pieces of the SSE/SSE2 (and MMX integer) handlers, exec_sse_*.cpp. Values are kept as
// host __m128i: the engine runs on x86-64, so SSE2 is always there and each guest operation maps
// onto the host instruction with the same architectural definition (NaN propagation, MIN/MAX
// operand order, integer indefinite, saturation...). Floating-point operations run with the
// guest's rounding/FZ/DAZ bits in the host MXCSR, all exceptions masked; the flags the host
// raised are merged into the guest MXCSR, and an unmasked one faults (#XM, or #UD without
// CR4.OSXMMEXCPT) before the destination is written.
#pragma once

#include <immintrin.h>

#include <cstdint>

#include <Zydis/Zydis.h>

#include "engine/soft/cpu.h"
#include "engine/soft/fpu_state.h"
#include "engine/soft/handlers.h"
#include "engine/soft/operand.h"

namespace vessel::soft::sse {

using namespace fpu;

struct alignas(16) M128 {
    uint64_t q[2];
};

inline __m128i xmm(const Cpu& c, unsigned i)
{
    // SAFETY: the slot lies inside Cpu::fx (16 registers × 16 bytes from offset 160).
    return _mm_loadu_si128(reinterpret_cast<const __m128i*>(c.fx.data() + kXmm + 16 * (i & 15)));
}

inline void set_xmm(Cpu& c, unsigned i, __m128i v)
{
    // SAFETY: as in xmm().
    _mm_storeu_si128(reinterpret_cast<__m128i*>(c.fx.data() + kXmm + 16 * (i & 15)), v);
}

inline uint64_t lo64(__m128i v)
{
    return static_cast<uint64_t>(_mm_cvtsi128_si64(v));
}
inline uint64_t hi64(__m128i v)
{
    return static_cast<uint64_t>(_mm_cvtsi128_si64(_mm_unpackhi_epi64(v, v)));
}
inline __m128i make128(uint64_t lo, uint64_t hi)
{
    return _mm_set_epi64x(static_cast<int64_t>(hi), static_cast<int64_t>(lo));
}

// Linear address of the memory operand; #GP(0) unless aligned to `align` bytes.
inline uint64_t mem_addr(const Cpu& c, const Insn& in, unsigned align)
{
    uint64_t lin = mem_linear(c, in);
    if (lin & (align - 1)) [[unlikely]]
        raise_fault(kExcGP, 0);
    return lin;
}

inline __m128i load128(Cpu& c, uint64_t lin)
{
    M128 m = read_linear<M128>(c, lin);
    return make128(m.q[0], m.q[1]);
}

inline void store128(Cpu& c, uint64_t lin, __m128i v)
{
    M128 m { { lo64(v), hi64(v) } };
    write_linear<M128>(c, lin, m);
}

// Reads `size` bytes (2, 4, 8 or 16) zero-extended; 16-byte reads must be aligned unless
// `unaligned` (the legacy SSE rule: #GP(0) for a misaligned 128-bit operand).
inline __m128i load_mem(Cpu& c, const Insn& in, unsigned size, bool unaligned = false)
{
    if (size == 16)
        return load128(c, mem_addr(c, in, unaligned ? 1 : 16));
    return make128(read_mem(c, mem_linear(c, in), size), 0);
}

// Source operand n of an SSE instruction: an XMM register or memory of `mem_size` bytes.
inline __m128i read_src(Cpu& c, const Insn& in, unsigned n, unsigned mem_size, bool unaligned = false)
{
    const Operand& o = in.op[n];
    if (o.kind == OpKind::Xmm)
        return xmm(c, o.reg);
    if (o.kind == OpKind::Mem)
        return load_mem(c, in, mem_size, unaligned);
    if (o.kind == OpKind::Mmx)
        return make128(mm(c, o.reg), 0);
    if (o.kind == OpKind::Gpr)
        return make128(read_gpr(c, o.reg, o.size), 0);
    abort_engine("SSE: unexpected source operand kind", static_cast<uint64_t>(o.kind));
}

// Runs host floating-point work with the guest's RC/FZ/DAZ and every exception masked; the
// host MXCSR is restored on destruction. Inputs and results of the work must pass through
// opaque() so that the compiler keeps the work between the MXCSR switches.
class GuestMxcsr {
public:
    explicit GuestMxcsr(const Cpu& c)
        : m_saved(_mm_getcsr())
    {
        _mm_setcsr((mxcsr(c) & 0xe040) | 0x1f80);
    }
    ~GuestMxcsr() { _mm_setcsr(m_saved); }
    GuestMxcsr(const GuestMxcsr&) = delete;
    GuestMxcsr& operator=(const GuestMxcsr&) = delete;
    uint32_t flags() const { return _mm_getcsr() & 0x3f; }

private:
    uint32_t m_saved;
};

template<typename T>
inline void opaque(T& v)
{
    if constexpr (sizeof(T) == 16)
        asm volatile("" : "+x"(v));
    else
        asm volatile("" : "+r"(v));
}

// Merges exception flags raised by an operation into MXCSR; faults if one is unmasked.
inline void commit_mxcsr_flags(Cpu& c, uint32_t flags)
{
    if (!flags)
        return;
    uint32_t mx = mxcsr(c);
    uint32_t unmasked = flags & ~(mx >> 7) & 0x3f;
    if (unmasked & 7) // an unmasked pre-computation exception suppresses the result exceptions
        flags &= 7;
    set_mxcsr(c, mx | flags);
    if (unmasked) {
        if (c.cr4 & x86::kCr4Osxmmexcpt)
            raise_fault(kExcXM);
        raise_ud();
    }
}

// Per-file registration (exec_sse_*.cpp).
void register_sse_state(HandlerTable& t);
void register_sse_move(HandlerTable& t);
void register_sse_int(HandlerTable& t);
void register_sse_fp(HandlerTable& t);
void register_sse_cvt(HandlerTable& t);

} // namespace vessel::soft::sse
