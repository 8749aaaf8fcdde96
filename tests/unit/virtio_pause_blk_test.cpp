// VM pause/resume of virtio-blk, in each way of executing I/O (io_uring thread, synchronous thread,
// inline): requests queued while paused wait for resume(), a request in flight completes before
// pause() returns, pausing over and over while requests flow (through the virtio-mmio transport,
// as the VM does it) loses and repeats nothing, and pausing an idle disk is quick.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "devices/virtio/blk.h"
#include "devices/virtio/mmio.h"
#include "memory/guest_memory.h"
#include "virtio_pause_test_support.h"
#include "virtio_test_support.h"
#include "vmm/vm_config.h"

using namespace vessel;
using namespace vessel::virtio;
using namespace vessel::virtio::blk;
using namespace vessel::pause_test;
using IoMode = BlkDevice::IoMode;

namespace {

constexpr uint64_t kRamBytes = 16ULL << 20;
constexpr uint64_t kRingBase = 0x10000;
constexpr uint16_t kRingSize = 128;
constexpr uint64_t kBufBase = 0x100000; // request buffers, handed out round-robin
constexpr uint64_t kBufBytes = 6ULL << 20;
constexpr uint64_t kGatePage = 0xa00000; // left untouched for FaultGate
constexpr uint64_t kImageBytes = 1 << 20;

uint8_t image_byte(uint64_t offset)
{
    return static_cast<uint8_t>(offset * 7 + offset / 512 + 1);
}

std::vector<uint8_t> image_bytes(uint64_t offset, size_t n)
{
    std::vector<uint8_t> v(n);
    for (size_t i = 0; i < n; ++i)
        v[i] = image_byte(offset + i);
    return v;
}

std::vector<uint8_t> stamp(size_t n, uint32_t seed)
{
    std::vector<uint8_t> v(n);
    for (size_t i = 0; i < n; ++i)
        v[i] = static_cast<uint8_t>(seed * 131 + i * 13 + i / 256 + (seed >> 8));
    return v;
}

// A raw image filled with image_byte(), in a fresh temporary directory.
class TempImage {
public:
    TempImage()
    {
        std::string tmpl
            = (std::getenv("TMPDIR") ? std::string(std::getenv("TMPDIR")) : "/tmp") + "/vessel-pause-XXXXXX";
        m_dir = ::mkdtemp(tmpl.data()) ? tmpl : "";
        path = m_dir + "/disk.img";
        auto data = image_bytes(0, kImageBytes);
        std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(data.data()), kImageBytes);
    }
    ~TempImage()
    {
        ::unlink(path.c_str());
        ::rmdir(m_dir.c_str());
    }
    std::vector<uint8_t> read(uint64_t offset, size_t n) const
    {
        std::vector<uint8_t> out(n);
        int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
        EXPECT_EQ(::pread(fd, out.data(), n, static_cast<off_t>(offset)), static_cast<ssize_t>(n));
        ::close(fd);
        return out;
    }
    DiskConfig disk() const
    {
        DiskConfig d;
        d.path = path;
        return d;
    }

    std::string path;

private:
    std::string m_dir;
};

struct Req {
    uint16_t head { 0 };
    uint32_t type { 0 };
    uint64_t data { 0 };
    uint32_t len { 0 };
    uint64_t status { 0 };
};

// Builds requests in guest RAM on a Ring: header | data | status.
class Requests {
public:
    Requests(GuestMemory& memory, Ring& ring)
        : m_memory(memory)
        , m_ring(ring)
    {
    }

    // A read into `data_gpa` if given (a FaultGate page), else into a buffer of its own.
    Req read(uint64_t sector, uint32_t len, std::optional<uint64_t> data_gpa = {})
    {
        return add(kTIn, sector, len, data_gpa.value_or(alloc(len)));
    }
    Req write(uint64_t sector, const std::vector<uint8_t>& bytes)
    {
        uint64_t data = alloc(static_cast<uint32_t>(bytes.size()));
        EXPECT_TRUE(m_memory.write(data, bytes).ok());
        return add(kTOut, sector, static_cast<uint32_t>(bytes.size()), data);
    }
    uint8_t status(const Req& r) const { return m_memory.read_obj<uint8_t>(r.status).value(); }
    std::vector<uint8_t> data(const Req& r) const
    {
        std::vector<uint8_t> out(r.len);
        EXPECT_TRUE(m_memory.read(r.data, out).ok());
        return out;
    }

private:
    uint64_t alloc(uint32_t len)
    {
        uint64_t size = (len + 511) & ~511ULL;
        if (m_next + size > kBufBase + kBufBytes)
            m_next = kBufBase;
        uint64_t at = m_next;
        m_next += size;
        return at;
    }
    Req add(uint32_t type, uint64_t sector, uint32_t len, uint64_t data)
    {
        uint64_t hdr = alloc(kHeaderSize);
        uint8_t h[kHeaderSize] = {};
        std::memcpy(h, &type, 4);
        std::memcpy(h + 8, &sector, 8);
        EXPECT_TRUE(m_memory.write(hdr, h).ok());
        uint64_t status = alloc(1);
        EXPECT_TRUE(m_memory.write_obj<uint8_t>(status, 0xee).ok()); // no status value
        Req r { 0, type, data, len, status };
        r.head = m_ring.add({ { hdr, kHeaderSize, false }, { data, len, type == kTIn }, { status, 1, true } });
        return r;
    }

    GuestMemory& m_memory;
    Ring& m_ring;
    uint64_t m_next { kBufBase };
};

// A disk activated directly (no transport) on a Ring.
class BlkRig {
public:
    explicit BlkRig(IoMode mode)
        : memory(GuestMemory::create(kRamBytes).release_value())
        , ring(memory, kRingBase, kRingSize)
        , requests(memory, ring)
    {
        auto opened = BlkDevice::open(image.disk(), mode);
        if (!opened.ok()) {
            ADD_FAILURE() << opened.error().message();
            return;
        }
        device = opened.release_value();
        ring.configure(queue);
        uint64_t features = kFVersion1 | device->features();
        EXPECT_TRUE(queue.activate(memory, features).ok());
        ActivateContext ctx;
        ctx.memory = &memory;
        ctx.interrupt = &irq;
        ctx.features = features;
        ctx.queues = std::span<Queue>(&queue, 1);
        auto activated = device->activate(ctx);
        EXPECT_TRUE(activated.ok()) << activated.error().message();
    }
    ~BlkRig()
    {
        if (device)
            device->reset();
    }

    TempImage image;
    GuestMemory memory;
    Ring ring;
    Requests requests;
    Queue queue { BlkDevice::kQueueSize };
    CountingInterrupt irq;
    std::unique_ptr<BlkDevice> device;
};

std::string mode_name(const ::testing::TestParamInfo<IoMode>& info)
{
    switch (info.param) {
    case IoMode::Auto: return "IoUring";
    case IoMode::Sync: return "SyncThread";
    case IoMode::Inline: return "Inline";
    }
    return "Unknown";
}

class VirtioPauseBlk : public ::testing::TestWithParam<IoMode> { };
class VirtioPauseBlkThread : public ::testing::TestWithParam<IoMode> { };

} // namespace

TEST_P(VirtioPauseBlk, RequestsQueuedWhilePausedWaitForResume)
{
    BlkRig rig(GetParam());
    ASSERT_TRUE(rig.device);
    EXPECT_EQ(rig.device->using_io_uring(), GetParam() == IoMode::Auto);
    // The device works before the pause.
    Req first = rig.requests.read(4, 512);
    rig.device->notify(0);
    ASSERT_TRUE(rig.ring.wait_used(1));
    EXPECT_EQ(rig.requests.data(first), image_bytes(4 * 512, 512));

    rig.device->pause();
    auto payload = stamp(4096, 7);
    Req w = rig.requests.write(40, payload);
    Req r = rig.requests.read(8, 2048);
    RamCopy ram(rig.memory);
    for (int i = 0; i < 3; ++i) // notifications while paused are remembered, not acted on
        rig.device->notify(0);
    std::this_thread::sleep_for(kQuiet);
    EXPECT_EQ(rig.ring.used_idx(), 1) << "nothing completes while paused";
    EXPECT_EQ(ram.first_change(), std::nullopt) << "a paused disk writes no guest memory";
    EXPECT_EQ(rig.image.read(40 * 512, 4096), image_bytes(40 * 512, 4096)) << "nor the image";
    EXPECT_EQ(rig.device->completed(), 1u);

    rig.device->resume();
    ASSERT_TRUE(rig.ring.wait_used(3));
    EXPECT_EQ(rig.requests.status(w), kSOk);
    EXPECT_EQ(rig.requests.status(r), kSOk);
    EXPECT_EQ(rig.requests.data(r), image_bytes(8 * 512, 2048));
    EXPECT_EQ(rig.image.read(40 * 512, 4096), payload);
    EXPECT_EQ(rig.device->completed(), 3u);
    EXPECT_GE(rig.irq.queues[0].load(), 2) << "completions after resume are signalled";
    EXPECT_EQ(rig.irq.errors.load(), 0);

    // And it keeps working.
    Req again = rig.requests.read(40, 4096);
    rig.device->notify(0);
    ASSERT_TRUE(rig.ring.wait_used(4));
    EXPECT_EQ(rig.requests.data(again), payload);
}

TEST_P(VirtioPauseBlk, ResetWhilePausedAndShutdownAreClean)
{
    BlkRig rig(GetParam());
    ASSERT_TRUE(rig.device);
    rig.device->pause();
    rig.requests.read(0, 512);
    rig.device->notify(0);
    rig.device->reset(); // the driver would only do this after resume; the VM's teardown does it paused
    rig.device->resume(); // after reset: nothing to resume
    std::this_thread::sleep_for(kQuiet);
    EXPECT_EQ(rig.ring.used_idx(), 0);
    EXPECT_EQ(rig.device->completed(), 0u);
}

TEST_P(VirtioPauseBlkThread, RequestInFlightCompletesBeforePauseReturns)
{
    BlkRig rig(GetParam());
    ASSERT_TRUE(rig.device);
    std::optional<Background> pauser; // declared before the gate: the gate lets it go first
    FaultGate gate(rig.memory, kGatePage);
    if (!gate.error().empty())
        GTEST_SKIP() << "needs userfaultfd: " << gate.error();

    // The read's data goes to the gated page: the I/O is held there, mid-request.
    Req held = rig.requests.read(16, 4096, kGatePage);
    rig.device->notify(0);
    ASSERT_TRUE(gate.wait_held()) << "the device did not start the read";
    // More requests arrive while the first is held; the device may take them or leave them.
    Req later = rig.requests.read(24, 1024);
    rig.device->notify(0);

    pauser.emplace([&] { rig.device->pause(); });
    std::this_thread::sleep_for(kQuiet);
    EXPECT_FALSE(pauser->done()) << "pause() returned with a request in flight";
    EXPECT_EQ(rig.requests.status(held), 0xee);

    gate.release();
    ASSERT_TRUE(wait_until([&] { return pauser->done(); })) << "pause() did not return after the request finished";
    pauser->join();
    // Everything the device took is used (and signalled); what it did not take is untouched.
    uint16_t used = rig.ring.used_idx();
    EXPECT_EQ(rig.queue.next_avail(), used) << "taken but not completed";
    EXPECT_GE(used, 1);
    EXPECT_EQ(rig.requests.status(held), kSOk);
    EXPECT_EQ(rig.requests.data(held), image_bytes(16 * 512, 4096));
    EXPECT_GE(rig.irq.queues[0].load(), 1);
    RamCopy ram(rig.memory);
    std::this_thread::sleep_for(kQuiet);
    EXPECT_EQ(ram.first_change(), std::nullopt);
    EXPECT_EQ(rig.ring.used_idx(), used);

    rig.device->resume();
    ASSERT_TRUE(rig.ring.wait_used(2));
    EXPECT_EQ(rig.requests.status(later), kSOk);
    EXPECT_EQ(rig.requests.data(later), image_bytes(24 * 512, 1024));
}

TEST_P(VirtioPauseBlk, PausingAnIdleDiskIsQuick)
{
    BlkRig rig(GetParam());
    ASSERT_TRUE(rig.device);
    double median = median_pause_ms([&] { rig.device->pause(); }, [&] { rig.device->resume(); });
    EXPECT_LT(median, 5.0) << "median pause() of an idle disk, ms";
    // Still serving after all those pauses.
    Req r = rig.requests.read(2, 512);
    rig.device->notify(0);
    ASSERT_TRUE(rig.ring.wait_used(1));
    EXPECT_EQ(rig.requests.data(r), image_bytes(2 * 512, 512));
}

// The VM's way: MmioTransport::pause()/resume() from one thread while a driver thread keeps up to
// 32 requests in flight through the registers (and lets at least one pause by every 50 requests). Writes go to 64 slots
// of 4 KiB (never two in flight to one slot), reads check a slot's last write; every request must come back exactly
// once.
TEST_P(VirtioPauseBlk, PausingOverAndOverWhileRequestsFlowLosesNothing)
{
    TempImage image;
    auto memory = GuestMemory::create(kRamBytes).release_value();
    auto opened = BlkDevice::open(image.disk(), GetParam());
    ASSERT_TRUE(opened.ok()) << opened.error().message();
    std::shared_ptr<BlkDevice> device = opened.release_value();
    CountingIrq irq;
    MmioTransport transport(device, memory, irq.line());
    virtio_test::MmioDriver driver(transport);
    Ring ring(memory, kRingBase, kRingSize);
    Requests requests(memory, ring);
    ASSERT_TRUE(driver.negotiate(kFVersion1 | device->features()));
    ring.configure(transport, 0);
    driver.driver_ok();
    ASSERT_EQ(driver.status() & (kStatusDriverOk | kStatusNeedsReset), kStatusDriverOk);

    constexpr int kRequests = 3000;
    constexpr int kSlots = 64;
    constexpr uint32_t kSlotBytes = 4096;
    std::atomic<int> in_flight { 0 };
    Toggler toggler([&] { transport.pause(); }, [&] { transport.resume(); }, [&] { return ring.used_idx(); },
        [&] { return in_flight.load() > 0; });

    struct Outstanding {
        Req req;
        int slot;
        uint32_t seed; // a write's stamp
    };
    std::vector<std::optional<uint32_t>> slot_seed(kSlots); // the slot's last completed write
    std::vector<bool> slot_busy(kSlots);
    std::map<uint16_t, Outstanding> outstanding; // by head
    int completed = 0;
    auto reap = [&] {
        while (auto u = ring.next_used()) {
            auto it = outstanding.find(u->head);
            if (it == outstanding.end()) {
                ADD_FAILURE() << "used twice, or never submitted: head " << u->head;
                continue;
            }
            const auto& [req, slot, seed] = it->second;
            EXPECT_EQ(requests.status(req), kSOk);
            if (req.type == kTIn) {
                EXPECT_EQ(u->len, req.len + 1);
                std::vector<uint8_t> want = slot_seed[slot] ? stamp(kSlotBytes, *slot_seed[slot])
                                                            : image_bytes(uint64_t(slot) * kSlotBytes, kSlotBytes);
                EXPECT_EQ(requests.data(req), want) << "slot " << slot;
            } else {
                EXPECT_EQ(u->len, 1u);
                slot_seed[slot] = seed;
            }
            slot_busy[slot] = false;
            outstanding.erase(it);
            --in_flight;
            ++completed;
        }
    };
    auto deadline = std::chrono::steady_clock::now() + 60s;
    for (int i = 0; i < kRequests && !HasFailure(); ++i) {
        int slot = i % kSlots;
        while (outstanding.size() >= 32 || slot_busy[slot]) {
            reap();
            ASSERT_LT(std::chrono::steady_clock::now(), deadline)
                << "stuck with " << outstanding.size() << " in flight";
            std::this_thread::yield();
        }
        uint64_t sector = uint64_t(slot) * kSlotBytes / 512;
        uint32_t seed = static_cast<uint32_t>(i + 1);
        Req r = i % 3 == 2 ? requests.read(sector, kSlotBytes) : requests.write(sector, stamp(kSlotBytes, seed));
        slot_busy[slot] = true;
        outstanding.emplace(r.head, Outstanding { r, slot, seed });
        ++in_flight;
        driver.notify(0);
        if (i % 50 == 49) {
            ASSERT_TRUE(toggler.wait_next());
        }
    }
    while (!outstanding.empty() && std::chrono::steady_clock::now() < deadline && !HasFailure()) {
        reap();
        std::this_thread::yield();
    }
    toggler.stop();

    EXPECT_TRUE(outstanding.empty()) << outstanding.size() << " requests never came back";
    EXPECT_EQ(completed, kRequests);
    std::this_thread::sleep_for(kQuiet);
    EXPECT_EQ(ring.used_idx(), ring.avail_idx()) << "more used entries than requests: some came back twice";
    EXPECT_EQ(device->completed(), uint64_t(kRequests));
    EXPECT_EQ(toggler.moved_while_paused(), 0) << "requests completed while the device was paused";
    EXPECT_GE(toggler.busy_pauses(), 20) << "too few pauses hit requests in flight (" << toggler.pauses() << " pauses)";
    EXPECT_GT(irq.edges.load(), 0);
    EXPECT_EQ(driver.status() & kStatusNeedsReset, 0u);
    for (int s = 0; s < kSlots; ++s) {
        ASSERT_TRUE(slot_seed[s]) << s;
        EXPECT_EQ(image.read(uint64_t(s) * kSlotBytes, kSlotBytes), stamp(kSlotBytes, *slot_seed[s])) << "slot " << s;
    }
    std::printf("[          ] %d pauses, %d with requests in flight\n", toggler.pauses(), toggler.busy_pauses());
    transport.shutdown();
}

INSTANTIATE_TEST_SUITE_P(
    Modes, VirtioPauseBlk, ::testing::Values(IoMode::Auto, IoMode::Sync, IoMode::Inline), mode_name);
INSTANTIATE_TEST_SUITE_P(Modes, VirtioPauseBlkThread, ::testing::Values(IoMode::Auto, IoMode::Sync), mode_name);
