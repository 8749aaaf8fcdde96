// virtio-net device tests: a driver written here lays out split rings in guest RAM; the device's
// backend is one end of a SOCK_SEQPACKET socketpair (one frame per message, like a tap) and the
// test plays the host network on the other end. The device runs its own I/O thread, as in the VMM.
#include <gtest/gtest.h>

#include <linux/if_tun.h>
#include <poll.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <mutex>
#include <optional>
#include <thread>

#include "devices/virtio/net.h"
#include "devices/virtio/queue.h"
#include "devices/virtio/tap.h"
#include "memory/guest_memory.h"

using namespace vessel;
using namespace vessel::virtio;

namespace {

constexpr uint64_t kRamBytes = 16ULL << 20;
constexpr std::array<uint8_t, 6> kMac { 0x52, 0x54, 0x00, 0xab, 0xcd, 0xef };
constexpr auto kWait = std::chrono::seconds(10);

class RecordingInterrupt final : public VirtioInterrupt {
public:
    void signal_queue(uint16_t queue) override { ++signals[queue & 1]; }
    void signal_config() override { ++config_signals; }
    void device_error(std::string_view why) override
    {
        std::lock_guard lock(m_lock);
        m_error = why;
        failed = true;
    }
    std::string error()
    {
        std::lock_guard lock(m_lock);
        return m_error;
    }

    std::atomic<int> signals[2] {};
    std::atomic<int> config_signals { 0 };
    std::atomic<bool> failed { false };

private:
    std::mutex m_lock;
    std::string m_error;
};

struct Buf {
    uint64_t gpa;
    uint32_t len;
    bool writable;
};

struct UsedElem {
    uint32_t id;
    uint32_t len;
};

// The driver's side of one split virtqueue in guest RAM (virtio v1.2, 2.7).
class DriverQueue {
public:
    DriverQueue(GuestMemory& mem, Queue& queue, uint64_t base, uint16_t size)
        : m_mem(mem)
        , m_size(size)
        , m_desc(base)
        , m_avail(base + 16ULL * size)
        , m_used((base + 16ULL * size + 6 + 2ULL * size + 3) & ~3ULL)
    {
        std::memset(mem.host_ptr(base, 0x4000), 0, 0x4000);
        queue.reset();
        queue.set_size(size);
        queue.set_desc_addr(m_desc);
        queue.set_avail_addr(m_avail);
        queue.set_used_addr(m_used);
        queue.set_ready(true);
    }

    // Writes a descriptor chain and publishes it; returns its head.
    uint16_t add(const std::vector<Buf>& bufs)
    {
        uint16_t head = m_next_desc;
        for (size_t i = 0; i < bufs.size(); ++i) {
            uint16_t index = m_next_desc;
            m_next_desc = static_cast<uint16_t>((m_next_desc + 1) % m_size);
            uint16_t flags = (bufs[i].writable ? kDescWrite : 0) | (i + 1 < bufs.size() ? kDescNext : 0);
            write_desc(index, bufs[i].gpa, bufs[i].len, flags, m_next_desc);
        }
        publish(head);
        return head;
    }

    void write_desc(uint16_t index, uint64_t gpa, uint32_t len, uint16_t flags, uint16_t next)
    {
        uint8_t* d = m_mem.host_ptr(m_desc + 16ULL * index, 16);
        std::memcpy(d, &gpa, 8);
        std::memcpy(d + 8, &len, 4);
        std::memcpy(d + 12, &flags, 2);
        std::memcpy(d + 14, &next, 2);
    }

    void publish(uint16_t head)
    {
        uint16_t* ring = reinterpret_cast<uint16_t*>(m_mem.host_ptr(m_avail + 4 + 2ULL * (m_avail_idx % m_size), 2));
        *ring = head;
        ++m_avail_idx;
        std::atomic_ref<uint16_t>(*reinterpret_cast<uint16_t*>(m_mem.host_ptr(m_avail + 2, 2)))
            .store(m_avail_idx, std::memory_order_release);
    }

    uint16_t used_idx() const
    {
        return std::atomic_ref<uint16_t>(*reinterpret_cast<uint16_t*>(m_mem.host_ptr(m_used + 2, 2)))
            .load(std::memory_order_acquire);
    }

    UsedElem used(uint16_t i) const
    {
        UsedElem e;
        std::memcpy(&e, m_mem.host_ptr(m_used + 4 + 8ULL * (i % m_size), 8), 8);
        return e;
    }

    bool wait_used(uint16_t count) const
    {
        auto deadline = std::chrono::steady_clock::now() + kWait;
        while (static_cast<uint16_t>(used_idx()) < count) {
            if (std::chrono::steady_clock::now() > deadline)
                return false;
            std::this_thread::sleep_for(std::chrono::microseconds(200));
        }
        return true;
    }

    // Waits until fewer than `limit` buffers are outstanding (false after a while: a stuck device).
    bool wait_room(uint16_t limit) const
    {
        auto deadline = std::chrono::steady_clock::now() + kWait;
        while (static_cast<uint16_t>(m_avail_idx - used_idx()) >= limit) {
            if (std::chrono::steady_clock::now() > deadline)
                return false;
            std::this_thread::sleep_for(std::chrono::microseconds(50));
        }
        return true;
    }

    // With EVENT_IDX: does the device want a notification for the buffers published since `old`?
    bool kick_needed(uint16_t old) const
    {
        std::atomic_thread_fence(std::memory_order_seq_cst);
        uint16_t event
            = std::atomic_ref<uint16_t>(*reinterpret_cast<uint16_t*>(m_mem.host_ptr(m_used + 4 + 8ULL * m_size, 2)))
                  .load(std::memory_order_relaxed);
        return static_cast<uint16_t>(m_avail_idx - event - 1) < static_cast<uint16_t>(m_avail_idx - old);
    }
    // Without EVENT_IDX: the device's NO_NOTIFY flag.
    bool notifications_suppressed() const
    {
        std::atomic_thread_fence(std::memory_order_seq_cst);
        return std::atomic_ref<uint16_t>(*reinterpret_cast<uint16_t*>(m_mem.host_ptr(m_used, 2)))
                   .load(std::memory_order_relaxed)
            & kUsedNoNotify;
    }

    uint16_t avail_idx() const { return m_avail_idx; }

private:
    GuestMemory& m_mem;
    uint16_t m_size;
    uint64_t m_desc, m_avail, m_used;
    uint16_t m_next_desc { 0 };
    uint16_t m_avail_idx { 0 };
};

std::vector<uint8_t> pattern(size_t n, uint8_t seed)
{
    std::vector<uint8_t> v(n);
    for (size_t i = 0; i < n; ++i)
        v[i] = static_cast<uint8_t>(seed + i * 7 + (i >> 8));
    return v;
}

NetHeader header(uint8_t flags = 0, uint8_t gso = kNetHdrGsoNone, uint16_t gso_size = 0)
{
    NetHeader h {};
    h.flags = flags;
    h.gso_type = gso;
    h.gso_size = gso_size;
    if (flags & kNetHdrFNeedsCsum) {
        h.csum_start = 34;
        h.csum_offset = 16;
    }
    if (gso != kNetHdrGsoNone)
        h.hdr_len = 54;
    return h;
}

std::vector<uint8_t> frame_bytes(const NetHeader& h, const std::vector<uint8_t>& payload)
{
    std::vector<uint8_t> v(sizeof(h) + payload.size());
    std::memcpy(v.data(), &h, sizeof(h));
    std::memcpy(v.data() + sizeof(h), payload.data(), payload.size());
    return v;
}

class VirtioNet : public ::testing::Test {
protected:
    static constexpr uint64_t kRxRing = 0x10000;
    static constexpr uint64_t kTxRing = 0x20000;
    static constexpr uint64_t kRxBuffers = 0x100000; // 4 MiB of receive buffers
    static constexpr uint64_t kTxBuffers = 0x600000; // 4 MiB of transmit buffers

    void SetUp() override
    {
        auto mem = GuestMemory::create(kRamBytes);
        ASSERT_TRUE(mem.ok()) << mem.error().message();
        m_mem.emplace(std::move(mem.value()));
        m_queues.assign(2, Queue(NetDevice::kQueueSize));
    }

    void TearDown() override
    {
        if (m_dev)
            m_dev->shutdown();
        if (m_peer >= 0)
            ::close(m_peer);
    }

    // A device on a fresh socketpair; `sndbuf` (if set) limits the backend's send buffer.
    void make_device(uint32_t offloads = kNetOffloadCsum | kNetOffloadTso4 | kNetOffloadTso6,
        NetDevice::Mode mode = NetDevice::Mode::Thread, int sndbuf = 0)
    {
        int sv[2];
        ASSERT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
        if (sndbuf) {
            ASSERT_EQ(::setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf)), 0);
        }
        auto backend = std::make_unique<SocketBackend>(sv[0], offloads);
        m_backend = backend.get();
        m_peer = sv[1];
        m_dev = std::make_unique<NetDevice>(std::move(backend), kMac, mode);
    }

    // Lays out both queues and activates the device with `features` (VERSION_1 added).
    void activate(uint64_t features, uint16_t rx_size = 256, uint16_t tx_size = 256)
    {
        m_rx.emplace(*m_mem, m_queues[0], kRxRing, rx_size);
        m_tx.emplace(*m_mem, m_queues[1], kTxRing, tx_size);
        m_features = features | kFVersion1;
        ASSERT_EQ(m_features & ~(m_dev->features() | kFVersion1 | kFRingEventIdx | kFRingIndirectDesc), 0u)
            << "the test negotiates only offered features";
        for (auto& q : m_queues)
            ASSERT_TRUE(q.activate(*m_mem, m_features).ok());
        ActivateContext ctx;
        ctx.memory = &*m_mem;
        ctx.interrupt = &m_irq;
        ctx.features = m_features;
        ctx.queues = std::span<Queue>(m_queues);
        auto r = m_dev->activate(ctx);
        ASSERT_TRUE(r.ok()) << r.error().message();
    }

    void start(uint64_t features) // the usual case: thread mode, full offloads
    {
        make_device();
        activate(features);
    }

    uint8_t* host(uint64_t gpa, uint64_t len) { return m_mem->host_ptr(gpa, len); }

    void put(uint64_t gpa, const std::vector<uint8_t>& bytes)
    {
        std::memcpy(host(gpa, bytes.size()), bytes.data(), bytes.size());
    }

    std::vector<uint8_t> get(uint64_t gpa, size_t len) { return { host(gpa, len), host(gpa, len) + len }; }

    // A transmit chain: the bytes split into pieces of `pieces` sizes (the rest in the last).
    uint16_t transmit(const std::vector<uint8_t>& bytes, std::vector<uint32_t> pieces = {})
    {
        std::vector<Buf> bufs;
        size_t at = 0;
        for (size_t i = 0; at < bytes.size() || bufs.empty(); ++i) {
            uint32_t len = i < pieces.size() ? pieces[i] : static_cast<uint32_t>(bytes.size() - at);
            uint64_t gpa = m_tx_next;
            m_tx_next += (len + 63) & ~63ULL;
            if (m_tx_next > kTxBuffers + (4 << 20)) { // wrap (tests never keep that much in flight)
                gpa = kTxBuffers;
                m_tx_next = gpa + ((len + 63) & ~63ULL);
            }
            std::memcpy(host(gpa, len), bytes.data() + at, len);
            bufs.push_back({ gpa, len, false });
            at += len;
        }
        uint16_t head = m_tx->add(bufs);
        m_dev->notify(NetDevice::kTxQueue);
        return head;
    }

    // A receive chain of writable buffers of the given sizes; returns {head, first gpa}.
    std::pair<uint16_t, uint64_t> post_rx(std::vector<uint32_t> sizes, bool kick = true)
    {
        std::vector<Buf> bufs;
        uint64_t first = m_rx_next;
        for (uint32_t len : sizes) {
            bufs.push_back({ m_rx_next, len, true });
            std::memset(host(m_rx_next, len), 0xee, len);
            m_rx_next += (len + 63) & ~63ULL;
        }
        uint16_t head = m_rx->add(bufs);
        if (kick)
            m_dev->notify(NetDevice::kRxQueue);
        return { head, first };
    }

    void peer_send(const std::vector<uint8_t>& bytes)
    {
        ASSERT_EQ(::send(m_peer, bytes.data(), bytes.size(), 0), static_cast<ssize_t>(bytes.size()));
    }

    // The next frame the device sent, or nothing within `ms`.
    std::optional<std::vector<uint8_t>> peer_recv(int ms = 10000)
    {
        pollfd p { m_peer, POLLIN, 0 };
        if (::poll(&p, 1, ms) != 1)
            return std::nullopt;
        std::vector<uint8_t> buf(1 << 17);
        ssize_t n = ::recv(m_peer, buf.data(), buf.size(), MSG_DONTWAIT);
        if (n < 0)
            return std::nullopt;
        buf.resize(static_cast<size_t>(n));
        return buf;
    }

    // Counts frames arriving at the peer on a thread, so that the backend never fills up.
    std::jthread drain_peer(std::atomic<int>& count, int expected)
    {
        return std::jthread([this, &count, expected] {
            while (count.load() < expected && peer_recv(5000))
                ++count;
        });
    }

    uint16_t num_buffers(uint64_t rx_gpa)
    {
        uint16_t n;
        std::memcpy(&n, host(rx_gpa + offsetof(NetHeader, num_buffers), 2), 2);
        return n;
    }

    std::optional<GuestMemory> m_mem;
    std::vector<Queue> m_queues;
    std::optional<DriverQueue> m_rx, m_tx;
    RecordingInterrupt m_irq;
    std::unique_ptr<NetDevice> m_dev;
    SocketBackend* m_backend { nullptr };
    int m_peer { -1 };
    uint64_t m_features { 0 };
    uint64_t m_rx_next { kRxBuffers };
    uint64_t m_tx_next { kTxBuffers };
};

// --- features and configuration ------------------------------------------------------------------

TEST_F(VirtioNet, OffersFeaturesTheBackendSupports)
{
    make_device();
    uint64_t f = m_dev->features();
    for (uint64_t bit : { kNetFMac, kNetFStatus, kNetFMrgRxbuf, kNetFCsum, kNetFHostTso4, kNetFHostTso6, kNetFGuestCsum,
             kNetFGuestTso4, kNetFGuestTso6 })
        EXPECT_TRUE(f & bit) << "feature bit " << __builtin_ctzll(bit);
    EXPECT_FALSE(f & kNetFCtrlVq) << "no control queue is implemented";
    EXPECT_FALSE(f & kNetFGuestUfo);
    EXPECT_FALSE(f & kNetFGuestEcn) << "the backend did not offer TSO_ECN";
    EXPECT_EQ(m_dev->queue_max_sizes().size(), 2u);
    EXPECT_EQ(m_dev->type(), DeviceType::Net);

    // A backend that cannot pass offloads to the guest: no GUEST_* offload features.
    TearDown();
    m_peer = -1;
    make_device(0);
    f = m_dev->features();
    EXPECT_FALSE(f & (kNetFGuestCsum | kNetFGuestTso4 | kNetFGuestTso6 | kNetFGuestEcn));
    EXPECT_TRUE(f & kNetFHostTso4) << "guest -> host offloads do not depend on the backend's receive offloads";

    // Checksum only: no segmentation either way for the guest.
    TearDown();
    m_peer = -1;
    make_device(kNetOffloadCsum);
    f = m_dev->features();
    EXPECT_TRUE(f & kNetFGuestCsum);
    EXPECT_FALSE(f & (kNetFGuestTso4 | kNetFGuestTso6));
}

TEST_F(VirtioNet, ConfigSpaceHasMacAndLinkUp)
{
    make_device();
    uint8_t config[16];
    std::memset(config, 0xaa, sizeof(config));
    m_dev->read_config(0, config);
    EXPECT_EQ(std::memcmp(config, kMac.data(), 6), 0);
    EXPECT_EQ(config[6] | config[7] << 8, kNetStatusLinkUp);
    EXPECT_EQ(config[8] | config[9] << 8, 1) << "max_virtqueue_pairs";
    for (int i = 10; i < 16; ++i)
        EXPECT_EQ(config[i], 0) << "byte " << i;
    uint8_t one;
    m_dev->read_config(3, std::span(&one, 1));
    EXPECT_EQ(one, kMac[3]);
    m_dev->read_config(~0ULL, std::span(&one, 1));
    EXPECT_EQ(one, 0);
    uint8_t junk[6] = { 1, 2, 3, 4, 5, 6 };
    m_dev->write_config(0, junk);
    m_dev->read_config(0, std::span(config, 6));
    EXPECT_EQ(std::memcmp(config, kMac.data(), 6), 0) << "the MAC is read-only";
}

TEST(VirtioNetMac, DefaultMacIsLocallyAdministeredAndPerDevice)
{
    auto a = NetDevice::default_mac("vtap0", 0);
    EXPECT_EQ(a[0], 0x52);
    EXPECT_EQ(a[1], 0x54);
    EXPECT_EQ(a[2], 0x00);
    EXPECT_TRUE(a[0] & 2) << "locally administered";
    EXPECT_FALSE(a[0] & 1) << "unicast";
    EXPECT_EQ(a, NetDevice::default_mac("vtap0", 0)) << "stable";
    EXPECT_NE(a, NetDevice::default_mac("vtap1", 0));
    EXPECT_NE(a, NetDevice::default_mac("vtap0", 1));
}

TEST_F(VirtioNet, ActivationNeedsBothQueuesAndSetsOffloads)
{
    make_device();
    m_rx.emplace(*m_mem, m_queues[0], kRxRing, 256);
    ASSERT_TRUE(m_queues[0].activate(*m_mem, kFVersion1).ok());
    ActivateContext ctx { &*m_mem, &m_irq, kFVersion1, std::span<Queue>(m_queues) };
    auto r = m_dev->activate(ctx);
    ASSERT_FALSE(r.ok()) << "the transmit queue is not set up";
    EXPECT_NE(r.error().message().find("transmit"), std::string::npos);

    activate(kNetFGuestCsum | kNetFGuestTso4);
    EXPECT_EQ(m_backend->offloads(), kNetOffloadCsum | kNetOffloadTso4);
    m_dev->reset();
    // TSO without checksum offload is not a valid combination: no offloads at all.
    activate(kNetFGuestTso6);
    EXPECT_EQ(m_backend->offloads(), 0u);
}

// --- transmit ------------------------------------------------------------------------------------

TEST_F(VirtioNet, TransmitsHeaderAndFrameFromSeveralSegments)
{
    start(kNetFCsum | kNetFHostTso4);
    auto payload = pattern(1000, 1);
    NetHeader h = header(kNetHdrFNeedsCsum | kNetHdrFDataValid, kNetHdrGsoTcpV4, 1448);
    uint16_t head = transmit(frame_bytes(h, payload), { 12, 300, 500 });
    auto got = peer_recv();
    ASSERT_TRUE(got);
    ASSERT_EQ(got->size(), 1012u);
    NetHeader sent;
    std::memcpy(&sent, got->data(), sizeof(sent));
    EXPECT_EQ(sent.flags, kNetHdrFNeedsCsum) << "DATA_VALID is receive-only and is cleared";
    EXPECT_EQ(sent.gso_type, kNetHdrGsoTcpV4);
    EXPECT_EQ(sent.gso_size, 1448);
    EXPECT_EQ(sent.csum_start, 34);
    EXPECT_EQ(sent.csum_offset, 16);
    EXPECT_EQ(sent.hdr_len, 54);
    EXPECT_TRUE(std::equal(payload.begin(), payload.end(), got->begin() + 12));

    ASSERT_TRUE(m_tx->wait_used(1));
    EXPECT_EQ(m_tx->used(0).id, head);
    EXPECT_EQ(m_tx->used(0).len, 0u);
    EXPECT_GE(m_irq.signals[1].load(), 1);
    EXPECT_EQ(m_dev->stats().tx_frames.load(), 1u);
    EXPECT_EQ(m_dev->stats().tx_bytes.load(), 1000u);
    EXPECT_EQ(m_dev->stats().tx_dropped.load(), 0u);

    // A header split across descriptors is put together.
    transmit(frame_bytes(header(), payload), { 5, 7, 100 });
    got = peer_recv();
    ASSERT_TRUE(got);
    ASSERT_EQ(got->size(), 1012u);
    EXPECT_TRUE(std::equal(payload.begin(), payload.end(), got->begin() + 12));
}

TEST_F(VirtioNet, TransmitDropsMalformedChainsAndCarriesOn)
{
    start(kNetFCsum | kNetFHostTso4); // no HOST_TSO6, no HOST_ECN
    std::vector<uint8_t> small(8, 0);
    transmit(small); // shorter than the header
    transmit(frame_bytes(header(), pattern(kNetMaxFrameBytes + 1, 2))); // longer than any frame
    transmit(frame_bytes(header(kNetHdrFNeedsCsum, kNetHdrGsoTcpV6, 1400), pattern(3000, 3))); // TSO6
    transmit(frame_bytes(header(kNetHdrFNeedsCsum, kNetHdrGsoUdp, 1400), pattern(3000, 3))); // UFO
    transmit(frame_bytes(header(kNetHdrFNeedsCsum, kNetHdrGsoTcpV4 | kNetHdrGsoEcn, 1400), pattern(3000, 3)));
    transmit(frame_bytes(header(0, 0x42), pattern(100, 3))); // unknown GSO type
    // Only device-writable buffers: nothing to send.
    m_tx->add({ { kTxBuffers + (3 << 20), 100, true } });
    m_dev->notify(NetDevice::kTxQueue);
    // The largest frame still goes through, and then a normal one.
    auto biggest = pattern(kNetMaxFrameBytes, 4);
    transmit(frame_bytes(header(), biggest), { 12, 40000 });
    auto ok = pattern(60, 5);
    transmit(frame_bytes(header(), ok));

    ASSERT_TRUE(m_tx->wait_used(9));
    for (uint16_t i = 0; i < 9; ++i)
        EXPECT_EQ(m_tx->used(i).len, 0u);
    auto got = peer_recv();
    ASSERT_TRUE(got);
    ASSERT_EQ(got->size(), 12 + biggest.size());
    EXPECT_TRUE(std::equal(biggest.begin(), biggest.end(), got->begin() + 12));
    got = peer_recv();
    ASSERT_TRUE(got);
    ASSERT_EQ(got->size(), 72u);
    EXPECT_FALSE(peer_recv(100)) << "nothing else was sent";
    EXPECT_EQ(m_dev->stats().tx_dropped.load(), 7u);
    EXPECT_EQ(m_dev->stats().tx_frames.load(), 2u);
    EXPECT_FALSE(m_irq.failed.load()) << "dropping a frame is not a device error";
}

TEST_F(VirtioNet, ChecksumOffloadNotNegotiatedDropsPartialChecksums)
{
    start(0);
    transmit(frame_bytes(header(kNetHdrFNeedsCsum), pattern(100, 1)));
    transmit(frame_bytes(header(), pattern(100, 2)));
    ASSERT_TRUE(m_tx->wait_used(2));
    auto got = peer_recv();
    ASSERT_TRUE(got);
    EXPECT_EQ((*got)[12], pattern(100, 2)[0]);
    EXPECT_EQ(m_dev->stats().tx_dropped.load(), 1u);
}

TEST_F(VirtioNet, TransmitWaitsWhenTheBackendIsFull)
{
    make_device(kNetOffloadCsum, NetDevice::Mode::Thread, 8192); // room for a few frames only
    activate(0);
    constexpr int kFrames = 100;
    for (int i = 0; i < kFrames; ++i) {
        auto payload = pattern(1500, static_cast<uint8_t>(i));
        payload[0] = static_cast<uint8_t>(i);
        transmit(frame_bytes(header(), payload));
    }
    // The device cannot have sent them all yet; it must neither drop nor lose any.
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    EXPECT_LT(m_tx->used_idx(), kFrames);
    for (int i = 0; i < kFrames; ++i) {
        auto got = peer_recv();
        ASSERT_TRUE(got) << "frame " << i;
        ASSERT_EQ(got->size(), 1512u);
        EXPECT_EQ((*got)[12], i) << "in order";
    }
    ASSERT_TRUE(m_tx->wait_used(kFrames));
    EXPECT_EQ(m_dev->stats().tx_dropped.load(), 0u);
}

// --- receive -------------------------------------------------------------------------------------

TEST_F(VirtioNet, ReceivesFrameIntoOneChain)
{
    start(kNetFGuestCsum);
    auto [head, gpa] = post_rx({ 12, 1518 }); // header and data in separate descriptors
    post_rx({ 1530 });
    auto payload = pattern(500, 9);
    NetHeader h = header(kNetHdrFDataValid);
    h.num_buffers = 77; // the device's to set
    peer_send(frame_bytes(h, payload));
    ASSERT_TRUE(m_rx->wait_used(1));
    EXPECT_EQ(m_rx->used(0).id, head);
    EXPECT_EQ(m_rx->used(0).len, 512u);
    NetHeader got;
    std::memcpy(&got, host(gpa, 12), 12);
    EXPECT_EQ(got.flags, kNetHdrFDataValid);
    EXPECT_EQ(got.num_buffers, 1) << "1 without MRG_RXBUF";
    uint64_t data = gpa + 64; // the second descriptor (buffers are 64-byte aligned)
    EXPECT_EQ(get(data, 500), payload);
    EXPECT_EQ(*host(data + 500, 1), 0xee) << "nothing written past the frame";
    EXPECT_GE(m_irq.signals[0].load(), 1);
    EXPECT_EQ(m_dev->stats().rx_frames.load(), 1u);
    EXPECT_EQ(m_dev->stats().rx_bytes.load(), 500u);
}

TEST_F(VirtioNet, MergeableBuffersSplitAFrameAndCountThem)
{
    start(kNetFMrgRxbuf);
    std::vector<std::pair<uint16_t, uint64_t>> chains;
    for (int i = 0; i < 4; ++i)
        chains.push_back(post_rx({ 512 }));
    auto payload = pattern(1400, 3);
    peer_send(frame_bytes(header(), payload));
    ASSERT_TRUE(m_rx->wait_used(3));
    uint32_t lens[3] = { 512, 512, 1412 - 1024 };
    std::vector<uint8_t> joined;
    for (uint16_t i = 0; i < 3; ++i) {
        EXPECT_EQ(m_rx->used(i).id, chains[i].first);
        EXPECT_EQ(m_rx->used(i).len, lens[i]);
        auto part = get(chains[i].second, lens[i]);
        joined.insert(joined.end(), part.begin(), part.end());
    }
    EXPECT_EQ(num_buffers(chains[0].second), 3);
    EXPECT_TRUE(std::equal(payload.begin(), payload.end(), joined.begin() + 12));
    EXPECT_EQ(m_rx->used_idx(), 3) << "one frame, three buffers";

    // The fourth chain is kept for the next frame: 512 bytes are fewer than a full-sized frame
    // may need, so the device waits for more buffers before reading it.
    auto small = pattern(100, 4);
    peer_send(frame_bytes(header(), small));
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    EXPECT_EQ(m_rx->used_idx(), 3);
    for (int i = 0; i < 3; ++i)
        post_rx({ 512 });
    ASSERT_TRUE(m_rx->wait_used(4));
    EXPECT_EQ(m_rx->used(3).id, chains[3].first);
    EXPECT_EQ(m_rx->used(3).len, 112u);
    EXPECT_EQ(num_buffers(chains[3].second), 1);
    EXPECT_EQ(get(chains[3].second + 12, 100), small);
}

TEST_F(VirtioNet, MergeableBuffersTakeA64KiBGsoFrame)
{
    start(kNetFMrgRxbuf | kNetFGuestCsum | kNetFGuestTso4 | kNetFGuestTso6);
    EXPECT_EQ(m_backend->offloads(), kNetOffloadCsum | kNetOffloadTso4 | kNetOffloadTso6);
    std::vector<std::pair<uint16_t, uint64_t>> chains;
    for (int i = 0; i < 20; ++i)
        chains.push_back(post_rx({ 4096 }));
    auto payload = pattern(kNetMaxFrameBytes, 5);
    NetHeader h = header(kNetHdrFNeedsCsum, kNetHdrGsoTcpV4, 1448);
    peer_send(frame_bytes(h, payload));
    size_t k = (12 + payload.size() + 4095) / 4096; // 17
    ASSERT_TRUE(m_rx->wait_used(static_cast<uint16_t>(k)));
    EXPECT_EQ(num_buffers(chains[0].second), k);
    std::vector<uint8_t> joined;
    for (size_t i = 0; i < k; ++i) {
        UsedElem e = m_rx->used(static_cast<uint16_t>(i));
        EXPECT_EQ(e.id, chains[i].first);
        auto part = get(chains[i].second, e.len);
        joined.insert(joined.end(), part.begin(), part.end());
    }
    ASSERT_EQ(joined.size(), 12 + payload.size());
    NetHeader got;
    std::memcpy(&got, joined.data(), 12);
    EXPECT_EQ(got.gso_type, kNetHdrGsoTcpV4);
    EXPECT_EQ(got.gso_size, 1448);
    EXPECT_TRUE(std::equal(payload.begin(), payload.end(), joined.begin() + 12));
}

TEST_F(VirtioNet, WaitsForBuffersWithoutLosingFramesOrSpinning)
{
    start(kNetFMrgRxbuf);
    for (int i = 0; i < 3; ++i)
        peer_send(frame_bytes(header(), pattern(200, static_cast<uint8_t>(i))));
    timespec c0, c1;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c0);
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c1);
    double cpu_ms = (c1.tv_sec - c0.tv_sec) * 1e3 + (c1.tv_nsec - c0.tv_nsec) / 1e6;
    EXPECT_LT(cpu_ms, 30.0) << "the device must stop polling the backend while it has no buffers";
    EXPECT_EQ(m_rx->used_idx(), 0);
    EXPECT_EQ(m_dev->stats().rx_dropped.load(), 0u);

    std::vector<uint64_t> gpas;
    for (int i = 0; i < 3; ++i)
        gpas.push_back(post_rx({ 2048 }).second);
    ASSERT_TRUE(m_rx->wait_used(3));
    for (int i = 0; i < 3; ++i) {
        EXPECT_EQ(m_rx->used(static_cast<uint16_t>(i)).len, 212u);
        EXPECT_EQ(get(gpas[i] + 12, 200), pattern(200, static_cast<uint8_t>(i))) << "frame " << i << " in order";
    }
}

TEST_F(VirtioNet, FrameTooBigForTheBufferIsDroppedAndTheBufferReused)
{
    start(0);
    auto [head, gpa] = post_rx({ 112 });
    peer_send(frame_bytes(header(), pattern(500, 1)));
    auto small = pattern(50, 2);
    peer_send(frame_bytes(header(), small));
    ASSERT_TRUE(m_rx->wait_used(1));
    EXPECT_EQ(m_rx->used(0).id, head);
    EXPECT_EQ(m_rx->used(0).len, 62u);
    EXPECT_EQ(get(gpa + 12, 50), small);
    EXPECT_EQ(m_dev->stats().rx_dropped.load(), 1u);
    EXPECT_EQ(m_dev->stats().rx_frames.load(), 1u);
}

TEST_F(VirtioNet, ChainsThatCannotHoldTheHeaderAreReturnedUnused)
{
    start(0);
    auto tiny = post_rx({ 8 });
    auto readable_only = m_rx->add({ { kRxBuffers + (3 << 20), 2048, false } });
    m_dev->notify(NetDevice::kRxQueue);
    auto good = post_rx({ 1530 });
    peer_send(frame_bytes(header(), pattern(64, 1)));
    ASSERT_TRUE(m_rx->wait_used(3));
    EXPECT_EQ(m_rx->used(0).id, tiny.first);
    EXPECT_EQ(m_rx->used(0).len, 0u);
    EXPECT_EQ(m_rx->used(1).id, readable_only);
    EXPECT_EQ(m_rx->used(1).len, 0u);
    EXPECT_EQ(m_rx->used(2).id, good.first);
    EXPECT_EQ(m_rx->used(2).len, 76u);
    EXPECT_EQ(*host(tiny.second, 1), 0xee) << "the tiny buffer was not written";
}

TEST_F(VirtioNet, RuntsWithoutAHeaderAreDropped)
{
    start(0);
    post_rx({ 1530 });
    peer_send({ 1, 2, 3 });
    peer_send(frame_bytes(header(), pattern(64, 1)));
    ASSERT_TRUE(m_rx->wait_used(1));
    EXPECT_EQ(m_rx->used(0).len, 76u);
    EXPECT_EQ(m_dev->stats().rx_dropped.load(), 1u);
}

// --- notifications, errors, reset ------------------------------------------------------------------

// A driver that notifies only when the device asked (EVENT_IDX, or NO_NOTIFY without it): a
// device that forgets to re-arm notifications loses a wake-up and the test times out.
TEST_F(VirtioNet, NoWakeupIsLostWithEventIdx)
{
    start(kNetFMrgRxbuf | kFRingEventIdx);
    constexpr int kFrames = 300;
    std::atomic<int> got { 0 };
    std::jthread reader = drain_peer(got, kFrames); // joined on every exit path
    // Receive: the peer sends while the driver adds one buffer at a time, kicking only as asked.
    std::jthread sender([&] {
        auto deadline = std::chrono::steady_clock::now() + kWait;
        for (int i = 0; i < kFrames; ++i) {
            auto f = frame_bytes(header(), pattern(1000, static_cast<uint8_t>(i)));
            while (::send(m_peer, f.data(), f.size(), MSG_DONTWAIT) < 0 && std::chrono::steady_clock::now() < deadline)
                std::this_thread::sleep_for(std::chrono::microseconds(50));
            if (i % 7 == 0)
                std::this_thread::sleep_for(std::chrono::microseconds(300));
        }
    });
    // Transmit at the same time, kicking only when the device asked.
    for (int i = 0; i < kFrames; ++i) {
        uint16_t old = m_tx->avail_idx();
        uint64_t gpa = kTxBuffers + 2048ULL * (i % 256);
        auto f = frame_bytes(header(), pattern(200, static_cast<uint8_t>(i)));
        std::memcpy(host(gpa, f.size()), f.data(), f.size());
        // Reuse descriptors only after the device has returned them.
        ASSERT_TRUE(m_tx->wait_room(200)) << "transmit stalled at " << i;
        m_tx->add({ { gpa, static_cast<uint32_t>(f.size()), false } });
        if (m_tx->kick_needed(old))
            m_dev->notify(NetDevice::kTxQueue);

        old = m_rx->avail_idx();
        ASSERT_TRUE(m_rx->wait_room(200)) << "receive stalled at " << i;
        uint64_t rgpa = kRxBuffers + 2048ULL * (i % 256);
        m_rx->add({ { rgpa, 2048, true } });
        if (m_rx->kick_needed(old))
            m_dev->notify(NetDevice::kRxQueue);
        if (i % 5 == 0)
            std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    sender.join();
    EXPECT_TRUE(m_tx->wait_used(kFrames)) << "transmitted " << m_tx->used_idx();
    reader.join();
    EXPECT_EQ(got.load(), kFrames);
    EXPECT_TRUE(m_rx->wait_used(kFrames)) << "received " << m_rx->used_idx();
    EXPECT_EQ(m_dev->stats().rx_frames.load(), static_cast<uint64_t>(kFrames));
    EXPECT_EQ(m_dev->stats().rx_dropped.load(), 0u);
}

TEST_F(VirtioNet, NoWakeupIsLostWithNoNotifyFlag)
{
    start(0);
    constexpr int kFrames = 300;
    std::atomic<int> got { 0 };
    std::jthread reader = drain_peer(got, kFrames); // joined on every exit path
    for (int i = 0; i < kFrames; ++i) {
        uint64_t gpa = kTxBuffers + 2048ULL * (i % 256);
        auto f = frame_bytes(header(), pattern(300, static_cast<uint8_t>(i)));
        std::memcpy(host(gpa, f.size()), f.data(), f.size());
        ASSERT_TRUE(m_tx->wait_room(200)) << "transmit stalled at " << i;
        m_tx->add({ { gpa, static_cast<uint32_t>(f.size()), false } });
        if (!m_tx->notifications_suppressed())
            m_dev->notify(NetDevice::kTxQueue);
        if (i % 3 == 0)
            std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
    EXPECT_TRUE(m_tx->wait_used(kFrames)) << "transmitted " << m_tx->used_idx();
    reader.join();
    EXPECT_EQ(got.load(), kFrames);
}

TEST_F(VirtioNet, MalformedRingStopsTheDeviceUntilReset)
{
    start(0);
    // A transmit descriptor pointing outside guest RAM.
    m_tx->add({ { kRamBytes - 16, 64, false } });
    m_dev->notify(NetDevice::kTxQueue);
    auto deadline = std::chrono::steady_clock::now() + kWait;
    while (!m_irq.failed.load() && std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    ASSERT_TRUE(m_irq.failed.load());
    EXPECT_NE(m_irq.error().find("outside guest RAM"), std::string::npos) << m_irq.error();
    // Stopped: valid work is ignored now.
    post_rx({ 1530 });
    peer_send(frame_bytes(header(), pattern(64, 1)));
    transmit(frame_bytes(header(), pattern(64, 2)));
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    EXPECT_EQ(m_rx->used_idx(), 0);
    EXPECT_FALSE(peer_recv(0));

    // After a reset the device works again (the pending frame is still in the backend).
    m_dev->reset();
    m_irq.failed = false;
    m_rx_next = kRxBuffers;
    activate(0);
    auto [head, gpa] = post_rx({ 1530 });
    ASSERT_TRUE(m_rx->wait_used(1));
    EXPECT_EQ(get(gpa + 12, 64), pattern(64, 1));
    transmit(frame_bytes(header(), pattern(64, 3)));
    auto got = peer_recv();
    ASSERT_TRUE(got);
    EXPECT_EQ((*got)[12], pattern(64, 3)[0]);
}

TEST_F(VirtioNet, MalformedReceiveChainStopsTheDevice)
{
    start(0);
    // A chain that loops on itself.
    m_rx->write_desc(0, kRxBuffers, 100, kDescWrite | kDescNext, 0);
    m_rx->publish(0);
    m_dev->notify(NetDevice::kRxQueue);
    auto deadline = std::chrono::steady_clock::now() + kWait;
    while (!m_irq.failed.load() && std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    EXPECT_TRUE(m_irq.failed.load());
}

TEST_F(VirtioNet, ResetJoinsTheThreadAndLeavesGuestMemoryAlone)
{
    start(0);
    auto [head, gpa] = post_rx({ 1530 });
    (void)head;
    m_dev->reset();
    // Frames arriving now must not be written into the old buffers.
    peer_send(frame_bytes(header(), pattern(64, 1)));
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    EXPECT_EQ(*host(gpa, 1), 0xee);
    EXPECT_EQ(m_rx->used_idx(), 0);
    m_dev->reset(); // twice is fine
    m_dev->shutdown();
}

TEST_F(VirtioNet, PeerClosingStopsReceiveButNotTransmit)
{
    start(0);
    post_rx({ 1530 });
    ::close(m_peer);
    m_peer = -1;
    timespec c0, c1;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c0);
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c1);
    double cpu_ms = (c1.tv_sec - c0.tv_sec) * 1e3 + (c1.tv_nsec - c0.tv_nsec) / 1e6;
    EXPECT_LT(cpu_ms, 30.0) << "a hung-up backend must not make the device spin";
    transmit(frame_bytes(header(), pattern(64, 3)));
    ASSERT_TRUE(m_tx->wait_used(1)) << "transmit buffers still come back (dropped)";
    EXPECT_EQ(m_dev->stats().tx_dropped.load(), 1u);
}

TEST_F(VirtioNet, ManualModeProcessesOnPoll)
{
    make_device(kNetOffloadCsum, NetDevice::Mode::Manual);
    activate(kNetFMrgRxbuf);
    auto [head, gpa] = post_rx({ 4096 });
    (void)head;
    peer_send(frame_bytes(header(), pattern(64, 1)));
    transmit(frame_bytes(header(), pattern(64, 2)));
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    EXPECT_EQ(m_rx->used_idx(), 0) << "nothing happens without poll()";
    m_dev->poll();
    EXPECT_EQ(m_rx->used_idx(), 1);
    EXPECT_EQ(get(gpa + 12, 64), pattern(64, 1));
    EXPECT_EQ(m_tx->used_idx(), 1);
    auto got = peer_recv(0);
    ASSERT_TRUE(got);
    EXPECT_EQ(got->size(), 76u);
}

// --- the tap backend, in a private network namespace (root only) -----------------------------------

TEST(VirtioNetTap, ErrorsNameTheTapAndTheCause)
{
    // unshare() moves only this thread into a new network namespace; the taps it creates go away
    // with it. Without CAP_SYS_ADMIN (or /dev/net/tun) there is nothing to test here.
    if (::access("/dev/net/tun", R_OK | W_OK) != 0)
        GTEST_SKIP() << "no usable /dev/net/tun";
    std::string skip;
    std::thread([&] {
        if (::unshare(CLONE_NEWNET) != 0) {
            skip = std::string("cannot create a network namespace: ") + std::strerror(errno);
            return;
        }
        auto created = TapBackend::open("");
        ASSERT_TRUE(created.ok()) << created.error().message();
        // "vessel" then one or more digits (no std::regex: GCC 12 warns inside it under ASan).
        const std::string& name = (*created)->ifname();
        EXPECT_TRUE(name.size() > 6 && name.rfind("vessel", 0) == 0 &&
                    name.find_first_not_of("0123456789", 6) == std::string::npos)
            << name;
        EXPECT_TRUE((*created)->created());
        EXPECT_TRUE((*created)->supported_offloads() & kNetOffloadCsum);
        EXPECT_TRUE((*created)->set_offloads((*created)->supported_offloads()).ok());

        // A name that does not exist is created; made persistent, it is attached to next time.
        {
            auto made = TapBackend::open("vt-test0");
            ASSERT_TRUE(made.ok()) << made.error().message();
            EXPECT_TRUE((*made)->created());
            ASSERT_EQ(::ioctl((*made)->fd(), TUNSETPERSIST, 1), 0);
        }
        auto first = TapBackend::open("vt-test0");
        ASSERT_TRUE(first.ok()) << first.error().message();
        EXPECT_EQ((*first)->ifname(), "vt-test0");
        EXPECT_FALSE((*first)->created());
        auto busy = TapBackend::open("vt-test0");
        ASSERT_FALSE(busy.ok());
        EXPECT_NE(busy.error().message().find("'vt-test0' is busy"), std::string::npos) << busy.error().message();

        auto lo = TapBackend::open("lo");
        ASSERT_FALSE(lo.ok());
        EXPECT_NE(lo.error().message().find("'lo' exists but is not"), std::string::npos) << lo.error().message();

        auto long_name = TapBackend::open("a-name-far-too-long");
        ASSERT_FALSE(long_name.ok());
        EXPECT_NE(long_name.error().message().find("at most 15"), std::string::npos);

        // A frame written to the tap reaches the kernel: with the tap down it is refused or
        // dropped, never an error of the VMM; reading with nothing there is EAGAIN.
        uint8_t buf[64];
        iovec iov { buf, sizeof(buf) };
        EXPECT_EQ((*first)->read_frame(std::span(&iov, 1)), -EAGAIN);
    }).join();
    if (!skip.empty())
        GTEST_SKIP() << skip;
}

} // namespace
