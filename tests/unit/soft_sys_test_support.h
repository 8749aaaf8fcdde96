// Test fixture for the soft engine's system-level behaviour: a vCPU on 16 MiB of guest RAM with
// helpers to build descriptor tables, IDTs, TSSs and page tables, and to run hand-built Insns
// the way the block loop does (rewind + deliver_fault on a GuestFault).
#pragma once

#include <cstring>
#include <span>
#include <vector>

#include <gtest/gtest.h>

#include "engine/engine.h"
#include "engine/soft/cpu.h"
#include "engine/soft/exceptions.h"
#include "engine/soft/flags.h"
#include "engine/soft/handlers.h"
#include "engine/soft/mmu.h"
#include "engine/soft/platform.h"
#include "engine/soft/segments.h"
#include "memory/guest_memory.h"

namespace vessel::soft::systest {

struct IoRecord {
    bool write;
    uint16_t port;
    unsigned size;
    uint32_t value;
};

class RecordingIo : public IoHandler {
public:
    std::vector<IoRecord> log;
    uint32_t next_read { 0 };
    void pio_read(uint16_t port, std::span<uint8_t> data) override
    {
        uint32_t v = next_read++;
        for (size_t i = 0; i < data.size(); ++i)
            data[i] = static_cast<uint8_t>(v >> (8 * i));
        log.push_back({ false, port, static_cast<unsigned>(data.size()), v & (data.size() == 4 ? 0xffffffffu : ((1u << (8 * data.size())) - 1)) });
    }
    void pio_write(uint16_t port, std::span<const uint8_t> data) override
    {
        uint32_t v = 0;
        for (size_t i = 0; i < data.size(); ++i)
            v |= static_cast<uint32_t>(data[i]) << (8 * i);
        log.push_back({ true, port, static_cast<unsigned>(data.size()), v });
    }
    void mmio_read(uint64_t, std::span<uint8_t> data) override { std::memset(data.data(), 0xff, data.size()); }
    void mmio_write(uint64_t, std::span<const uint8_t>) override { }
};

// Descriptor builders (raw 8-byte descriptors).
constexpr uint64_t make_desc(uint32_t base, uint32_t limit, unsigned type, unsigned dpl, bool s, bool l, bool db, bool g)
{
    return (limit & 0xffffULL) | ((static_cast<uint64_t>(base) & 0xffffff) << 16) | (static_cast<uint64_t>(type) << 40)
        | (static_cast<uint64_t>(s) << 44) | (static_cast<uint64_t>(dpl) << 45) | (1ULL << 47)
        | ((static_cast<uint64_t>(limit >> 16) & 0xf) << 48) | (static_cast<uint64_t>(l) << 53)
        | (static_cast<uint64_t>(db) << 54) | (static_cast<uint64_t>(g) << 55) | ((static_cast<uint64_t>(base) >> 24) << 56);
}
constexpr uint64_t code64(unsigned dpl) { return make_desc(0, 0xfffff, 0xb, dpl, true, true, false, true); }
constexpr uint64_t code32(unsigned dpl) { return make_desc(0, 0xfffff, 0xb, dpl, true, false, true, true); }
constexpr uint64_t data32(unsigned dpl) { return make_desc(0, 0xfffff, 0x3, dpl, true, false, true, true); }

// Guest-physical layout used by the tests.
constexpr uint64_t kGdt = 0x1000, kIdt = 0x2000, kTss = 0x3000, kPml4 = 0x10000, kCode = 0x100000;
// GDT selectors: 0x08 kernel code64, 0x10 kernel data, 0x18 user code32, 0x20 user data,
// 0x28 user code64, 0x30 kernel code32, 0x38/0x40 TSS (16 bytes).
constexpr uint16_t kKernelCs = 0x08, kKernelDs = 0x10, kUserCs32 = 0x1b, kUserDs = 0x23, kUserCs = 0x2b,
                   kKernelCs32 = 0x30, kTssSel = 0x38;

class SoftSysTest : public ::testing::Test {
protected:
    SoftSysTest()
        : m_mem(GuestMemory::create(16 << 20).release_value())
        , m_machine(m_mem)
    {
        c.machine = &m_machine;
        c.io = &io;
        reset_cpu(c);
    }

    template<typename T>
    void poke(uint64_t gpa, T v)
    {
        ASSERT_TRUE(m_mem.write_obj(gpa, v).ok());
    }
    template<typename T>
    T peek(uint64_t gpa)
    {
        return m_mem.read_obj<T>(gpa).value();
    }
    void poke_bytes(uint64_t gpa, std::initializer_list<uint8_t> bytes)
    {
        std::vector<uint8_t> v(bytes);
        ASSERT_TRUE(m_mem.write(gpa, v).ok());
    }

    void build_gdt()
    {
        poke<uint64_t>(kGdt + 0x00, 0);
        poke<uint64_t>(kGdt + 0x08, code64(0));
        poke<uint64_t>(kGdt + 0x10, data32(0));
        poke<uint64_t>(kGdt + 0x18, code32(3));
        poke<uint64_t>(kGdt + 0x20, data32(3));
        poke<uint64_t>(kGdt + 0x28, code64(3));
        poke<uint64_t>(kGdt + 0x30, code32(0));
        poke<uint64_t>(kGdt + 0x38, make_desc(static_cast<uint32_t>(kTss), 0x67, 0x9, 0, false, false, false, false));
        poke<uint64_t>(kGdt + 0x40, 0); // TSS base bits 63:32
        c.gdt = { kGdt, 0x47 };
    }

    // Identity map of the first 1 GiB with one 1 GiB page, user-accessible and writable.
    void build_page_tables()
    {
        poke<uint64_t>(kPml4, (kPml4 + 0x1000) | 7);
        poke<uint64_t>(kPml4 + 0x1000, 0x87); // 1 GiB page at 0, P|RW|US|PS
    }

    // 64-bit mode at CPL 0 with paging, GDT, TSS (loaded) and an empty IDT.
    void enter_long_mode()
    {
        build_gdt();
        build_page_tables();
        c.cr3 = kPml4;
        c.cr4 = x86::kCr4Pae | x86::kCr4Osfxsr;
        c.efer = x86::kEferLme | x86::kEferLma | x86::kEferSce | x86::kEferNxe;
        c.cr0 = x86::kCr0Pe | x86::kCr0Pg | x86::kCr0Et | x86::kCr0Ne | x86::kCr0Wp;
        load_raw(CS, kKernelCs);
        load_raw(SS, kKernelDs);
        load_raw(DS, kKernelDs);
        load_raw(ES, kKernelDs);
        load_raw(FS, 0);
        load_raw(GS, 0);
        c.tr = unpack_descriptor(kTssSel, peek<uint64_t>(kGdt + 0x38) | (2ULL << 40), 0);
        c.idt = { kIdt, 0xfff };
        c.gpr[RSP] = 0x80000;
        c.rip = kCode;
        c.tlb.flush();
        c.update_mode();
    }

    // Loads a segment register from the GDT without checks (test setup).
    void load_raw(uint8_t seg, uint16_t sel)
    {
        if ((sel & 0xfffc) == 0) {
            set_segment(c, seg, null_segment(sel));
            return;
        }
        set_segment(c, seg, unpack_descriptor(sel, peek<uint64_t>(c.gdt.base + (sel & 0xfff8))));
    }

    // Switches to CPL 3 in 64-bit mode.
    void enter_user64()
    {
        load_raw(CS, kUserCs);
        load_raw(SS, kUserDs);
    }

    void set_gate64(uint8_t vector, uint64_t handler, unsigned type = 0xe, unsigned dpl = 0, unsigned ist = 0,
                    bool present = true, uint16_t sel = kKernelCs)
    {
        uint64_t lo = (handler & 0xffff) | (static_cast<uint64_t>(sel) << 16) | (static_cast<uint64_t>(ist) << 32)
            | (static_cast<uint64_t>(type) << 40) | (static_cast<uint64_t>(dpl) << 45)
            | (static_cast<uint64_t>(present) << 47) | (((handler >> 16) & 0xffff) << 48);
        poke<uint64_t>(kIdt + vector * 16u, lo);
        poke<uint64_t>(kIdt + vector * 16u + 8, handler >> 32);
    }

public:
    // Runs one instruction as the block loop does.
    void run(const Insn& in)
    {
        c.insn_start = c.rip;
        c.rip += in.length;
        try {
            in.exec(c, in);
        } catch (const GuestFault& f) {
            c.rip = c.insn_start;
            deliver_fault(c, f);
        }
    }

    // An instruction with the handler of `mnemonic`.
    static Insn insn(ZydisMnemonic mnemonic, uint8_t length = 2, uint8_t osize = 4)
    {
        Insn in;
        in.mnemonic = static_cast<uint16_t>(mnemonic);
        in.exec = handler_table()[mnemonic];
        in.length = length;
        in.osize = osize;
        in.asize = 8;
        return in;
    }
    static Operand gpr(uint8_t reg, uint8_t size) { return Operand { OpKind::Gpr, reg, size, 0 }; }
    static Operand opkind(OpKind k, uint8_t reg, uint8_t size) { return Operand { k, reg, size, 0 }; }
    // Memory operand [base + disp].
    static void mem(Insn& in, unsigned n, uint8_t base, int64_t disp, uint8_t size)
    {
        in.op[n] = Operand { OpKind::Mem, 0, size, 0 };
        in.base = base;
        in.disp = disp;
        in.seg = DS;
        in.flags |= kFlagHasMem;
    }

    GuestMemory m_mem;
    SoftMachine m_machine;
    RecordingIo io;
    Cpu c;
};

} // namespace vessel::soft::systest

namespace vessel::soft::systest {

// Runs the handler and returns the fault it raised (fails the test when none was raised).
inline GuestFault fault_of(Cpu& c, const Insn& in)
{
    c.insn_start = c.rip;
    uint64_t rip = c.rip;
    c.rip += in.length;
    try {
        in.exec(c, in);
    } catch (const GuestFault& f) {
        c.rip = rip;
        return f;
    }
    ADD_FAILURE() << "no fault raised";
    return GuestFault { 0xff, false, 0, 0 };
}

} // namespace vessel::soft::systest
