// VM pause/resume of virtio-net on a socket backend (one end of a SOCK_SEQPACKET socketpair, one
// frame per message like a tap; the test plays the host network on the other end): frames queued
// by the guest or sent by the host while paused wait (in the ring, in the socket) for resume(), a
// frame in flight completes before pause() returns, and pausing over and over (through the
// virtio-mmio transport) while frames stream both ways loses, reorders and repeats nothing.
#include <gtest/gtest.h>

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <cstddef>
#include <memory>
#include <thread>
#include <vector>

#include "devices/virtio/mmio.h"
#include "devices/virtio/net.h"
#include "devices/virtio/tap.h"
#include "memory/guest_memory.h"
#include "virtio_pause_test_support.h"
#include "virtio_test_support.h"

using namespace vessel;
using namespace vessel::virtio;
using namespace vessel::pause_test;

namespace {

constexpr uint64_t kRamBytes = 16ULL << 20;
constexpr uint64_t kRxRing = 0x10000;
constexpr uint64_t kTxRing = 0x20000;
constexpr uint16_t kRingSize = 256;
constexpr uint64_t kRxBuffers = 0x100000; // 256 receive buffers of 2 KiB
constexpr uint64_t kTxBuffers = 0x200000; // 256 transmit buffers of 2 KiB
constexpr uint32_t kBufBytes = 2048;
constexpr uint64_t kGatePage = 0xa00000; // left untouched for FaultGate

// A frame as the backend carries it: the 12-byte virtio-net header (all zeros: no offloads), then
// an Ethernet frame whose first four bytes are its sequence number and the rest a pattern of it.
std::vector<uint8_t> frame(uint32_t seq)
{
    size_t len = 60 + (seq * 37) % 1440;
    std::vector<uint8_t> v(kNetHeaderBytes + len);
    std::memcpy(v.data() + kNetHeaderBytes, &seq, 4);
    for (size_t i = 4; i < len; ++i)
        v[kNetHeaderBytes + i] = static_cast<uint8_t>(seq * 7 + i * 13 + (i >> 7));
    return v;
}

// The next message on `fd` within `ms`, or nothing.
std::optional<std::vector<uint8_t>> receive(int fd, int ms)
{
    pollfd p { fd, POLLIN, 0 };
    if (::poll(&p, 1, ms) != 1)
        return std::nullopt;
    std::vector<uint8_t> buf(1 << 16);
    ssize_t n = ::recv(fd, buf.data(), buf.size(), MSG_DONTWAIT);
    if (n < 0)
        return std::nullopt;
    buf.resize(static_cast<size_t>(n));
    return buf;
}

// What the guest finds in its receive buffer for frame(seq): the device sets num_buffers (1: no
// MRG_RXBUF) in the header.
std::vector<uint8_t> received(uint32_t seq)
{
    auto v = frame(seq);
    v[offsetof(NetHeader, num_buffers)] = 1;
    return v;
}

// The driver's two rings and their buffers (2 KiB each, round-robin: far more than the tests keep
// outstanding, and both queues give buffers back in order).
class NetGuest {
public:
    explicit NetGuest(GuestMemory& memory)
        : rx(memory, kRxRing, kRingSize)
        , tx(memory, kTxRing, kRingSize)
        , m_memory(memory)
    {
    }

    // A receive buffer (one 2 KiB segment, at `gpa` if given); returns its head.
    uint16_t post_rx(std::optional<uint64_t> gpa = {})
    {
        uint64_t at = gpa.value_or(kRxBuffers + kBufBytes * (m_rx_count++ % kRingSize));
        uint16_t head = rx.add({ { at, kBufBytes, true } });
        m_rx_gpa[head] = at;
        return head;
    }
    // The frame the device put in a used receive buffer.
    std::vector<uint8_t> rx_frame(const UsedElem& u)
    {
        std::vector<uint8_t> out(u.len);
        EXPECT_TRUE(m_memory.read(m_rx_gpa[u.head], out).ok());
        return out;
    }
    // A transmit chain: the header in one segment, the frame in another (at `frame_gpa` if given:
    // a FaultGate page, filled when released).
    uint16_t transmit(const std::vector<uint8_t>& bytes, std::optional<uint64_t> frame_gpa = {})
    {
        uint64_t at = kTxBuffers + kBufBytes * (m_tx_count++ % kRingSize);
        uint32_t len = static_cast<uint32_t>(bytes.size() - kNetHeaderBytes);
        EXPECT_TRUE(m_memory.write(at, std::span(bytes.data(), kNetHeaderBytes)).ok());
        uint64_t data = frame_gpa.value_or(at + 64);
        if (!frame_gpa) {
            EXPECT_TRUE(m_memory.write(data, std::span(bytes.data() + kNetHeaderBytes, len)).ok());
        }
        return tx.add({ { at, kNetHeaderBytes, false }, { data, len, false } });
    }

    Ring rx, tx;

private:
    GuestMemory& m_memory;
    std::array<uint64_t, kRingSize> m_rx_gpa {};
    uint32_t m_rx_count { 0 };
    uint32_t m_tx_count { 0 };
};

// A thread-mode device on a fresh socketpair, activated directly (no transport) with VERSION_1
// only: each received frame takes one chain.
class NetRig {
public:
    NetRig()
        : memory(GuestMemory::create(kRamBytes).release_value())
        , guest(memory)
    {
        int sv[2];
        EXPECT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
        peer = sv[1];
        device = std::make_unique<NetDevice>(
            std::make_unique<SocketBackend>(sv[0]), std::array<uint8_t, 6> { 0x52, 0x54, 0, 1, 2, 3 });
        queues.assign(2, Queue(NetDevice::kQueueSize));
        guest.rx.configure(queues[0]);
        guest.tx.configure(queues[1]);
        for (auto& q : queues)
            EXPECT_TRUE(q.activate(memory, kFVersion1).ok());
        auto activated = virtio_test::activate_device(*device, memory, irq, queues, kFVersion1);
        EXPECT_TRUE(activated.ok()) << activated.error().message();
    }
    ~NetRig()
    {
        device->shutdown();
        ::close(peer);
    }

    void peer_send(const std::vector<uint8_t>& bytes)
    {
        ASSERT_EQ(::send(peer, bytes.data(), bytes.size(), 0), static_cast<ssize_t>(bytes.size()));
    }

    GuestMemory memory;
    NetGuest guest;
    std::vector<Queue> queues;
    CountingInterrupt irq;
    std::unique_ptr<NetDevice> device;
    int peer { -1 };
};

} // namespace

TEST(VirtioPauseNet, FramesBothWaysWaitForResume)
{
    NetRig rig;
    for (int i = 0; i < 4; ++i)
        rig.guest.post_rx();
    rig.device->notify(NetDevice::kRxQueue);
    rig.peer_send(frame(1));
    ASSERT_TRUE(rig.guest.rx.wait_used(1));
    EXPECT_EQ(rig.guest.rx_frame(*rig.guest.rx.next_used()), received(1));

    rig.device->pause();
    rig.guest.transmit(frame(100));
    rig.guest.transmit(frame(101));
    rig.device->notify(NetDevice::kTxQueue);
    rig.peer_send(frame(2));
    rig.peer_send(frame(3));
    rig.guest.post_rx();
    rig.device->notify(NetDevice::kRxQueue);
    RamCopy ram(rig.memory);
    std::this_thread::sleep_for(kQuiet);
    EXPECT_EQ(rig.guest.tx.used_idx(), 0) << "transmitted while paused";
    EXPECT_EQ(rig.guest.rx.used_idx(), 1) << "received while paused";
    EXPECT_EQ(ram.first_change(), std::nullopt) << "a paused device writes no guest memory";
    EXPECT_FALSE(receive(rig.peer, 0)) << "a frame left while paused";
    EXPECT_EQ(rig.device->stats().rx_frames.load(), 1u);

    rig.device->resume();
    ASSERT_TRUE(rig.guest.tx.wait_used(2));
    auto a = receive(rig.peer, 5000), b = receive(rig.peer, 5000);
    ASSERT_TRUE(a && b);
    EXPECT_EQ(*a, frame(100));
    EXPECT_EQ(*b, frame(101));
    ASSERT_TRUE(rig.guest.rx.wait_used(3)) << "the frames the socket held came in";
    EXPECT_EQ(rig.guest.rx_frame(*rig.guest.rx.next_used()), received(2));
    EXPECT_EQ(rig.guest.rx_frame(*rig.guest.rx.next_used()), received(3));
    EXPECT_EQ(rig.irq.errors.load(), 0);
    EXPECT_GE(rig.irq.queues[NetDevice::kTxQueue].load(), 1);
}

TEST(VirtioPauseNet, TransmitInFlightCompletesBeforePauseReturns)
{
    NetRig rig;
    std::optional<Background> pauser;
    FaultGate gate(rig.memory, kGatePage);
    if (!gate.error().empty())
        GTEST_SKIP() << "needs userfaultfd: " << gate.error();
    auto bytes = frame(7);
    rig.guest.transmit(bytes, kGatePage); // the frame's bytes are on the gated page
    rig.device->notify(NetDevice::kTxQueue);
    ASSERT_TRUE(gate.wait_held()) << "the device did not start sending";

    pauser.emplace([&] { rig.device->pause(); });
    std::this_thread::sleep_for(kQuiet);
    EXPECT_FALSE(pauser->done()) << "pause() returned with a frame half sent";
    EXPECT_EQ(rig.guest.tx.used_idx(), 0);

    gate.release(std::span(bytes).subspan(kNetHeaderBytes));
    ASSERT_TRUE(wait_until([&] { return pauser->done(); }));
    pauser->join();
    EXPECT_EQ(rig.guest.tx.used_idx(), 1) << "the frame in flight is used before pause() returns";
    EXPECT_GE(rig.irq.queues[NetDevice::kTxQueue].load(), 1);
    auto got = receive(rig.peer, 5000);
    ASSERT_TRUE(got);
    EXPECT_EQ(*got, bytes);
    rig.device->resume();
}

TEST(VirtioPauseNet, ReceiveInFlightCompletesBeforePauseReturns)
{
    NetRig rig;
    std::optional<Background> pauser;
    FaultGate gate(rig.memory, kGatePage);
    if (!gate.error().empty())
        GTEST_SKIP() << "needs userfaultfd: " << gate.error();
    rig.guest.post_rx(kGatePage);
    rig.guest.post_rx();
    rig.device->notify(NetDevice::kRxQueue);
    rig.peer_send(frame(9));
    ASSERT_TRUE(gate.wait_held()) << "the device did not start receiving";
    rig.peer_send(frame(10)); // waits in the socket, or goes into the second buffer before the pause

    pauser.emplace([&] { rig.device->pause(); });
    std::this_thread::sleep_for(kQuiet);
    EXPECT_FALSE(pauser->done()) << "pause() returned with a frame half received";
    EXPECT_EQ(rig.guest.rx.used_idx(), 0);

    gate.release();
    ASSERT_TRUE(wait_until([&] { return pauser->done(); }));
    pauser->join();
    uint16_t used = rig.guest.rx.used_idx();
    ASSERT_GE(used, 1) << "the frame in flight is used before pause() returns";
    EXPECT_EQ(rig.guest.rx_frame(*rig.guest.rx.next_used()), received(9));
    RamCopy ram(rig.memory);
    std::this_thread::sleep_for(kQuiet);
    EXPECT_EQ(ram.first_change(), std::nullopt);
    EXPECT_EQ(rig.guest.rx.used_idx(), used);

    rig.device->resume();
    ASSERT_TRUE(rig.guest.rx.wait_used(2));
    EXPECT_EQ(rig.guest.rx_frame(*rig.guest.rx.next_used()), received(10));
}

TEST(VirtioPauseNet, PausingAnIdleDeviceIsQuick)
{
    NetRig rig;
    rig.guest.post_rx();
    rig.device->notify(NetDevice::kRxQueue);
    double median = median_pause_ms([&] { rig.device->pause(); }, [&] { rig.device->resume(); });
    EXPECT_LT(median, 5.0) << "median pause() of an idle device, ms";
    rig.peer_send(frame(5));
    ASSERT_TRUE(rig.guest.rx.wait_used(1));
    EXPECT_EQ(rig.guest.rx_frame(*rig.guest.rx.next_used()), received(5));
}

// The VM's way: MmioTransport::pause()/resume() from one thread while the host streams frames to
// the guest, the guest streams frames to the host (letting at least one pause by every 50), and
// the driver keeps both rings going.
TEST(VirtioPauseNet, PausingOverAndOverWhileFramesFlowLosesNothing)
{
    constexpr uint32_t kFrames = 3000; // each way
    auto memory = GuestMemory::create(kRamBytes).release_value();
    int sv[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
    int peer = sv[1];
    // A stuck device fails the test instead of leaving the host's sender blocked for good.
    timeval send_timeout { 20, 0 };
    ASSERT_EQ(::setsockopt(peer, SOL_SOCKET, SO_SNDTIMEO, &send_timeout, sizeof(send_timeout)), 0);
    auto device = std::make_shared<NetDevice>(
        std::make_unique<SocketBackend>(sv[0]), std::array<uint8_t, 6> { 0x52, 0x54, 0, 1, 2, 4 });
    CountingIrq irq;
    MmioTransport transport(device, memory, irq.line());
    virtio_test::MmioDriver driver(transport);
    NetGuest guest(memory);
    ASSERT_TRUE(driver.negotiate(kFVersion1));
    guest.rx.configure(transport, NetDevice::kRxQueue);
    guest.tx.configure(transport, NetDevice::kTxQueue);
    driver.driver_ok();
    ASSERT_EQ(driver.status() & (kStatusDriverOk | kStatusNeedsReset), kStatusDriverOk);

    std::atomic<bool> flowing { true };
    Toggler toggler([&] { transport.pause(); }, [&] { transport.resume(); },
        [&] { return uint64_t(guest.rx.used_idx()) << 16 | guest.tx.used_idx(); }, [&] { return flowing.load(); });
    std::jthread host_sender([&] {
        for (uint32_t seq = 0; seq < kFrames; ++seq) {
            auto bytes = frame(seq);
            // Blocking: while the device is paused the socket fills up and this waits.
            if (::send(peer, bytes.data(), bytes.size(), 0) != static_cast<ssize_t>(bytes.size()))
                return;
        }
    });
    std::atomic<uint32_t> host_received { 0 };
    std::atomic<int> host_bad { 0 };
    std::jthread host_receiver([&] {
        while (host_received.load() < kFrames) {
            auto got = receive(peer, 10000);
            if (!got)
                return;
            if (*got != frame(host_received.load()))
                ++host_bad;
            ++host_received;
        }
    });

    uint32_t rx_seq = 0, tx_seq = 0, tx_used = 0;
    int rx_bad = 0;
    auto deadline = std::chrono::steady_clock::now() + 60s;
    while ((rx_seq < kFrames || tx_used < kFrames) && std::chrono::steady_clock::now() < deadline) {
        bool kick_rx = false, kick_tx = false;
        while (auto u = guest.rx.next_used()) {
            if (guest.rx_frame(*u) != received(rx_seq) && rx_bad++ < 5)
                ADD_FAILURE() << "received frame " << rx_seq << " wrong (or out of order)";
            ++rx_seq;
        }
        while (guest.rx.outstanding() < 64) {
            guest.post_rx();
            kick_rx = true;
        }
        while (guest.tx.next_used())
            ++tx_used;
        while (tx_seq < kFrames && guest.tx.outstanding() < 32) {
            guest.transmit(frame(tx_seq++));
            kick_tx = true;
            if (tx_seq % 50 == 0) {
                ASSERT_TRUE(toggler.wait_next());
            }
        }
        if (kick_rx)
            driver.notify(NetDevice::kRxQueue);
        if (kick_tx)
            driver.notify(NetDevice::kTxQueue);
        std::this_thread::yield();
    }
    flowing.store(false);
    host_sender.join();
    host_receiver.join();
    toggler.stop();

    EXPECT_EQ(rx_seq, kFrames) << "frames the host sent never reached the guest";
    EXPECT_EQ(tx_used, kFrames);
    EXPECT_EQ(host_received.load(), kFrames) << "frames the guest sent never reached the host";
    EXPECT_EQ(host_bad.load(), 0) << "the host got frames wrong, out of order or twice";
    EXPECT_FALSE(receive(peer, 20)) << "the host got more frames than the guest sent";
    std::this_thread::sleep_for(kQuiet);
    EXPECT_EQ(guest.rx.used_idx(), static_cast<uint16_t>(rx_seq)) << "the guest got more frames than sent";
    EXPECT_EQ(guest.tx.used_idx(), guest.tx.avail_idx());
    EXPECT_EQ(device->stats().rx_frames.load(), kFrames);
    EXPECT_EQ(device->stats().tx_frames.load(), kFrames);
    EXPECT_EQ(toggler.moved_while_paused(), 0) << "the rings moved while the device was paused";
    EXPECT_GE(toggler.busy_pauses(), 30) << "too few pauses while frames flowed (" << toggler.pauses() << " pauses)";
    EXPECT_EQ(driver.status() & kStatusNeedsReset, 0u);
    std::printf("[          ] %d pauses, %d while frames flowed\n", toggler.pauses(), toggler.busy_pauses());
    transport.shutdown();
    ::close(peer);
}
