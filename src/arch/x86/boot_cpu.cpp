#include "arch/x86/boot_cpu.h"

#include <array>
#include <cstring>

#include "arch/x86/layout.h"

namespace vessel {

namespace {

static_assert(layout::kBootGdt + boot_gdt::kEntries * 8 <= layout::kBootIdt, "the boot GDT overlaps the IDT");
static_assert(layout::kPd + boot_paging::kPdCount * 4096 <= 0xf000, "the boot page directories overrun");

constexpr uint64_t kFlatLimit = 0xffffffff;
constexpr uint8_t kTypeCodeExecReadAccessed = 0xb;
constexpr uint8_t kTypeDataReadWriteAccessed = 0x3;
constexpr uint8_t kTypeBusyTss = 0xb;
constexpr uint8_t kTypeLdt = 0x2;
constexpr uint32_t kTssLimit = 0x67;

// x87 / SSE reset values, placed in the FXSAVE image (FCW at byte 0, MXCSR at byte 24).
constexpr uint16_t kFcwReset = 0x37f;
constexpr uint32_t kMxcsrReset = 0x1f80;

SegmentReg code_segment(uint16_t selector, bool long_mode)
{
    SegmentReg seg;
    seg.base = 0;
    seg.limit = kFlatLimit;
    seg.selector = selector;
    seg.type = kTypeCodeExecReadAccessed;
    seg.present = 1;
    seg.dpl = 0;
    seg.s = 1;
    seg.l = long_mode ? 1 : 0;
    seg.db = long_mode ? 0 : 1;
    seg.g = 1;
    return seg;
}

SegmentReg data_segment()
{
    SegmentReg seg;
    seg.base = 0;
    seg.limit = kFlatLimit;
    seg.selector = boot_gdt::kData;
    seg.type = kTypeDataReadWriteAccessed;
    seg.present = 1;
    seg.dpl = 0;
    seg.s = 1;
    seg.db = 1;
    seg.g = 1;
    return seg;
}

// KVM (VMX) refuses to enter a guest without a usable TR; no task switch ever uses it.
SegmentReg task_register()
{
    SegmentReg seg;
    seg.limit = kTssLimit;
    seg.type = kTypeBusyTss;
    seg.present = 1;
    return seg;
}

SegmentReg unusable_ldt()
{
    SegmentReg seg;
    seg.limit = 0xffff;
    seg.type = kTypeLdt;
    seg.unusable = 1;
    return seg;
}

Result<void> write_gdt(GuestMemory& mem)
{
    const std::array<uint64_t, boot_gdt::kEntries> gdt {
        boot_gdt::kNullDescriptor,
        boot_gdt::kCode32Descriptor,
        boot_gdt::kCode64Descriptor,
        boot_gdt::kDataDescriptor,
    };
    TRY(mem.write_obj(layout::kBootGdt, gdt));
    return mem.fill(layout::kBootIdt, 0, 8);
}

// PML4[0] -> PDPT, PDPT[0..3] -> 4 PDs, each PD maps 1 GiB with 2 MiB pages: 0..4 GiB identity.
Result<void> write_identity_page_tables(GuestMemory& mem)
{
    using namespace boot_paging;
    std::array<uint64_t, 512> table {};
    table[0] = layout::kPdpt | kPresent | kWritable;
    TRY(mem.write_obj(layout::kPml4, table));

    table.fill(0);
    for (unsigned i = 0; i < kPdCount; i++)
        table[i] = (layout::kPd + i * 4096ULL) | kPresent | kWritable;
    TRY(mem.write_obj(layout::kPdpt, table));

    for (unsigned pd = 0; pd < kPdCount; pd++) {
        for (unsigned i = 0; i < 512; i++) {
            uint64_t addr = (uint64_t { pd } * 512 + i) * (2ULL << 20);
            table[i] = addr | kPresent | kWritable | kPageSize;
        }
        TRY(mem.write_obj(layout::kPd + pd * 4096ULL, table));
    }
    return {};
}

} // namespace

Result<CpuState> make_boot_cpu_state(GuestMemory& mem, const BootEntry& entry)
{
    TRY_CTX(write_gdt(mem), "boot GDT");

    CpuState cpu;
    cpu.rip = entry.rip;
    cpu.rflags = x86::kRflagsFixed; // IF clear
    cpu.gpr[RAX] = entry.rax;
    cpu.gpr[RBX] = entry.rbx;
    cpu.gpr[RSI] = entry.rsi;
    cpu.gpr[RSP] = entry.rsp != 0 ? entry.rsp : layout::kBootStack;

    SegmentReg data = data_segment();
    cpu.ds = cpu.es = cpu.fs = cpu.gs = cpu.ss = data;
    cpu.tr = task_register();
    cpu.ldtr = unusable_ldt();
    cpu.gdt = DescriptorTableReg { layout::kBootGdt, boot_gdt::kEntries * 8 - 1 };
    cpu.idt = DescriptorTableReg { layout::kBootIdt, 0 };

    switch (entry.mode) {
    case EntryMode::Long64:
        TRY_CTX(write_identity_page_tables(mem), "boot page tables");
        cpu.cs = code_segment(boot_gdt::kCode64, true);
        cpu.cr0 = x86::kCr0Pe | x86::kCr0Et | x86::kCr0Ne | x86::kCr0Pg;
        cpu.cr3 = layout::kPml4;
        cpu.cr4 = x86::kCr4Pae;
        cpu.efer = x86::kEferLme | x86::kEferLma;
        break;
    case EntryMode::Protected32:
        if (entry.rip > 0xffffffffULL)
            return make_error("32-bit entry point {:#x} is above 4 GiB", entry.rip);
        cpu.cs = code_segment(boot_gdt::kCode32, false);
        cpu.cr0 = x86::kCr0Pe | x86::kCr0Et;
        cpu.cr3 = 0;
        cpu.cr4 = 0;
        cpu.efer = 0;
        break;
    }

    std::memcpy(cpu.xsave.data(), &kFcwReset, sizeof(kFcwReset));
    std::memcpy(cpu.xsave.data() + 24, &kMxcsrReset, sizeof(kMxcsrReset));
    return cpu;
}

} // namespace vessel
