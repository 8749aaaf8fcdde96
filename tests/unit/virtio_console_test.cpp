#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "devices/virtio/console.h"
#include "memory/guest_memory.h"

using namespace vessel;
using namespace vessel::virtio;

namespace {

constexpr uint16_t kRingSize = 16;
constexpr uint64_t kRamSize = 16 << 20;

// The driver's side of one split virtqueue laid out in guest memory (desc table, avail ring,
// used ring in three pages), enough to post chains and read back the used ring.
class DriverRing {
public:
    struct Buf {
        uint64_t gpa;
        uint32_t len;
        bool writable;
    };
    struct Used {
        uint32_t id;
        uint32_t len;
    };

    DriverRing(GuestMemory& memory, uint64_t base)
        : m_memory(&memory)
        , m_base(base)
    {
    }

    uint64_t desc() const { return m_base; }
    uint64_t avail() const { return m_base + 0x1000; }
    uint64_t used() const { return m_base + 0x2000; }

    void bind(Queue& q) const
    {
        q.set_size(kRingSize);
        q.set_desc_addr(desc());
        q.set_avail_addr(avail());
        q.set_used_addr(used());
        q.set_ready(true);
    }

    // Writes the chain's descriptors and publishes its head; returns the head.
    uint16_t post(const std::vector<Buf>& bufs)
    {
        uint16_t head = m_next_desc;
        for (size_t i = 0; i < bufs.size(); ++i) {
            uint16_t index = static_cast<uint16_t>((m_next_desc + i) % kRingSize);
            uint16_t flags = (bufs[i].writable ? 2 : 0) | (i + 1 < bufs.size() ? 1 : 0);
            uint16_t next = static_cast<uint16_t>((index + 1) % kRingSize);
            write_desc(index, bufs[i].gpa, bufs[i].len, flags, next);
        }
        m_next_desc = static_cast<uint16_t>((m_next_desc + bufs.size()) % kRingSize);
        publish(head);
        return head;
    }
    void write_desc(uint16_t index, uint64_t gpa, uint32_t len, uint16_t flags, uint16_t next)
    {
        uint64_t at = desc() + 16ULL * index;
        ASSERT_TRUE(m_memory->write_obj(at, gpa).ok());
        ASSERT_TRUE(m_memory->write_obj(at + 8, len).ok());
        ASSERT_TRUE(m_memory->write_obj(at + 12, flags).ok());
        ASSERT_TRUE(m_memory->write_obj(at + 14, next).ok());
    }
    void publish(uint16_t head)
    {
        ASSERT_TRUE(m_memory->write_obj<uint16_t>(avail() + 4 + 2ULL * (m_avail_idx % kRingSize), head).ok());
        ++m_avail_idx;
        ASSERT_TRUE(m_memory->write_obj<uint16_t>(avail() + 2, m_avail_idx).ok());
    }
    uint16_t used_idx() const { return m_memory->read_obj<uint16_t>(used() + 2).value(); }
    Used used_elem(uint16_t i) const
    {
        uint64_t at = used() + 4 + 8ULL * (i % kRingSize);
        return { m_memory->read_obj<uint32_t>(at).value(), m_memory->read_obj<uint32_t>(at + 4).value() };
    }

private:
    GuestMemory* m_memory;
    uint64_t m_base;
    uint16_t m_next_desc { 0 };
    uint16_t m_avail_idx { 0 };
};

class RecordingInterrupt final : public VirtioInterrupt {
public:
    void signal_queue(uint16_t queue) override { ++queue_signals[queue]; }
    void signal_config() override { ++config_signals; }
    void device_error(std::string_view why) override
    {
        ++errors;
        std::lock_guard lock(mutex);
        last_error = std::string(why);
    }
    std::atomic<int> queue_signals[4] {};
    std::atomic<int> config_signals { 0 };
    std::atomic<int> errors { 0 };
    std::mutex mutex;
    std::string last_error;
};

constexpr uint64_t kData = 0x100000; // buffers from 1 MiB up

// A console device on 16 MiB of guest RAM (the minimum) with both queues laid out, and its output captured. The
// sink can be held closed (gate) to model a stdout that does not keep up.
class ConsoleHarness {
public:
    ConsoleHarness()
        : memory(GuestMemory::create(kRamSize).release_value())
        , rx(memory, 0x10000)
        , tx(memory, 0x20000)
        , console([this](std::span<const uint8_t> bytes) { sink(bytes); })
    {
        console.set_input_space_notifier([this] { ++space_notifications; });
    }

    void activate(bool expect_ok = true)
    {
        queues.clear();
        queues.emplace_back(kRingSize);
        queues.emplace_back(kRingSize);
        for (auto& q : queues)
            q.reset();
        rx.bind(queues[0]);
        tx.bind(queues[1]);
        for (auto& q : queues)
            ASSERT_TRUE(q.activate(memory, kFVersion1).ok());
        ActivateContext ctx;
        ctx.memory = &memory;
        ctx.interrupt = &interrupt;
        ctx.features = kFVersion1;
        ctx.queues = std::span<Queue>(queues);
        EXPECT_EQ(console.activate(ctx).ok(), expect_ok);
    }

    void put(uint64_t gpa, std::string_view text)
    {
        ASSERT_TRUE(memory.write(gpa, std::span(reinterpret_cast<const uint8_t*>(text.data()), text.size())).ok());
    }
    std::string get(uint64_t gpa, size_t len)
    {
        std::string s(len, '\0');
        EXPECT_TRUE(memory.read(gpa, std::span(reinterpret_cast<uint8_t*>(s.data()), len)).ok());
        return s;
    }
    void input(std::string_view text)
    {
        console.enqueue_input(std::span(reinterpret_cast<const uint8_t*>(text.data()), text.size()));
    }
    std::string output()
    {
        std::lock_guard lock(sink_mutex);
        return std::string(captured.begin(), captured.end());
    }

    // Holds the sink closed: the writer thread blocks in it until open_gate().
    void close_gate()
    {
        std::lock_guard lock(sink_mutex);
        gate_open = false;
    }
    void open_gate()
    {
        {
            std::lock_guard lock(sink_mutex);
            gate_open = true;
        }
        sink_cv.notify_all();
    }
    void wait_in_sink()
    {
        std::unique_lock lock(sink_mutex);
        ASSERT_TRUE(sink_cv.wait_for(lock, std::chrono::seconds(10), [&] { return sink_waiting; }));
    }

    GuestMemory memory;
    DriverRing rx, tx;
    std::vector<Queue> queues;
    RecordingInterrupt interrupt;
    std::atomic<int> space_notifications { 0 };
    ConsoleDevice console; // last: its writer thread calls sink() until it is destroyed

private:
    void sink(std::span<const uint8_t> bytes)
    {
        std::unique_lock lock(sink_mutex);
        sink_waiting = true;
        sink_cv.notify_all();
        sink_cv.wait(lock, [&] { return gate_open; });
        sink_waiting = false;
        captured.insert(captured.end(), bytes.begin(), bytes.end());
    }

    std::mutex sink_mutex;
    std::condition_variable sink_cv;
    bool gate_open { true };
    bool sink_waiting { false };
    std::vector<uint8_t> captured;
};

} // namespace

TEST(VirtioConsole, DeviceShape)
{
    ConsoleHarness h;
    EXPECT_EQ(h.console.type(), DeviceType::Console);
    EXPECT_EQ(h.console.queue_max_sizes().size(), 2u);
    EXPECT_EQ(h.console.features(), 0u); // no F_SIZE, MULTIPORT or EMERG_WRITE
    uint8_t config[ConsoleDevice::kConfigSize];
    std::memset(config, 0xff, sizeof(config));
    h.console.read_config(0, config);
    for (uint8_t b : config)
        EXPECT_EQ(b, 0);
}

TEST(VirtioConsole, TransmitGoesToTheSink)
{
    ConsoleHarness h;
    h.activate();
    h.put(kData, "hello, ");
    h.put(kData + 0x1000, "world\n");
    h.tx.post({ { kData, 7, false }, { kData + 0x1000, 6, false } });
    h.put(kData + 0x2000, "second");
    h.tx.post({ { kData + 0x2000, 6, false } });
    h.console.notify(ConsoleDevice::kTransmitQueue);
    h.console.flush_output();
    EXPECT_EQ(h.output(), "hello, world\nsecond");
    ASSERT_EQ(h.tx.used_idx(), 2);
    EXPECT_EQ(h.tx.used_elem(0).id, 0u);
    EXPECT_EQ(h.tx.used_elem(0).len, 0u); // the device writes nothing into a transmit buffer
    EXPECT_EQ(h.tx.used_elem(1).id, 2u);
    EXPECT_EQ(h.interrupt.queue_signals[1].load(), 1);
    EXPECT_EQ(h.console.counters().tx_bytes, 19u);
}

TEST(VirtioConsole, TransmitBeforeDriverOkIsTakenAtActivation)
{
    ConsoleHarness h;
    h.put(kData, "early");
    h.tx.post({ { kData, 5, false } });
    h.activate();
    h.console.flush_output();
    EXPECT_EQ(h.output(), "early");
}

TEST(VirtioConsole, ReceiveFillsPostedBuffers)
{
    ConsoleHarness h;
    h.activate();
    h.rx.post({ { kData, 8, true } });
    h.rx.post({ { kData + 0x1000, 8, true } });
    h.rx.post({ { kData + 0x2000, 8, true } });
    h.console.notify(ConsoleDevice::kReceiveQueue); // nothing to deliver yet
    EXPECT_EQ(h.rx.used_idx(), 0);
    h.input("0123456789AB");
    ASSERT_EQ(h.rx.used_idx(), 2);
    EXPECT_EQ(h.rx.used_elem(0).len, 8u);
    EXPECT_EQ(h.rx.used_elem(1).len, 4u);
    EXPECT_EQ(h.get(kData, 8), "01234567");
    EXPECT_EQ(h.get(kData + 0x1000, 4), "89AB");
    EXPECT_GE(h.interrupt.queue_signals[0].load(), 1);
    // The third buffer waits for more input.
    h.input("z");
    ASSERT_EQ(h.rx.used_idx(), 3);
    EXPECT_EQ(h.get(kData + 0x2000, 1), "z");
    EXPECT_EQ(h.console.counters().rx_bytes, 13u);
}

TEST(VirtioConsole, InputWaitsForBuffers)
{
    ConsoleHarness h;
    h.input("before the driver"); // queued host-side while the device is not active
    h.activate();
    EXPECT_EQ(h.console.input_space(), ConsoleDevice::kInputQueueSize - 17);
    // A buffer spread over two segments.
    h.rx.post({ { kData, 10, true }, { kData + 0x1000, 100, true } });
    h.console.notify(ConsoleDevice::kReceiveQueue);
    ASSERT_EQ(h.rx.used_idx(), 1);
    EXPECT_EQ(h.rx.used_elem(0).len, 17u);
    EXPECT_EQ(h.get(kData, 10) + h.get(kData + 0x1000, 7), "before the driver");
    EXPECT_EQ(h.console.input_space(), ConsoleDevice::kInputQueueSize);
}

TEST(VirtioConsole, InputBackPressure)
{
    ConsoleHarness h;
    h.activate();
    EXPECT_TRUE(h.console.wants_input());
    std::string big(ConsoleDevice::kInputQueueSize + 100, 'x');
    h.input(big);
    EXPECT_FALSE(h.console.wants_input());
    EXPECT_EQ(h.console.input_space(), 0u);
    EXPECT_EQ(h.console.counters().input_dropped, 100u);
    EXPECT_EQ(h.space_notifications.load(), 0);
    // The guest takes 1 KiB: not yet half free, no notification.
    h.rx.post({ { kData, 1024, true } });
    h.console.notify(ConsoleDevice::kReceiveQueue);
    EXPECT_EQ(h.space_notifications.load(), 0);
    EXPECT_TRUE(h.console.wants_input());
    // Another 1 KiB: half free, the event loop is told to read stdin again (once).
    h.rx.post({ { kData + 0x1000, 1024, true } });
    h.console.notify(ConsoleDevice::kReceiveQueue);
    EXPECT_EQ(h.space_notifications.load(), 1);
    h.rx.post({ { kData + 0x2000, 1024, true } });
    h.console.notify(ConsoleDevice::kReceiveQueue);
    EXPECT_EQ(h.space_notifications.load(), 1);
    EXPECT_EQ(h.console.input_space(), 3072u);
}

TEST(VirtioConsole, OutputBackPressureLeavesChainsInTheRing)
{
    ConsoleHarness h;
    h.activate();
    constexpr uint32_t kBig = 60 * 1024;
    std::string a(kBig, 'a'), b(kBig, 'b'), c(10 * 1024, 'c');
    h.put(kData, a);
    h.put(kData + 0x10000, b);
    h.put(kData + 0x20000, c);
    h.close_gate(); // stdout stops taking data
    h.tx.post({ { kData, kBig, false } });
    h.console.notify(ConsoleDevice::kTransmitQueue);
    h.wait_in_sink(); // the writer holds chunk A; the buffer is free again
    h.tx.post({ { kData + 0x10000, kBig, false } });
    h.tx.post({ { kData + 0x20000, 10 * 1024, false } });
    h.console.notify(ConsoleDevice::kTransmitQueue); // B fits; C does not
    EXPECT_EQ(h.tx.used_idx(), 2);
    h.console.notify(ConsoleDevice::kTransmitQueue); // the guest kicks again: still no room
    EXPECT_EQ(h.tx.used_idx(), 2);
    h.open_gate();
    h.console.flush_output();
    EXPECT_EQ(h.tx.used_idx(), 3); // the writer thread resumed the queue
    EXPECT_EQ(h.output(), a + b + c);
    EXPECT_EQ(h.console.counters().tx_discarded_bytes, 0u);
}

TEST(VirtioConsole, OversizedTransmitChainIsTruncated)
{
    ConsoleHarness h;
    h.activate();
    constexpr uint32_t kLen = ConsoleDevice::kOutputBufferSize + 100;
    std::string data(kLen, 'q');
    h.put(kData, data);
    h.tx.post({ { kData, kLen, false } });
    h.console.notify(ConsoleDevice::kTransmitQueue);
    h.console.flush_output();
    EXPECT_EQ(h.output().size(), ConsoleDevice::kOutputBufferSize);
    EXPECT_EQ(h.console.counters().tx_discarded_bytes, 100u);
    EXPECT_EQ(h.tx.used_idx(), 1);
}

TEST(VirtioConsole, ShutdownFlushesOutput)
{
    ConsoleHarness h;
    h.activate();
    h.put(kData, "last words");
    h.tx.post({ { kData, 10, false } });
    h.console.notify(ConsoleDevice::kTransmitQueue);
    h.console.shutdown();
    EXPECT_EQ(h.output(), "last words");
    // Nothing is taken from the queues after shutdown.
    h.tx.post({ { kData, 10, false } });
    h.console.notify(ConsoleDevice::kTransmitQueue);
    EXPECT_EQ(h.tx.used_idx(), 1);
}

TEST(VirtioConsole, MalformedTransmitChainStopsTheDevice)
{
    ConsoleHarness h;
    h.activate();
    h.tx.post({ { 0xfffff000, 64, false } }); // outside the 16 MiB of RAM
    h.console.notify(ConsoleDevice::kTransmitQueue);
    EXPECT_EQ(h.interrupt.errors.load(), 1);
    EXPECT_EQ(h.tx.used_idx(), 0);
    // Stopped: input is queued, not delivered, and no second error is raised.
    h.rx.post({ { kData, 8, true } });
    h.input("abc");
    h.console.notify(ConsoleDevice::kReceiveQueue);
    EXPECT_EQ(h.rx.used_idx(), 0);
    EXPECT_EQ(h.interrupt.errors.load(), 1);
    // A reset and a fresh activation bring it back; the queued input is delivered.
    h.console.reset();
    h.rx = DriverRing(h.memory, 0x30000);
    h.tx = DriverRing(h.memory, 0x40000);
    h.rx.post({ { kData, 8, true } });
    h.activate();
    ASSERT_EQ(h.rx.used_idx(), 1);
    EXPECT_EQ(h.get(kData, 3), "abc");
}

TEST(VirtioConsole, MalformedReceiveChainsAreErrors)
{
    struct Case {
        const char* what;
        std::function<void(DriverRing&)> post;
    };
    std::vector<Case> cases {
        { "readable after writable",
            [](DriverRing& r) {
                r.post({ { kData, 8, true }, { kData + 0x1000, 8, false } });
            } },
        { "buffer crossing the end of RAM",
            [](DriverRing& r) {
                r.post({ { kRamSize - 4, 8, true } });
            } },
        { "descriptor loop",
            [](DriverRing& r) {
                r.write_desc(0, kData, 8, 2 | 1, 1);
                r.write_desc(1, kData + 8, 8, 2 | 1, 0);
                r.publish(0);
            } },
        { "head beyond the ring", [](DriverRing& r) { r.publish(kRingSize + 3); } },
    };
    for (auto& c : cases) {
        SCOPED_TRACE(c.what);
        ConsoleHarness h;
        h.activate();
        c.post(h.rx);
        h.input("data");
        EXPECT_EQ(h.interrupt.errors.load(), 1);
        EXPECT_EQ(h.rx.used_idx(), 0);
    }
}

TEST(VirtioConsole, ReceiveBufferWithoutWritableSpaceComesBackEmpty)
{
    ConsoleHarness h;
    h.activate();
    h.rx.post({ { kData, 8, false } });
    h.rx.post({ { kData + 0x1000, 8, true } });
    h.input("hi");
    ASSERT_EQ(h.rx.used_idx(), 2);
    EXPECT_EQ(h.rx.used_elem(0).len, 0u);
    EXPECT_EQ(h.rx.used_elem(1).len, 2u);
    EXPECT_EQ(h.get(kData + 0x1000, 2), "hi");
    EXPECT_EQ(h.interrupt.errors.load(), 0);
}

TEST(VirtioConsole, ActivationNeedsBothQueues)
{
    ConsoleHarness h;
    std::vector<Queue> queues(2, Queue(kRingSize));
    h.rx.bind(queues[0]);
    ASSERT_TRUE(queues[0].activate(h.memory, kFVersion1).ok());
    ActivateContext ctx;
    ctx.memory = &h.memory;
    ctx.interrupt = &h.interrupt;
    ctx.queues = std::span<Queue>(queues);
    EXPECT_FALSE(h.console.activate(ctx).ok());
}

TEST(VirtioConsole, InputFromAnotherThreadWhileTheGuestNotifies)
{
    // The event loop enqueues while a vCPU posts buffers and notifies: every byte arrives once,
    // in order (run under TSan/ASan to check the locking).
    ConsoleHarness h;
    h.activate();
    constexpr int kBytes = 2000;
    std::thread feeder([&] {
        for (int i = 0; i < kBytes; ++i) {
            while (!h.console.wants_input())
                std::this_thread::yield();
            char ch = static_cast<char>('a' + i % 26);
            h.console.enqueue_input(std::span(reinterpret_cast<const uint8_t*>(&ch), 1));
        }
    });
    std::string received;
    uint16_t seen = 0;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (received.size() < static_cast<size_t>(kBytes) && std::chrono::steady_clock::now() < deadline) {
        // One buffer at a time (the ring holds 16 descriptors), reused once it is back.
        uint64_t buf = kData + 0x100ULL * (seen % kRingSize);
        h.rx.post({ { buf, 64, true } });
        h.console.notify(ConsoleDevice::kReceiveQueue);
        while (h.rx.used_idx() == seen && std::chrono::steady_clock::now() < deadline)
            std::this_thread::yield();
        auto used = h.rx.used_elem(seen);
        received += h.get(buf, used.len);
        ++seen;
    }
    feeder.join();
    ASSERT_EQ(received.size(), static_cast<size_t>(kBytes));
    for (int i = 0; i < kBytes; ++i)
        ASSERT_EQ(received[i], static_cast<char>('a' + i % 26)) << "at " << i;
}
