#include <gtest/gtest.h>

#include <vector>

#include "devices/debug_exit.h"
#include "devices/post_port.h"

using namespace vessel;

namespace {

struct DebugExitHarness {
    std::vector<StopRequest> stops;
    DebugExit device { [this](StopRequest request) { stops.push_back(request); } };

    int status_of(std::vector<uint8_t> bytes)
    {
        device.write(0, bytes);
        EXPECT_FALSE(stops.empty());
        return stops.empty() ? -1 : stops.back().exit_status;
    }
};

} // namespace

TEST(DebugExit, ByteWrites)
{
    DebugExitHarness h;
    EXPECT_EQ(h.status_of({ 0x00 }), 1);
    EXPECT_EQ(h.status_of({ 0x10 }), 33);
    EXPECT_EQ(h.status_of({ 0xff }), 511) << "the full status, not truncated to 8 bits";
    for (const StopRequest& stop : h.stops)
        EXPECT_EQ(stop.reason, StopReason::DebugExit);
}

TEST(DebugExit, WordAndDwordWrites)
{
    DebugExitHarness h;
    EXPECT_EQ(h.status_of({ 0x34, 0x12 }), 0x2469);
    EXPECT_EQ(h.status_of({ 0x78, 0x56, 0x34, 0x12 }), 0x2468acf1);
    EXPECT_EQ(h.status_of({ 0x01, 0x00, 0x00, 0x00 }), 3);
    EXPECT_EQ(h.stops.size(), 3u);
    EXPECT_EQ(DebugExit::exit_status(0x10), 33);
}

TEST(DebugExit, ReadsReturnZero)
{
    DebugExitHarness h;
    uint8_t data[4] = { 0xff, 0xff, 0xff, 0xff };
    h.device.read(0, data);
    EXPECT_EQ(data[0], 0);
    EXPECT_EQ(data[3], 0);
    EXPECT_TRUE(h.stops.empty());
}

TEST(DebugExit, SaveRestoreIdenticalBehaviour)
{
    DebugExitHarness a;
    DebugExitHarness b;
    b.device.restore(a.device.save());
    EXPECT_EQ(a.device.save(), b.device.save());
    EXPECT_EQ(a.status_of({ 0x21 }), b.status_of({ 0x21 }));
    EXPECT_EQ(a.status_of({ 0x00, 0x01 }), b.status_of({ 0x00, 0x01 }));
}

TEST(PostPort, RecordsTheLastByte)
{
    PostPort port;
    uint8_t value = 0;
    port.read(0, std::span(&value, 1));
    EXPECT_EQ(value, 0);
    for (uint8_t code : { 0x01, 0x7f, 0xa5 }) {
        port.write(0, std::span(&code, 1));
        port.read(0, std::span(&value, 1));
        EXPECT_EQ(value, code);
    }
    EXPECT_EQ(port.last(), 0xa5);
    const uint8_t word[2] = { 0x42, 0x99 };
    port.write(0, word);
    uint8_t wide[2] = {};
    port.read(0, wide);
    EXPECT_EQ(wide[0], 0x42);
    EXPECT_EQ(wide[1], 0xff);
}

TEST(PostPort, SaveRestoreIdenticalBehaviour)
{
    PostPort a;
    const uint8_t code = 0x3c;
    a.write(0, std::span(&code, 1));
    PostPort b;
    b.restore(a.save());
    EXPECT_EQ(a.save(), b.save());
    uint8_t va = 0;
    uint8_t vb = 0;
    a.read(0, std::span(&va, 1));
    b.read(0, std::span(&vb, 1));
    EXPECT_EQ(va, vb);
    const uint8_t next = 0x77;
    a.write(0, std::span(&next, 1));
    b.write(0, std::span(&next, 1));
    EXPECT_EQ(a.save(), b.save());
    EXPECT_EQ(b.last(), 0x77);
}
