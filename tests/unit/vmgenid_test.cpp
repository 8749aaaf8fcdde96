#include <gtest/gtest.h>

#include <algorithm>
#include <utility>
#include <vector>

#include "arch/x86/layout.h"
#include "devices/vmgenid.h"

using namespace vessel;

namespace {

struct LineLog {
    std::vector<std::pair<uint32_t, bool>> events;
    IrqLine line(uint32_t gsi)
    {
        return IrqLine(gsi, [this](uint32_t g, bool level) { events.emplace_back(g, level); });
    }
};

VmGenId::Id read_id(const GuestMemory& mem, uint64_t address)
{
    VmGenId::Id id {};
    EXPECT_TRUE(mem.read(address, id).ok());
    return id;
}

} // namespace

TEST(VmGenId, WritesADifferentIdEachTimeAtItsAddress)
{
    auto mem = GuestMemory::create(64 * layout::MiB).release_value();
    LineLog log;
    VmGenId gen(log.line(layout::kGedGsi));
    EXPECT_EQ(gen.address(), layout::kVmGenId);
    EXPECT_EQ(gen.gsi(), layout::kGedGsi);
    EXPECT_EQ(gen.id(), VmGenId::Id {});

    std::vector<VmGenId::Id> seen;
    for (int i = 0; i < 8; ++i) {
        ASSERT_TRUE(gen.write_new_id(mem).ok());
        EXPECT_EQ(read_id(mem, layout::kVmGenId), gen.id()) << i;
        EXPECT_NE(gen.id(), VmGenId::Id {}) << i;
        EXPECT_EQ(std::count(seen.begin(), seen.end(), gen.id()), 0) << "id " << i << " repeats";
        seen.push_back(gen.id());
    }
    // Only the 16 bytes of the ID are written; writing never raises the interrupt.
    EXPECT_EQ(mem.read_obj<uint64_t>(layout::kVmGenId + 16).value(), 0u);
    EXPECT_EQ(mem.read_obj<uint64_t>(layout::kVmGenId - 8).value(), 0u);
    EXPECT_TRUE(log.events.empty());
}

TEST(VmGenId, TwoDevicesGetDifferentIds)
{
    // Two clones of one snapshot, each writing its own ID.
    auto a = GuestMemory::create(16 * layout::MiB).release_value();
    auto b = GuestMemory::create(16 * layout::MiB).release_value();
    VmGenId ga(IrqLine {}), gb(IrqLine {});
    ASSERT_TRUE(ga.write_new_id(a).ok());
    ASSERT_TRUE(gb.write_new_id(b).ok());
    EXPECT_NE(read_id(a, layout::kVmGenId), read_id(b, layout::kVmGenId));
}

TEST(VmGenId, NotifyPulsesTheGedLine)
{
    LineLog log;
    VmGenId gen(log.line(layout::kGedGsi));
    gen.notify();
    ASSERT_EQ(log.events.size(), 2u);
    EXPECT_EQ(log.events[0], std::make_pair(uint32_t { layout::kGedGsi }, true));
    EXPECT_EQ(log.events[1], std::make_pair(uint32_t { layout::kGedGsi }, false));
    gen.notify();
    EXPECT_EQ(log.events.size(), 4u);
    // An unconnected line is harmless.
    VmGenId quiet(IrqLine {});
    quiet.notify();
}

TEST(VmGenId, OtherAddressAndOutOfRange)
{
    auto mem = GuestMemory::create(16 * layout::MiB).release_value();
    VmGenId gen(IrqLine {}, 0x200000);
    ASSERT_TRUE(gen.write_new_id(mem).ok());
    EXPECT_EQ(read_id(mem, 0x200000), gen.id());
    EXPECT_EQ(read_id(mem, layout::kVmGenId), VmGenId::Id {});

    VmGenId outside(IrqLine {}, mem.end_address() - 8);
    auto r = outside.write_new_id(mem);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message().find("generation ID"), std::string::npos) << r.error().message();
    EXPECT_EQ(outside.id(), VmGenId::Id {}) << "a failed write keeps the old id";
}

TEST(VmGenId, SaveRestore)
{
    auto mem = GuestMemory::create(16 * layout::MiB).release_value();
    VmGenId gen(IrqLine {});
    ASSERT_TRUE(gen.write_new_id(mem).ok());
    VmGenId copy(IrqLine {});
    copy.restore(gen.save());
    EXPECT_EQ(copy.id(), gen.id());
    EXPECT_EQ(copy.save(), gen.save());
    // A restored device still never repeats its id.
    ASSERT_TRUE(copy.write_new_id(mem).ok());
    EXPECT_NE(copy.id(), gen.id());
}
