// The x87/MMX/SSE register state of the soft engine lives in place in Cpu::fx, laid out as the
// 64-bit FXSAVE image. Helpers shared by the SSE, MMX and x87 handlers: field access, the x87
// stack (TOP, the abridged tag word, ST(i) slots kept in stack order as FXSAVE stores them),
// the availability checks (CR0.EM/TS, CR4.OSFXSR) and pending x87 exceptions.
#pragma once

#include <cstdint>
#include <cstring>

#include "engine/soft/cpu.h"

namespace vessel::soft::fpu {

constexpr uint64_t kCr0Em = 1ULL << 2, kCr0Ts = 1ULL << 3, kCr4Osxsave = 1ULL << 18;

// Offsets in the FXSAVE image.
constexpr unsigned kFcw = 0, kFsw = 2, kFtw = 4, kFop = 6, kFip = 8, kFdp = 16, kMxcsr = 24, kMxcsrMask = 28, kSt = 32,
                   kXmm = 160;

// MXCSR: flags 0-5, DAZ 6, masks 7-12, RC 13-14, FZ 15. Every bit below 16 is writable.
constexpr uint32_t kMxcsrWritable = 0xffff;
constexpr uint32_t kMxcsrDefault = 0x1f80;

// FSW bits.
constexpr uint16_t kIE = 1, kDE = 2, kZE = 4, kOE = 8, kUE = 0x10, kPE = 0x20, kStackFault = 0x40, kES = 0x80,
                   kC0 = 0x100, kC1 = 0x200, kC2 = 0x400, kC3 = 0x4000, kBusy = 0x8000, kTopMask = 0x3800;
constexpr uint16_t kCcMask = kC0 | kC1 | kC2 | kC3;
constexpr uint16_t kFcwInit = 0x037f;

// FCW as loaded by FLDCW/FLDENV/FRSTOR/FXRSTOR/XRSTOR: bit 6 reads as 1, bits 7 and 13-15 as 0.
constexpr uint16_t fcw_value(uint16_t v)
{
    return static_cast<uint16_t>((v & 0x1f3f) | 0x40);
}

template<typename T>
inline T fx_get(const Cpu& c, unsigned off)
{
    T v;
    std::memcpy(&v, c.fx.data() + off, sizeof(T));
    return v;
}

template<typename T>
inline void fx_set(Cpu& c, unsigned off, T v)
{
    std::memcpy(c.fx.data() + off, &v, sizeof(T));
}

inline uint32_t mxcsr(const Cpu& c)
{
    return fx_get<uint32_t>(c, kMxcsr);
}
inline void set_mxcsr(Cpu& c, uint32_t v)
{
    fx_set<uint32_t>(c, kMxcsr, v);
}
inline uint16_t fcw(const Cpu& c)
{
    return fx_get<uint16_t>(c, kFcw);
}
inline uint16_t fsw(const Cpu& c)
{
    return fx_get<uint16_t>(c, kFsw);
}
inline void set_fsw(Cpu& c, uint16_t v)
{
    fx_set<uint16_t>(c, kFsw, v);
}
inline unsigned top(const Cpu& c)
{
    return (fsw(c) >> 11) & 7;
}
inline uint8_t& ftw(Cpu& c)
{
    return c.fx[kFtw];
} // abridged: bit p = physical register p in use

// ES and B summarise the unmasked exception flags; recomputed after FSW or FCW change.
inline void update_es(Cpu& c)
{
    uint16_t sw = fsw(c);
    if (sw & ~fcw(c) & 0x3f)
        sw |= kES | kBusy;
    else
        sw &= static_cast<uint16_t>(~(kES | kBusy));
    set_fsw(c, sw);
}

// Host address of the 16-byte slot of ST(i) (stack order).
inline uint8_t* st_slot(Cpu& c, unsigned i)
{
    return c.fx.data() + kSt + 16 * (i & 7);
}
inline unsigned phys(const Cpu& c, unsigned i)
{
    return (top(c) + i) & 7;
}
inline bool st_empty(Cpu& c, unsigned i)
{
    return !((ftw(c) >> phys(c, i)) & 1);
}

// Moves TOP to `new_top`, rotating the slots so that slot i keeps holding ST(i).
inline void set_top(Cpu& c, unsigned new_top)
{
    unsigned d = (new_top - top(c)) & 7;
    if (d) {
        uint8_t tmp[128];
        for (unsigned i = 0; i < 8; ++i)
            std::memcpy(tmp + 16 * i, st_slot(c, i + d), 16);
        std::memcpy(c.fx.data() + kSt, tmp, sizeof(tmp));
    }
    set_fsw(c, static_cast<uint16_t>((fsw(c) & ~kTopMask) | ((new_top & 7) << 11)));
}

// Availability of SSE/SSE2 instructions: #UD with CR0.EM or without CR4.OSFXSR, #NM with CR0.TS.
inline void check_sse(const Cpu& c)
{
    if ((c.cr0 & kCr0Em) || !(c.cr4 & x86::kCr4Osfxsr)) [[unlikely]]
        raise_ud();
    if (c.cr0 & kCr0Ts) [[unlikely]]
        raise_fault(kExcNM);
}

// A pending unmasked x87 exception is delivered by the next waiting x87 (or MMX) instruction.
inline void check_pending_x87(const Cpu& c)
{
    if (fx_get<uint16_t>(c, kFsw) & kES) [[unlikely]]
        raise_fault(kExcMF);
}

// x87 instructions: #NM with CR0.EM or CR0.TS.
inline void check_x87(const Cpu& c)
{
    if (c.cr0 & (kCr0Em | kCr0Ts)) [[unlikely]]
        raise_fault(kExcNM);
}

// MMX instructions: #UD with CR0.EM, #NM with CR0.TS, #MF with a pending x87 exception.
inline void check_mmx(const Cpu& c)
{
    if (c.cr0 & kCr0Em) [[unlikely]]
        raise_ud();
    if (c.cr0 & kCr0Ts) [[unlikely]]
        raise_fault(kExcNM);
    check_pending_x87(c);
}

// Every MMX instruction but EMMS sets TOP = 0 and tags all registers valid; called after the
// instruction's last access that can fault.
inline void enter_mmx(Cpu& c)
{
    set_top(c, 0);
    ftw(c) = 0xff;
}

// MMi is physical register Ri, whatever TOP is.
inline unsigned mm_offset(const Cpu& c, unsigned i)
{
    return kSt + 16 * ((i - top(c)) & 7);
}
inline uint64_t mm(const Cpu& c, unsigned i)
{
    return fx_get<uint64_t>(c, mm_offset(c, i));
}
// Writing an MMX register sets the exponent field of the aliased x87 register to all ones.
inline void set_mm(Cpu& c, unsigned i, uint64_t v)
{
    fx_set<uint64_t>(c, mm_offset(c, i), v);
    fx_set<uint16_t>(c, mm_offset(c, i) + 8, 0xffff);
}

} // namespace vessel::soft::fpu
