// Test support for the soft engine's integer handlers:
// - SoftIntTest: a 64-bit vCPU over 16 MiB of guest RAM (paging off = identity, or 4-level
//   identity paging with 4 KiB pages to test faults) running hand-built Insn records through the
//   registered handlers, and a host oracle that executes the same instruction on the host CPU
//   (Xbyak) for the architecturally defined results and flags;
// - SoftIntProgram: guest programs (Xbyak code) through the decoder and interpreter loop
//   (SoftHarness).
#pragma once

#include <gtest/gtest.h>

#include <array>
#include <cstring>
#include <functional>
#include <initializer_list>
#include <optional>
#include <sstream>
#include <vector>

#include <xbyak/xbyak.h>

#include "engine/soft/cpu.h"
#include "engine/soft/flags.h"
#include "engine/soft/handlers.h"
#include "engine/soft/mmu.h"
#include "memory/guest_memory.h"
#include "soft_test_support.h"

namespace vessel::soft::testing {

// Operand builders.
inline Operand R(unsigned reg, unsigned size)
{
    return Operand { OpKind::Gpr, static_cast<uint8_t>(reg), static_cast<uint8_t>(size), 0 };
}
inline Operand H(unsigned reg)
{
    return Operand { OpKind::GprHigh8, static_cast<uint8_t>(reg), 1, 0 };
}
inline Operand M(unsigned size)
{
    return Operand { OpKind::Mem, 0, static_cast<uint8_t>(size), 0 };
}
inline Operand I(unsigned size)
{
    return Operand { OpKind::Imm, 0, static_cast<uint8_t>(size), 0 };
}

// An instruction with explicit operands; osize defaults to the first operand's size.
inline Insn make_insn(ZydisMnemonic m, std::initializer_list<Operand> ops, uint64_t imm = 0, unsigned osize = 0)
{
    Insn in;
    in.mnemonic = static_cast<uint16_t>(m);
    in.exec = handler_table()[m];
    in.imm = imm;
    in.length = 4;
    in.asize = 8;
    in.seg = DS;
    unsigned n = 0;
    for (const Operand& o : ops) {
        in.op[n++] = o;
        if (o.kind == OpKind::Mem)
            in.flags |= kFlagHasMem;
    }
    in.nops = static_cast<uint8_t>(n);
    in.osize = static_cast<uint8_t>(osize ? osize : (n ? in.op[0].size : 8));
    return in;
}

// Sets the memory operand: [base + index*scale + disp].
inline Insn with_mem(Insn in, uint8_t base, int64_t disp = 0, uint8_t index = kNoReg, uint8_t scale = 1)
{
    in.base = base;
    in.index = index;
    in.scale = scale;
    in.disp = disp;
    return in;
}

inline Insn with_flags(Insn in, uint16_t flags)
{
    in.flags |= flags;
    return in;
}

// The host oracle: runs one instruction on the host CPU with RAX, RCX, RDX, RBX, the arithmetic
// flags and one qword of memory ([r8 + kMemOffset] in the emitted code) as inputs and outputs.
struct HostState {
    uint64_t rax { 0 }, rcx { 0 }, rdx { 0 }, rbx { 0 };
    uint64_t rflags { x86::kRflagsFixed };
    uint64_t mem { 0 };
};

class HostOracle : public Xbyak::CodeGenerator {
public:
    static constexpr int kMemOffset = 40;
    using Emit = std::function<void(Xbyak::CodeGenerator&)>;

    explicit HostOracle(const Emit& emit)
    {
        push(rbx);
        mov(r8, rdi);
        mov(rax, qword[r8]);
        mov(rcx, qword[r8 + 8]);
        mov(rdx, qword[r8 + 16]);
        mov(rbx, qword[r8 + 24]);
        push(qword[r8 + 32]);
        popf();
        emit(*this);
        pushf();
        pop(qword[r8 + 32]);
        mov(qword[r8], rax);
        mov(qword[r8 + 8], rcx);
        mov(qword[r8 + 16], rdx);
        mov(qword[r8 + 24], rbx);
        pop(rbx);
        ret();
        ready();
    }

    HostState run(HostState s) const
    {
        s.rflags = (s.rflags & kArithFlags) | x86::kRflagsFixed;
        getCode<void (*)(HostState*)>()(&s);
        s.rflags &= kArithFlags;
        return s;
    }
};

// Register of a given size (1: AL..BL by index, 2, 4, 8) for emitting oracle code.
inline Xbyak::Reg host_reg(int idx, unsigned size)
{
    switch (size) {
    case 1: return Xbyak::Reg8(idx);
    case 2: return Xbyak::Reg16(idx);
    case 4: return Xbyak::Reg32(idx);
    default: return Xbyak::Reg64(idx);
    }
}

inline Xbyak::Address host_mem(Xbyak::CodeGenerator& g, unsigned size)
{
    Xbyak::RegExp e = g.r8 + HostOracle::kMemOffset;
    switch (size) {
    case 1: return g.byte[e];
    case 2: return g.word[e];
    case 4: return g.dword[e];
    default: return g.qword[e];
    }
}

// Address of the oracle's memory qword in guest RAM (memory operands use [disp] = kData).
constexpr uint64_t kData = 0x20000;

class SoftIntTest : public ::testing::Test {
protected:
    static constexpr uint64_t kRamSize = 16 << 20;
    static constexpr uint64_t kCodeAddr = 0x1000;
    static constexpr uint64_t kStackTop = 0x80000;
    static constexpr uint64_t kPageTables = 0xf00000; // PML4, PDPT, PD, 8 PTs

    SoftIntTest()
        : m_mem(GuestMemory::create(kRamSize).release_value())
        , m_machine(m_mem)
    {
        m_cpu.machine = &m_machine;
        m_cpu.cr0 = x86::kCr0Pe | x86::kCr0Et | x86::kCr0Ne;
        m_cpu.mode = CpuMode::Long64;
        m_cpu.stack_size = 8;
        m_cpu.cpl = 0;
        m_cpu.tlb.flush();
        m_cpu.rip = kCodeAddr;
        m_cpu.gpr[RSP] = kStackTop;
    }

    Cpu& cpu() { return m_cpu; }
    uint8_t* ram(uint64_t gpa) { return m_mem.host_ptr(gpa, 1); }

    template<typename T>
    T peek(uint64_t gpa)
    {
        T v;
        std::memcpy(&v, m_mem.host_ptr(gpa, sizeof(T)), sizeof(T));
        return v;
    }
    template<typename T>
    void poke(uint64_t gpa, T v)
    {
        std::memcpy(m_mem.host_ptr(gpa, sizeof(T)), &v, sizeof(T));
    }

    // Runs one instruction: insn_start = rip, rip advanced by the length, then the handler.
    void run(const Insn& in)
    {
        m_cpu.insn_start = m_cpu.rip;
        m_cpu.rip += in.length;
        in.exec(m_cpu, in);
    }

    // Runs one instruction expecting an exception; RIP is rewound as the block loop would.
    std::optional<GuestFault> run_fault(const Insn& in)
    {
        try {
            run(in);
        } catch (const GuestFault& f) {
            m_cpu.rip = m_cpu.insn_start;
            return f;
        }
        return std::nullopt;
    }

    // Runs a REP instruction until it no longer rewinds RIP to itself; returns the executions.
    unsigned run_rep(const Insn& in)
    {
        unsigned runs = 0;
        uint64_t start = m_cpu.rip;
        do {
            m_cpu.rip = start;
            m_cpu.stop_block = false;
            run(in);
            ++runs;
        } while (m_cpu.rip == start && runs < 1000000);
        return runs;
    }

    uint64_t flags() { return get_rflags(m_cpu) & kArithFlags; }
    void set_flags(uint64_t f) { set_rflags_bits(m_cpu, f, kArithFlags | kDF); }

    // 4-level identity paging of all RAM with 4 KiB pages (PTEs: P, RW, US).
    void enable_paging()
    {
        uint64_t pml4 = kPageTables, pdpt = pml4 + 0x1000, pd = pdpt + 0x1000, pt = pd + 0x1000;
        poke<uint64_t>(pml4, pdpt | 7);
        poke<uint64_t>(pdpt, pd | 7);
        for (uint64_t i = 0; i < kRamSize / (2 << 20); ++i) {
            poke<uint64_t>(pd + i * 8, (pt + i * 0x1000) | 7);
            for (uint64_t j = 0; j < 512; ++j) {
                uint64_t page = (i << 21) | (j << 12);
                poke<uint64_t>(pt + i * 0x1000 + j * 8, page | 7);
            }
        }
        m_cpu.cr3 = pml4;
        m_cpu.cr4 |= x86::kCr4Pae;
        m_cpu.efer |= x86::kEferLme | x86::kEferLma;
        m_cpu.cr0 |= x86::kCr0Pg | x86::kCr0Wp;
        m_cpu.tlb.flush();
    }
    uint64_t pte_addr(uint64_t page) { return kPageTables + 0x3000 + (page >> 12) * 8; }
    void unmap(uint64_t page)
    {
        poke<uint64_t>(pte_addr(page), 0);
        m_cpu.tlb.flush();
    }
    void make_readonly(uint64_t page)
    {
        poke<uint64_t>(pte_addr(page), (page & ~0xfffULL) | 5);
        m_cpu.tlb.flush();
    }

    // Runs `in` on the vCPU and the host oracle from the same state; compares RAX, RCX, RDX, RBX,
    // the memory qword and the flags in `flag_mask`.
    ::testing::AssertionResult matches_host(
        std::initializer_list<Insn> seq, const HostOracle& host, const HostState& s, uint64_t flag_mask);
    ::testing::AssertionResult matches_host(
        const Insn& in, const HostOracle& host, const HostState& s, uint64_t flag_mask)
    {
        return matches_host({ in }, host, s, flag_mask);
    }

private:
    GuestMemory m_mem;
    SoftMachine m_machine;
    Cpu m_cpu;
};

// Values with interesting carries/overflows at every width.
inline const std::vector<uint64_t>& edge_values()
{
    static const std::vector<uint64_t> v = { 0, 1, 2, 0x0f, 0x10, 0x7f, 0x80, 0x81, 0xfe, 0xff, 0x100, 0x7fff, 0x8000,
        0xffff, 0x12345, 0x7fffffff, 0x80000000, 0xffffffff, 0x100000000ULL, 0x123456789abcdef0ULL,
        0x7fffffffffffffffULL, 0x8000000000000000ULL, 0xfffffffffffffffeULL, 0xffffffffffffffffULL };
    return v;
}

} // namespace vessel::soft::testing

namespace vessel::soft::testing {

inline Insn mem_data(Insn in)
{
    return with_mem(in, kNoReg, static_cast<int64_t>(kData));
}

inline ::testing::AssertionResult SoftIntTest::matches_host(
    std::initializer_list<Insn> seq, const HostOracle& host, const HostState& s, uint64_t flag_mask)
{
    const Insn& in = *(seq.end() - 1);
    Cpu& c = m_cpu;
    c.gpr[RAX] = s.rax;
    c.gpr[RCX] = s.rcx;
    c.gpr[RDX] = s.rdx;
    c.gpr[RBX] = s.rbx;
    c.lf.op = FlagOp::None;
    c.rflags = (s.rflags & kArithFlags) | x86::kRflagsFixed;
    poke<uint64_t>(kData, s.mem);
    for (const Insn& i : seq)
        run(i);
    HostState h = host.run(s);
    uint64_t got_flags = flags() & flag_mask, want_flags = h.rflags & flag_mask;
    uint64_t got_mem = peek<uint64_t>(kData);
    if (c.gpr[RAX] == h.rax && c.gpr[RCX] == h.rcx && c.gpr[RDX] == h.rdx && c.gpr[RBX] == h.rbx && got_mem == h.mem
        && got_flags == want_flags)
        return ::testing::AssertionSuccess();
    auto hex = [](uint64_t v) { return ::testing::PrintToString(reinterpret_cast<void*>(v)); };
    return ::testing::AssertionFailure() << ZydisMnemonicGetString(static_cast<ZydisMnemonic>(in.mnemonic)) << " size "
                                         << int(in.op[0].size) << " in: rax=" << hex(s.rax) << " rcx=" << hex(s.rcx)
                                         << " rdx=" << hex(s.rdx) << " rbx=" << hex(s.rbx) << " mem=" << hex(s.mem)
                                         << " flags=" << hex(s.rflags) << "\n  got:  rax=" << hex(c.gpr[RAX])
                                         << " rcx=" << hex(c.gpr[RCX]) << " rdx=" << hex(c.gpr[RDX])
                                         << " rbx=" << hex(c.gpr[RBX]) << " mem=" << hex(got_mem)
                                         << " flags=" << hex(got_flags) << "\n  host: rax=" << hex(h.rax)
                                         << " rcx=" << hex(h.rcx) << " rdx=" << hex(h.rdx) << " rbx=" << hex(h.rbx)
                                         << " mem=" << hex(h.mem) << " flags=" << hex(want_flags);
}

} // namespace vessel::soft::testing

namespace vessel::soft::testing {

// Guest programs (Xbyak code) through the decoder, block cache and interpreter loop of the lead's
// SoftHarness: 64-bit mode, identity paging of the first GiB (2 MiB pages, split into 4 KiB
// pages on demand to unmap or write-protect one).
class SoftIntProgram : public ::testing::Test {
protected:
    static constexpr uint64_t kCodeAddr = test::kCodeBase;
    static constexpr uint64_t kStackTop = test::kStackTop;
    static constexpr uint64_t kData = test::kDataBase;
    static constexpr uint64_t kPtArea = 0xc00000; // 4 KiB page tables for split 2 MiB pages

    Cpu& cpu() { return m_h.cpu(); }
    test::SoftHarness& harness() { return m_h; }
    uint8_t* ram(uint64_t gpa) { return m_h.memory().host_ptr(gpa, 1); }
    template<typename T>
    T peek(uint64_t gpa)
    {
        return m_h.read<T>(gpa);
    }
    template<typename T>
    void poke(uint64_t gpa, T v)
    {
        m_h.write<T>(gpa, v);
    }
    uint64_t flags() { return get_rflags(cpu()) & kArithFlags; }
    void set_flags(uint64_t f) { set_rflags_bits(cpu(), f, kArithFlags | kDF); }

    // Loads the code at kCodeAddr and runs it until HLT (nullopt) or a fault (returned, RIP at
    // the faulting instruction).
    std::optional<GuestFault> run_code(const Xbyak::CodeGenerator& code, uint64_t budget = 50'000'000)
    {
        m_h.load(std::span(code.getCode(), code.getSize()));
        m_h.cache().flush(); // the load bypassed code-page tracking: drop blocks of earlier code
        test::RunResult r = m_h.run(budget);
        m_insns = r.insns;
        if (r.kind == test::RunResult::Fault)
            return r.fault;
        if (r.kind != test::RunResult::Halted)
            ADD_FAILURE() << "guest code did not reach HLT (" << int(r.kind) << " " << r.abort_message << ")";
        return std::nullopt;
    }
    // Instructions executed by the last run_code (each re-execution of a REP instruction counts).
    uint64_t executions() const { return m_insns; }

    void unmap(uint64_t page)
    {
        poke<uint64_t>(split(page) + ((page >> 12) & 511) * 8, 0);
        cpu().tlb.flush();
    }
    void make_readonly(uint64_t page)
    {
        poke<uint64_t>(split(page) + ((page >> 12) & 511) * 8, (page & ~0xfffULL) | 5);
        cpu().tlb.flush();
    }

    // Differential program test: `emit` (a code fragment using any GPR but RSP, memory only
    // through registers, balanced stack use) runs on the host CPU and in the guest from the same
    // registers and flags, with RDI pointing at a 4 KiB data buffer (host copy vs guest kData).
    // Register values inside the buffer are compared as offsets from its base.
    struct ProgState {
        std::array<uint64_t, 16> gpr {};
        uint64_t rflags { x86::kRflagsFixed };
        std::array<uint8_t, 4096> data {};
    };
    ::testing::AssertionResult matches_host_program(
        const std::function<void(Xbyak::CodeGenerator&)>& emit, const ProgState& in, uint64_t flag_mask);

private:
    // The page table of the 2 MiB region holding `gpa`, splitting its large page first.
    uint64_t split(uint64_t gpa)
    {
        uint64_t i = gpa >> 21;
        uint64_t pde = peek<uint64_t>(test::kPd + i * 8);
        if (!(pde & 0x80))
            return pde & ~0xfffULL;
        uint64_t pt = kPtArea + i * 0x1000;
        for (uint64_t j = 0; j < 512; ++j)
            poke<uint64_t>(pt + j * 8, (i << 21) | (j << 12) | 7);
        poke<uint64_t>(test::kPd + i * 8, pt | 7);
        return pt;
    }

    test::SoftHarness m_h;
    uint64_t m_insns { 0 };
};

} // namespace vessel::soft::testing

namespace vessel::soft::testing {

// Host side of matches_host_program: loads all GPRs but RSP and the flags from a ProgState,
// runs the fragment, stores them back.
class HostProgram : public Xbyak::CodeGenerator {
public:
    explicit HostProgram(const std::function<void(Xbyak::CodeGenerator&)>& emit)
    {
        using namespace Xbyak::util;
        const Xbyak::Reg64 regs[16] = { rax, rcx, rdx, rbx, rsp, rbp, rsi, rdi, r8, r9, r10, r11, r12, r13, r14, r15 };
        for (const auto& r : { rbx, rbp, r12, r13, r14, r15 })
            push(r);
        push(rdi); // the ProgState*
        push(qword[rdi + 16 * 8]);
        popf();
        for (int i = 0; i < 16; ++i)
            if (i != RSP && i != RDI)
                mov(regs[i], qword[rdi + i * 8]);
        mov(rdi, qword[rdi + RDI * 8]);
        emit(*this);
        pushf();
        cld(); // the ABI wants DF clear again
        push(rax);
        mov(rax, qword[rsp + 16]);
        for (int i = 1; i < 16; ++i)
            if (i != RSP)
                mov(qword[rax + i * 8], regs[i]);
        pop(qword[rax]);
        pop(qword[rax + 16 * 8]);
        add(rsp, 8);
        for (const auto& r : { r15, r14, r13, r12, rbp, rbx })
            pop(r);
        ret();
        ready();
    }
};

inline ::testing::AssertionResult SoftIntProgram::matches_host_program(
    const std::function<void(Xbyak::CodeGenerator&)>& emit, const ProgState& in, uint64_t flag_mask)
{
    // Host run: RDI = the host buffer.
    ProgState host = in;
    const uint64_t host_base = reinterpret_cast<uint64_t>(host.data.data());
    host.gpr[RDI] = host_base + in.gpr[RDI];
    host.rflags = (in.rflags & kArithFlags) | x86::kRflagsFixed;
    HostProgram hp(emit);
    hp.getCode<void (*)(ProgState*)>()(&host);
    // Guest run: RDI = kData + offset, the same registers and flags.
    Xbyak::CodeGenerator g;
    emit(g);
    g.hlt();
    Cpu& c = cpu();
    for (unsigned i = 0; i < 16; ++i)
        if (i != RSP)
            c.gpr[i] = in.gpr[i];
    c.gpr[RDI] = kData + in.gpr[RDI];
    c.gpr[RSP] = kStackTop;
    c.lf.op = FlagOp::None;
    c.rflags = (in.rflags & kArithFlags) | x86::kRflagsFixed;
    std::memcpy(ram(kData), in.data.data(), in.data.size());
    if (auto f = run_code(g))
        return ::testing::AssertionFailure() << "guest fault " << int(f->vector) << " at " << c.rip;
    auto normalize = [](uint64_t v, uint64_t base) { return v >= base && v < base + 4096 ? v - base : v; };
    ::testing::AssertionResult result = ::testing::AssertionSuccess();
    bool ok = true;
    std::ostringstream diff;
    for (unsigned i = 0; i < 16; ++i) {
        if (i == RSP)
            continue;
        uint64_t h = normalize(host.gpr[i], host_base), v = normalize(c.gpr[i], kData);
        if (h != v) {
            ok = false;
            diff << " gpr" << i << ": guest " << std::hex << v << " host " << h << std::dec;
        }
    }
    if (c.gpr[RSP] != kStackTop) {
        ok = false;
        diff << " rsp moved by " << static_cast<int64_t>(c.gpr[RSP] - kStackTop);
    }
    uint64_t gf = flags() & flag_mask, hf = host.rflags & flag_mask;
    if (gf != hf) {
        ok = false;
        diff << std::hex << " flags: guest " << gf << " host " << hf << std::dec;
    }
    for (size_t i = 0; i < in.data.size(); ++i) {
        if (*ram(kData + i) != host.data[i]) {
            ok = false;
            diff << " data[" << i << "]: guest " << int(*ram(kData + i)) << " host " << int(host.data[i]);
            break;
        }
    }
    if (ok)
        return result;
    return ::testing::AssertionFailure() << diff.str();
}

} // namespace vessel::soft::testing
