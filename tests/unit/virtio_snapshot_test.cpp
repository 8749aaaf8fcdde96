// Snapshots of the virtio-mmio devices (MmioTransport::save_state/restore_state and each device's
// own state): every device type is driven by a driver in guest RAM to a state with indices well
// away from zero and EVENT_IDX negotiated, paused and saved; the state goes through CBOR (as on
// disk) into a device and transport freshly built over a copy of guest RAM, which is left paused
// and, once resumed, serves the guest's next request with the used index carrying on. Restoring
// and saving again gives the same state. Hostile states (rings outside RAM, bad sizes, the wrong
// device, missing fields, features the device does not offer) are refused with an error naming
// what is wrong, and leave the transport fresh.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "devices/virtio/balloon.h"
#include "devices/virtio/blk.h"
#include "devices/virtio/console.h"
#include "devices/virtio/mmio.h"
#include "devices/virtio/net.h"
#include "devices/virtio/rng.h"
#include "devices/virtio/tap.h"
#include "devices/virtio/vsock.h"
#include "memory/guest_memory.h"
#include "mmds/data_store.h"
#include "mmds/stack.h"
#include "mmds/token_authority.h"
#include "virtio_pause_test_support.h"
#include "virtio_snapshot_test_support.h"
#include "vmm/vm_config.h"

using namespace vessel;
using namespace vessel::virtio;
using namespace vessel::snapshot_test;
using pause_test::wait_until;
using Json = nlohmann::json;

namespace {

constexpr uint64_t kRamBytes = 16ULL << 20;
constexpr uint64_t kBase = kFVersion1 | kFRingEventIdx | kFRingIndirectDesc;
constexpr uint16_t kRing = 16;
constexpr uint64_t kRing0 = 0x10000, kRing1 = 0x20000, kRing2 = 0x30000;
constexpr uint64_t kData = 0x100000;
constexpr uint64_t kGatePage = 0xa00000; // never touched but by FaultGate
constexpr auto kQuiet = std::chrono::milliseconds(50);

Json through_cbor(const Json& j)
{
    return Json::from_cbor(Json::to_cbor(j));
}

// Restores `state` (after a trip through CBOR, as from a file) into `to`, which must then save
// the same state.
void restore(Side& to, const Json& state)
{
    auto r = to.transport->restore_state(through_cbor(state));
    ASSERT_TRUE(r.ok()) << r.error().message();
    EXPECT_EQ(to.transport->save_state(), state) << "save -> restore -> save changed the state";
}

std::span<const uint8_t> bytes(std::string_view s)
{
    return { reinterpret_cast<const uint8_t*>(s.data()), s.size() };
}

// A temporary directory (disk images, vsock sockets), removed with what is in it.
class TempDir {
public:
    TempDir()
    {
        std::string tmpl
            = (std::getenv("TMPDIR") ? std::string(std::getenv("TMPDIR")) : "/tmp") + "/vessel-snap-XXXXXX";
        path = ::mkdtemp(tmpl.data()) ? tmpl : "";
        EXPECT_FALSE(path.empty());
    }
    ~TempDir()
    {
        std::error_code ignored;
        std::filesystem::remove_all(path, ignored);
    }
    std::string path;
};

// A driver that negotiates `features`, sets up one ring per queue and (unless told not to) sets
// DRIVER_OK.
void bring_up(Side& side, uint64_t features, std::vector<SnapRing*> rings, bool driver_ok = true)
{
    auto driver = side.driver();
    ASSERT_TRUE(driver.negotiate(features));
    for (size_t i = 0; i < rings.size(); ++i)
        rings[i]->configure(*side.transport, static_cast<uint32_t>(i));
    if (driver_ok)
        driver.driver_ok();
    ASSERT_EQ(driver.status() & kStatusNeedsReset, 0u);
}

// --- rng, and the transport's checks -------------------------------------------------------------

// An rng behind a transport that served `requests` requests, paused.
struct RngMachine {
    explicit RngMachine(int requests)
        : side(GuestMemory::create(kRamBytes).release_value())
        , ring(side.memory, kRing0, kRing)
    {
        side.attach(std::make_shared<RngDevice>());
        bring_up(side, kBase, { &ring });
        for (int i = 0; i < requests; ++i)
            serve(static_cast<uint16_t>(i));
        side.transport->pause();
    }
    void serve(uint16_t i)
    {
        ring.interrupt_at(i);
        ring.add({ { kData + 0x1000ULL * i, 64, true } });
        side.driver().notify(0);
        ASSERT_TRUE(ring.wait_used(static_cast<uint16_t>(i + 1)));
    }
    Side side;
    SnapRing ring;
};

TEST(VirtioSnapshot, RngServesTheNextRequestAfterRestore)
{
    RngMachine a(5);
    EXPECT_EQ(a.side.irq.edges.load(), 5);
    Json state = a.side.transport->save_state();
    EXPECT_EQ(state["device_type"], 4);
    EXPECT_TRUE(state["driver_features"].get<uint64_t>() & kFRingEventIdx);
    EXPECT_EQ(state["queues"][0]["next_avail"], 5);
    EXPECT_EQ(state["queues"][0]["next_used"], 5);
    EXPECT_EQ(state["queues"][0]["signalled_used"], 5);
    EXPECT_EQ(state, a.side.transport->save_state()) << "saving changed something";

    Side b(copy_ram(a.side.memory));
    b.attach(std::make_shared<RngDevice>());
    restore(b, state);
    EXPECT_EQ(b.driver().status(), a.side.driver().status());
    EXPECT_EQ(b.driver().read(mmio_reg::kQueueReady), 1u);
    // Restored paused: a notification waits for resume().
    a.ring.rebind(b.memory);
    a.ring.interrupt_at(5);
    uint16_t head = a.ring.add({ { kData + 0x8000, 48, true } });
    b.driver().notify(0);
    std::this_thread::sleep_for(kQuiet);
    EXPECT_EQ(a.ring.used_idx(), 5);
    b.transport->resume();
    ASSERT_TRUE(a.ring.wait_used(6));
    EXPECT_EQ(a.ring.used(5).id, head);
    EXPECT_EQ(a.ring.used(5).len, 48u);
    EXPECT_EQ(b.irq.edges.load(), 1) << "event idx: the driver asked for an interrupt at entry 5";
    EXPECT_EQ(a.ring.avail_event(), 6) << "the device asks for the next notification";
    // And the one after.
    a.ring.interrupt_at(6);
    a.ring.add({ { kData + 0x9000, 16, true } });
    b.driver().notify(0);
    ASSERT_TRUE(a.ring.wait_used(7));
}

TEST(VirtioSnapshot, TheSavedMachineCanResume)
{
    RngMachine a(3);
    Json state = a.side.transport->save_state();
    a.side.transport->resume();
    a.serve(3);
    EXPECT_EQ(state["queues"][0]["next_avail"], 3);
}

TEST(VirtioSnapshot, RestoresADeviceTheDriverHadNotActivatedYet)
{
    Side a(GuestMemory::create(kRamBytes).release_value());
    SnapRing ring(a.memory, kRing0, kRing);
    a.attach(std::make_shared<RngDevice>());
    bring_up(a, kBase, { &ring }, /*driver_ok=*/false); // the snapshot came mid-probe
    Json state = a.transport->save_state();
    EXPECT_EQ(state["status"], kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk);

    Side b(copy_ram(a.memory));
    b.attach(std::make_shared<RngDevice>());
    restore(b, state);
    ring.rebind(b.memory);
    b.driver().driver_ok(); // the probe goes on
    ASSERT_EQ(b.driver().status() & kStatusNeedsReset, 0u);
    uint16_t head = ring.add({ { kData, 32, true } });
    b.driver().notify(0);
    ASSERT_TRUE(ring.wait_used(1));
    EXPECT_EQ(ring.used(0).id, head);
}

// Restoring `state` into a fresh rng transport over a copy of `a`'s RAM fails with an error
// containing every one of `words`; the transport is left fresh (a good state restores after).
void expect_refused(RngMachine& a, const Json& state, std::vector<std::string> words)
{
    Side b(copy_ram(a.side.memory));
    b.attach(std::make_shared<RngDevice>());
    auto r = b.transport->restore_state(state);
    ASSERT_FALSE(r.ok()) << "accepted: " << state.dump();
    for (const std::string& w : words)
        EXPECT_NE(r.error().message().find(w), std::string::npos) << r.error().message();
    EXPECT_EQ(b.driver().status(), 0u);
    EXPECT_EQ(b.driver().read(mmio_reg::kQueueReady), 0u);
    auto good = b.transport->restore_state(a.side.transport->save_state());
    EXPECT_TRUE(good.ok()) << good.error().message();
}

TEST(VirtioSnapshot, HostileTransportStatesAreRefused)
{
    RngMachine a(3);
    const Json good = a.side.transport->save_state();
    auto with = [&](auto&& change) {
        Json s = good;
        change(s);
        return s;
    };
    expect_refused(
        a, with([](Json& s) { s["queues"][0]["desc_addr"] = kRamBytes + 0x1000; }), { "queue 0", "outside guest RAM" });
    expect_refused(a, with([](Json& s) { s["queues"][0]["used_addr"] = kRamBytes - 8; }), { "outside guest RAM" });
    expect_refused(a, with([](Json& s) { s["queues"][0]["desc_addr"] = kRing0 + 8; }), { "misaligned" });
    expect_refused(a, with([](Json& s) { s["queues"][0]["size"] = 12; }), { "size 12", "power of two" });
    expect_refused(a, with([](Json& s) { s["queues"][0]["size"] = 512; }), { "size 512", "up to 256" });
    expect_refused(a, with([](Json& s) { s["queues"][0]["size"] = 0; }), { "size 0" });
    expect_refused(a, with([](Json& s) { s["device_type"] = 2; }), { "blk", "rng" });
    expect_refused(a, with([](Json& s) { s.erase("queue_sel"); }), { "missing", "queue_sel" });
    expect_refused(a, with([](Json& s) { s["queues"][0].erase("next_used"); }), { "queue 0", "next_used" });
    expect_refused(a, with([](Json& s) { s.erase("device"); }), { "device" });
    expect_refused(a, with([](Json& s) { s["driver_features"] = s["driver_features"].get<uint64_t>() | (1ULL << 40); }),
        { "0x10000000000", "does not offer" });
    expect_refused(a, with([](Json& s) { s["driver_features"] = 0; }), { "VERSION_1" });
    expect_refused(a, with([](Json& s) { s["status"] = kStatusDriverOk; }), { "FEATURES_OK" });
    expect_refused(a, with([](Json& s) { s["queues"][0]["next_avail"] = 70000; }), { "next_avail", "65535" });
    expect_refused(a, with([](Json& s) { s["queues"][0]["next_avail"] = 300; }), { "past next_used" });
    expect_refused(a, with([](Json& s) { s["queues"][0]["ready"] = 1; }), { "ready", "boolean" });
    expect_refused(a, with([](Json& s) { s["status"] = "running"; }), { "status", "unsigned" });
    expect_refused(a, with([](Json& s) { s["queues"][0]["ready"] = false; }), { "not ready", "indices" });
    expect_refused(a, with([](Json& s) { s["queues"].push_back(s["queues"][0]); }), { "2 queues", "has 1" });
    expect_refused(a, Json::array(), { "not an object" });
}

TEST(VirtioSnapshot, UnknownFieldsAreIgnored)
{
    RngMachine a(2);
    Json state = a.side.transport->save_state();
    Json extended = state;
    extended["added_later"] = 7;
    extended["queues"][0]["added_later"] = Json::binary(std::vector<uint8_t> { 1, 2, 3 });
    extended["device"]["added_later"] = true;
    Side b(copy_ram(a.side.memory));
    b.attach(std::make_shared<RngDevice>());
    auto r = b.transport->restore_state(through_cbor(extended));
    ASSERT_TRUE(r.ok()) << r.error().message();
    EXPECT_EQ(b.transport->save_state(), state);
}

TEST(VirtioSnapshot, AStateOfAnotherDeviceTypeIsRefused)
{
    RngMachine a(2);
    Side b(copy_ram(a.side.memory));
    b.attach(std::make_shared<ConsoleDevice>([](std::span<const uint8_t>) {}));
    auto r = b.transport->restore_state(a.side.transport->save_state());
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message().find("rng (type 4)"), std::string::npos) << r.error().message();
    EXPECT_NE(r.error().message().find("console (type 3)"), std::string::npos) << r.error().message();
}

TEST(VirtioSnapshot, OnlyAFreshTransportTakesAState)
{
    RngMachine a(1);
    RngMachine other(1);
    auto r = other.side.transport->restore_state(a.side.transport->save_state());
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message().find("freshly built"), std::string::npos) << r.error().message();
}

// --- blk ---------------------------------------------------------------------------------------------

constexpr uint64_t kImageBytes = 1 << 20;

uint8_t image_byte(uint64_t offset)
{
    return static_cast<uint8_t>(offset * 7 + offset / 512 + 1);
}

std::vector<uint8_t> stamp(size_t n, uint32_t seed)
{
    std::vector<uint8_t> v(n);
    for (size_t i = 0; i < n; ++i)
        v[i] = static_cast<uint8_t>(seed * 131 + i * 13 + i / 256);
    return v;
}

// A raw image filled with image_byte().
std::string make_image(const TempDir& dir)
{
    std::string path = dir.path + "/disk.img";
    std::vector<uint8_t> data(kImageBytes);
    for (uint64_t i = 0; i < kImageBytes; ++i)
        data[i] = image_byte(i);
    std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(data.data()), kImageBytes);
    return path;
}

std::shared_ptr<BlkDevice> open_blk(const std::string& path, BlkDevice::IoMode mode)
{
    DiskConfig disk;
    disk.path = path;
    auto dev = BlkDevice::open(disk, mode);
    EXPECT_TRUE(dev.ok()) << dev.error().message();
    return dev.ok() ? std::shared_ptr<BlkDevice>(dev.release_value()) : nullptr;
}

// The driver's side of virtio-blk requests: request n uses its own header, data and status.
struct BlkDriver {
    struct Req {
        uint16_t head;
        uint64_t data;
        uint64_t status;
    };
    Req add(GuestMemory& mem, SnapRing& ring, uint32_t n, uint32_t type, uint64_t sector, uint32_t len,
        std::optional<uint64_t> data_gpa = {})
    {
        uint64_t hdr = kData + 32ULL * n;
        uint64_t status = kData + 0x4000 + n;
        uint64_t data = data_gpa.value_or(kData + 0x10000 + 0x1000ULL * n);
        uint8_t h[16] = {};
        std::memcpy(h, &type, 4);
        std::memcpy(h + 8, &sector, 8);
        EXPECT_TRUE(mem.write(hdr, h).ok());
        EXPECT_TRUE(mem.write_obj<uint8_t>(status, 0xee).ok());
        uint16_t head = ring.add({ { hdr, 16, false }, { data, len, type == blk::kTIn }, { status, 1, true } });
        return { head, data, status };
    }
};

TEST(VirtioSnapshot, BlkServesTheNextRequestAfterRestore)
{
    TempDir dir;
    std::string image = make_image(dir);
    std::optional<Side> a(std::in_place, GuestMemory::create(kRamBytes).release_value());
    SnapRing ring(a->memory, kRing0, kRing);
    BlkDriver blkd;
    a->attach(open_blk(image, BlkDevice::IoMode::Auto));
    bring_up(*a, kBase | blk::kFFlush | blk::kFBlkSize | blk::kFSegMax, { &ring });
    // Four writes, then four reads of what they wrote, one after the other.
    uint32_t n = 0;
    for (uint32_t i = 0; i < 4; ++i, ++n) {
        auto data = stamp(1024, i);
        ASSERT_TRUE(a->memory.write(kData + 0x10000 + 0x1000ULL * n, data).ok());
        ring.interrupt_at(static_cast<uint16_t>(n));
        auto r = blkd.add(a->memory, ring, n, blk::kTOut, 8 * i, 1024);
        a->driver().notify(0);
        ASSERT_TRUE(ring.wait_used(static_cast<uint16_t>(n + 1)));
        EXPECT_EQ(a->memory.read_obj<uint8_t>(r.status).value(), blk::kSOk);
    }
    for (uint32_t i = 0; i < 4; ++i, ++n) {
        ring.interrupt_at(static_cast<uint16_t>(n));
        auto r = blkd.add(a->memory, ring, n, blk::kTIn, 8 * i, 1024);
        a->driver().notify(0);
        ASSERT_TRUE(ring.wait_used(static_cast<uint16_t>(n + 1)));
        std::vector<uint8_t> got(1024);
        ASSERT_TRUE(a->memory.read(r.data, got).ok());
        EXPECT_EQ(got, stamp(1024, i));
    }
    EXPECT_EQ(a->irq.edges.load(), 8);
    a->transport->pause();
    // A request the device has not taken when the VM stops (here: queued after the pause, as
    // one behind a throttled or stopping queue) stays in the ring for the restored device.
    ring.interrupt_at(static_cast<uint16_t>(n));
    auto waiting = blkd.add(a->memory, ring, n++, blk::kTIn, 0, 1024);
    a->driver().notify(0);
    Json state = a->transport->save_state();
    EXPECT_EQ(state["queues"][0]["next_avail"], 8);
    EXPECT_EQ(state["queues"][0]["next_used"], 8);
    EXPECT_EQ(state["device"]["capacity_sectors"], kImageBytes / 512);
    GuestMemory ram = copy_ram(a->memory);
    a.reset(); // the VMM is gone (and the image's lock with it)

    Side b(std::move(ram));
    ring.rebind(b.memory);
    b.attach(open_blk(image, BlkDevice::IoMode::Auto));
    restore(b, state);
    std::this_thread::sleep_for(kQuiet);
    EXPECT_EQ(ring.used_idx(), 8) << "a restored device waits for resume()";
    b.transport->resume();
    ASSERT_TRUE(ring.wait_used(9));
    EXPECT_EQ(ring.used(8).id, waiting.head);
    EXPECT_EQ(b.memory.read_obj<uint8_t>(waiting.status).value(), blk::kSOk);
    std::vector<uint8_t> got(1024);
    ASSERT_TRUE(b.memory.read(waiting.data, got).ok());
    EXPECT_EQ(got, stamp(1024, 0));
    // A fresh request: a write and its read-back.
    ASSERT_TRUE(b.memory.write(kData + 0x10000 + 0x1000ULL * n, stamp(512, 99)).ok());
    ring.interrupt_at(9);
    auto w = blkd.add(b.memory, ring, n++, blk::kTOut, 100, 512);
    b.driver().notify(0);
    ASSERT_TRUE(ring.wait_used(10));
    EXPECT_EQ(ring.used(9).id, w.head);
    auto r = blkd.add(b.memory, ring, n++, blk::kTIn, 100, 512);
    b.driver().notify(0);
    ASSERT_TRUE(ring.wait_used(11));
    got.resize(512);
    ASSERT_TRUE(b.memory.read(r.data, got).ok());
    EXPECT_EQ(got, stamp(512, 99));
    EXPECT_GE(b.irq.edges.load(), 2);
}

TEST(VirtioSnapshot, BlkPauseFinishesTheRequestInFlightBeforeTheSave)
{
    TempDir dir;
    std::string image = make_image(dir);
    Side a(GuestMemory::create(kRamBytes).release_value());
    SnapRing ring(a.memory, kRing0, kRing);
    BlkDriver blkd;
    a.attach(open_blk(image, BlkDevice::IoMode::Auto));
    bring_up(a, kBase | blk::kFFlush, { &ring });
    std::optional<pause_test::Background> pauser; // joined before the gate goes
    pause_test::FaultGate gate(a.memory, kGatePage);
    if (!gate.error().empty())
        GTEST_SKIP() << "needs userfaultfd: " << gate.error();
    auto held = blkd.add(a.memory, ring, 0, blk::kTIn, 16, 4096, kGatePage);
    a.driver().notify(0);
    ASSERT_TRUE(gate.wait_held()) << "the device did not start the read";
    pauser.emplace([&] { a.transport->pause(); });
    std::this_thread::sleep_for(kQuiet);
    EXPECT_FALSE(pauser->done()) << "pause() returned with a read in flight";
    gate.release();
    ASSERT_TRUE(wait_until([&] { return pauser->done(); }));
    pauser->join();
    Json state = a.transport->save_state();
    EXPECT_EQ(state["queues"][0]["next_avail"], 1);
    EXPECT_EQ(state["queues"][0]["next_used"], 1) << "the request taken is completed in the saved state";
    EXPECT_EQ(a.memory.read_obj<uint8_t>(held.status).value(), blk::kSOk);
}

TEST(VirtioSnapshot, BlkRefusesAnImageSmallerThanTheGuestSaw)
{
    TempDir dir;
    std::string image = make_image(dir);
    std::optional<Side> a(std::in_place, GuestMemory::create(kRamBytes).release_value());
    SnapRing ring(a->memory, kRing0, kRing);
    a->attach(open_blk(image, BlkDevice::IoMode::Inline));
    bring_up(*a, kBase, { &ring });
    a->transport->pause();
    Json state = a->transport->save_state();
    state["device"]["capacity_sectors"] = kImageBytes / 512 + 8; // the image shrank since
    Side b(copy_ram(a->memory));
    a.reset(); // its lock on the image goes with it
    b.attach(open_blk(image, BlkDevice::IoMode::Inline));
    auto r = b.transport->restore_state(state);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message().find("2056"), std::string::npos) << r.error().message();
    EXPECT_EQ(b.driver().status(), 0u);
}

// --- net -----------------------------------------------------------------------------------------

constexpr std::array<uint8_t, 6> kMac { 0x52, 0x54, 0x00, 0x12, 0x34, 0x56 };

// A frame as the backend carries it: the 12-byte virtio-net header, then `n` bytes.
std::vector<uint8_t> frame(size_t n, uint8_t seed)
{
    std::vector<uint8_t> f(kNetHeaderBytes + n, 0);
    for (size_t i = 0; i < n; ++i)
        f[kNetHeaderBytes + i] = static_cast<uint8_t>(seed + i * 3);
    return f;
}

struct NetMachine {
    explicit NetMachine(GuestMemory mem, std::unique_ptr<mmds::Stack> stack = nullptr)
        : side(std::move(mem))
    {
        int sv[2];
        EXPECT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
        peer = sv[1];
        auto device = std::make_shared<NetDevice>(std::make_unique<SocketBackend>(sv[0]), kMac);
        if (stack)
            device->set_mmds(std::move(stack));
        side.attach(device);
    }
    ~NetMachine()
    {
        side.transport->shutdown();
        ::close(peer);
    }
    void send(const std::vector<uint8_t>& f)
    {
        ASSERT_EQ(::send(peer, f.data(), f.size(), 0), static_cast<ssize_t>(f.size()));
    }
    std::vector<uint8_t> receive()
    {
        pollfd p { peer, POLLIN, 0 };
        if (::poll(&p, 1, 10000) != 1)
            return {};
        std::vector<uint8_t> f(70000);
        ssize_t n = ::recv(peer, f.data(), f.size(), 0);
        f.resize(n > 0 ? static_cast<size_t>(n) : 0);
        return f;
    }
    Side side;
    int peer { -1 };
};

constexpr uint64_t kNetFeatures = kBase | kNetFMac | kNetFStatus | kNetFCsum;

TEST(VirtioSnapshot, NetServesTheNextFramesAfterRestore)
{
    std::optional<NetMachine> a(std::in_place, GuestMemory::create(kRamBytes).release_value());
    SnapRing rx(a->side.memory, kRing0, kRing), tx(a->side.memory, kRing1, kRing);
    bring_up(a->side, kNetFeatures, { &rx, &tx });
    std::vector<uint16_t> rx_heads;
    for (uint64_t i = 0; i < 5; ++i)
        rx_heads.push_back(rx.add({ { kData + 0x1000 * i, 2048, true } }));
    a->side.driver().notify(NetDevice::kRxQueue);
    for (uint16_t i = 0; i < 2; ++i) {
        a->send(frame(60 + i, static_cast<uint8_t>(i)));
        ASSERT_TRUE(rx.wait_used(i + 1));
        EXPECT_EQ(rx.used(i).id, rx_heads[i]);
        EXPECT_EQ(rx.used(i).len, kNetHeaderBytes + 60 + i);
    }
    for (uint16_t i = 0; i < 3; ++i) {
        auto f = frame(100, static_cast<uint8_t>(40 + i));
        ASSERT_TRUE(a->side.memory.write(kData + 0x80000 + 0x1000ULL * i, f).ok());
        tx.add({ { kData + 0x80000 + 0x1000ULL * i, static_cast<uint32_t>(f.size()), false } });
        a->side.driver().notify(NetDevice::kTxQueue);
        EXPECT_EQ(a->receive(), f);
        ASSERT_TRUE(tx.wait_used(i + 1));
    }
    // The device takes the next receive buffer before the backend has a frame for it: find a
    // pause that catches it holding one.
    Json state;
    for (int attempt = 0; attempt < 200; ++attempt) {
        a->side.transport->pause();
        state = a->side.transport->save_state();
        if (state["device"]["rx_buffers"].size() == 1)
            break;
        a->side.transport->resume();
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    ASSERT_EQ(state["device"]["rx_buffers"], Json::array({ rx_heads[2] }));
    EXPECT_EQ(state["queues"][0]["next_avail"], 3);
    EXPECT_EQ(state["queues"][0]["next_used"], 2);
    EXPECT_EQ(state["queues"][1]["next_used"], 3);
    GuestMemory ram = copy_ram(a->side.memory);

    // A hostile state: a held buffer that is no descriptor of the queue.
    {
        NetMachine c(copy_ram(a->side.memory));
        Json bad = state;
        bad["device"]["rx_buffers"] = Json::array({ 5000 });
        auto r = c.side.transport->restore_state(bad);
        ASSERT_FALSE(r.ok());
        EXPECT_NE(r.error().message().find("receive buffer 5000"), std::string::npos) << r.error().message();
        EXPECT_EQ(c.side.driver().status(), 0u);
    }
    a.reset();

    NetMachine b(std::move(ram));
    rx.rebind(b.side.memory);
    tx.rebind(b.side.memory);
    restore(b.side, state);
    b.side.transport->resume();
    // The held buffer takes the next frame, then the ones still in the ring.
    for (uint16_t i = 2; i < 4; ++i) {
        rx.interrupt_at(i);
        b.send(frame(70 + i, static_cast<uint8_t>(i)));
        ASSERT_TRUE(rx.wait_used(i + 1));
        EXPECT_EQ(rx.used(i).id, rx_heads[i]);
        EXPECT_EQ(rx.used(i).len, kNetHeaderBytes + 70 + i);
        std::vector<uint8_t> got(kNetHeaderBytes + 70 + i);
        ASSERT_TRUE(b.side.memory.read(kData + 0x1000ULL * i, got).ok());
        auto want = frame(70 + i, static_cast<uint8_t>(i));
        EXPECT_TRUE(std::equal(want.begin() + kNetHeaderBytes, want.end(), got.begin() + kNetHeaderBytes));
    }
    auto f = frame(200, 77);
    ASSERT_TRUE(b.side.memory.write(kData + 0x90000, f).ok());
    uint16_t head = tx.add({ { kData + 0x90000, static_cast<uint32_t>(f.size()), false } });
    b.side.driver().notify(NetDevice::kTxQueue);
    EXPECT_EQ(b.receive(), f);
    ASSERT_TRUE(tx.wait_used(4));
    EXPECT_EQ(tx.used(3).id, head);
}

std::unique_ptr<mmds::Stack> mmds_stack(mmds::Ipv4Address ip)
{
    mmds::StackConfig config;
    config.ipv4 = ip;
    auto clock = [] { return uint64_t(1000); };
    return std::make_unique<mmds::Stack>(
        std::make_shared<mmds::DataStore>(), std::make_shared<mmds::TokenAuthority>(clock), config, clock);
}

TEST(VirtioSnapshot, NetKeepsTheMmdsStacksAddress)
{
    const mmds::Ipv4Address ip { 169, 254, 170, 2 };
    NetMachine a(GuestMemory::create(kRamBytes).release_value(), mmds_stack(ip));
    SnapRing rx(a.side.memory, kRing0, kRing), tx(a.side.memory, kRing1, kRing);
    bring_up(a.side, kNetFeatures, { &rx, &tx });
    a.side.transport->pause();
    Json state = a.side.transport->save_state();
    EXPECT_EQ(state["device"]["mmds"]["ipv4"], Json::binary(std::vector<uint8_t> { 169, 254, 170, 2 }));

    NetMachine b(copy_ram(a.side.memory), mmds_stack(mmds::kDefaultMmdsIpv4));
    restore(b.side, state);
    EXPECT_EQ(static_cast<NetDevice&>(*b.side.device).mmds_stack()->ipv4(), ip);
    // A device built without a stack (the configuration dropped it) takes the state too.
    NetMachine c(copy_ram(a.side.memory));
    ASSERT_TRUE(c.side.transport->restore_state(state).ok());
}

// --- console -----------------------------------------------------------------------------------

struct Sink {
    void operator()(std::span<const uint8_t> out)
    {
        std::lock_guard lock(mutex);
        text.append(out.begin(), out.end());
    }
    std::string get()
    {
        std::lock_guard lock(mutex);
        return text;
    }
    std::mutex mutex;
    std::string text;
};

TEST(VirtioSnapshot, ConsoleKeepsHostInputNotYetDelivered)
{
    Sink out_a, out_b;
    std::optional<Side> a(std::in_place, GuestMemory::create(kRamBytes).release_value());
    SnapRing rx(a->memory, kRing0, kRing), tx(a->memory, kRing1, kRing);
    auto console_a = std::make_shared<ConsoleDevice>([&](std::span<const uint8_t> o) { out_a(o); });
    a->attach(console_a);
    bring_up(*a, kBase, { &rx, &tx });
    for (uint16_t i = 0; i < 3; ++i) {
        std::string line = "line " + std::to_string(i) + "\n";
        ASSERT_TRUE(a->memory.write(kData + 0x100ULL * i, bytes(line)).ok());
        tx.add({ { kData + 0x100ULL * i, static_cast<uint32_t>(line.size()), false } });
        a->driver().notify(ConsoleDevice::kTransmitQueue);
        ASSERT_TRUE(tx.wait_used(i + 1));
    }
    ASSERT_TRUE(wait_until([&] { return out_a.get() == "line 0\nline 1\nline 2\n"; })) << out_a.get();
    rx.add({ { kData + 0x10000, 64, true } });
    rx.add({ { kData + 0x11000, 64, true } });
    a->driver().notify(ConsoleDevice::kReceiveQueue);
    console_a->enqueue_input(bytes("ab"));
    console_a->enqueue_input(bytes("cd"));
    ASSERT_TRUE(rx.wait_used(2));
    console_a->enqueue_input(bytes("pending")); // no buffer for it
    a->transport->pause();
    Json state = a->transport->save_state();
    EXPECT_EQ(state["device"]["input"], Json::binary(std::vector<uint8_t> { 'p', 'e', 'n', 'd', 'i', 'n', 'g' }));
    GuestMemory ram = copy_ram(a->memory);
    a.reset();

    Side b(std::move(ram));
    rx.rebind(b.memory);
    tx.rebind(b.memory);
    auto console_b = std::make_shared<ConsoleDevice>([&](std::span<const uint8_t> o) { out_b(o); });
    b.attach(console_b);
    restore(b, state);
    b.transport->resume();
    uint16_t head = rx.add({ { kData + 0x12000, 64, true } });
    b.driver().notify(ConsoleDevice::kReceiveQueue);
    ASSERT_TRUE(rx.wait_used(3));
    EXPECT_EQ(rx.used(2).id, head);
    EXPECT_EQ(rx.used(2).len, 7u);
    std::string got(7, '\0');
    ASSERT_TRUE(b.memory.read(kData + 0x12000, std::span(reinterpret_cast<uint8_t*>(got.data()), 7)).ok());
    EXPECT_EQ(got, "pending");
    ASSERT_TRUE(b.memory.write(kData + 0x400, bytes("after\n")).ok());
    tx.add({ { kData + 0x400, 6, false } });
    b.driver().notify(ConsoleDevice::kTransmitQueue);
    ASSERT_TRUE(tx.wait_used(4));
    ASSERT_TRUE(wait_until([&] { return out_b.get() == "after\n"; })) << out_b.get();
    b.transport->shutdown(); // the writer thread stops before the sinks go
}

// --- balloon -----------------------------------------------------------------------------------

std::vector<uint8_t> stats_buffer(uint64_t free_bytes, uint64_t total_bytes)
{
    std::vector<uint8_t> b(20);
    uint16_t tag = BalloonDevice::kStatFreeMemory;
    std::memcpy(b.data(), &tag, 2);
    std::memcpy(b.data() + 2, &free_bytes, 8);
    tag = BalloonDevice::kStatTotalMemory;
    std::memcpy(b.data() + 10, &tag, 2);
    std::memcpy(b.data() + 12, &total_bytes, 8);
    return b;
}

TEST(VirtioSnapshot, BalloonKeepsItsTargetStatisticsAndTheHeldStatsBuffer)
{
    std::optional<Side> a(std::in_place, GuestMemory::create(kRamBytes).release_value());
    SnapRing inflate(a->memory, kRing0, kRing), deflate(a->memory, kRing1, kRing), stats(a->memory, kRing2, kRing);
    auto balloon_a = std::make_shared<BalloonDevice>(2 << 20);
    a->attach(balloon_a);
    bring_up(*a, kBase | BalloonDevice::kFStatsVq, { &inflate, &deflate, &stats }, /*driver_ok=*/false);
    // Linux primes statsq during probe; the device holds that buffer from DRIVER_OK on.
    ASSERT_TRUE(a->memory.write(kData, stats_buffer(5 << 20, 16 << 20)).ok());
    uint16_t stats_head = stats.add({ { kData, 20, false } });
    a->driver().driver_ok();
    ASSERT_EQ(balloon_a->stats().updates, 1u);
    for (uint16_t i = 0; i < 3; ++i) {
        uint32_t pfns[4];
        for (uint32_t k = 0; k < 4; ++k)
            pfns[k] = 0x800 + 4 * i + k;
        ASSERT_TRUE(a->memory.write(kData + 0x1000 + 16ULL * i, std::span(reinterpret_cast<uint8_t*>(pfns), 16)).ok());
        inflate.interrupt_at(i);
        inflate.add({ { kData + 0x1000 + 16ULL * i, 16, false } });
        a->driver().notify(BalloonDevice::kInflateQueue);
        ASSERT_TRUE(inflate.wait_used(i + 1));
    }
    uint32_t actual = 12;
    a->transport->write(mmio_reg::kConfig + 4, std::span(reinterpret_cast<const uint8_t*>(&actual), 4));
    balloon_a->set_target(4 << 20);
    a->transport->pause();
    EXPECT_TRUE(balloon_a->request_stats()); // due back at resume
    Json state = a->transport->save_state();
    EXPECT_EQ(state["device"]["stats_buffer"], stats_head);
    EXPECT_EQ(state["device"]["num_pages"], 1024);
    EXPECT_EQ(state["device"]["actual"], 12);
    EXPECT_EQ(state["device"]["stats_due"], true);
    EXPECT_EQ(state["queues"][2]["next_avail"], 1);
    EXPECT_EQ(state["queues"][2]["next_used"], 0);
    GuestMemory ram = copy_ram(a->memory);

    // A hostile state: the held buffer names no descriptor of the queue.
    {
        Side c(copy_ram(a->memory));
        c.attach(std::make_shared<BalloonDevice>(0));
        Json bad = state;
        bad["device"]["stats_buffer"] = 999;
        auto r = c.transport->restore_state(bad);
        ASSERT_FALSE(r.ok());
        EXPECT_NE(r.error().message().find("statistics buffer"), std::string::npos) << r.error().message();
        EXPECT_EQ(c.driver().status(), 0u);
    }
    auto stats_before = balloon_a->stats();
    a.reset();

    Side b(std::move(ram));
    for (SnapRing* r : { &inflate, &deflate, &stats })
        r->rebind(b.memory);
    auto balloon_b = std::make_shared<BalloonDevice>(0); // the snapshot's target wins
    b.attach(balloon_b);
    restore(b, state);
    EXPECT_EQ(balloon_b->target_pages(), 1024u);
    EXPECT_EQ(balloon_b->actual_pages(), 12u);
    EXPECT_EQ(balloon_b->stats().updates, 1u);
    EXPECT_EQ(balloon_b->stats().values, stats_before.values);
    EXPECT_EQ(stats.used_idx(), 0);
    b.transport->resume();
    // The statistics request made while paused hands the held buffer back.
    ASSERT_TRUE(stats.wait_used(1));
    EXPECT_EQ(stats.used(0).id, stats_head);
    ASSERT_TRUE(b.memory.write(kData + 0x100, stats_buffer(7 << 20, 16 << 20)).ok());
    stats.add({ { kData + 0x100, 20, false } });
    b.driver().notify(BalloonDevice::kStatsQueue);
    ASSERT_TRUE(wait_until([&] { return balloon_b->stats().updates == 2; }));
    EXPECT_EQ(balloon_b->stats().values[BalloonDevice::kStatFreeMemory], 7u << 20);
    uint32_t pfn = 0x900;
    ASSERT_TRUE(b.memory.write(kData + 0x2000, std::span(reinterpret_cast<uint8_t*>(&pfn), 4)).ok());
    inflate.interrupt_at(3);
    uint16_t head = inflate.add({ { kData + 0x2000, 4, false } });
    b.driver().notify(BalloonDevice::kInflateQueue);
    ASSERT_TRUE(inflate.wait_used(4));
    EXPECT_EQ(inflate.used(3).id, head);
    EXPECT_GE(b.irq.edges.load(), 2);
}

// --- vsock -------------------------------------------------------------------------------------

constexpr uint64_t kCid = 42;

// A guest's OP_REQUEST to host port `port` from guest port `local`.
std::vector<uint8_t> vsock_request(uint32_t local, uint32_t port)
{
    vsock::Header h;
    h.src_cid = kCid;
    h.dst_cid = vsock::kHostCid;
    h.src_port = local;
    h.dst_port = port;
    h.type = vsock::kTypeStream;
    h.op = static_cast<uint16_t>(vsock::Op::Request);
    h.buf_alloc = 1 << 20;
    uint8_t raw[vsock::kHeaderSize];
    vsock::encode_header(h, raw);
    return { raw, raw + sizeof(raw) };
}

vsock::Header vsock_header_at(const GuestMemory& mem, uint64_t gpa)
{
    uint8_t raw[vsock::kHeaderSize];
    EXPECT_TRUE(mem.read(gpa, raw).ok());
    return vsock::decode_header(raw);
}

TEST(VirtioSnapshot, VsockSendsTransportResetOnRestoreAndGoesOn)
{
    TempDir dir;
    std::optional<Side> a(std::in_place, GuestMemory::create(kRamBytes).release_value());
    SnapRing rx(a->memory, kRing0, kRing), tx(a->memory, kRing1, kRing), ev(a->memory, kRing2, kRing);
    auto created = VsockDevice::create(kCid, dir.path + "/a.sock");
    ASSERT_TRUE(created.ok()) << created.error().message();
    a->attach(created.value());
    bring_up(*a, kBase | vsock::kFStream, { &rx, &tx, &ev });
    for (uint64_t i = 0; i < 8; ++i)
        rx.add({ { kData + 0x1000 * i, 512, true } });
    ASSERT_TRUE(a->memory.fill(kData + 0x20000, 0xff, 8).ok());
    ev.add({ { kData + 0x20000, 8, true } });
    a->driver().notify(vsock::kRxQueue);
    // Connections to a host port where nothing listens: each request is answered with OP_RST.
    for (uint16_t i = 0; i < 3; ++i) {
        auto req = vsock_request(1000 + i, 5555);
        ASSERT_TRUE(a->memory.write(kData + 0x10000 + 0x100ULL * i, req).ok());
        tx.add({ { kData + 0x10000 + 0x100ULL * i, static_cast<uint32_t>(req.size()), false } });
        a->driver().notify(vsock::kTxQueue);
        ASSERT_TRUE(rx.wait_used(i + 1));
        ASSERT_TRUE(tx.wait_used(i + 1));
        auto h = vsock_header_at(a->memory, kData + 0x1000ULL * i);
        EXPECT_EQ(h.op, static_cast<uint16_t>(vsock::Op::Rst));
        EXPECT_EQ(h.dst_port, 1000u + i);
    }
    EXPECT_EQ(ev.used_idx(), 0) << "no reset event on the first activation";
    a->transport->pause();
    Json state = a->transport->save_state();
    EXPECT_EQ(state["device"]["guest_cid"], kCid);
    GuestMemory ram = copy_ram(a->memory);

    // A state for another CID is refused.
    {
        Side c(copy_ram(a->memory));
        auto other = VsockDevice::create(kCid + 1, dir.path + "/c.sock");
        ASSERT_TRUE(other.ok());
        c.attach(other.value());
        auto r = c.transport->restore_state(state);
        ASSERT_FALSE(r.ok());
        EXPECT_NE(r.error().message().find("CID 42"), std::string::npos) << r.error().message();
    }
    a.reset();

    Side b(std::move(ram));
    for (SnapRing* r : { &rx, &tx, &ev })
        r->rebind(b.memory);
    auto restored = VsockDevice::create(kCid, dir.path + "/b.sock"); // vsock_override's new path
    ASSERT_TRUE(restored.ok()) << restored.error().message();
    b.attach(restored.value());
    restore(b, state);
    std::this_thread::sleep_for(kQuiet);
    EXPECT_EQ(ev.used_idx(), 0) << "nothing before resume()";
    b.transport->resume();
    ASSERT_TRUE(ev.wait_used(1)) << "no TRANSPORT_RESET event";
    EXPECT_EQ(ev.used(0).len, vsock::kEventSize);
    EXPECT_EQ(b.memory.read_obj<uint32_t>(kData + 0x20000).value(), vsock::kEventTransportReset);
    // The guest reconnects: the transport works on.
    auto req = vsock_request(2000, 5556);
    ASSERT_TRUE(b.memory.write(kData + 0x10400, req).ok());
    tx.add({ { kData + 0x10400, static_cast<uint32_t>(req.size()), false } });
    b.driver().notify(vsock::kTxQueue);
    ASSERT_TRUE(rx.wait_used(4));
    ASSERT_TRUE(tx.wait_used(4));
    auto h = vsock_header_at(b.memory, kData + 0x3000);
    EXPECT_EQ(h.op, static_cast<uint16_t>(vsock::Op::Rst));
    EXPECT_EQ(h.dst_port, 2000u);
}

} // namespace
