// VM pause/resume of the virtio devices that work on the caller's thread (console, balloon, rng)
// and of the virtio-mmio transport that passes pause()/resume() on. A paused device takes nothing
// from its queues and writes no guest memory, whoever calls it (a late ioeventfd notification from
// the event loop, host input, the API's balloon requests, the console's writer thread); resume()
// does what arrived meanwhile; work in progress when pause() is called finishes before it returns.
// The devices with I/O threads have their own files (virtio_pause_{blk,net,vsock}_test.cpp).
#include <gtest/gtest.h>

#include <unistd.h>

#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "devices/virtio/balloon.h"
#include "devices/virtio/console.h"
#include "devices/virtio/mmio.h"
#include "devices/virtio/rng.h"
#include "memory/guest_memory.h"
#include "virtio_pause_test_support.h"
#include "virtio_test_support.h"

using namespace vessel;
using namespace vessel::virtio;
using namespace vessel::pause_test;

namespace {

constexpr uint64_t kRamBytes = 16ULL << 20;
constexpr uint16_t kRingSize = 16;
constexpr uint64_t kData = 0x100000;
constexpr uint64_t kGatePage = 0xa00000; // left untouched for FaultGate

std::span<const uint8_t> bytes(std::string_view s)
{
    return { reinterpret_cast<const uint8_t*>(s.data()), s.size() };
}

// Activates `device` directly on `rings` (one per queue) with VERSION_1 and `features`.
void activate(VirtioDevice& device, GuestMemory& memory, std::vector<Ring*> rings, std::vector<Queue>& queues,
    VirtioInterrupt& irq, uint64_t features = 0)
{
    queues.assign(rings.size(), Queue(kRingSize));
    for (size_t i = 0; i < rings.size(); ++i) {
        rings[i]->configure(queues[i]);
        ASSERT_TRUE(queues[i].activate(memory, kFVersion1 | features).ok());
    }
    auto r = virtio_test::activate_device(device, memory, irq, queues, kFVersion1 | features);
    ASSERT_TRUE(r.ok()) << r.error().message();
}

// A console whose output is captured; the sink can be held shut (a stdout that does not keep up).
class ConsoleRig {
public:
    ConsoleRig()
        : memory(GuestMemory::create(kRamBytes).release_value())
        , rx(memory, 0x10000, kRingSize)
        , tx(memory, 0x20000, kRingSize)
        , console([this](std::span<const uint8_t> out) { sink(out); })
    {
        activate(console, memory, { &rx, &tx }, queues, irq);
    }
    ~ConsoleRig() { open_sink(); }

    void put(uint64_t gpa, std::string_view text) { ASSERT_TRUE(memory.write(gpa, bytes(text)).ok()); }
    std::string get(uint64_t gpa, size_t len)
    {
        std::string s(len, '\0');
        EXPECT_TRUE(memory.read(gpa, std::span(reinterpret_cast<uint8_t*>(s.data()), len)).ok());
        return s;
    }
    std::string output()
    {
        std::lock_guard lock(m_sink_mutex);
        return std::string(m_captured.begin(), m_captured.end());
    }
    void shut_sink()
    {
        std::lock_guard lock(m_sink_mutex);
        m_sink_open = false;
    }
    void open_sink()
    {
        {
            std::lock_guard lock(m_sink_mutex);
            m_sink_open = true;
        }
        m_sink_cv.notify_all();
    }
    bool wait_in_sink()
    {
        std::unique_lock lock(m_sink_mutex);
        return m_sink_cv.wait_for(lock, 10s, [&] { return m_in_sink; });
    }

    GuestMemory memory;
    Ring rx, tx;
    std::vector<Queue> queues;
    CountingInterrupt irq;

private:
    void sink(std::span<const uint8_t> out)
    {
        std::unique_lock lock(m_sink_mutex);
        m_in_sink = true;
        m_sink_cv.notify_all();
        m_sink_cv.wait(lock, [&] { return m_sink_open; });
        m_in_sink = false;
        m_captured.insert(m_captured.end(), out.begin(), out.end());
    }

    std::mutex m_sink_mutex;
    std::condition_variable m_sink_cv;
    bool m_sink_open { true };
    bool m_in_sink { false };
    std::vector<uint8_t> m_captured;

public:
    ConsoleDevice console; // last: its writer thread calls sink() until it is destroyed
};

// A balloon on 16 MiB of guest RAM with its three queues.
class BalloonRig {
public:
    BalloonRig()
        : memory(GuestMemory::create(kRamBytes).release_value())
        , inflate(memory, 0x10000, kRingSize)
        , deflate(memory, 0x20000, kRingSize)
        , statsq(memory, 0x30000, kRingSize)
    {
        activate(balloon, memory, { &inflate, &deflate, &statsq }, queues, irq, BalloonDevice::kFStatsVq);
    }

    // Is the memfd page behind `gpa` a hole (released to the host)?
    bool is_hole(uint64_t gpa) const
    {
        for (const MemoryRegion& r : memory.regions())
            if (gpa >= r.guest_base && gpa < r.guest_base + r.size) {
                off_t off = static_cast<off_t>(r.file_offset + (gpa - r.guest_base));
                return ::lseek(memory.fd(), off, SEEK_HOLE) == off;
            }
        ADD_FAILURE() << "no region for " << gpa;
        return false;
    }

    GuestMemory memory;
    Ring inflate, deflate, statsq;
    std::vector<Queue> queues;
    CountingInterrupt irq;
    BalloonDevice balloon;
};

} // namespace

// --- virtio-console ------------------------------------------------------------------------------

TEST(VirtioPauseConsole, TransmitAndHostInputWaitForResume)
{
    ConsoleRig rig;
    rig.put(kData, "before ");
    rig.tx.add({ { kData, 7, false } });
    rig.console.notify(ConsoleDevice::kTransmitQueue);
    rig.console.flush_output();
    EXPECT_EQ(rig.output(), "before ");

    rig.console.pause();
    rig.put(kData + 0x1000, "during");
    rig.tx.add({ { kData + 0x1000, 6, false } });
    rig.rx.add({ { kData + 0x2000, 16, true } });
    RamCopy ram(rig.memory);
    rig.console.notify(ConsoleDevice::kTransmitQueue);
    rig.console.notify(ConsoleDevice::kReceiveQueue);
    rig.console.enqueue_input(bytes("typed")); // the event loop, from stdin
    std::this_thread::sleep_for(kQuiet);
    rig.console.flush_output();
    EXPECT_EQ(rig.output(), "before ") << "a chain was taken while paused";
    EXPECT_EQ(rig.tx.used_idx(), 1);
    EXPECT_EQ(rig.rx.used_idx(), 0) << "input reached the guest while paused";
    EXPECT_EQ(ram.first_change(), std::nullopt) << "a paused console writes no guest memory";
    EXPECT_EQ(rig.console.input_space(), ConsoleDevice::kInputQueueSize - 5) << "input waits on the host side";

    rig.console.resume();
    rig.console.flush_output();
    EXPECT_EQ(rig.output(), "before during");
    EXPECT_EQ(rig.tx.used_idx(), 2);
    ASSERT_EQ(rig.rx.used_idx(), 1);
    EXPECT_EQ(rig.rx.next_used()->len, 5u);
    EXPECT_EQ(rig.get(kData + 0x2000, 5), "typed");
    EXPECT_EQ(rig.console.input_space(), ConsoleDevice::kInputQueueSize);
    EXPECT_GE(rig.irq.queues[ConsoleDevice::kReceiveQueue].load(), 1);
}

TEST(VirtioPauseConsole, WriterThreadLeavesAStalledQueueAloneWhilePaused)
{
    ConsoleRig rig;
    constexpr uint32_t kBig = 60 * 1024;
    std::string a(kBig, 'a'), b(kBig, 'b'), c(10 * 1024, 'c');
    rig.put(kData, a);
    rig.put(kData + 0x10000, b);
    rig.put(kData + 0x20000, c);
    rig.shut_sink();
    rig.tx.add({ { kData, kBig, false } });
    rig.console.notify(ConsoleDevice::kTransmitQueue);
    ASSERT_TRUE(rig.wait_in_sink()); // the writer holds A; the buffer is free again
    rig.tx.add({ { kData + 0x10000, kBig, false } });
    rig.tx.add({ { kData + 0x20000, 10 * 1024, false } });
    rig.console.notify(ConsoleDevice::kTransmitQueue); // B fits, C stalls in the ring
    ASSERT_EQ(rig.tx.used_idx(), 2);

    rig.console.pause();
    RamCopy ram(rig.memory);
    rig.open_sink(); // the writer takes B, and would take C too were the device not paused
    rig.console.flush_output();
    EXPECT_EQ(rig.output(), a + b) << "output already copied out goes on to stdout";
    EXPECT_EQ(rig.tx.used_idx(), 2) << "the writer thread took a chain while paused";
    EXPECT_EQ(ram.first_change(), std::nullopt);

    rig.console.resume();
    rig.console.flush_output();
    EXPECT_EQ(rig.tx.used_idx(), 3);
    EXPECT_EQ(rig.output(), a + b + c);
}

TEST(VirtioPauseConsole, InputInProgressFinishesBeforePauseReturns)
{
    ConsoleRig rig;
    std::optional<Background> input, pauser;
    FaultGate gate(rig.memory, kGatePage);
    if (!gate.error().empty())
        GTEST_SKIP() << "needs userfaultfd: " << gate.error();
    rig.rx.add({ { kGatePage, 16, true } });
    rig.console.notify(ConsoleDevice::kReceiveQueue);
    input.emplace([&] { rig.console.enqueue_input(bytes("typed")); }); // the event loop, from stdin
    ASSERT_TRUE(gate.wait_held()) << "the console did not start delivering input";
    pauser.emplace([&] { rig.console.pause(); });
    std::this_thread::sleep_for(kQuiet);
    EXPECT_FALSE(pauser->done()) << "pause() returned while input was going into the guest";

    gate.release();
    ASSERT_TRUE(wait_until([&] { return pauser->done() && input->done(); }));
    ASSERT_EQ(rig.rx.used_idx(), 1) << "the input in progress is used before pause() returns";
    EXPECT_EQ(rig.rx.next_used()->len, 5u);
    EXPECT_EQ(rig.get(kGatePage, 5), "typed");
    rig.console.resume();
}

TEST(VirtioPauseConsole, PausingIsQuick)
{
    ConsoleRig rig;
    double median = median_pause_ms([&] { rig.console.pause(); }, [&] { rig.console.resume(); });
    EXPECT_LT(median, 5.0);
}

// --- virtio-balloon ------------------------------------------------------------------------------

TEST(VirtioPauseBalloon, QueuesAndHostRequestsWaitForResume)
{
    BalloonRig rig;
    // The guest's statistics buffer, held by the device.
    ASSERT_TRUE(rig.memory.fill(kData + 0x1000, 0, 10).ok());
    rig.statsq.add({ { kData + 0x1000, 10, false } });
    rig.balloon.notify(BalloonDevice::kStatsQueue);
    ASSERT_EQ(rig.balloon.stats().updates, 1u);
    int config_before = rig.irq.config.load();

    rig.balloon.pause();
    constexpr uint64_t kVictim = 0x400000;
    ASSERT_TRUE(rig.memory.fill(kVictim, 0x5a, kPage).ok());
    uint32_t pfn = kVictim / kPage;
    ASSERT_TRUE(rig.memory.write_obj(kData, pfn).ok());
    rig.inflate.add({ { kData, 4, false } });
    RamCopy ram(rig.memory);
    rig.balloon.notify(BalloonDevice::kInflateQueue);
    EXPECT_TRUE(rig.balloon.request_stats()) << "the device holds the buffer: it goes back at resume";
    EXPECT_FALSE(rig.balloon.request_stats()) << "already due";
    rig.balloon.set_target(64 * kPage); // the API thread
    EXPECT_EQ(rig.balloon.target_pages(), 64u);
    std::this_thread::sleep_for(kQuiet);
    EXPECT_EQ(rig.inflate.used_idx(), 0) << "inflated while paused";
    EXPECT_FALSE(rig.is_hole(kVictim)) << "memory released while paused";
    EXPECT_EQ(rig.statsq.used_idx(), 0) << "the statistics buffer went back while paused";
    EXPECT_EQ(rig.irq.config.load(), config_before) << "a configuration interrupt while paused";
    EXPECT_EQ(ram.first_change(), std::nullopt);
    EXPECT_EQ(rig.balloon.counters().inflated_pages, 0u);

    rig.balloon.resume();
    EXPECT_EQ(rig.inflate.used_idx(), 1);
    EXPECT_TRUE(rig.is_hole(kVictim));
    EXPECT_EQ(rig.balloon.counters().inflated_pages, 1u);
    EXPECT_EQ(rig.statsq.used_idx(), 1);
    EXPECT_EQ(rig.irq.config.load(), config_before + 1);
    EXPECT_FALSE(rig.balloon.request_stats()) << "the guest has the buffer now";
}

// In the VM the transport's lock keeps a notification and pause() apart; the device still must not
// let pause() return halfway through a buffer, whoever is processing it.
TEST(VirtioPauseBalloon, InflateInProgressFinishesBeforePauseReturns)
{
    BalloonRig rig;
    std::optional<Background> notifier, pauser;
    FaultGate gate(rig.memory, kGatePage);
    if (!gate.error().empty())
        GTEST_SKIP() << "needs userfaultfd: " << gate.error();
    constexpr uint64_t kVictim = 0x400000;
    ASSERT_TRUE(rig.memory.fill(kVictim, 0x5a, kPage).ok());
    rig.inflate.add({ { kGatePage, 4, false } }); // the PFN array is on the gated page
    notifier.emplace([&] { rig.balloon.notify(BalloonDevice::kInflateQueue); });
    ASSERT_TRUE(gate.wait_held()) << "the balloon did not start reading PFNs";
    pauser.emplace([&] { rig.balloon.pause(); });
    std::this_thread::sleep_for(kQuiet);
    EXPECT_FALSE(pauser->done()) << "pause() returned while an inflate buffer was being processed";

    uint32_t pfn = kVictim / kPage;
    gate.release(std::span(reinterpret_cast<const uint8_t*>(&pfn), 4));
    ASSERT_TRUE(wait_until([&] { return pauser->done() && notifier->done(); }));
    EXPECT_EQ(rig.inflate.used_idx(), 1);
    EXPECT_TRUE(rig.is_hole(kVictim));
    rig.balloon.resume();
}

// --- virtio-rng ----------------------------------------------------------------------------------

TEST(VirtioPauseRng, NotifyWhilePausedIsServedAtResume)
{
    auto memory = GuestMemory::create(kRamBytes).release_value();
    Ring ring(memory, 0x10000, kRingSize);
    std::vector<Queue> queues;
    CountingInterrupt irq;
    RngDevice rng;
    activate(rng, memory, { &ring }, queues, irq);

    rng.pause();
    ASSERT_TRUE(memory.fill(kData, 0, 256).ok());
    ring.add({ { kData, 256, true } });
    RamCopy ram(memory);
    rng.notify(0); // an ioeventfd the event loop served after the vCPUs parked
    EXPECT_EQ(ring.used_idx(), 0);
    EXPECT_EQ(ram.first_change(), std::nullopt);
    EXPECT_EQ(rng.bytes_served(), 0u);

    rng.resume();
    ASSERT_EQ(ring.used_idx(), 1);
    EXPECT_EQ(ring.next_used()->len, 256u);
    EXPECT_EQ(rng.bytes_served(), 256u);
    std::vector<uint8_t> got(256);
    ASSERT_TRUE(memory.read(kData, got).ok());
    EXPECT_NE(got, std::vector<uint8_t>(256)) << "not filled";
}

// --- the transport --------------------------------------------------------------------------------

TEST(VirtioPauseMmio, PausePassesToAnActivatedDeviceOnly)
{
    auto memory = GuestMemory::create(kRamBytes).release_value();
    auto rng = std::make_shared<RngDevice>();
    CountingIrq irq;
    MmioTransport transport(rng, memory, irq.line());
    virtio_test::MmioDriver driver(transport);
    Ring ring(memory, 0x10000, kRingSize);

    transport.pause(); // not activated: nothing to pause
    transport.resume();
    ASSERT_TRUE(driver.negotiate(kFVersion1));
    ring.configure(transport, 0);
    driver.driver_ok();
    ASSERT_EQ(driver.status() & (kStatusDriverOk | kStatusNeedsReset), kStatusDriverOk);

    transport.pause();
    transport.pause(); // twice is once
    ring.add({ { kData, 64, true } });
    driver.notify(0); // the register write reaches the paused device
    EXPECT_EQ(ring.used_idx(), 0);
    EXPECT_EQ(irq.edges.load(), 0);
    transport.resume();
    EXPECT_EQ(ring.used_idx(), 1);
    EXPECT_EQ(irq.edges.load(), 1);
    transport.resume(); // not paused: nothing

    // A reset while paused (the VM's teardown) leaves nothing paused: a new activation works at once.
    transport.pause();
    driver.write(mmio_reg::kStatus, 0);
    Ring again(memory, 0x20000, kRingSize);
    ASSERT_TRUE(driver.negotiate(kFVersion1));
    again.configure(transport, 0);
    driver.driver_ok();
    again.add({ { kData, 64, true } });
    driver.notify(0);
    EXPECT_EQ(again.used_idx(), 1);
    transport.resume();
    EXPECT_EQ(again.used_idx(), 1);
}
