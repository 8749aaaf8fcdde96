#include <gtest/gtest.h>

#include <string>
#include <thread>
#include <vector>

#include "devices/serial.h"

using namespace vessel;

namespace {

// Register bits the tests look at.
constexpr uint8_t kLsrDr = 0x01;
constexpr uint8_t kLsrOe = 0x02;
constexpr uint8_t kLsrThre = 0x20;
constexpr uint8_t kLsrTemt = 0x40;

// A UART with its IRQ line and output sink recorded. Not movable: the callbacks capture `this`.
class SerialHarness {
public:
    SerialHarness()
        : uart(IrqLine(4, [this](uint32_t gsi, bool level) {
                   EXPECT_EQ(gsi, 4u);
                   levels.push_back(level);
               }),
               [this](std::span<const uint8_t> bytes) { output.insert(output.end(), bytes.begin(), bytes.end()); })
    {
    }
    SerialHarness(const SerialHarness&) = delete;
    SerialHarness& operator=(const SerialHarness&) = delete;

    uint8_t in(uint64_t offset)
    {
        uint8_t value = 0;
        uart.read(offset, std::span(&value, 1));
        return value;
    }
    void out(uint64_t offset, uint8_t value) { uart.write(offset, std::span(&value, 1)); }
    void input(std::string_view text)
    {
        uart.enqueue_input(std::span(reinterpret_cast<const uint8_t*>(text.data()), text.size()));
    }
    bool irq() const { return !levels.empty() && levels.back(); }
    std::string text() const { return std::string(output.begin(), output.end()); }

    std::vector<bool> levels;
    std::vector<uint8_t> output;
    Serial uart;
};

} // namespace

TEST(Serial, PowerOnValues)
{
    SerialHarness h;
    EXPECT_EQ(h.in(Serial::kIer), 0);
    EXPECT_EQ(h.in(Serial::kIirFcr), 0x01);
    EXPECT_EQ(h.in(Serial::kLcr), 0x03);
    EXPECT_EQ(h.in(Serial::kLsr), kLsrThre | kLsrTemt);
    EXPECT_EQ(h.in(Serial::kMsr), 0xb0); // DCD, DSR, CTS
    EXPECT_TRUE(h.levels.empty());
}

TEST(Serial, DivisorLatch)
{
    SerialHarness h;
    h.out(Serial::kLcr, 0x83); // DLAB
    h.out(Serial::kRbrThr, 0x01);
    h.out(Serial::kIer, 0x02);
    EXPECT_EQ(h.in(Serial::kRbrThr), 0x01);
    EXPECT_EQ(h.in(Serial::kIer), 0x02);
    EXPECT_TRUE(h.output.empty()) << "DLL writes are not transmitted";
    h.out(Serial::kLcr, 0x03);
    EXPECT_EQ(h.in(Serial::kIer), 0x00) << "DLM writes do not touch IER";
    h.out(Serial::kLcr, 0x83);
    EXPECT_EQ(h.in(Serial::kRbrThr), 0x01);
    EXPECT_EQ(h.in(Serial::kIer), 0x02);
    EXPECT_FALSE(h.irq());
}

TEST(Serial, TransmitGoesToSinkAndLeavesThrEmpty)
{
    SerialHarness h;
    for (char c : std::string("hello\n"))
        h.out(Serial::kRbrThr, static_cast<uint8_t>(c));
    EXPECT_EQ(h.text(), "hello\n");
    EXPECT_EQ(h.in(Serial::kLsr), kLsrThre | kLsrTemt);
    EXPECT_EQ(h.in(Serial::kScr), 0);
    h.out(Serial::kScr, 0x5a);
    EXPECT_EQ(h.in(Serial::kScr), 0x5a);
}

TEST(Serial, WideWritesActAsByteAccesses)
{
    SerialHarness h;
    const uint8_t bytes[2] = { 'A', 0x00 }; // THR then IER
    h.uart.write(Serial::kRbrThr, bytes);
    EXPECT_EQ(h.text(), "A");
    EXPECT_EQ(h.in(Serial::kIer), 0);
}

TEST(Serial, ThrEmptyInterruptAndIirReadClearsIt)
{
    SerialHarness h;
    h.out(Serial::kIer, 0x02);
    EXPECT_TRUE(h.irq()) << "enabling ETBEI with THR empty raises the interrupt";
    EXPECT_EQ(h.in(Serial::kIirFcr), 0x02);
    EXPECT_FALSE(h.irq()) << "reading IIR acknowledged THRE";
    EXPECT_EQ(h.in(Serial::kIirFcr), 0x01);
    h.out(Serial::kRbrThr, 'x');
    EXPECT_TRUE(h.irq());
    h.out(Serial::kIer, 0x00);
    EXPECT_FALSE(h.irq());
    EXPECT_EQ(h.levels, (std::vector<bool> { true, false, true, false }));
}

TEST(Serial, LinuxThreAndTxenProbes)
{
    // serial8250_do_startup: IER=THRI twice (with IER=0 between) must show THRE in IIR each time.
    SerialHarness h;
    h.out(Serial::kIirFcr, 0x07);
    for (int i = 0; i < 2; ++i) {
        h.out(Serial::kIer, 0x02);
        const uint8_t lsr = h.in(Serial::kLsr);
        EXPECT_EQ(lsr & kLsrTemt, kLsrTemt);
        EXPECT_EQ(h.in(Serial::kIirFcr), 0xc2);
        h.out(Serial::kIer, 0x00);
    }
    EXPECT_FALSE(h.irq());
}

TEST(Serial, LinuxAutoconfigSees16550A)
{
    SerialHarness h;
    // Loopback test: LOOP|RTS|OUT2 → MSR upper nibble CTS|DCD.
    h.out(Serial::kMcr, 0x1a);
    EXPECT_EQ(h.in(Serial::kMsr) & 0xf0, 0x90);
    h.out(Serial::kMcr, 0x00);
    // FIFO probe: IIR bits 7:6 = 11, bit 5 never set (not a 16750).
    h.out(Serial::kIirFcr, 0x01 | 0x20);
    EXPECT_EQ(h.in(Serial::kIirFcr) >> 5, 6);
    h.out(Serial::kLcr, 0xbf); // EFR probe reads IIR, which is never 0
    EXPECT_NE(h.in(Serial::kIirFcr), 0);
    h.out(Serial::kLcr, 0x03);
    h.out(Serial::kIer, 0x4f); // XScale UUE bit does not stick
    EXPECT_EQ(h.in(Serial::kIer), 0x0f);
}

TEST(Serial, LoopbackRoutesThrToReceiverAndMapsModemLines)
{
    SerialHarness h;
    h.out(Serial::kMcr, 0x10); // LOOP, all outputs low
    h.in(Serial::kMsr);        // clear the deltas of entering loopback
    h.out(Serial::kRbrThr, 'x');
    EXPECT_TRUE(h.output.empty());
    EXPECT_EQ(h.in(Serial::kLsr) & kLsrDr, kLsrDr);
    EXPECT_EQ(h.in(Serial::kRbrThr), 'x');
    EXPECT_EQ(h.in(Serial::kLsr) & kLsrDr, 0);

    h.out(Serial::kMcr, 0x10 | 0x01); // DTR → DSR
    EXPECT_EQ(h.in(Serial::kMsr), 0x20 | 0x02);
    h.out(Serial::kMcr, 0x10 | 0x02); // RTS → CTS (DSR drops)
    EXPECT_EQ(h.in(Serial::kMsr), 0x10 | 0x01 | 0x02);
    h.out(Serial::kMcr, 0x10 | 0x04); // OUT1 → RI (rising edge: no TERI)
    EXPECT_EQ(h.in(Serial::kMsr), 0x40 | 0x01);
    h.out(Serial::kMcr, 0x10 | 0x08); // OUT2 → DCD; RI trailing edge → TERI
    EXPECT_EQ(h.in(Serial::kMsr), 0x80 | 0x08 | 0x04);
    EXPECT_EQ(h.in(Serial::kMsr), 0x80) << "reading MSR clears the delta bits";
    h.out(Serial::kMcr, 0x00);
    EXPECT_EQ(h.in(Serial::kMsr), 0xb0 | 0x01 | 0x02) << "back to the host's DCD/DSR/CTS";
}

TEST(Serial, ModemStatusInterrupt)
{
    SerialHarness h;
    h.out(Serial::kMcr, 0x10);
    h.in(Serial::kMsr);
    h.out(Serial::kIer, 0x08);
    EXPECT_FALSE(h.irq());
    h.out(Serial::kMcr, 0x12); // RTS → DCTS
    EXPECT_TRUE(h.irq());
    EXPECT_EQ(h.in(Serial::kIirFcr), 0x00);
    EXPECT_TRUE(h.irq()) << "IIR read does not clear a modem-status interrupt";
    h.in(Serial::kMsr);
    EXPECT_FALSE(h.irq());
    EXPECT_EQ(h.in(Serial::kIirFcr), 0x01);
}

TEST(Serial, FifoHoldsSixteenBytesThenOverruns)
{
    SerialHarness h;
    h.out(Serial::kIirFcr, 0x01);
    EXPECT_EQ(h.in(Serial::kIirFcr), 0xc1);
    h.out(Serial::kMcr, 0x10);
    for (int i = 0; i < 20; ++i)
        h.out(Serial::kRbrThr, static_cast<uint8_t>('a' + i));
    EXPECT_EQ(h.in(Serial::kLsr), kLsrDr | kLsrOe | kLsrThre | kLsrTemt);
    EXPECT_EQ(h.in(Serial::kLsr), kLsrDr | kLsrThre | kLsrTemt) << "reading LSR clears OE";
    std::string received;
    while (h.in(Serial::kLsr) & kLsrDr)
        received.push_back(static_cast<char>(h.in(Serial::kRbrThr)));
    EXPECT_EQ(received, "abcdefghijklmnop");
}

TEST(Serial, WithoutFifoANewByteOverwritesRbr)
{
    SerialHarness h;
    h.out(Serial::kMcr, 0x10);
    h.out(Serial::kRbrThr, '1');
    h.out(Serial::kRbrThr, '2');
    EXPECT_EQ(h.in(Serial::kLsr) & kLsrOe, kLsrOe);
    EXPECT_EQ(h.in(Serial::kRbrThr), '2');
    EXPECT_EQ(h.in(Serial::kLsr) & kLsrDr, 0);
}

TEST(Serial, IirPrioritiesAndLineLevel)
{
    SerialHarness h;
    h.out(Serial::kMcr, 0x10);
    h.in(Serial::kMsr);
    h.out(Serial::kRbrThr, '1');
    h.out(Serial::kRbrThr, '2'); // overrun
    h.out(Serial::kMcr, 0x12);   // modem status delta
    h.out(Serial::kIer, 0x0f);
    EXPECT_TRUE(h.irq());
    EXPECT_EQ(h.in(Serial::kIirFcr), 0x06) << "line status first";
    h.in(Serial::kLsr);
    EXPECT_EQ(h.in(Serial::kIirFcr), 0x04) << "then received data";
    h.in(Serial::kRbrThr);
    EXPECT_EQ(h.in(Serial::kIirFcr), 0x02) << "then THR empty (acknowledged by this read)";
    EXPECT_EQ(h.in(Serial::kIirFcr), 0x00) << "then modem status";
    EXPECT_TRUE(h.irq());
    h.in(Serial::kMsr);
    EXPECT_EQ(h.in(Serial::kIirFcr), 0x01);
    EXPECT_FALSE(h.irq());
    EXPECT_EQ(h.levels, (std::vector<bool> { true, false }));
}

TEST(Serial, RxTriggerLevelAndCharacterTimeout)
{
    SerialHarness h;
    h.out(Serial::kIirFcr, 0x41); // FIFO, trigger level 4
    h.out(Serial::kIer, 0x01);
    h.input("ab");
    EXPECT_TRUE(h.irq());
    EXPECT_EQ(h.in(Serial::kIirFcr), 0xcc) << "below the trigger level: character timeout";
    h.input("cd");
    EXPECT_EQ(h.in(Serial::kIirFcr), 0xc4);
    h.out(Serial::kIirFcr, 0x43); // clear the receive FIFO
    EXPECT_EQ(h.in(Serial::kLsr) & kLsrDr, 0);
    EXPECT_FALSE(h.irq());
}

TEST(Serial, InputRaisesDataReadyAndIrq)
{
    SerialHarness h;
    h.out(Serial::kIer, 0x01);
    EXPECT_FALSE(h.irq());
    h.input("ok");
    EXPECT_TRUE(h.irq());
    EXPECT_EQ(h.in(Serial::kLsr) & kLsrDr, kLsrDr);
    EXPECT_EQ(h.in(Serial::kIirFcr), 0x04);
    EXPECT_EQ(h.in(Serial::kRbrThr), 'o');
    EXPECT_TRUE(h.irq());
    EXPECT_EQ(h.in(Serial::kRbrThr), 'k');
    EXPECT_FALSE(h.irq());
    EXPECT_EQ(h.in(Serial::kLsr) & kLsrDr, 0);
    EXPECT_EQ(h.in(Serial::kRbrThr), 'k') << "an empty RBR reads its last byte";
}

TEST(Serial, InputWaitsWhileInLoopback)
{
    SerialHarness h;
    h.out(Serial::kMcr, 0x10);
    h.input("z");
    EXPECT_EQ(h.in(Serial::kLsr) & kLsrDr, 0);
    h.out(Serial::kMcr, 0x00);
    EXPECT_EQ(h.in(Serial::kLsr) & kLsrDr, kLsrDr);
    EXPECT_EQ(h.in(Serial::kRbrThr), 'z');
}

TEST(Serial, InputOverflowSetsOverrun)
{
    SerialHarness h;
    h.out(Serial::kIer, 0x04); // line status only
    std::vector<uint8_t> big(Serial::kInputQueueSize + 1 + 10, 'x');
    h.uart.enqueue_input(big);
    EXPECT_FALSE(h.uart.wants_input());
    EXPECT_EQ(h.uart.input_space(), 0u);
    EXPECT_TRUE(h.irq());
    EXPECT_EQ(h.in(Serial::kIirFcr), 0x06);
    EXPECT_EQ(h.in(Serial::kLsr) & kLsrOe, kLsrOe);
    EXPECT_FALSE(h.irq());
    size_t count = 0;
    while (h.in(Serial::kLsr) & kLsrDr) {
        h.in(Serial::kRbrThr);
        ++count;
    }
    EXPECT_EQ(count, Serial::kInputQueueSize + 1) << "queue plus the one-byte receiver";
}

TEST(Serial, BackpressureLosesNothing)
{
    SerialHarness h;
    int notified = 0;
    h.uart.set_input_space_notifier([&] { ++notified; });
    std::vector<uint8_t> sent;
    for (size_t i = 0; h.uart.wants_input(); ++i) {
        std::vector<uint8_t> chunk(std::min<size_t>(100, h.uart.input_space()));
        for (auto& b : chunk)
            b = static_cast<uint8_t>(sent.size() + (&b - chunk.data()));
        h.uart.enqueue_input(chunk);
        sent.insert(sent.end(), chunk.begin(), chunk.end());
        ASSERT_LT(i, 1000u);
    }
    EXPECT_EQ(sent.size(), Serial::kInputQueueSize + 1);
    EXPECT_EQ(notified, 0);
    std::vector<uint8_t> received;
    received.push_back(h.in(Serial::kRbrThr));
    EXPECT_EQ(notified, 0) << "hysteresis: no wake-up for a single byte";
    EXPECT_TRUE(h.uart.wants_input());
    EXPECT_EQ(h.uart.input_space(), 1u);
    const uint8_t more = 0xee;
    h.uart.enqueue_input(std::span(&more, 1));
    sent.push_back(more);
    EXPECT_FALSE(h.uart.wants_input());
    while (notified == 0 && (h.in(Serial::kLsr) & kLsrDr))
        received.push_back(h.in(Serial::kRbrThr));
    EXPECT_EQ(notified, 1);
    EXPECT_EQ(h.uart.input_space(), Serial::kInputQueueSize / 2) << "woken once half the queue is free";
    while (h.in(Serial::kLsr) & kLsrDr)
        received.push_back(h.in(Serial::kRbrThr));
    EXPECT_EQ(received, sent);
    EXPECT_EQ(h.in(Serial::kLsr) & kLsrOe, 0);
    EXPECT_EQ(notified, 1);
}

TEST(Serial, ConcurrentHostInputAndGuestReads)
{
    // The event loop and a vCPU on different threads: with backpressure respected, every byte
    // arrives once and in order, whatever the interleaving.
    SerialHarness h;
    h.out(Serial::kIirFcr, 0x01);
    constexpr size_t kTotal = 20000;
    std::thread producer([&] {
        size_t next = 0;
        while (next < kTotal) {
            std::vector<uint8_t> chunk(std::min(h.uart.input_space(), std::min<size_t>(kTotal - next, 300)));
            for (auto& b : chunk)
                b = static_cast<uint8_t>(next++ * 7);
            if (chunk.empty())
                std::this_thread::yield();
            else
                h.uart.enqueue_input(chunk);
        }
    });
    size_t received = 0;
    bool in_order = true;
    while (received < kTotal) {
        if (h.in(Serial::kLsr) & kLsrDr) {
            in_order = in_order && h.in(Serial::kRbrThr) == static_cast<uint8_t>(received * 7);
            ++received;
        } else {
            std::this_thread::yield();
        }
    }
    producer.join();
    EXPECT_TRUE(in_order);
    EXPECT_EQ(h.in(Serial::kLsr) & kLsrOe, 0);
}

TEST(Serial, ReadOnlyRegistersIgnoreWrites)
{
    SerialHarness h;
    h.out(Serial::kLsr, 0xff);
    h.out(Serial::kMsr, 0x00);
    EXPECT_EQ(h.in(Serial::kLsr), kLsrThre | kLsrTemt);
    EXPECT_EQ(h.in(Serial::kMsr), 0xb0);
    uint8_t beyond = 0;
    h.uart.read(8, std::span(&beyond, 1));
    EXPECT_EQ(beyond, 0xff);
}

namespace {

// Runs the same guest/host activity and returns everything observable.
std::vector<int> exercise(SerialHarness& h)
{
    std::vector<int> seen;
    const size_t levels_before = h.levels.size();
    const size_t output_before = h.output.size();
    h.input("later");
    for (int i = 0; i < 8; ++i) {
        for (uint64_t r = 0; r < Serial::kRegisterCount; ++r)
            seen.push_back(h.in(r));
    }
    h.out(Serial::kIer, 0x0f);
    h.out(Serial::kRbrThr, 'Q');
    h.out(Serial::kMcr, 0x03);
    for (uint64_t r = 0; r < Serial::kRegisterCount; ++r)
        seen.push_back(h.in(r));
    seen.push_back(h.irq());
    seen.push_back(static_cast<int>(h.uart.input_space()));
    seen.push_back(-1);
    seen.insert(seen.end(), h.levels.begin() + static_cast<std::ptrdiff_t>(levels_before), h.levels.end());
    seen.push_back(-2);
    seen.insert(seen.end(), h.output.begin() + static_cast<std::ptrdiff_t>(output_before), h.output.end());
    return seen;
}

} // namespace

TEST(Serial, SaveRestoreIdenticalBehaviour)
{
    SerialHarness a;
    a.out(Serial::kLcr, 0x83);
    a.out(Serial::kRbrThr, 0x03);
    a.out(Serial::kIer, 0x00);
    a.out(Serial::kLcr, 0x1b);
    a.out(Serial::kIirFcr, 0x81); // FIFO, trigger 8
    a.out(Serial::kScr, 0x77);
    a.out(Serial::kMcr, 0x10);
    a.out(Serial::kRbrThr, 'L'); // looped back into the FIFO
    a.out(Serial::kMcr, 0x0b);
    a.input("pending input that fills the fifo and the queue");
    a.out(Serial::kIer, 0x05);
    ASSERT_TRUE(a.irq());

    const Serial::State state = a.uart.save();
    SerialHarness b;
    b.uart.restore(state);
    EXPECT_EQ(b.uart.save(), state);
    ASSERT_FALSE(b.levels.empty());
    EXPECT_TRUE(b.irq()) << "restore drives the line to the restored level";

    EXPECT_EQ(exercise(a), exercise(b));
    EXPECT_EQ(a.uart.save(), b.uart.save());
}
