// Private helpers of the general-purpose integer instruction handlers (exec_int_*.cpp).
#pragma once

#include <cstdint>
#include <type_traits>

#include "engine/soft/flags.h"
#include "engine/soft/handlers.h"
#include "engine/soft/operand.h"

namespace vessel::soft::integer {

// Registration per theme (each file registers its own mnemonics).
void register_alu(HandlerTable& t);
void register_mov(HandlerTable& t);
void register_shift(HandlerTable& t);
void register_muldiv(HandlerTable& t);
void register_bits(HandlerTable& t);
void register_string(HandlerTable& t);
void register_flow(HandlerTable& t);

// Installs `fn` for mnemonic `m`, remembering the handler that was there: a few mnemonics are
// shared with other groups (MOV to CR/DR/segment registers, far JMP/CALL/RET, POP to a segment
// register, SSE MOVSD/CMPSD), and our handler passes those forms on with call_previous().
void set_handler(HandlerTable& t, ZydisMnemonic m, ExecFn fn);
void call_previous(Cpu& c, const Insn& in);

// Memory operand of the instruction as a linear address plus the operand-0 helpers below.
inline bool op_is_mem(const Insn& in, unsigned n)
{
    return in.op[n].kind == OpKind::Mem;
}

// Host atomics on guest RAM. `p` comes from host_ptr() and covers the access inside one page;
// x86 hosts perform locked operations at any alignment.
enum class AtomicOp : uint8_t { Add, Sub, And, Or, Xor, Xchg };

template<AtomicOp K, typename T>
inline T atomic_fetch_t(uint8_t* p, T v)
{
    // SAFETY: p points at sizeof(T) bytes of guest RAM inside one page (host_ptr checked it).
    T* ptr = reinterpret_cast<T*>(p);
    if constexpr (K == AtomicOp::Add)
        return __atomic_fetch_add(ptr, v, __ATOMIC_SEQ_CST);
    else if constexpr (K == AtomicOp::Sub)
        return __atomic_fetch_sub(ptr, v, __ATOMIC_SEQ_CST);
    else if constexpr (K == AtomicOp::And)
        return __atomic_fetch_and(ptr, v, __ATOMIC_SEQ_CST);
    else if constexpr (K == AtomicOp::Or)
        return __atomic_fetch_or(ptr, v, __ATOMIC_SEQ_CST);
    else if constexpr (K == AtomicOp::Xor)
        return __atomic_fetch_xor(ptr, v, __ATOMIC_SEQ_CST);
    else
        return __atomic_exchange_n(ptr, v, __ATOMIC_SEQ_CST);
}

// Atomically applies K with operand v to the `size`-byte value at p; returns the old value.
template<AtomicOp K>
inline uint64_t atomic_fetch(uint8_t* p, unsigned size, uint64_t v)
{
    switch (size) {
    case 1: return atomic_fetch_t<K, uint8_t>(p, static_cast<uint8_t>(v));
    case 2: return atomic_fetch_t<K, uint16_t>(p, static_cast<uint16_t>(v));
    case 4: return atomic_fetch_t<K, uint32_t>(p, static_cast<uint32_t>(v));
    default: return atomic_fetch_t<K, uint64_t>(p, v);
    }
}

// Compare-and-swap of `size` bytes at p: returns the value found (== expected on success).
inline uint64_t atomic_cas(uint8_t* p, unsigned size, uint64_t expected, uint64_t desired)
{
    auto cas = [&](auto* ptr) -> uint64_t {
        using T = std::remove_pointer_t<decltype(ptr)>;
        T old = static_cast<T>(expected);
        __atomic_compare_exchange_n(ptr, &old, static_cast<T>(desired), false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
        return old;
    };
    // SAFETY: as in atomic_fetch_t.
    switch (size) {
    case 1: return cas(reinterpret_cast<uint8_t*>(p));
    case 2: return cas(reinterpret_cast<uint16_t*>(p));
    case 4: return cas(reinterpret_cast<uint32_t*>(p));
    default: return cas(reinterpret_cast<uint64_t*>(p));
    }
}

// Atomic read-modify-write by a compare-and-swap loop: new = f(old); returns old.
template<typename F>
inline uint64_t atomic_update(uint8_t* p, unsigned size, F f)
{
    uint64_t m = size_mask(size);
    uint64_t old = 0;
    // SAFETY: as in atomic_fetch_t.
    switch (size) {
    case 1: old = __atomic_load_n(p, __ATOMIC_RELAXED); break;
    case 2: old = __atomic_load_n(reinterpret_cast<uint16_t*>(p), __ATOMIC_RELAXED); break;
    case 4: old = __atomic_load_n(reinterpret_cast<uint32_t*>(p), __ATOMIC_RELAXED); break;
    default: old = __atomic_load_n(reinterpret_cast<uint64_t*>(p), __ATOMIC_RELAXED); break;
    }
    for (;;) {
        uint64_t seen = atomic_cas(p, size, old, f(old) & m);
        if (seen == old)
            return old;
        old = seen;
    }
}

// Host pointer for a LOCKed access to operand 0 (memory), or nullptr when it must be done as a
// plain read-modify-write (MMIO, page-crossing) or is not locked.
inline uint8_t* locked_ptr(Cpu& c, const Insn& in, uint64_t linear, unsigned size)
{
    if (!(in.flags & kFlagLock))
        return nullptr;
    return host_ptr(c, linear, size, Access::Write);
}

// Eager SF/ZF/PF of a result of `size` bytes.
inline uint64_t szp_flags(uint64_t res, unsigned size)
{
    uint64_t f = parity_flag(res);
    if ((res & size_mask(size)) == 0)
        f |= kZF;
    if (res & sign_bit(size))
        f |= kSF;
    return f;
}

// Source segment of string instructions and XLAT: DS unless overridden.
inline uint8_t string_src_seg(const Insn& in)
{
    return (in.flags & kFlagSegOverride) ? in.seg : static_cast<uint8_t>(DS);
}

inline bool df_set(const Cpu& c)
{
    return (c.rflags & kDF) != 0;
}

} // namespace vessel::soft::integer
