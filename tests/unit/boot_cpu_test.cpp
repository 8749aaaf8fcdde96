#include "arch/x86/boot_cpu.h"
#include "loader_test_support.h"

using namespace vessel;
using namespace vessel::test;

namespace {

uint64_t read_u64(const GuestMemory& mem, uint64_t gpa)
{
    auto v = mem.read_obj<uint64_t>(gpa);
    EXPECT_TRUE(v.ok());
    return v.ok() ? v.value() : 0;
}

void expect_flat_data(const SegmentReg& seg)
{
    EXPECT_EQ(seg.selector, boot_gdt::kData);
    EXPECT_EQ(seg.base, 0u);
    EXPECT_EQ(seg.limit, 0xffffffffu);
    EXPECT_EQ(seg.type, 0x3);
    EXPECT_EQ(seg.present, 1);
    EXPECT_EQ(seg.s, 1);
    EXPECT_EQ(seg.dpl, 0);
    EXPECT_EQ(seg.db, 1);
    EXPECT_EQ(seg.g, 1);
    EXPECT_EQ(seg.unusable, 0);
}

void expect_common(const CpuState& cpu)
{
    EXPECT_EQ(cpu.rflags, 0x2u);
    EXPECT_EQ(cpu.rflags & x86::kRflagsIf, 0u);
    EXPECT_EQ(cpu.gdt.base, layout::kBootGdt);
    EXPECT_EQ(cpu.gdt.limit, 31);
    EXPECT_EQ(cpu.idt.base, layout::kBootIdt);
    EXPECT_EQ(cpu.idt.limit, 0);
    expect_flat_data(cpu.ds);
    expect_flat_data(cpu.es);
    expect_flat_data(cpu.fs);
    expect_flat_data(cpu.gs);
    expect_flat_data(cpu.ss);
    EXPECT_EQ(cpu.tr.type, 0xb);
    EXPECT_EQ(cpu.tr.present, 1);
    EXPECT_EQ(cpu.tr.s, 0);
    EXPECT_EQ(cpu.tr.limit, 0x67u);
    EXPECT_EQ(cpu.tr.unusable, 0);
    EXPECT_EQ(cpu.ldtr.type, 0x2);
    EXPECT_EQ(cpu.ldtr.unusable, 1);
    EXPECT_EQ(cpu.mp_state, MpState::Runnable);
}

} // namespace

TEST(BootCpu, GdtContents)
{
    GuestMemory mem = make_memory();
    BootEntry entry;
    entry.mode = EntryMode::Protected32;
    entry.rip = 0x100000;
    ASSERT_TRUE(make_boot_cpu_state(mem, entry).ok());
    EXPECT_EQ(read_u64(mem, layout::kBootGdt + 0x00), 0u);
    EXPECT_EQ(read_u64(mem, layout::kBootGdt + 0x08), 0x00cf9b000000ffffULL); // 32-bit code
    EXPECT_EQ(read_u64(mem, layout::kBootGdt + 0x10), 0x00af9b000000ffffULL); // 64-bit code
    EXPECT_EQ(read_u64(mem, layout::kBootGdt + 0x18), 0x00cf93000000ffffULL); // data
}

TEST(BootCpu, LongModeState)
{
    GuestMemory mem = make_memory();
    BootEntry entry;
    entry.mode = EntryMode::Long64;
    entry.rip = 0x1000200;
    entry.rsi = layout::kZeroPage;
    auto cpu = make_boot_cpu_state(mem, entry);
    ASSERT_TRUE(cpu.ok()) << cpu.error().message();
    expect_common(*cpu);
    EXPECT_EQ(cpu->rip, 0x1000200u);
    EXPECT_EQ(cpu->gpr[RSI], layout::kZeroPage);
    EXPECT_EQ(cpu->gpr[RSP], layout::kBootStack);

    EXPECT_EQ(cpu->cs.selector, 0x10);
    EXPECT_EQ(cpu->cs.type, 0xb);
    EXPECT_EQ(cpu->cs.l, 1);
    EXPECT_EQ(cpu->cs.db, 0);
    EXPECT_EQ(cpu->cs.s, 1);
    EXPECT_EQ(cpu->cs.present, 1);
    EXPECT_EQ(cpu->cs.g, 1);
    EXPECT_EQ(cpu->ds.selector, 0x18);

    EXPECT_EQ(cpu->cr0 & (x86::kCr0Pe | x86::kCr0Pg | x86::kCr0Et | x86::kCr0Ne),
              x86::kCr0Pe | x86::kCr0Pg | x86::kCr0Et | x86::kCr0Ne);
    EXPECT_EQ(cpu->cr0 & ((1ULL << 29) | (1ULL << 30)), 0u); // caches enabled (NW, CD clear)
    EXPECT_EQ(cpu->cr3, layout::kPml4);
    EXPECT_TRUE(cpu->cr4 & x86::kCr4Pae);
    EXPECT_EQ(cpu->efer, x86::kEferLme | x86::kEferLma);

    // Identity map of 4 GiB with 2 MiB pages.
    EXPECT_EQ(read_u64(mem, layout::kPml4), layout::kPdpt | 0x3);
    EXPECT_EQ(read_u64(mem, layout::kPml4 + 8), 0u);
    for (unsigned i = 0; i < 4; i++)
        EXPECT_EQ(read_u64(mem, layout::kPdpt + i * 8), (layout::kPd + i * 0x1000) | 0x3);
    EXPECT_EQ(read_u64(mem, layout::kPdpt + 4 * 8), 0u);
    EXPECT_EQ(read_u64(mem, layout::kPd), 0x83u);
    EXPECT_EQ(read_u64(mem, layout::kPd + 8), 0x200083u);
    EXPECT_EQ(read_u64(mem, layout::kPd + 0x1000), 0x40000083u);            // 1 GiB
    EXPECT_EQ(read_u64(mem, layout::kPd + 0x4000 - 8), 0xffe00083u);        // last 2 MiB below 4 GiB
    for (unsigned i = 0; i < 2048; i++)
        ASSERT_EQ(read_u64(mem, layout::kPd + i * 8), (uint64_t { i } << 21) | 0x83) << i;
}

TEST(BootCpu, ProtectedModeState)
{
    GuestMemory mem = make_memory();
    ASSERT_TRUE(mem.fill(layout::kPml4, 0xee, 8).ok());
    BootEntry entry;
    entry.mode = EntryMode::Protected32;
    entry.rip = 0x1000040;
    entry.rax = 0x2badb002;
    entry.rbx = layout::kMultibootInfo;
    auto cpu = make_boot_cpu_state(mem, entry);
    ASSERT_TRUE(cpu.ok()) << cpu.error().message();
    expect_common(*cpu);
    EXPECT_EQ(cpu->rip, 0x1000040u);
    EXPECT_EQ(cpu->gpr[RAX], 0x2badb002u);
    EXPECT_EQ(cpu->gpr[RBX], layout::kMultibootInfo);

    EXPECT_EQ(cpu->cs.selector, 0x08);
    EXPECT_EQ(cpu->cs.type, 0xb);
    EXPECT_EQ(cpu->cs.l, 0);
    EXPECT_EQ(cpu->cs.db, 1);
    EXPECT_EQ(cpu->cs.g, 1);
    EXPECT_EQ(cpu->cs.limit, 0xffffffffu);

    EXPECT_EQ(cpu->cr0, x86::kCr0Pe | x86::kCr0Et);
    EXPECT_EQ(cpu->cr3, 0u);
    EXPECT_EQ(cpu->cr4, 0u);
    EXPECT_EQ(cpu->efer, 0u);
    // No page tables are written for 32-bit entry.
    EXPECT_EQ(read_u64(mem, layout::kPml4), 0xeeeeeeeeeeeeeeeeULL);
}

TEST(BootCpu, StackFromEntry)
{
    GuestMemory mem = make_memory();
    BootEntry entry;
    entry.mode = EntryMode::Protected32;
    entry.rsp = 0x7c00;
    auto cpu = make_boot_cpu_state(mem, entry);
    ASSERT_TRUE(cpu.ok());
    EXPECT_EQ(cpu->gpr[RSP], 0x7c00u);
}

TEST(BootCpu, FpuResetState)
{
    GuestMemory mem = make_memory();
    auto cpu = make_boot_cpu_state(mem, BootEntry {});
    ASSERT_TRUE(cpu.ok());
    uint16_t fcw = 0;
    uint32_t mxcsr = 0;
    std::memcpy(&fcw, cpu->xsave.data(), 2);
    std::memcpy(&mxcsr, cpu->xsave.data() + 24, 4);
    EXPECT_EQ(fcw, 0x37f);
    EXPECT_EQ(mxcsr, 0x1f80u);
}

TEST(BootCpu, Protected32EntryAbove4GiBIsRefused)
{
    GuestMemory mem = make_memory();
    BootEntry entry;
    entry.mode = EntryMode::Protected32;
    entry.rip = 0x100000000ULL;
    EXPECT_FALSE(make_boot_cpu_state(mem, entry).ok());
}

// The loaders' BootEntry feeds straight into the CPU state.
TEST(BootCpu, FromLoadedKernel)
{
    TempDir dir;
    GuestMemory mem = make_memory();
    auto e820 = build_e820(mem);
    BzSpec bz;
    bz.payload = gzip_compress(pattern_bytes(1000, 1));
    LoadRequest req { dir.write("bzImage", build_bzimage(bz)), "", "", BootPath::Decompressor, 0 };
    auto entry = load_kernel(mem, e820, req);
    ASSERT_TRUE(entry.ok()) << entry.error().message();
    auto cpu = make_boot_cpu_state(mem, *entry);
    ASSERT_TRUE(cpu.ok());
    EXPECT_EQ(cpu->rip, 0x1000200u);
    EXPECT_EQ(cpu->gpr[RSI], layout::kZeroPage);
    EXPECT_EQ(cpu->cs.selector, 0x10);
}
