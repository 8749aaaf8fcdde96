// The soft engine's page walk and TLB: accessed/dirty bits, permission faults with their
// architectural error codes, NX, WP, reserved bits, large pages, INVLPG/CR3 invalidation,
// accesses outside RAM, and instruction fetch from a non-RAM address.
#include <gtest/gtest.h>

#include "engine/soft/mmu.h"
#include "soft_test_support.h"

using namespace vessel;
using namespace vessel::soft;
using namespace vessel::soft::test;

namespace {

constexpr uint64_t kP = 1, kRw = 2, kUs = 4, kA = 0x20, kD = 0x40, kPs = 0x80, kG = 0x100, kNx = 1ULL << 63;

// A 4-level table set of our own under 0x400000, mapping one 4 KiB page at kLin.
class SoftMmu : public ::testing::Test {
protected:
    static constexpr uint64_t kPml4 = 0x400000, kPdpt = 0x401000, kPd = 0x402000, kPt = 0x403000;
    static constexpr uint64_t kLin = 0x7f0000201000ULL; // PML4 254, PDPT 0, PD 1, PT 1
    static constexpr uint64_t kFrame = 0x500000;

    void SetUp() override
    {
        h.write<uint64_t>(kPml4 + 0, test::kPdpt | kP | kRw | kUs); // the harness's identity 1 GiB
        h.write<uint64_t>(kPml4 + 254 * 8, kPdpt | kP | kRw | kUs);
        h.write<uint64_t>(kPdpt + 0 * 8, kPd | kP | kRw | kUs);
        h.write<uint64_t>(kPd + 1 * 8, kPt | kP | kRw | kUs);
        map(kP | kRw | kUs);
        cpu().cr3 = kPml4;
        cpu().tlb.flush();
    }

    void map(uint64_t flags) { h.write<uint64_t>(kPt + 1 * 8, kFrame | flags); }
    uint64_t pte() { return h.read<uint64_t>(kPt + 1 * 8); }
    Cpu& cpu() { return h.cpu(); }

    // Runs `fn`, expecting a #PF; returns its error code (or ~0u if none was raised).
    template<typename Fn>
    uint32_t fault_of(Fn fn)
    {
        try {
            fn();
        } catch (const GuestFault& f) {
            EXPECT_EQ(f.vector, kExcPF);
            EXPECT_EQ(f.cr2, kLin);
            return f.error_code;
        }
        return ~0u;
    }

    SoftHarness h { CpuMode::Long64, 32 << 20 };
};

TEST_F(SoftMmu, ReadSetsAccessedWriteSetsDirty)
{
    h.write<uint64_t>(kFrame, 0x1122334455667788ULL);
    EXPECT_EQ(read_linear<uint64_t>(cpu(), kLin), 0x1122334455667788ULL);
    EXPECT_EQ(pte() & (kA | kD), kA);
    EXPECT_TRUE(h.read<uint64_t>(kPd + 8) & kA) << "upper levels get A too";
    write_linear<uint32_t>(cpu(), kLin + 8, 0xabcdef01);
    EXPECT_EQ(pte() & (kA | kD), kA | kD);
    EXPECT_EQ(h.read<uint32_t>(kFrame + 8), 0xabcdef01u);
}

TEST_F(SoftMmu, WriteAfterReadTakesTheSlowPathOnceToSetDirty)
{
    (void)read_linear<uint8_t>(cpu(), kLin); // cached readable, not writable (D clear)
    EXPECT_FALSE(pte() & kD);
    write_linear<uint8_t>(cpu(), kLin, 1);
    EXPECT_TRUE(pte() & kD);
}

TEST_F(SoftMmu, NotPresentErrorCodes)
{
    map(0);
    EXPECT_EQ(fault_of([&] { (void)read_linear<uint8_t>(cpu(), kLin); }), 0u);
    EXPECT_EQ(fault_of([&] { write_linear<uint8_t>(cpu(), kLin, 0); }), kPfWrite);
    cpu().seg[CS].selector = 0x33; // CPL 3
    cpu().update_mode();
    EXPECT_EQ(fault_of([&] { (void)read_linear<uint8_t>(cpu(), kLin); }), kPfUser);
}

TEST_F(SoftMmu, UserAccessToSupervisorPage)
{
    map(kP | kRw);
    EXPECT_NO_THROW((void)read_linear<uint8_t>(cpu(), kLin)); // CPL 0: fine
    cpu().seg[CS].selector = 0x33;
    cpu().update_mode();
    EXPECT_EQ(fault_of([&] { (void)read_linear<uint8_t>(cpu(), kLin); }), kPfPresent | kPfUser);
}

TEST_F(SoftMmu, ReadOnlyPageHonoursWriteProtect)
{
    map(kP | kUs);
    cpu().cr0 |= x86::kCr0Wp;
    EXPECT_EQ(fault_of([&] { write_linear<uint8_t>(cpu(), kLin, 1); }), kPfPresent | kPfWrite);
    cpu().cr0 &= ~x86::kCr0Wp; // supervisor writes ignore R/W without WP
    cpu().tlb.flush();
    EXPECT_NO_THROW(write_linear<uint8_t>(cpu(), kLin, 1));
    cpu().seg[CS].selector = 0x33; // user writes never do
    cpu().update_mode();
    EXPECT_EQ(fault_of([&] { write_linear<uint8_t>(cpu(), kLin, 1); }), kPfPresent | kPfWrite | kPfUser);
}

TEST_F(SoftMmu, NoExecuteFaultsFetchesOnlyWithNxe)
{
    map(kP | kRw | kUs | kNx);
    EXPECT_NO_THROW((void)read_linear<uint8_t>(cpu(), kLin));
    EXPECT_EQ(fault_of([&] { (void)translate_exec(cpu(), kLin); }), kPfPresent | kPfFetch);
    cpu().efer &= ~x86::kEferNxe; // NX is then a reserved bit
    cpu().tlb.flush();
    EXPECT_EQ(fault_of([&] { (void)read_linear<uint8_t>(cpu(), kLin); }), kPfPresent | kPfRsvd);
}

TEST_F(SoftMmu, ReservedPhysicalAddressBits)
{
    h.write<uint64_t>(kPt + 8, (1ULL << 45) | kFrame | kP | kRw);
    EXPECT_EQ(fault_of([&] { (void)read_linear<uint8_t>(cpu(), kLin); }), kPfPresent | kPfRsvd);
}

TEST_F(SoftMmu, LargePagesAndInvlpgOfThem)
{
    // A 2 MiB page at PD entry 1 replaces the page table.
    h.write<uint64_t>(kPd + 8, 0x600000 | kP | kRw | kPs);
    cpu().tlb.flush();
    h.write<uint32_t>(0x600000 + 0x1000 + 4, 0x5a5a5a5a);
    EXPECT_EQ(read_linear<uint32_t>(cpu(), kLin + 4), 0x5a5a5a5au);
    EXPECT_TRUE(cpu().tlb_has_large);
    // Move the large page; after the TLB entry for this linear page is dropped the new frame shows.
    h.write<uint64_t>(kPd + 8, 0x800000 | kP | kRw | kPs);
    h.write<uint32_t>(0x800000 + 0x1000 + 4, 0xa5a5a5a5);
    EXPECT_EQ(read_linear<uint32_t>(cpu(), kLin + 4), 0x5a5a5a5au) << "still cached";
    cpu().tlb.flush_page(kLin);
    EXPECT_EQ(read_linear<uint32_t>(cpu(), kLin + 4), 0xa5a5a5a5u);
}

TEST_F(SoftMmu, GlobalPagesSurviveANonGlobalFlush)
{
    cpu().cr4 |= x86::kCr4Pge;
    map(kP | kRw | kG);
    h.write<uint8_t>(kFrame, 7);
    EXPECT_EQ(read_linear<uint8_t>(cpu(), kLin), 7);
    map(0); // unmapped in memory, still in the TLB as a global page
    cpu().tlb.flush_nonglobal();
    EXPECT_EQ(read_linear<uint8_t>(cpu(), kLin), 7);
    cpu().tlb.flush();
    EXPECT_EQ(fault_of([&] { (void)read_linear<uint8_t>(cpu(), kLin); }), 0u);
}

// A CR3 write drops the non-global entries it noted when they were filled, or scans all entries
// once more were filled than it notes (Tlb::kTracked); entries refilled as global stay.
TEST_F(SoftMmu, NonGlobalFlushDropsNotedAndUnnotedEntries)
{
    cpu().cr4 |= x86::kCr4Pge;
    constexpr uint64_t kPt2 = 0x404000, kPt3 = 0x405000, kFrames = 0x600000;
    const uint64_t base = kLin & ~0x1fffffULL; // PD entry 1: 2 MiB at 0x7f0000200000
    h.write<uint64_t>(kPd + 2 * 8, kPt2 | kP | kRw | kUs);
    h.write<uint64_t>(kPd + 3 * 8, kPt3 | kP | kRw | kUs);
    auto map_page = [&](unsigned i, uint64_t flags) {
        uint64_t table = i < 512 ? kPt : i < 1024 ? kPt2 : kPt3;
        h.write<uint64_t>(table + (i % 512) * 8, flags ? ((kFrames + i * 0x1000) | flags) : 0);
    };
    for (unsigned count : { 3u, static_cast<unsigned>(Tlb::kTracked) + 100 }) {
        cpu().tlb.flush();
        for (unsigned i = 0; i < count; ++i) {
            map_page(i, kP | kRw);
            h.write<uint32_t>(kFrames + i * 0x1000, i);
            EXPECT_EQ(read_linear<uint32_t>(cpu(), base + i * 0x1000ULL), i);
        }
        // Page 1 becomes global (refilled after INVLPG): it must survive.
        map_page(1, kP | kRw | kG);
        cpu().tlb.flush_page(base + 0x1000);
        EXPECT_EQ(read_linear<uint32_t>(cpu(), base + 0x1000), 1u);
        for (unsigned i = 0; i < count; ++i)
            map_page(i, 0); // unmapped in memory, still in the TLB
        cpu().tlb.flush_nonglobal();
        EXPECT_EQ(read_linear<uint32_t>(cpu(), base + 0x1000), 1u) << count;
        for (unsigned i = 0; i < count; ++i) {
            if (i == 1)
                continue;
            bool faulted = false;
            try {
                (void)read_linear<uint32_t>(cpu(), base + i * 0x1000ULL);
            } catch (const GuestFault& f) {
                faulted = f.vector == kExcPF;
            }
            ASSERT_TRUE(faulted) << "page " << i << " of " << count << " survived the flush";
        }
    }
}

TEST_F(SoftMmu, NonCanonicalAddressIsGeneralProtection)
{
    try {
        (void)read_linear<uint8_t>(cpu(), 0x0000800000000000ULL);
        FAIL() << "no fault";
    } catch (const GuestFault& f) {
        EXPECT_EQ(f.vector, kExcGP);
    }
}

TEST_F(SoftMmu, MemoryBeyondRamReadsAllOnesAndWritesVanish)
{
    // Identity-mapped (harness tables) address beyond the 32 MiB of RAM: the MMIO bus has no device.
    uint64_t beyond = 64 << 20;
    EXPECT_EQ(read_linear<uint32_t>(cpu(), beyond), 0xffffffffu);
    EXPECT_NO_THROW(write_linear<uint32_t>(cpu(), beyond, 1));
}

TEST(SoftMmuFetch, JumpingOutsideRamStopsTheVcpuWithAMessage)
{
    SoftHarness h;
    // mov rax, 0x4000000 (64 MiB, beyond the 16 MiB of RAM); jmp rax
    const uint8_t code[] = { 0x48, 0xc7, 0xc0, 0x00, 0x00, 0x00, 0x04, 0xff, 0xe0 };
    h.load(code);
    auto r = h.run(1000);
    ASSERT_EQ(r.kind, RunResult::Abort);
    EXPECT_NE(r.abort_message.find("not RAM"), std::string::npos) << r.abort_message;
}

} // namespace
