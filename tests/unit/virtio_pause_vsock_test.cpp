// VM pause/resume of virtio-vsock, with the host side on real Unix sockets in a temporary directory:
// data and connections arriving from either side while paused wait (in the rings, in socket
// buffers, in the listen backlog) for resume(), a packet being delivered completes before pause()
// returns, and pausing over and over (through the virtio-mmio transport) while streams flow both
// ways loses, reorders and repeats no byte.
#include <gtest/gtest.h>

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "devices/virtio/mmio.h"
#include "devices/virtio/vsock.h"
#include "memory/guest_memory.h"
#include "virtio_pause_test_support.h"
#include "virtio_test_support.h"

using namespace vessel;
using namespace vessel::virtio;
using namespace vessel::pause_test;
using vsock::Header;
using vsock::kHeaderSize;
using vsock::Op;

namespace {

constexpr uint64_t kCid = 42;
constexpr uint64_t kRamBytes = 16ULL << 20;
constexpr uint16_t kRingSize = 64;
constexpr uint64_t kRxBuffers = 0x100000; // 8 KiB slots: header at +0, payload at +64
constexpr uint64_t kTxBuffers = 0x400000;
constexpr uint32_t kPayloadBytes = 4096;
constexpr uint64_t kSlotBytes = 8192;
constexpr uint64_t kGatePage = 0xa00000; // left untouched for FaultGate
constexpr uint32_t kGuestBufAlloc = 64 << 20; // the guest never runs out of credit to give

std::vector<uint8_t> stream_bytes(size_t n, uint8_t seed)
{
    std::vector<uint8_t> v(n);
    for (size_t i = 0; i < n; ++i)
        v[i] = static_cast<uint8_t>(seed + i * 7 + i / 4099);
    return v;
}

std::vector<uint8_t> bytes_of(std::string_view s)
{
    return { s.begin(), s.end() };
}

bool send_all(int fd, std::span<const uint8_t> data)
{
    size_t done = 0;
    while (done < data.size()) {
        ssize_t n = ::send(fd, data.data() + done, data.size() - done, MSG_NOSIGNAL);
        if (n <= 0)
            return false;
        done += static_cast<size_t>(n);
    }
    return true;
}

// What arrives on `fd` within `ms` (up to `want` bytes).
std::vector<uint8_t> host_read(int fd, size_t want, int ms)
{
    std::vector<uint8_t> out;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
    while (out.size() < want) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        pollfd p { fd, POLLIN, 0 };
        if (left.count() < 0 || ::poll(&p, 1, static_cast<int>(left.count())) != 1)
            break;
        uint8_t buf[65536];
        ssize_t n = ::recv(fd, buf, std::min(sizeof(buf), want - out.size()), MSG_DONTWAIT);
        if (n <= 0)
            break;
        out.insert(out.end(), buf, buf + n);
    }
    return out;
}

struct Packet {
    Header h;
    std::vector<uint8_t> payload;
    Op op() const { return static_cast<Op>(h.op); }
};

// A vsock device on a socket in a temporary directory, activated directly or (through_transport)
// by a driver through virtio-mmio registers, with the guest's side of the three queues.
class VsockRig {
public:
    explicit VsockRig(bool through_transport = false)
        : memory(GuestMemory::create(kRamBytes).release_value())
        , rx(memory, 0x10000, kRingSize)
        , tx(memory, 0x20000, kRingSize)
        , ev(memory, 0x30000, kRingSize)
    {
        char tmpl[] = "/tmp/vessel-vsock-pause-XXXXXX";
        EXPECT_NE(::mkdtemp(tmpl), nullptr);
        m_dir = tmpl;
        path = m_dir + "/v.sock";
        auto created = VsockDevice::create(kCid, path);
        if (!created.ok()) {
            ADD_FAILURE() << created.error().message();
            return;
        }
        device = created.value();
        if (through_transport) {
            transport.emplace(device, memory, irq_line.line());
            driver.emplace(*transport);
            EXPECT_TRUE(driver->negotiate(kFVersion1 | vsock::kFStream));
            rx.configure(*transport, vsock::kRxQueue);
            tx.configure(*transport, vsock::kTxQueue);
            ev.configure(*transport, vsock::kEventQueue);
            driver->driver_ok();
            EXPECT_EQ(driver->status() & (kStatusDriverOk | kStatusNeedsReset), kStatusDriverOk);
            return;
        }
        queues.assign(3, Queue(kRingSize));
        rx.configure(queues[0]);
        tx.configure(queues[1]);
        ev.configure(queues[2]);
        for (auto& q : queues)
            EXPECT_TRUE(q.activate(memory, kFVersion1).ok());
        EXPECT_TRUE(virtio_test::activate_device(*device, memory, irq, queues, kFVersion1).ok());
    }
    ~VsockRig()
    {
        for (int fd : m_fds)
            ::close(fd);
        if (transport)
            transport->shutdown();
        else if (device)
            device->shutdown();
        std::filesystem::remove_all(m_dir);
    }

    void notify(uint16_t queue)
    {
        if (driver)
            driver->notify(queue);
        else
            device->notify(queue);
    }
    void pause()
    {
        if (transport)
            transport->pause();
        else
            device->pause();
    }
    void resume()
    {
        if (transport)
            transport->resume();
        else
            device->resume();
    }

    // An rx buffer as Linux posts one: the header and the payload in two segments (the payload at
    // `payload_gpa` if given: a FaultGate page).
    void post_rx(std::optional<uint64_t> payload_gpa = {}, bool kick = true)
    {
        uint64_t slot = kRxBuffers + kSlotBytes * (m_rx_count++ % (2 * kRingSize));
        uint64_t payload = payload_gpa.value_or(slot + 64);
        uint16_t head = rx.add({ { slot, kHeaderSize, true }, { payload, kPayloadBytes, true } });
        m_rx_buf[head] = { slot, payload };
        if (kick)
            notify(vsock::kRxQueue);
    }

    // The next packet the device put into the rx queue, if one comes within `timeout`.
    std::optional<Packet> guest_recv(std::chrono::milliseconds timeout = 5s, bool repost = true)
    {
        std::optional<UsedElem> used;
        if (!wait_until([&] { return (used = rx.next_used()).has_value(); }, timeout))
            return std::nullopt;
        auto [hdr_gpa, payload_gpa] = m_rx_buf[used->head];
        uint8_t raw[kHeaderSize];
        EXPECT_TRUE(memory.read(hdr_gpa, raw).ok());
        Packet p { vsock::decode_header(raw), {} };
        EXPECT_GE(used->len, kHeaderSize);
        EXPECT_EQ(p.h.len + kHeaderSize, used->len);
        p.payload.resize(std::min<uint32_t>(p.h.len, kPayloadBytes));
        if (!p.payload.empty()) { // an empty vector's data() is null: memcpy from it is undefined
            EXPECT_TRUE(memory.read(payload_gpa, p.payload).ok());
        }
        if (repost)
            post_rx();
        return p;
    }

    Header guest_header(Op op, uint32_t src_port, uint32_t dst_port) const
    {
        Header h;
        h.src_cid = kCid;
        h.dst_cid = vsock::kHostCid;
        h.src_port = src_port;
        h.dst_port = dst_port;
        h.type = vsock::kTypeStream;
        h.op = static_cast<uint16_t>(op);
        h.buf_alloc = kGuestBufAlloc;
        return h;
    }

    // Puts a packet on the tx queue (header and payload in two segments).
    void guest_send(Header h, std::span<const uint8_t> payload = {})
    {
        while (tx.next_used()) { }
        EXPECT_TRUE(wait_until([&] {
            while (tx.next_used()) { }
            return tx.outstanding() < kRingSize / 4;
        }));
        h.len = static_cast<uint32_t>(payload.size());
        uint64_t slot = kTxBuffers + kSlotBytes * (m_tx_count++ % (2 * kRingSize));
        uint8_t raw[kHeaderSize];
        vsock::encode_header(h, raw);
        EXPECT_TRUE(memory.write(slot, raw).ok());
        if (payload.empty()) {
            tx.add({ { slot, kHeaderSize, false } });
        } else {
            EXPECT_TRUE(memory.write(slot + 64, payload).ok());
            tx.add({ { slot, kHeaderSize, false }, { slot + 64, static_cast<uint32_t>(payload.size()), false } });
        }
        notify(vsock::kTxQueue);
    }

    int host_connect(uint32_t port)
    {
        int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_un addr {};
        addr.sun_family = AF_UNIX;
        std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
        EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0) << std::strerror(errno);
        m_fds.push_back(fd);
        EXPECT_TRUE(send_all(fd, bytes_of("CONNECT " + std::to_string(port) + "\n")));
        return fd;
    }

    // A host-initiated connection to guest port `port` that the guest accepts: the host's fd and
    // the device's local port. `repost`: give the REQUEST's rx buffer back.
    std::pair<int, uint32_t> establish(uint32_t port, bool repost = true)
    {
        int fd = host_connect(port);
        auto req = guest_recv(5s, repost);
        EXPECT_TRUE(req && req->op() == Op::Request);
        if (!req)
            return { fd, 0 };
        Header resp = guest_header(Op::Response, port, req->h.src_port);
        guest_send(resp);
        std::string expected = "OK " + std::to_string(req->h.src_port) + "\n";
        auto ok = host_read(fd, expected.size(), 5000);
        EXPECT_EQ(std::string(ok.begin(), ok.end()), expected);
        return { fd, req->h.src_port };
    }

    GuestMemory memory;
    Ring rx, tx, ev;
    std::vector<Queue> queues;
    CountingInterrupt irq;
    CountingIrq irq_line;
    std::shared_ptr<VsockDevice> device;
    std::optional<MmioTransport> transport;
    std::optional<virtio_test::MmioDriver> driver;
    std::string path;

private:
    std::string m_dir;
    std::vector<int> m_fds;
    std::array<std::pair<uint64_t, uint64_t>, kRingSize> m_rx_buf {}; // by head: header, payload
    uint32_t m_rx_count { 0 };
    uint32_t m_tx_count { 0 };
};

} // namespace

TEST(VirtioPauseVsock, TrafficAndConnectionsWaitForResume)
{
    VsockRig rig;
    ASSERT_TRUE(rig.device);
    for (int i = 0; i < 8; ++i)
        rig.post_rx({}, i == 7);
    auto [fd, local] = rig.establish(1234);
    ASSERT_NE(local, 0u);

    rig.pause();
    uint64_t to_guest = rig.device->stats().rx_packets.load(), from_guest = rig.device->stats().tx_packets.load();
    uint16_t rx_used = rig.rx.used_idx();
    ASSERT_TRUE(send_all(fd, bytes_of("sent while paused")));
    rig.guest_send(rig.guest_header(Op::Rw, 1234, local), bytes_of("guest wrote while paused"));
    int second = rig.host_connect(77); // waits in the listen backlog
    (void)second;
    RamCopy ram(rig.memory);
    std::this_thread::sleep_for(kQuiet);
    EXPECT_EQ(rig.rx.used_idx(), rx_used) << "delivered to the guest while paused";
    EXPECT_EQ(rig.tx.used_idx(), 1) << "the guest's packet was taken while paused (only the RESPONSE was)";
    EXPECT_EQ(ram.first_change(), std::nullopt) << "a paused device writes no guest memory";
    EXPECT_TRUE(host_read(fd, 1, 0).empty()) << "the host got data while paused";
    EXPECT_EQ(rig.device->stats().rx_packets.load(), to_guest);
    EXPECT_EQ(rig.device->stats().tx_packets.load(), from_guest);

    rig.resume();
    auto got = host_read(fd, 24, 5000);
    EXPECT_EQ(std::string(got.begin(), got.end()), "guest wrote while paused");
    bool data = false, request = false;
    for (int i = 0; i < 2; ++i) {
        auto p = rig.guest_recv();
        ASSERT_TRUE(p) << "packet " << i << " after resume";
        if (p->op() == Op::Rw) {
            EXPECT_EQ(std::string(p->payload.begin(), p->payload.end()), "sent while paused");
            data = true;
        } else if (p->op() == Op::Request) {
            EXPECT_EQ(p->h.dst_port, 77u);
            request = true;
        }
    }
    EXPECT_TRUE(data && request) << "the host's data and the new connection both came through";
    EXPECT_EQ(rig.irq.errors.load(), 0);
}

TEST(VirtioPauseVsock, DeliveryInFlightCompletesBeforePauseReturns)
{
    VsockRig rig;
    ASSERT_TRUE(rig.device);
    std::optional<Background> pauser;
    FaultGate gate(rig.memory, kGatePage);
    if (!gate.error().empty())
        GTEST_SKIP() << "needs userfaultfd: " << gate.error();
    rig.post_rx();
    auto [fd, local] = rig.establish(1234, /*repost=*/false); // no rx buffer left
    ASSERT_NE(local, 0u);
    uint16_t rx_used = rig.rx.used_idx();

    rig.post_rx(kGatePage); // the next packet's payload goes to the gated page
    ASSERT_TRUE(send_all(fd, bytes_of("held")));
    ASSERT_TRUE(gate.wait_held()) << "the device did not start delivering";

    pauser.emplace([&] { rig.pause(); });
    std::this_thread::sleep_for(kQuiet);
    EXPECT_FALSE(pauser->done()) << "pause() returned with a packet half delivered";
    EXPECT_EQ(rig.rx.used_idx(), rx_used);

    gate.release();
    ASSERT_TRUE(wait_until([&] { return pauser->done(); }));
    pauser->join();
    EXPECT_EQ(rig.rx.used_idx(), rx_used + 1) << "the packet in flight is used before pause() returns";
    EXPECT_GE(rig.irq.queues[vsock::kRxQueue].load(), 1);
    auto p = rig.guest_recv(0ms, /*repost=*/false);
    ASSERT_TRUE(p);
    EXPECT_EQ(p->op(), Op::Rw);
    EXPECT_EQ(std::string(p->payload.begin(), p->payload.end()), "held");
    RamCopy ram(rig.memory);
    std::this_thread::sleep_for(kQuiet);
    EXPECT_EQ(ram.first_change(), std::nullopt);
    rig.resume();
}

TEST(VirtioPauseVsock, PausingAnIdleDeviceIsQuick)
{
    VsockRig rig;
    ASSERT_TRUE(rig.device);
    rig.post_rx();
    double median = median_pause_ms([&] { rig.pause(); }, [&] { rig.resume(); });
    EXPECT_LT(median, 5.0) << "median pause() of an idle device, ms";
    auto [fd, local] = rig.establish(5);
    (void)fd;
    EXPECT_NE(local, 0u) << "still serving after the pauses";
}

// The VM's way: MmioTransport::pause()/resume() from one thread while a host stream sends 1 MiB to
// the guest and the guest sends 200 KiB (within the credit the device grants) to the host, letting
// at least one pause by every three packets.
TEST(VirtioPauseVsock, PausingOverAndOverWhileStreamsFlowLosesNothing)
{
    constexpr size_t kToGuest = 1 << 20;
    constexpr size_t kToHost = 200 * 1024;
    constexpr size_t kChunk = 2048;
    VsockRig rig(/*through_transport=*/true);
    ASSERT_TRUE(rig.device);
    for (int i = 0; i < 32; ++i)
        rig.post_rx({}, i == 31);
    auto [fd, local] = rig.establish(1234);
    ASSERT_NE(local, 0u);
    timeval send_timeout { 20, 0 };
    ASSERT_EQ(::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &send_timeout, sizeof(send_timeout)), 0);

    std::atomic<bool> flowing { true };
    Toggler toggler([&] { rig.pause(); }, [&] { rig.resume(); },
        [&] { return uint64_t(rig.rx.used_idx()) << 16 | rig.tx.used_idx(); }, [&] { return flowing.load(); });
    auto to_guest = stream_bytes(kToGuest, 3);
    auto to_host = stream_bytes(kToHost, 11);
    std::jthread host_writer([&] { send_all(fd, to_guest); });
    std::vector<uint8_t> host_got;
    std::jthread host_reader([&] { host_got = host_read(fd, kToHost, 30000); });

    std::vector<uint8_t> guest_got;
    size_t sent = 0;
    int others = 0;
    auto deadline = std::chrono::steady_clock::now() + 60s;
    while ((guest_got.size() < kToGuest || sent < kToHost) && std::chrono::steady_clock::now() < deadline) {
        if (sent < kToHost) {
            size_t n = std::min(kChunk, kToHost - sent);
            rig.guest_send(rig.guest_header(Op::Rw, 1234, local), std::span(to_host).subspan(sent, n));
            sent += n;
            if (sent % (3 * kChunk) == 0) {
                ASSERT_TRUE(toggler.wait_next());
            }
        }
        while (auto p = rig.guest_recv(0ms)) {
            if (p->op() == Op::Rw && p->h.src_port == local)
                guest_got.insert(guest_got.end(), p->payload.begin(), p->payload.end());
            else
                ++others; // credit updates
        }
        std::this_thread::yield();
    }
    flowing.store(false);
    host_writer.join();
    host_reader.join();
    toggler.stop();

    EXPECT_EQ(guest_got.size(), kToGuest);
    EXPECT_TRUE(guest_got == to_guest) << "the guest's stream is not the host's bytes, once, in order";
    EXPECT_EQ(host_got.size(), kToHost);
    EXPECT_TRUE(host_got == to_host) << "the host's stream is not the guest's bytes, once, in order";
    EXPECT_TRUE(host_read(fd, 1, 20).empty()) << "the host got more than the guest sent";
    std::this_thread::sleep_for(kQuiet);
    while (auto p = rig.guest_recv(0ms))
        EXPECT_NE(p->op(), Op::Rw) << "the guest got more than the host sent";
    EXPECT_EQ(toggler.moved_while_paused(), 0) << "the rings moved while the device was paused";
    EXPECT_GE(toggler.busy_pauses(), 30) << "too few pauses while the streams flowed (" << toggler.pauses()
                                         << " pauses)";
    EXPECT_EQ(rig.driver->status() & kStatusNeedsReset, 0u);
    EXPECT_EQ(rig.device->stats().credit_violations.load(), 0u);
    std::printf("[          ] %d pauses, %d while the streams flowed; %d packets other than data\n", toggler.pauses(),
        toggler.busy_pauses(), others);
}
