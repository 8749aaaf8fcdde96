#include <gtest/gtest.h>

#include <memory>
#include <vector>

#include "bus/bus.h"
#include "devices/i8042.h"

using namespace vessel;

namespace {

constexpr uint8_t kStatusObf = 0x01;
constexpr uint8_t kStatusSys = 0x04;
constexpr uint8_t kStatusCmd = 0x08;
constexpr uint8_t kStatusUnlocked = 0x10;
constexpr uint8_t kStatusAux = 0x20;

// A controller with its IRQ line and stop requests recorded. Not movable: callbacks capture this.
class I8042Harness {
public:
    I8042Harness()
        : kbc(IrqLine(1, [this](uint32_t gsi, bool level) {
                  EXPECT_EQ(gsi, 1u);
                  levels.push_back(level);
              }),
              [this](StopRequest request) { stops.push_back(request); })
    {
    }
    I8042Harness(const I8042Harness&) = delete;
    I8042Harness& operator=(const I8042Harness&) = delete;

    uint8_t status()
    {
        uint8_t value = 0;
        kbc.read(I8042::kCommandOffset, std::span(&value, 1));
        return value;
    }
    uint8_t data()
    {
        uint8_t value = 0;
        kbc.read(I8042::kDataOffset, std::span(&value, 1));
        return value;
    }
    void command(uint8_t value) { kbc.write(I8042::kCommandOffset, std::span(&value, 1)); }
    void send(uint8_t value) { kbc.write(I8042::kDataOffset, std::span(&value, 1)); }
    // Reads everything in the output buffer, as Linux's i8042_flush() does.
    std::vector<uint8_t> drain()
    {
        std::vector<uint8_t> bytes;
        for (int i = 0; i < 64 && (status() & kStatusObf); ++i)
            bytes.push_back(data());
        return bytes;
    }
    uint8_t read_command_byte()
    {
        command(0x20);
        EXPECT_TRUE(status() & kStatusObf);
        return data();
    }
    bool irq() const { return !levels.empty() && levels.back(); }
    bool reset_requested() const
    {
        return !stops.empty() && stops.back().reason == StopReason::Reset;
    }

    std::vector<bool> levels;
    std::vector<StopRequest> stops;
    I8042 kbc;
};

using Bytes = std::vector<uint8_t>;

} // namespace

TEST(I8042, PowerOnStatus)
{
    I8042Harness h;
    EXPECT_EQ(h.status(), kStatusUnlocked | kStatusSys);
    EXPECT_TRUE(h.drain().empty());
    uint8_t unused[3] = {};
    h.kbc.read(1, unused);
    EXPECT_EQ(unused[0], 0xff);
    EXPECT_EQ(unused[2], 0xff);
    h.kbc.write(2, std::span<const uint8_t>(unused, 1)); // ignored
    EXPECT_TRUE(h.stops.empty());
}

TEST(I8042, SelfTestAndInterfaceTest)
{
    I8042Harness h;
    h.command(0xaa);
    EXPECT_EQ(h.status() & (kStatusObf | kStatusCmd | kStatusSys), kStatusObf | kStatusCmd | kStatusSys);
    EXPECT_EQ(h.data(), 0x55);
    EXPECT_EQ(h.status() & kStatusObf, 0);
    h.command(0xab);
    EXPECT_EQ(h.drain(), Bytes { 0x00 });
}

TEST(I8042, CommandByteRoundTrip)
{
    I8042Harness h;
    EXPECT_EQ(h.read_command_byte(), 0x65);
    h.command(0x60);
    h.send(0x47);
    EXPECT_EQ(h.status() & kStatusCmd, 0) << "last write went to the data port";
    EXPECT_EQ(h.read_command_byte(), 0x67) << "the absent aux port stays disabled";
    h.command(0xad);
    EXPECT_EQ(h.read_command_byte(), 0x77);
    h.command(0xae);
    EXPECT_EQ(h.read_command_byte(), 0x67);
    // Other controller RAM bytes.
    h.command(0x65);
    h.send(0xa5);
    h.command(0x25);
    EXPECT_EQ(h.drain(), Bytes { 0xa5 });
}

TEST(I8042, CommandRepliesRaiseIrq1WhenEnabled)
{
    I8042Harness h;
    h.command(0x20);
    EXPECT_TRUE(h.irq());
    h.data();
    EXPECT_FALSE(h.irq());
    h.command(0x60);
    h.send(0x64); // keyboard interrupt off
    h.command(0x20);
    EXPECT_EQ(h.status() & kStatusObf, kStatusObf);
    EXPECT_FALSE(h.irq());
    EXPECT_EQ(h.data(), 0x64 | 0x20);
    EXPECT_EQ(h.levels, (std::vector<bool> { true, false }));
}

TEST(I8042, ResetThroughFe)
{
    I8042Harness h;
    h.command(0xfe);
    ASSERT_EQ(h.stops.size(), 1u);
    EXPECT_EQ(h.stops[0].reason, StopReason::Reset);
}

TEST(I8042, PulseCommandsResetOnlyWithBitZeroClear)
{
    I8042Harness h;
    h.command(0xff);
    h.command(0xf1);
    h.command(0xfd);
    EXPECT_TRUE(h.stops.empty());
    h.command(0xf0);
    EXPECT_TRUE(h.reset_requested());
}

TEST(I8042, ResetThroughOutputPort)
{
    I8042Harness h;
    h.command(0xd1);
    h.send(0x03); // reset line high, A20 on: nothing happens
    EXPECT_TRUE(h.stops.empty());
    h.command(0xd0);
    EXPECT_EQ(h.drain(), Bytes { 0x03 });
    h.command(0xd1);
    h.send(0xfe);
    ASSERT_EQ(h.stops.size(), 1u);
    EXPECT_EQ(h.stops[0].reason, StopReason::Reset);
}

TEST(I8042, KeyboardResetReplySequence)
{
    I8042Harness h;
    h.send(0xff);
    EXPECT_TRUE(h.irq());
    EXPECT_EQ(h.data(), 0xfa);
    EXPECT_TRUE(h.irq());
    EXPECT_EQ(h.data(), 0xaa);
    EXPECT_FALSE(h.irq());
    EXPECT_EQ(h.status() & kStatusObf, 0);
    // One edge per byte.
    EXPECT_EQ(h.levels, (std::vector<bool> { true, false, true, false }));
}

TEST(I8042, KeyboardIdentify)
{
    I8042Harness h;
    h.send(0xf2);
    EXPECT_EQ(h.drain(), (Bytes { 0xfa, 0xab, 0x41 })) << "translated (command byte bit 6)";
    h.command(0x60);
    h.send(0x05); // no translation
    h.send(0xf2);
    EXPECT_EQ(h.drain(), (Bytes { 0xfa, 0xab, 0x83 }));
}

TEST(I8042, KeyboardCommandsAreAcknowledged)
{
    I8042Harness h;
    h.command(0x60);
    h.send(0x05);
    for (uint8_t command : { 0xf5, 0xf4, 0xf6 }) {
        h.send(command);
        EXPECT_EQ(h.drain(), Bytes { 0xfa });
    }
    h.send(0xed);
    h.send(0x07);
    EXPECT_EQ(h.drain(), (Bytes { 0xfa, 0xfa }));
    h.send(0xf3);
    h.send(0x20);
    EXPECT_EQ(h.drain(), (Bytes { 0xfa, 0xfa }));
    h.send(0xf0);
    h.send(0x00);
    EXPECT_EQ(h.drain(), (Bytes { 0xfa, 0xfa, 0x02 }));
    h.send(0xf0);
    h.send(0x03);
    h.send(0xf0);
    h.send(0x00);
    EXPECT_EQ(h.drain(), (Bytes { 0xfa, 0xfa, 0xfa, 0xfa, 0x03 }));
    h.send(0xee);
    EXPECT_EQ(h.drain(), Bytes { 0xee });
    h.send(0xfe); // resend
    EXPECT_EQ(h.drain(), Bytes { 0xee });
    h.send(0x12); // not a command
    EXPECT_EQ(h.drain(), Bytes { 0xfe });
    h.send(0xed); // a command instead of the parameter starts over
    h.send(0xf4);
    EXPECT_EQ(h.drain(), (Bytes { 0xfa, 0xfa }));
}

TEST(I8042, DisabledKeyboardHoldsItsBytes)
{
    I8042Harness h;
    h.send(0xf2); // FA already in the output buffer, AB 41 still in the keyboard
    h.command(0xad);
    EXPECT_EQ(h.data(), 0xfa);
    EXPECT_EQ(h.status() & kStatusObf, 0);
    h.command(0xae);
    EXPECT_EQ(h.drain(), (Bytes { 0xab, 0x41 }));
}

TEST(I8042, WritingToTheKeyboardEnablesItsInterface)
{
    I8042Harness h;
    h.command(0xad);
    h.send(0xf4);
    EXPECT_EQ(h.drain(), Bytes { 0xfa });
    EXPECT_EQ(h.read_command_byte() & 0x10, 0);
}

TEST(I8042, LinuxAuxProbeGivesUpQuickly)
{
    I8042Harness h;
    // i8042_check_aux(): AUX_LOOP echoes with the aux-data flag and no IRQ 1.
    h.command(0xd3);
    h.send(0x5a);
    EXPECT_EQ(h.status() & (kStatusObf | kStatusAux), kStatusObf | kStatusAux);
    EXPECT_FALSE(h.irq());
    EXPECT_EQ(h.data(), 0x5a);
    EXPECT_EQ(h.status() & (kStatusObf | kStatusAux), 0);
    // Bit assignment test: disabling works, enabling does not (no aux port).
    h.command(0xa7);
    EXPECT_EQ(h.read_command_byte() & 0x20, 0x20);
    h.command(0xa8);
    EXPECT_EQ(h.read_command_byte() & 0x20, 0x20);
    h.command(0xa9);
    EXPECT_EQ(h.drain(), Bytes { 0x01 });
    h.command(0xd4);
    h.send(0xff); // to the (absent) mouse: dropped, not sent to the keyboard
    EXPECT_TRUE(h.drain().empty());
}

TEST(I8042, WriteKeyboardOutputBuffer)
{
    I8042Harness h;
    h.command(0xd2);
    h.send(0x1c);
    EXPECT_TRUE(h.irq());
    EXPECT_EQ(h.status() & kStatusAux, 0);
    EXPECT_EQ(h.drain(), Bytes { 0x1c });
}

TEST(I8042, UnknownCommandsAreIgnored)
{
    I8042Harness h;
    h.command(0x05);
    h.command(0xc8);
    EXPECT_TRUE(h.drain().empty());
    EXPECT_TRUE(h.stops.empty());
}

TEST(I8042, SeparateCommandPortLeavesPort61Free)
{
    std::vector<StopRequest> stops;
    auto kbc = std::make_shared<I8042>(IrqLine {}, [&](StopRequest request) { stops.push_back(request); });
    Bus pio("pio");
    ASSERT_TRUE(pio.insert(kbc, 0x60, 1).ok());
    ASSERT_TRUE(pio.insert(std::make_shared<I8042CommandPort>(kbc), 0x64, 1).ok());
    uint8_t value = 0xaa;
    ASSERT_TRUE(pio.write(0x64, std::span(&value, 1)));
    ASSERT_TRUE(pio.read(0x64, std::span(&value, 1)));
    EXPECT_EQ(value & kStatusObf, kStatusObf);
    ASSERT_TRUE(pio.read(0x60, std::span(&value, 1)));
    EXPECT_EQ(value, 0x55);
    EXPECT_FALSE(pio.read(0x61, std::span(&value, 1)));
    value = 0xfe;
    ASSERT_TRUE(pio.write(0x64, std::span(&value, 1)));
    ASSERT_EQ(stops.size(), 1u);
    EXPECT_EQ(stops[0].reason, StopReason::Reset);
}

namespace {

std::vector<int> exercise(I8042Harness& h)
{
    std::vector<int> seen;
    const size_t levels_before = h.levels.size();
    for (int i = 0; i < 3; ++i) {
        seen.push_back(h.status());
        seen.push_back(h.data());
    }
    h.send(0x00); // parameter of a pending command, if any
    h.command(0x20);
    h.send(0xf2);
    h.command(0xae);
    for (int i = 0; i < 8; ++i) {
        seen.push_back(h.status());
        seen.push_back(h.data());
    }
    seen.push_back(-1);
    seen.insert(seen.end(), h.levels.begin() + static_cast<std::ptrdiff_t>(levels_before), h.levels.end());
    seen.push_back(static_cast<int>(h.stops.size()));
    return seen;
}

} // namespace

TEST(I8042, SaveRestoreIdenticalBehaviour)
{
    I8042Harness a;
    a.command(0x60);
    a.send(0x07); // untranslated, keyboard interrupt
    a.send(0xf2); // FA in the buffer, AB 83 queued
    a.command(0xad); // keyboard held
    a.command(0xaa); // 55 queued by the controller
    a.send(0xed);    // pending LED parameter (and re-enables the keyboard)
    a.command(0x7f);  // pending controller RAM write
    ASSERT_TRUE(a.irq());

    const I8042::State state = a.kbc.save();
    I8042Harness b;
    b.kbc.restore(state);
    EXPECT_EQ(b.kbc.save(), state);
    EXPECT_TRUE(b.irq());

    EXPECT_EQ(exercise(a), exercise(b));
    EXPECT_EQ(a.kbc.save(), b.kbc.save());
}
