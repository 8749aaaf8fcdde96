// The reset vector stub (arch/x86/reset_stub.h): its bytes at F000:FFF0, clear of the ACPI
// tables, and what it does when a CPU gets there the way Linux's machine_real_restart() does
// (real mode, ljmp 0xf000:0xfff0): pulse the i8042 reset line, then stay halted.
#include <gtest/gtest.h>

#include <vector>

#include "arch/x86/acpi.h"
#include "arch/x86/layout.h"
#include "arch/x86/reset_stub.h"
#include "engine/soft/flags.h"
#include "soft_test_support.h"

namespace vessel {
namespace {

std::vector<uint8_t> read_stub(const GuestMemory& mem)
{
    std::vector<uint8_t> out(kResetStubCode.size());
    EXPECT_TRUE(mem.read(layout::kResetVector, out).ok());
    return out;
}

TEST(ResetStub, AtTheLegacyResetVector)
{
    auto mem = GuestMemory::create(64 * layout::MiB).release_value();
    ASSERT_TRUE(write_reset_stub(mem).ok());
    EXPECT_EQ(read_stub(mem), std::vector<uint8_t>(kResetStubCode.begin(), kResetStubCode.end()));
    EXPECT_EQ(layout::kResetVector, (0xf000u << 4) + 0xfff0u);
}

TEST(ResetStub, AcpiTablesLeaveItAlone)
{
    // The largest tables (most vCPUs, many devices) written after the stub must not touch it.
    auto mem = GuestMemory::create(64 * layout::MiB).release_value();
    ASSERT_TRUE(write_reset_stub(mem).ok());
    AcpiConfig cfg;
    cfg.vcpus = kAcpiMaxVcpus;
    ASSERT_TRUE(build_acpi_tables(mem, cfg).ok());
    EXPECT_EQ(read_stub(mem), std::vector<uint8_t>(kResetStubCode.begin(), kResetStubCode.end()));
}

TEST(ResetStub, RealModeJumpThereResetsThroughTheI8042)
{
    using namespace vessel::soft;
    soft::test::SoftHarness h(CpuMode::Real);
    ASSERT_TRUE(write_reset_stub(h.memory()).ok());
    Cpu& c = h.cpu();
    c.seg[CS].selector = 0xf000;
    c.seg[CS].base = 0xf0000;
    c.rip = 0xfff0;
    c.rflags |= kIF;
    c.update_mode();
    soft::test::RunResult r = h.run(100);
    ASSERT_EQ(r.kind, soft::test::RunResult::Halted) << r.abort_message;
    EXPECT_EQ(h.io.writes, 1);
    EXPECT_EQ(h.io.last_port, layout::kI8042Port + 4);
    EXPECT_EQ(h.io.last_value, 0xfeu); // pulse output line 0: the CPU reset
    EXPECT_FALSE(c.rflags & kIF); // halted with interrupts off: nothing runs on
}

} // namespace
} // namespace vessel
