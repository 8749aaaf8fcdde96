#include <gtest/gtest.h>

#include <fstream>
#include <string>

#include "arch/x86/layout.h"
#include "memory/guest_memory.h"

using namespace vessel;
using namespace vessel::layout;

TEST(GuestMemory, SmallRamIsOneRegionFromZero)
{
    auto mem = GuestMemory::create(64 * MiB);
    ASSERT_TRUE(mem.ok()) << mem.error().message();
    ASSERT_EQ(mem->regions().size(), 1u);
    EXPECT_EQ(mem->regions()[0].guest_base, 0u);
    EXPECT_EQ(mem->regions()[0].size, 64 * MiB);
    EXPECT_EQ(mem->end_address(), 64 * MiB);
}

TEST(GuestMemory, LargeRamSkipsTheMmioHole)
{
    auto mem = GuestMemory::create(5 * GiB);
    ASSERT_TRUE(mem.ok()) << mem.error().message();
    ASSERT_EQ(mem->regions().size(), 2u);
    EXPECT_EQ(mem->regions()[0].size, kMmioHoleStart);
    EXPECT_EQ(mem->regions()[1].guest_base, k4GiB);
    EXPECT_EQ(mem->regions()[1].size, 5 * GiB - kMmioHoleStart);
    EXPECT_EQ(mem->end_address(), k4GiB + 5 * GiB - kMmioHoleStart);
    // Nothing in the hole, both sides usable.
    EXPECT_FALSE(mem->contains(kMmioHoleStart, 1));
    EXPECT_FALSE(mem->contains(kLapicBase, 4));
    EXPECT_TRUE(mem->contains(kMmioHoleStart - 8, 8));
    EXPECT_TRUE(mem->contains(k4GiB, 8));
    // Writes land in the right place of the backing file.
    ASSERT_TRUE(mem->write_obj<uint64_t>(k4GiB, 0x1122334455667788ULL).ok());
    EXPECT_EQ(mem->read_obj<uint64_t>(k4GiB).value(), 0x1122334455667788ULL);
    EXPECT_EQ(mem->host_ptr(k4GiB, 8), mem->regions()[1].host);
}

TEST(GuestMemory, AccessesOutsideRamAreErrorsNotHostAccesses)
{
    auto mem = GuestMemory::create(16 * MiB);
    ASSERT_TRUE(mem.ok());
    uint8_t buf[16] = {};
    EXPECT_FALSE(mem->read(16 * MiB, buf).ok());
    EXPECT_FALSE(mem->read(16 * MiB - 8, buf).ok()) << "straddles the end";
    EXPECT_FALSE(mem->write(~0ULL - 4, buf).ok()) << "wraps around";
    EXPECT_FALSE(mem->fill(0, 0, 32 * MiB).ok());
    EXPECT_EQ(mem->host_ptr(16 * MiB - 1, 2), nullptr);
    EXPECT_EQ(mem->host_ptr(0, ~0ULL), nullptr);
    auto err = mem->read(0x2000000, buf);
    EXPECT_NE(err.error().message().find("outside guest RAM"), std::string::npos);
    EXPECT_TRUE(mem->read(16 * MiB - 16, buf).ok());
    EXPECT_TRUE(mem->fill(4096, 0xab, 4096).ok());
    EXPECT_EQ(mem->read_obj<uint8_t>(8191).value(), 0xab);
}

TEST(GuestMemory, RefusesTooSmallOrUnalignedSizes)
{
    EXPECT_FALSE(GuestMemory::create(8 * MiB).ok());
    EXPECT_FALSE(GuestMemory::create(16 * MiB + 100).ok());
    auto err = GuestMemory::create(1 * MiB);
    EXPECT_NE(err.error().message().find("too small"), std::string::npos);
}

TEST(GuestMemory, HugePageShortageIsAnErrorNotACrash)
{
    // Ask for more 2 MiB pages than the host has free: creation must fail with an explanation.
    uint64_t free_pages = 0;
    std::ifstream meminfo("/proc/meminfo");
    std::string key;
    while (meminfo >> key) {
        if (key == "HugePages_Free:") {
            meminfo >> free_pages;
            break;
        }
        meminfo.ignore(1 << 10, '\n');
    }
    uint64_t size = (free_pages + 8) * 2 * MiB;
    auto mem = GuestMemory::create(std::max<uint64_t>(size, 16 * MiB), HugePages::Yes);
    ASSERT_FALSE(mem.ok());
    EXPECT_NE(mem.error().message().find("huge pages"), std::string::npos) << mem.error().message();
}

TEST(GuestMemory, MoveKeepsTheMapping)
{
    auto mem = GuestMemory::create(16 * MiB);
    ASSERT_TRUE(mem.ok());
    ASSERT_TRUE(mem->write_obj<uint32_t>(0x1000, 0xfeedface).ok());
    GuestMemory moved = mem.release_value();
    EXPECT_EQ(moved.read_obj<uint32_t>(0x1000).value(), 0xfeedfaceu);
    GuestMemory other = std::move(moved);
    EXPECT_EQ(other.read_obj<uint32_t>(0x1000).value(), 0xfeedfaceu);
    EXPECT_GE(other.fd(), 0);
}
