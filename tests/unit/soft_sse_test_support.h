// Test support for the soft engine's SSE/x87 handlers: runs real instruction bytes (assembled
// with Xbyak) both on the soft engine (decoder, block cache and interpreter, through
// SoftHarness) and natively on the host, from the same initial state, so results can be
// compared with real silicon.
#pragma once

#include <gtest/gtest.h>
#include <immintrin.h>

#include <array>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <xbyak/xbyak.h>

#include "engine/soft/cpu.h"
#include "engine/soft/flags.h"
#include "engine/soft/fpu_state.h"
#include "soft_test_support.h"

namespace vessel::soft::test {

using Emit = std::function<void(Xbyak::CodeGenerator&)>;

// Register/memory state one test program starts from and ends in (both sides).
struct alignas(64) VecState {
    std::array<std::array<uint64_t, 2>, 16> xmm {};
    std::array<uint64_t, 16> gpr {}; // RSI/RDI/RSP are ignored (RSI = the memory buffer)
    uint32_t mxcsr { fpu::kMxcsrDefault };
    uint64_t rflags { 0 };
    alignas(64) std::array<uint8_t, 2048> mem {};
};

constexpr uint64_t kArithMask = 0x8d5; // CF PF AF ZF SF OF

// The soft side: a long-mode SoftHarness (CPL 0, identity paging, CR4.OSXSAVE added) that
// runs a program followed by HLT.
class SseRunner {
public:
    static constexpr uint64_t kCode = kCodeBase;
    static constexpr uint64_t kData = kDataBase;

    SseRunner()
    {
        Cpu& c = m_harness.cpu();
        c.cr4 |= fpu::kCr4Osxsave;
    }

    Cpu& cpu() { return m_harness.cpu(); }
    uint8_t* mem(uint64_t gpa, uint64_t len) { return m_harness.memory().host_ptr(gpa, len); }

    // Runs the program; returns the fault that stopped it, if any (RIP then is the faulting
    // instruction's).
    std::optional<GuestFault> run(const Emit& emit)
    {
        Xbyak::CodeGenerator g(16384, Xbyak::DontSetProtectRWE);
        emit(g);
        g.hlt();
        m_harness.cache().flush(); // the code is rewritten behind the engine's back
        m_harness.load(std::span<const uint8_t>(g.getCode(), g.getSize()));
        RunResult r = m_harness.run(1'000'000);
        if (r.kind == RunResult::Fault)
            return r.fault;
        if (r.kind != RunResult::Halted)
            ADD_FAILURE() << "program did not reach HLT: " << int(r.kind) << " " << r.abort_message;
        return std::nullopt;
    }

    // Loads `s` (memory at kData, RSI = kData, x87 in the FNINIT state), runs, and stores the
    // result back into `s`.
    std::optional<GuestFault> run_state(const Emit& emit, VecState& s)
    {
        Cpu& c = cpu();
        for (unsigned i = 0; i < 16; ++i)
            std::memcpy(c.fx.data() + fpu::kXmm + 16 * i, s.xmm[i].data(), 16);
        uint64_t rsp = c.gpr[RSP];
        c.gpr = s.gpr;
        c.gpr[RSI] = kData;
        c.gpr[RSP] = rsp;
        std::memset(c.fx.data(), 0, fpu::kMxcsr);
        std::memset(c.fx.data() + fpu::kSt, 0, 128);
        fpu::fx_set<uint16_t>(c, fpu::kFcw, fpu::kFcwInit);
        fpu::set_mxcsr(c, s.mxcsr);
        c.lf.op = FlagOp::None;
        c.rflags = x86::kRflagsFixed;
        std::memcpy(mem(kData, s.mem.size()), s.mem.data(), s.mem.size());
        auto fault = run(emit);
        for (unsigned i = 0; i < 16; ++i)
            std::memcpy(s.xmm[i].data(), c.fx.data() + fpu::kXmm + 16 * i, 16);
        s.gpr = c.gpr;
        s.gpr[RSI] = 0;
        s.mxcsr = fpu::mxcsr(c);
        s.rflags = get_rflags(c) & kArithMask;
        std::memcpy(s.mem.data(), mem(kData, s.mem.size()), s.mem.size());
        return fault;
    }

private:
    SoftHarness m_harness { CpuMode::Long64 };
};

// The same program compiled for native execution: loads the state (RSI = the state's memory
// buffer), runs, stores the state back. The host's x87/SSE state is saved and restored around
// it (FXSAVE64/FXRSTOR64) and the x87 starts in the FNINIT state, as on the soft side.
class HostProgram {
public:
    explicit HostProgram(const Emit& emit)
        : m_gen(16384)
    {
        Xbyak::CodeGenerator& g = m_gen;
        auto fx_rdi = [&](uint8_t reg, uint32_t disp) { // FXSAVE64 (/0) or FXRSTOR64 (/1) [rdi+disp32]
            g.db(0x48);
            g.db(0x0f);
            g.db(0xae);
            g.db(0x87 | (reg << 3));
            g.dd(disp);
        };
        const uint32_t st = offsetof(Frame, s);
        fx_rdi(0, offsetof(Frame, host_fx));
        g.stmxcsr(g.ptr[g.rdi + offsetof(Frame, host_mxcsr)]);
        g.push(g.rbx);
        g.push(g.rbp);
        g.push(g.r12);
        g.push(g.r13);
        g.push(g.r14);
        g.push(g.r15);
        g.push(g.rdi);
        g.fninit();
        g.ldmxcsr(g.ptr[g.rdi + st + offsetof(VecState, mxcsr)]);
        for (int i = 0; i < 16; ++i)
            g.movdqu(Xbyak::Xmm(i), g.ptr[g.rdi + st + offsetof(VecState, xmm) + 16 * i]);
        for (int r : kRegs)
            g.mov(Xbyak::Reg64(r), g.ptr[g.rdi + st + offsetof(VecState, gpr) + 8 * r]);
        g.mov(g.rsi, g.ptr[g.rdi + offsetof(Frame, mem)]);
        g.mov(g.rdi, g.ptr[g.rdi + st + offsetof(VecState, gpr) + 8 * RDI]);
        emit(g);
        g.xchg(g.rdi, g.ptr[g.rsp]); // rdi = Frame*, the program's RDI on the stack
        g.pushf();
        g.pop(g.qword[g.rdi + st + offsetof(VecState, rflags)]);
        for (int i = 0; i < 16; ++i)
            g.movdqu(g.ptr[g.rdi + st + offsetof(VecState, xmm) + 16 * i], Xbyak::Xmm(i));
        for (int r : kRegs)
            g.mov(g.ptr[g.rdi + st + offsetof(VecState, gpr) + 8 * r], Xbyak::Reg64(r));
        g.pop(g.rax);
        g.mov(g.ptr[g.rdi + st + offsetof(VecState, gpr) + 8 * RDI], g.rax);
        g.stmxcsr(g.ptr[g.rdi + st + offsetof(VecState, mxcsr)]);
        g.pop(g.r15);
        g.pop(g.r14);
        g.pop(g.r13);
        g.pop(g.r12);
        g.pop(g.rbp);
        g.pop(g.rbx);
        g.ldmxcsr(g.ptr[g.rdi + offsetof(Frame, host_mxcsr)]);
        fx_rdi(1, offsetof(Frame, host_fx));
        g.ret();
        g.ready();
    }

    void run(VecState& s)
    {
        auto frame = std::make_unique<Frame>();
        frame->s = s;
        frame->mem = frame->s.mem.data();
        frame->s.gpr[RSI] = 0;
        m_gen.getCode<void (*)(Frame*)>()(frame.get());
        s = frame->s;
        s.gpr[RSI] = 0;
        s.rflags &= kArithMask;
    }

private:
    static constexpr int kRegs[] = { RAX, RCX, RDX, RBX, RBP, R8, R9, R10, R11, R12, R13, R14, R15 };

    struct alignas(64) Frame {
        VecState s;
        uint8_t* mem;
        uint32_t host_mxcsr;
        alignas(16) uint8_t host_fx[512];
    };

    Xbyak::CodeGenerator m_gen;
};

// Bytes [from, to) of the memory buffer are not compared (e.g. FIP/FDP of a saved x87 image).
struct Ignore {
    size_t from { 0 }, to { 0 };
};

inline std::string hex(uint64_t v)
{
    char buf[24];
    std::snprintf(buf, sizeof(buf), "%#llx", static_cast<unsigned long long>(v));
    return buf;
}

inline ::testing::AssertionResult same_state(
    const VecState& guest, const VecState& host, bool flags, std::initializer_list<Ignore> ignore = {})
{
    for (unsigned i = 0; i < 16; ++i)
        if (guest.xmm[i] != host.xmm[i])
            return ::testing::AssertionFailure()
                << "xmm" << i << ": soft " << hex(guest.xmm[i][1]) << ":" << hex(guest.xmm[i][0]) << " host "
                << hex(host.xmm[i][1]) << ":" << hex(host.xmm[i][0]);
    for (unsigned i = 0; i < 16; ++i)
        if (i != RSP && guest.gpr[i] != host.gpr[i])
            return ::testing::AssertionFailure()
                << "gpr" << i << ": soft " << hex(guest.gpr[i]) << " host " << hex(host.gpr[i]);
    if (guest.mxcsr != host.mxcsr)
        return ::testing::AssertionFailure() << "mxcsr: soft " << hex(guest.mxcsr) << " host " << hex(host.mxcsr);
    if (flags && guest.rflags != host.rflags)
        return ::testing::AssertionFailure() << "rflags: soft " << hex(guest.rflags) << " host " << hex(host.rflags);
    for (size_t i = 0; i < guest.mem.size(); ++i) {
        bool skip = false;
        for (const Ignore& r : ignore)
            skip |= i >= r.from && i < r.to;
        if (!skip && guest.mem[i] != host.mem[i])
            return ::testing::AssertionFailure()
                << "mem[" << i << "]: soft " << int(guest.mem[i]) << " host " << int(host.mem[i]);
    }
    return ::testing::AssertionSuccess();
}

// Runs a program on both sides from `init` and compares the results.
// `normalize` (optional) is applied to both results first (e.g. to clear what is undefined).
inline ::testing::AssertionResult differential(SseRunner& soft, HostProgram& host, const Emit& emit,
    const VecState& init, bool flags = false, std::initializer_list<Ignore> ignore = {},
    void (*normalize)(VecState&) = nullptr)
{
    VecState g = init, h = init;
    auto fault = soft.run_state(emit, g);
    if (fault)
        return ::testing::AssertionFailure() << "soft engine raised vector " << int(fault->vector);
    host.run(h);
    if (normalize) {
        normalize(g);
        normalize(h);
    }
    return same_state(g, h, flags, ignore);
}

// Deterministic test inputs.
class Rng {
public:
    explicit Rng(uint64_t seed)
        : m_state(seed * 0x9e3779b97f4a7c15ULL + 1)
    {
    }
    uint64_t next()
    {
        m_state ^= m_state << 13;
        m_state ^= m_state >> 7;
        m_state ^= m_state << 17;
        return m_state;
    }
    unsigned below(unsigned n) { return static_cast<unsigned>(next() % n); }

    // Floats and doubles biased towards special values: zeros, infinities, QNaN/SNaN with
    // payloads, denormals, extremes, integers near conversion limits, small exact values.
    uint32_t f32()
    {
        static constexpr uint32_t kSpecial[] = { 0x00000000, 0x80000000, 0x7f800000, 0xff800000, 0x7fc00000, 0xffc00000,
            0x7fa00001, 0xff812345, 0x00000001, 0x807fffff, 0x00400000, 0x7f7fffff, 0xff7fffff, 0x00800000, 0x3f800000,
            0xbf800000, 0x4f000000, 0xcf000000, 0x4effffff, 0xcf000001, 0x5f000000, 0xdf000000, 0x3f000000, 0x3fc00000,
            0x40200000 };
        switch (below(4)) {
        case 0: return kSpecial[below(sizeof(kSpecial) / 4)];
        case 1: return static_cast<uint32_t>(next());
        case 2: {
            float f = static_cast<float>(static_cast<int32_t>(next() % 2001) - 1000) / 8.0f;
            uint32_t v;
            std::memcpy(&v, &f, 4);
            return v;
        }
        default: return (static_cast<uint32_t>(next()) & 0x807fffff) | ((100 + below(60)) << 23);
        }
    }
    uint64_t f64()
    {
        static constexpr uint64_t kSpecial[] = {
            0,
            0x8000000000000000,
            0x7ff0000000000000,
            0xfff0000000000000,
            0x7ff8000000000000,
            0xfff8000000000000,
            0x7ff4000000000001,
            0xfff0000000012345,
            1,
            0x800fffffffffffff,
            0x0008000000000000,
            0x7fefffffffffffff,
            0xffefffffffffffff,
            0x0010000000000000,
            0x3ff0000000000000,
            0xbff0000000000000,
            0x41e0000000000000,
            0xc1e0000000000000,
            0x41dfffffffc00000,
            0xc1e0000000200000,
            0x43e0000000000000,
            0xc3e0000000000000,
            0x3fe0000000000000,
            0x3ff8000000000000,
            0x4004000000000000,
            0x36a0000000000000,
            0x47efffffe0000000,
        };
        switch (below(4)) {
        case 0: return kSpecial[below(sizeof(kSpecial) / 8)];
        case 1: return next();
        case 2: {
            double d = static_cast<double>(static_cast<int64_t>(next() % 2001) - 1000) / 8.0;
            uint64_t v;
            std::memcpy(&v, &d, 8);
            return v;
        }
        default: return (next() & 0x800fffffffffffffULL) | (static_cast<uint64_t>(900 + below(250)) << 52);
        }
    }

private:
    uint64_t m_state;
};

inline VecState random_int_state(Rng& r)
{
    VecState s;
    for (auto& x : s.xmm)
        x = { r.next(), r.next() };
    for (auto& g : s.gpr)
        g = r.next();
    for (size_t i = 0; i < s.mem.size(); i += 8) {
        uint64_t v = r.next();
        std::memcpy(&s.mem[i], &v, 8);
    }
    return s;
}

// FP state: xmm registers and memory full of f32 (kDouble = false) or f64 values; MXCSR with
// random rounding, FZ and DAZ (all exceptions masked: the host would trap otherwise).
inline VecState random_fp_state(Rng& r, bool is_double)
{
    VecState s = random_int_state(r);
    auto fill = [&](uint8_t* p, size_t n) {
        for (size_t i = 0; i < n; i += is_double ? 8 : 4) {
            if (is_double) {
                uint64_t v = r.f64();
                std::memcpy(p + i, &v, 8);
            } else {
                uint32_t v = r.f32();
                std::memcpy(p + i, &v, 4);
            }
        }
    };
    for (auto& x : s.xmm)
        fill(reinterpret_cast<uint8_t*>(x.data()), 16);
    fill(s.mem.data(), 256);
    s.mxcsr = 0x1f80 | (r.below(4) << 13);
    if (r.below(4) == 0)
        s.mxcsr |= 0x8000; // FZ
    if (r.below(4) == 0)
        s.mxcsr |= 0x0040; // DAZ
    return s;
}

} // namespace vessel::soft::test
