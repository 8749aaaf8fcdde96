#include <gtest/gtest.h>

#include "bus/bus.h"

using namespace vessel;

namespace {

class RecordingDevice : public BusDevice {
public:
    std::string_view name() const override { return "recorder"; }
    void read(uint64_t offset, std::span<uint8_t> data) override
    {
        last_offset = offset;
        for (auto& b : data)
            b = static_cast<uint8_t>(offset);
    }
    void write(uint64_t offset, std::span<const uint8_t> data) override
    {
        last_offset = offset;
        last_value = data[0];
    }
    uint64_t last_offset { ~0ULL };
    uint8_t last_value { 0 };
};

} // namespace

TEST(Bus, DispatchesOffsetsNotAddresses)
{
    Bus bus("pio");
    auto dev = std::make_shared<RecordingDevice>();
    ASSERT_TRUE(bus.insert(dev, 0x3f8, 8).ok());
    uint8_t v = 0x5a;
    EXPECT_TRUE(bus.write(0x3fb, std::span(&v, 1)));
    EXPECT_EQ(dev->last_offset, 3u);
    EXPECT_EQ(dev->last_value, 0x5a);
    uint8_t r[2];
    EXPECT_TRUE(bus.read(0x3fd, r));
    EXPECT_EQ(r[0], 5);
}

TEST(Bus, UnclaimedReadsAllOnes)
{
    Bus bus("pio");
    uint8_t r[4] = {};
    EXPECT_FALSE(bus.read(0x1234, r));
    EXPECT_EQ(r[0], 0xff);
    EXPECT_EQ(r[3], 0xff);
    uint8_t v = 1;
    EXPECT_FALSE(bus.write(0x1234, std::span(&v, 1)));
}

TEST(Bus, RefusesOverlapsAndEmptyRanges)
{
    Bus bus("mmio");
    auto a = std::make_shared<RecordingDevice>();
    ASSERT_TRUE(bus.insert(a, 0x1000, 0x1000).ok());
    EXPECT_FALSE(bus.insert(a, 0x1800, 0x10).ok());  // inside
    EXPECT_FALSE(bus.insert(a, 0x0800, 0x1000).ok()); // straddles start
    EXPECT_FALSE(bus.insert(a, 0x1fff, 0x10).ok());  // straddles end
    EXPECT_FALSE(bus.insert(a, 0x500, 0).ok());       // empty
    EXPECT_FALSE(bus.insert(a, ~0ULL - 4, 0x10).ok()); // wraps
    auto err = bus.insert(a, 0x1800, 0x10);
    EXPECT_NE(err.error().message().find("overlaps"), std::string::npos);
    EXPECT_TRUE(bus.insert(a, 0x2000, 0x10).ok());    // adjacent is fine
    EXPECT_TRUE(bus.insert(a, 0x0f00, 0x100).ok());   // adjacent below
    EXPECT_EQ(bus.entries().size(), 3u);
    EXPECT_EQ(bus.find(0x0fff)->base, 0x0f00u);
    EXPECT_EQ(bus.find(0x2010), nullptr);
}
