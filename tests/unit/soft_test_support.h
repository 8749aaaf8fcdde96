// A bare software-engine CPU for instruction tests: guest RAM, a vCPU in the chosen mode and
// the real decoder/block cache/interpreter. Code bytes are loaded at kCodeBase and run until HLT,
// an undelivered fault, or the instruction budget.
//
// Long mode set-up: identity paging of the first 1 GiB (2 MiB pages, user-accessible,
// writable), GDT with 0x08 64-bit code, 0x10 data, 0x18 32-bit code, 0x23 user 32-bit code,
// 0x2b user data, 0x33 user 64-bit code; CPL 0; CR0 PE|PG|NE|ET|WP, CR4 PAE|OSFXSR|OSXMMEXCPT,
// EFER LME|LMA|SCE|NXE; stack at kStackTop. Prot32: flat 4 GiB segments, no paging. Real: all
// segments 0, 64 KiB limits.
#pragma once

#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <string>

#include "engine/engine.h"
#include "engine/soft/block_cache.h"
#include "engine/soft/cpu.h"
#include "engine/soft/exceptions.h"
#include "engine/soft/interpreter.h"
#include "engine/soft/mmu.h"
#include "memory/guest_memory.h"

namespace vessel::soft::test {

constexpr uint64_t kGdtBase = 0x500;
constexpr uint64_t kPml4 = 0x1000, kPdpt = 0x2000, kPd = 0x3000;
constexpr uint64_t kCodeBase = 0x100000;
constexpr uint64_t kDataBase = 0x200000;
constexpr uint64_t kStackTop = 0x300000;

// Port and MMIO accesses land here (reads return `pio_value`, all ones for MMIO).
class RecordingIo : public IoHandler {
public:
    void pio_read(uint16_t port, std::span<uint8_t> data) override
    {
        last_port = port;
        std::memcpy(data.data(), &pio_value, data.size());
        ++reads;
    }
    void pio_write(uint16_t port, std::span<const uint8_t> data) override
    {
        last_port = port;
        last_value = 0;
        std::memcpy(&last_value, data.data(), data.size());
        ++writes;
    }
    void mmio_read(uint64_t gpa, std::span<uint8_t> data) override
    {
        last_mmio = gpa;
        std::memset(data.data(), 0xff, data.size());
        ++reads;
    }
    void mmio_write(uint64_t gpa, std::span<const uint8_t> data) override
    {
        last_mmio = gpa;
        last_value = 0;
        std::memcpy(&last_value, data.data(), data.size());
        ++writes;
    }
    uint16_t last_port { 0 };
    uint64_t last_mmio { 0 };
    uint64_t last_value { 0 };
    uint64_t pio_value { 0 };
    int reads { 0 }, writes { 0 };
};

struct RunResult {
    enum Kind { Halted, Fault, Budget, TripleFault, Abort } kind { Budget };
    GuestFault fault {};
    std::string abort_message;
    uint64_t insns { 0 };
};

class SoftHarness {
public:
    // `jit`: whether the block cache translates 64-bit blocks (VESSEL_JIT by default).
    explicit SoftHarness(
        CpuMode mode = CpuMode::Long64, uint64_t mem_bytes = 16 << 20, JitMode jit = jit_mode_from_env())
        : m_memory(GuestMemory::create(mem_bytes).release_value())
        , m_machine(m_memory)
        , m_cache(m_machine, jit)
    {
        m_cpu = std::make_unique<Cpu>();
        Cpu& c = *m_cpu;
        c.machine = &m_machine;
        c.io = &io;
        c.tlb.flush();
        // FNINIT/MXCSR reset values in the FXSAVE image.
        uint16_t fcw = 0x37f;
        uint32_t mxcsr = 0x1f80;
        std::memcpy(&c.fx[0], &fcw, 2);
        std::memcpy(&c.fx[24], &mxcsr, 4);
        write_gdt();
        if (mode == CpuMode::Real) {
            for (auto& s : c.seg)
                s = SegmentReg { 0, 0xffff, 0, 3, 1, 0, 0, 1, 0, 0, 0, 0 };
            c.seg[CS].type = 0xb;
            c.cr0 = 0x60000010;
        } else if (mode == CpuMode::Prot32 || mode == CpuMode::Prot16) {
            c.cr0 = 0x60000011;
            set_flat(0x18, 0x10, mode == CpuMode::Prot32 ? 1 : 0, 0);
        } else {
            write_page_tables();
            c.cr0 = 0x80050033; // PG WP NE ET MP PE
            c.cr3 = kPml4;
            c.cr4 = x86::kCr4Pae | x86::kCr4Osfxsr | x86::kCr4Osxmmexcpt;
            c.efer = x86::kEferLme | x86::kEferLma | x86::kEferSce | x86::kEferNxe;
            set_flat(0x08, 0x10, 0, 1);
        }
        c.gdt = DescriptorTableReg { kGdtBase, 0x47 };
        c.gpr[RSP] = mode == CpuMode::Real ? 0x8000 : kStackTop;
        c.update_mode();
    }

    Cpu& cpu() { return *m_cpu; }
    GuestMemory& memory() { return m_memory; }
    SoftMachine& machine() { return m_machine; }
    // cache().jit() is the translator (nullptr before the first translation).
    BlockCache& cache() { return m_cache; }

    // Copies code to `addr` and points RIP at it (CS base 0 in every mode set up here).
    void load(std::span<const uint8_t> code, uint64_t addr = kCodeBase)
    {
        auto r = m_memory.write(addr, code);
        (void)r;
        m_cpu->rip = addr;
    }

    // Runs until HLT / a fault / the budget. With deliver_faults, faults go through the IDT.
    RunResult run(uint64_t budget = 10'000'000, bool deliver_faults = false)
    {
        RunResult r;
        Cpu& c = *m_cpu;
        c.halted = false;
        try {
            while (r.insns < budget) {
                r.insns += execute(c, m_cache, budget - r.insns, deliver_faults ? Faults::Deliver : Faults::Propagate);
                if (c.halted) {
                    r.kind = RunResult::Halted;
                    return r;
                }
            }
        } catch (const GuestFault& f) {
            r.kind = RunResult::Fault;
            r.fault = f;
            return r;
        } catch (const soft::TripleFault&) {
            r.kind = RunResult::TripleFault;
            return r;
        } catch (const EngineAbort& a) {
            r.kind = RunResult::Abort;
            r.abort_message = a.what;
            return r;
        }
        r.kind = RunResult::Budget;
        return r;
    }

    // Plain helpers for tests.
    template<typename T>
    T read(uint64_t gpa)
    {
        return m_memory.read_obj<T>(gpa).value();
    }
    template<typename T>
    void write(uint64_t gpa, T v)
    {
        (void)m_memory.write_obj<T>(gpa, v);
    }

    RecordingIo io;

private:
    void write_gdt()
    {
        const uint64_t gdt[] = {
            0,
            0x00af9b000000ffffULL, // 0x08 64-bit code, DPL 0
            0x00cf93000000ffffULL, // 0x10 data, DPL 0
            0x00cf9b000000ffffULL, // 0x18 32-bit code, DPL 0
            0x00cffb000000ffffULL, // 0x20 user 32-bit code (selector 0x23)
            0x00cff3000000ffffULL, // 0x28 user data (0x2b)
            0x00affb000000ffffULL, // 0x30 user 64-bit code (0x33)
            0, 0, // 0x38, 0x40: free for a TSS
        };
        for (size_t i = 0; i < std::size(gdt); ++i)
            write<uint64_t>(kGdtBase + i * 8, gdt[i]);
    }

    void write_page_tables()
    {
        write<uint64_t>(kPml4, kPdpt | 0x7);
        write<uint64_t>(kPdpt, kPd | 0x7);
        for (uint64_t i = 0; i < 512; ++i)
            write<uint64_t>(kPd + i * 8, (i << 21) | 0x87); // 2 MiB, present, RW, user
    }

    void set_flat(uint16_t code_sel, uint16_t data_sel, uint8_t db, uint8_t l)
    {
        Cpu& c = *m_cpu;
        SegmentReg data { 0, 0xffffffff, data_sel, 3, 1, 0, 1, 1, 0, 1, 0, 0 };
        for (auto& s : c.seg)
            s = data;
        c.seg[CS] = SegmentReg { 0, 0xffffffff, code_sel, 0xb, 1, 0, db, 1, l, 1, 0, 0 };
    }

    GuestMemory m_memory;
    SoftMachine m_machine;
    BlockCache m_cache;
    std::unique_ptr<Cpu> m_cpu;
};

} // namespace vessel::soft::test
