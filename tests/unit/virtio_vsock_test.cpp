// virtio-vsock: the device driven through hand-built queues in guest memory (the guest's side) and
// real Unix sockets in a temporary directory (the host's side), with its I/O thread running.
#include <gtest/gtest.h>

#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <map>
#include <thread>

#include "devices/virtio/vsock.h"
#include "virtio_vsock_test_support.h"

namespace vessel {
namespace {

using namespace std::chrono_literals;
using virtio::VsockDevice;
using virtio::VsockMuxer;
using virtio::vsock::Header;
using virtio::vsock::kHeaderSize;
using virtio::vsock::Op;
using vsock_test::Buffer;
using vsock_test::DriverQueue;
using vsock_test::RecordingInterrupt;

constexpr uint64_t kCid = 42;
constexpr uint16_t kQueueSize = 64;
constexpr uint32_t kRxBufSize = 4096; // Linux's rx buffers: a header and 4 KiB of payload
constexpr uint32_t kGuestBufAlloc = 256 * 1024;

struct Packet {
    Header h;
    std::vector<uint8_t> payload;
    Op op() const { return static_cast<Op>(h.op); }
};

std::vector<uint8_t> bytes_of(std::string_view s)
{
    return std::vector<uint8_t>(s.begin(), s.end());
}

// Waits until `done()` or the timeout; true if done.
bool wait_for(const std::function<bool()>& done, std::chrono::milliseconds timeout = 5000ms)
{
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!done()) {
        if (std::chrono::steady_clock::now() > deadline)
            return false;
        std::this_thread::sleep_for(1ms);
    }
    return true;
}

int unix_listen(const std::string& path)
{
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr {};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
    EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0) << path;
    EXPECT_EQ(::listen(fd, 8), 0);
    return fd;
}

int unix_connect(const std::string& path)
{
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr {};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
    EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0) << path << ": " << strerror(errno);
    return fd;
}

void send_all(int fd, std::span<const uint8_t> data)
{
    size_t done = 0;
    while (done < data.size()) {
        ssize_t n = ::send(fd, data.data() + done, data.size() - done, MSG_NOSIGNAL);
        ASSERT_GT(n, 0) << strerror(errno);
        done += static_cast<size_t>(n);
    }
}

// Reads what arrives within `timeout` (stops early at `want` bytes or EOF). `eof` tells which.
std::vector<uint8_t> host_read(int fd, size_t want, std::chrono::milliseconds timeout, bool* eof = nullptr)
{
    std::vector<uint8_t> out;
    if (eof)
        *eof = false;
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (out.size() < want) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0)
            break;
        pollfd p { fd, POLLIN, 0 };
        if (::poll(&p, 1, static_cast<int>(left.count())) <= 0)
            break;
        uint8_t buf[65536];
        ssize_t n = ::recv(fd, buf, std::min(sizeof(buf), want - out.size()), 0);
        if (n <= 0) {
            if (eof)
                *eof = true;
            break;
        }
        out.insert(out.end(), buf, buf + n);
    }
    return out;
}

std::string host_read_line(int fd)
{
    std::string line;
    for (;;) {
        auto b = host_read(fd, 1, 5000ms);
        if (b.empty())
            return line;
        line.push_back(static_cast<char>(b[0]));
        if (b[0] == '\n')
            return line;
    }
}

class VirtioVsock : public ::testing::Test {
protected:
    void SetUp() override
    {
        char tmpl[] = "/tmp/vessel-vsock-test-XXXXXX";
        ASSERT_NE(::mkdtemp(tmpl), nullptr);
        m_dir = tmpl;
        m_path = m_dir + "/v.sock";
        auto mem = GuestMemory::create(32ULL << 20);
        ASSERT_TRUE(mem.ok()) << mem.error().message();
        m_memory.emplace(std::move(mem.value()));
        auto dev = VsockDevice::create(kCid, m_path);
        ASSERT_TRUE(dev.ok()) << dev.error().message();
        m_dev = dev.value();
        m_rx.emplace(*m_memory, 0x10000, kQueueSize, 0x100000, 4 << 20);
        m_tx.emplace(*m_memory, 0x20000, kQueueSize, 0x500000, 4 << 20);
        m_ev.emplace(*m_memory, 0x30000, kQueueSize, 0x900000, 1 << 20);
        activate();
    }

    void TearDown() override
    {
        for (int fd : m_fds)
            ::close(fd);
        if (m_dev)
            m_dev->shutdown();
        std::filesystem::remove_all(m_dir);
    }

    // The driver's set-up: queues configured and activated, rx buffers offered.
    void activate(size_t rx_buffers = 16)
    {
        m_queues.clear();
        for (int i = 0; i < 3; ++i)
            m_queues.emplace_back(kQueueSize);
        m_rx->configure(m_queues[0]);
        m_tx->configure(m_queues[1]);
        m_ev->configure(m_queues[2]);
        for (auto& q : m_queues)
            ASSERT_TRUE(q.activate(*m_memory, virtio::kFVersion1).ok());
        virtio::ActivateContext ctx;
        ctx.memory = &*m_memory;
        ctx.interrupt = &m_irq;
        ctx.features = virtio::kFVersion1;
        ctx.queues = std::span(m_queues);
        ASSERT_TRUE(m_dev->activate(ctx).ok());
        add_rx_buffers(rx_buffers);
    }

    void add_rx_buffers(size_t n, uint32_t size = kRxBufSize)
    {
        for (size_t i = 0; i < n; ++i) {
            Buffer hdr, data;
            hdr.writable = data.writable = true;
            hdr.writable_len = kHeaderSize;
            data.writable_len = size;
            m_rx->add({ hdr, data });
        }
        m_dev->notify(0);
    }

    // Fresh DriverQueues for a re-activation (the transport resets the rings' indices).
    void reset_driver_queues()
    {
        m_rx.emplace(*m_memory, 0x10000, kQueueSize, 0x100000, 4 << 20);
        m_tx.emplace(*m_memory, 0x20000, kQueueSize, 0x500000, 4 << 20);
        m_ev.emplace(*m_memory, 0x30000, kQueueSize, 0x900000, 1 << 20);
        ASSERT_TRUE(m_memory->fill(0x10000, 0, 0x30000).ok());
    }

    Header guest_header(Op op, uint32_t src_port, uint32_t dst_port) const
    {
        Header h;
        h.src_cid = kCid;
        h.dst_cid = virtio::vsock::kHostCid;
        h.src_port = src_port;
        h.dst_port = dst_port;
        h.type = virtio::vsock::kTypeStream;
        h.op = static_cast<uint16_t>(op);
        h.buf_alloc = kGuestBufAlloc;
        return h;
    }

    // Puts a packet on the tx queue (header and payload in separate descriptors, as Linux does).
    void guest_send(Header h, std::span<const uint8_t> payload = {}, bool set_len = true)
    {
        reclaim_tx();
        if (set_len)
            h.len = static_cast<uint32_t>(payload.size());
        uint8_t raw[kHeaderSize];
        virtio::vsock::encode_header(h, raw);
        Buffer hb;
        hb.bytes.assign(raw, raw + kHeaderSize);
        std::vector<Buffer> chain { hb };
        if (!payload.empty()) {
            Buffer pb;
            pb.bytes.assign(payload.begin(), payload.end());
            chain.push_back(pb);
        }
        m_tx->add(chain);
        m_dev->notify(1);
    }

    void guest_send_raw(std::vector<uint8_t> bytes)
    {
        reclaim_tx();
        Buffer b;
        b.bytes = std::move(bytes);
        m_tx->add({ b });
        m_dev->notify(1);
    }

    void reclaim_tx()
    {
        while (m_tx->next_used()) { }
        if (m_tx->free_descriptors() < 2)
            wait_for([&] {
                while (m_tx->next_used()) { }
                return m_tx->free_descriptors() >= 2;
            });
    }

    // The next packet the device put into the rx queue (a new rx buffer replaces it).
    std::optional<Packet> guest_recv(
        std::chrono::milliseconds timeout = 5000ms, uint64_t src_cid = virtio::vsock::kHostCid)
    {
        std::optional<vsock_test::Used> used;
        if (!wait_for([&] { return (used = m_rx->next_used()).has_value(); }, timeout))
            return std::nullopt;
        add_rx_buffers(1);
        EXPECT_GE(used->len, kHeaderSize);
        if (used->len < kHeaderSize)
            return std::nullopt;
        Packet p;
        uint8_t raw[kHeaderSize];
        std::memcpy(raw, used->data.data(), kHeaderSize);
        p.h = virtio::vsock::decode_header(raw);
        p.payload.assign(used->data.begin() + kHeaderSize, used->data.end());
        EXPECT_EQ(p.h.len, p.payload.size());
        EXPECT_EQ(p.h.src_cid, src_cid);
        EXPECT_EQ(p.h.dst_cid, kCid);
        EXPECT_EQ(p.h.type, virtio::vsock::kTypeStream);
        return p;
    }

    int host_connect(uint32_t port)
    {
        int fd = unix_connect(m_path);
        m_fds.push_back(fd);
        std::string line = "CONNECT " + std::to_string(port) + "\n";
        send_all(fd, bytes_of(line));
        return fd;
    }

    // Host-initiated connection to guest port `port`, accepted by the guest: returns the host fd
    // and the device's local port.
    std::pair<int, uint32_t> establish_host_connection(
        uint32_t port, uint32_t guest_port_for_response, uint32_t guest_buf_alloc = kGuestBufAlloc)
    {
        int fd = host_connect(port);
        auto req = guest_recv();
        EXPECT_TRUE(req.has_value());
        if (!req)
            return { fd, 0 };
        EXPECT_EQ(req->op(), Op::Request);
        EXPECT_EQ(req->h.dst_port, port);
        Header resp = guest_header(Op::Response, guest_port_for_response, req->h.src_port);
        resp.src_port = port;
        resp.buf_alloc = guest_buf_alloc;
        guest_send(resp);
        std::string ok = host_read_line(fd);
        EXPECT_EQ(ok, "OK " + std::to_string(req->h.src_port) + "\n");
        return { fd, req->h.src_port };
    }

    std::string m_dir, m_path;
    std::optional<GuestMemory> m_memory;
    std::shared_ptr<VsockDevice> m_dev;
    RecordingInterrupt m_irq;
    std::vector<virtio::Queue> m_queues;
    std::optional<DriverQueue> m_rx, m_tx, m_ev;
    std::vector<int> m_fds;
};

TEST_F(VirtioVsock, ConfigSpaceHoldsGuestCid)
{
    uint8_t lo[4], hi[4];
    m_dev->read_config(0, lo);
    m_dev->read_config(4, hi);
    uint64_t cid
        = uint64_t(virtio::vsock::load_le<uint32_t>(lo)) | uint64_t(virtio::vsock::load_le<uint32_t>(hi)) << 32;
    EXPECT_EQ(cid, kCid);
    uint8_t beyond[4] = { 1, 1, 1, 1 };
    m_dev->read_config(8, beyond);
    EXPECT_EQ(virtio::vsock::load_le<uint32_t>(beyond), 0u);
    EXPECT_EQ(m_dev->type(), virtio::DeviceType::Vsock);
    EXPECT_EQ(m_dev->queue_max_sizes().size(), 3u);
}

TEST_F(VirtioVsock, SocketFileExistsWhileRunningAndIsRemovedAtShutdown)
{
    struct stat st;
    ASSERT_EQ(::lstat(m_path.c_str(), &st), 0);
    EXPECT_TRUE(S_ISSOCK(st.st_mode));
    m_dev->shutdown();
    EXPECT_NE(::lstat(m_path.c_str(), &st), 0);
}

TEST_F(VirtioVsock, HostConnectSendsRequestAndResponseGivesOk)
{
    int fd = host_connect(1234);
    auto req = guest_recv();
    ASSERT_TRUE(req);
    EXPECT_EQ(req->op(), Op::Request);
    EXPECT_EQ(req->h.dst_port, 1234u);
    EXPECT_GE(req->h.src_port, VsockMuxer::kFirstLocalPort);
    EXPECT_EQ(req->h.buf_alloc, VsockMuxer::kBufAlloc);
    EXPECT_EQ(req->h.fwd_cnt, 0u);
    EXPECT_TRUE(req->payload.empty());
    // Nothing reaches the host before the guest accepts.
    EXPECT_TRUE(host_read(fd, 1, 200ms).empty());

    Header resp = guest_header(Op::Response, 1234, req->h.src_port);
    guest_send(resp);
    EXPECT_EQ(host_read_line(fd), "OK " + std::to_string(req->h.src_port) + "\n");
    EXPECT_EQ(m_dev->stats().connections_opened.load(), 1u);
}

TEST_F(VirtioVsock, DataFlowsBothWays)
{
    auto [fd, local] = establish_host_connection(1234, 1234);
    ASSERT_NE(local, 0u);

    // Host -> guest.
    send_all(fd, bytes_of("hello guest"));
    auto rw = guest_recv();
    ASSERT_TRUE(rw);
    EXPECT_EQ(rw->op(), Op::Rw);
    EXPECT_EQ(rw->h.src_port, local);
    EXPECT_EQ(rw->h.dst_port, 1234u);
    EXPECT_EQ(std::string(rw->payload.begin(), rw->payload.end()), "hello guest");

    // Guest -> host.
    guest_send(guest_header(Op::Rw, 1234, local), bytes_of("hello host"));
    auto got = host_read(fd, 10, 5000ms);
    EXPECT_EQ(std::string(got.begin(), got.end()), "hello host");

    // A larger transfer host -> guest arrives complete and in order, in rx-buffer-sized packets.
    std::vector<uint8_t> big(100000);
    for (size_t i = 0; i < big.size(); ++i)
        big[i] = static_cast<uint8_t>(i * 7 + 3);
    send_all(fd, big);
    std::vector<uint8_t> received;
    while (received.size() < big.size()) {
        auto p = guest_recv();
        ASSERT_TRUE(p) << "after " << received.size() << " bytes";
        ASSERT_EQ(p->op(), Op::Rw);
        EXPECT_LE(p->payload.size(), kRxBufSize);
        received.insert(received.end(), p->payload.begin(), p->payload.end());
    }
    EXPECT_EQ(received, big);
}

TEST_F(VirtioVsock, NoRxBufferNoPacket)
{
    // A device activated without rx buffers sends nothing until the driver offers one.
    m_dev->reset();
    reset_driver_queues();
    activate(0);
    int fd = host_connect(77);
    (void)fd;
    std::this_thread::sleep_for(200ms);
    EXPECT_FALSE(m_rx->next_used().has_value());
    add_rx_buffers(1);
    auto req = guest_recv();
    ASSERT_TRUE(req);
    EXPECT_EQ(req->op(), Op::Request);
    EXPECT_EQ(req->h.dst_port, 77u);
}

TEST_F(VirtioVsock, HostToGuestRespectsGuestCredit)
{
    // The guest advertises only 10000 bytes of buffer.
    auto [fd, local] = establish_host_connection(1234, 1234, 10000);
    ASSERT_NE(local, 0u);
    std::vector<uint8_t> data(50000, 0xab);
    send_all(fd, data);
    size_t got = 0;
    while (auto p = guest_recv(500ms)) {
        ASSERT_EQ(p->op(), Op::Rw);
        got += p->payload.size();
    }
    EXPECT_EQ(got, 10000u) << "the device must stop at the guest's credit";

    // The guest consumed 6000 bytes and says so: exactly 6000 more may come.
    Header update = guest_header(Op::CreditUpdate, 1234, local);
    update.buf_alloc = 10000;
    update.fwd_cnt = 6000;
    guest_send(update);
    size_t more = 0;
    while (auto p = guest_recv(500ms)) {
        ASSERT_EQ(p->op(), Op::Rw);
        more += p->payload.size();
    }
    EXPECT_EQ(more, 6000u);

    // A bigger buffer lets the rest through.
    update.buf_alloc = 1 << 20;
    update.fwd_cnt = 16000;
    guest_send(update);
    size_t rest = 0;
    while (rest < 34000) {
        auto p = guest_recv();
        ASSERT_TRUE(p) << "after " << rest;
        rest += p->payload.size();
    }
    EXPECT_EQ(rest, 34000u);
}

TEST_F(VirtioVsock, SlowHostReaderWithholdsCreditFromGuest)
{
    auto [fd, local] = establish_host_connection(1234, 1234);
    ASSERT_NE(local, 0u);
    // A well-behaved guest sends as long as the device's credit allows; the host reads nothing.
    // The Unix socket absorbs what its buffer takes, then the device buffers kBufAlloc more, then
    // the credit is gone and stays gone.
    uint32_t guest_tx = 0, peer_fwd = 0;
    std::vector<uint8_t> chunk(VsockMuxer::kMaxPayload, 0x5a);
    for (;;) {
        while (auto u = m_rx->next_used()) {
            add_rx_buffers(1);
            Header h = virtio::vsock::decode_header(*reinterpret_cast<const uint8_t(*)[kHeaderSize]>(u->data.data()));
            EXPECT_EQ(static_cast<Op>(h.op), Op::CreditUpdate);
            EXPECT_EQ(h.buf_alloc, VsockMuxer::kBufAlloc);
            peer_fwd = h.fwd_cnt;
        }
        uint32_t credit = VsockMuxer::kBufAlloc - (guest_tx - peer_fwd);
        if (credit == 0) {
            std::this_thread::sleep_for(300ms); // give the device a chance to (wrongly) grant more
            if (!m_rx->has_used())
                break;
            continue;
        }
        uint32_t n = std::min<uint32_t>(credit, static_cast<uint32_t>(chunk.size()));
        guest_send(guest_header(Op::Rw, 1234, local), std::span(chunk.data(), n));
        guest_tx += n;
        ASSERT_LT(guest_tx, 64u << 20) << "credit never ran out";
    }
    EXPECT_GE(guest_tx, VsockMuxer::kBufAlloc);
    uint64_t in_socket = m_dev->stats().bytes_to_host.load();
    EXPECT_EQ(peer_fwd, in_socket) << "the guest was told exactly what the host side took";
    EXPECT_EQ(guest_tx - in_socket, VsockMuxer::kBufAlloc) << "the device buffers no more than it advertised";
    EXPECT_EQ(m_dev->stats().credit_violations.load(), 0u);

    // One byte beyond the credit: the connection is reset, not buffered.
    guest_send(guest_header(Op::Rw, 1234, local), bytes_of("!"));
    auto p = guest_recv();
    ASSERT_TRUE(p);
    EXPECT_EQ(p->op(), Op::Rst);
    EXPECT_EQ(m_dev->stats().credit_violations.load(), 1u);
    // The host gets what reached its socket, then EOF.
    bool eof = false;
    auto got = host_read(fd, 64u << 20, 5000ms, &eof);
    EXPECT_EQ(got.size(), in_socket);
    EXPECT_TRUE(eof);
}

TEST_F(VirtioVsock, CreditUpdateFollowsHostConsumption)
{
    auto [fd, local] = establish_host_connection(1234, 1234);
    ASSERT_NE(local, 0u);
    // Fill the Unix socket so that the device has to buffer: the host does not read yet.
    std::vector<uint8_t> chunk(32 * 1024, 0x11);
    for (int i = 0; i < 8; ++i) // 256 KiB = the whole credit
        guest_send(guest_header(Op::Rw, 1234, local), chunk);
    ASSERT_TRUE(wait_for([&] {
        while (m_tx->next_used()) { }
        return m_tx->free_descriptors() == kQueueSize;
    }));
    uint32_t last_fwd = 0;
    while (auto p = guest_recv(300ms)) {
        EXPECT_EQ(p->op(), Op::CreditUpdate);
        EXPECT_LE(p->h.fwd_cnt, m_dev->stats().bytes_to_host.load());
        last_fwd = p->h.fwd_cnt;
    }
    // The host now reads everything: the device advertises it with CREDIT_UPDATEs until the
    // guest has seen all 256 KiB consumed (within one threshold).
    auto all = host_read(fd, 8 * chunk.size(), 10000ms);
    EXPECT_EQ(all.size(), 8 * chunk.size());
    ASSERT_TRUE(wait_for([&] {
        while (auto u = m_rx->next_used()) {
            add_rx_buffers(1);
            Header h = virtio::vsock::decode_header(*reinterpret_cast<const uint8_t(*)[kHeaderSize]>(u->data.data()));
            EXPECT_EQ(static_cast<Op>(h.op), Op::CreditUpdate);
            EXPECT_EQ(h.buf_alloc, VsockMuxer::kBufAlloc);
            last_fwd = h.fwd_cnt;
        }
        return last_fwd + VsockMuxer::kCreditUpdateThreshold > 8 * chunk.size();
    })) << "last fwd_cnt seen "
        << last_fwd;

    // A CREDIT_REQUEST is answered at once with the exact count.
    guest_send(guest_header(Op::CreditRequest, 1234, local));
    auto p = guest_recv();
    ASSERT_TRUE(p);
    EXPECT_EQ(p->op(), Op::CreditUpdate);
    EXPECT_EQ(p->h.fwd_cnt, 8 * chunk.size());
}

TEST_F(VirtioVsock, GuestConnectToListeningHostPort)
{
    int listener = unix_listen(m_path + "_5000");
    m_fds.push_back(listener);
    guest_send(guest_header(Op::Request, 3333, 5000));
    auto resp = guest_recv();
    ASSERT_TRUE(resp);
    EXPECT_EQ(resp->op(), Op::Response);
    EXPECT_EQ(resp->h.src_port, 5000u);
    EXPECT_EQ(resp->h.dst_port, 3333u);
    int conn = ::accept(listener, nullptr, nullptr);
    ASSERT_GE(conn, 0);
    m_fds.push_back(conn);

    guest_send(guest_header(Op::Rw, 3333, 5000), bytes_of("from the guest"));
    auto got = host_read(conn, 14, 5000ms);
    EXPECT_EQ(std::string(got.begin(), got.end()), "from the guest");
    send_all(conn, bytes_of("from the host"));
    auto p = guest_recv();
    ASSERT_TRUE(p);
    EXPECT_EQ(p->op(), Op::Rw);
    EXPECT_EQ(std::string(p->payload.begin(), p->payload.end()), "from the host");
}

TEST_F(VirtioVsock, GuestConnectToClosedHostPortGetsRst)
{
    guest_send(guest_header(Op::Request, 3333, 5001));
    auto p = guest_recv();
    ASSERT_TRUE(p);
    EXPECT_EQ(p->op(), Op::Rst);
    EXPECT_EQ(p->h.src_port, 5001u);
    EXPECT_EQ(p->h.dst_port, 3333u);
}

TEST_F(VirtioVsock, HostConnectToClosedGuestPortIsClosedWithoutOk)
{
    int fd = host_connect(999);
    auto req = guest_recv();
    ASSERT_TRUE(req);
    ASSERT_EQ(req->op(), Op::Request);
    Header rst = guest_header(Op::Rst, 999, req->h.src_port);
    guest_send(rst);
    bool eof = false;
    auto got = host_read(fd, 100, 5000ms, &eof);
    EXPECT_TRUE(got.empty());
    EXPECT_TRUE(eof);
}

TEST_F(VirtioVsock, PacketsForNoConnectionAreReset)
{
    for (Op op : { Op::Rw, Op::Shutdown, Op::CreditUpdate, Op::CreditRequest, Op::Response }) {
        guest_send(guest_header(op, 4444, 6000), op == Op::Rw ? bytes_of("x") : std::vector<uint8_t> {});
        auto p = guest_recv();
        ASSERT_TRUE(p) << static_cast<int>(op);
        EXPECT_EQ(p->op(), Op::Rst) << static_cast<int>(op);
        EXPECT_EQ(p->h.src_port, 6000u);
        EXPECT_EQ(p->h.dst_port, 4444u);
    }
    // An RST for nothing is not answered.
    guest_send(guest_header(Op::Rst, 4444, 6000));
    EXPECT_FALSE(guest_recv(300ms).has_value());
}

TEST_F(VirtioVsock, MalformedPacketsAreDroppedAndTheDeviceCarriesOn)
{
    // Shorter than a header.
    guest_send_raw(std::vector<uint8_t>(20, 0xff));
    // len claims more payload than the buffer holds.
    {
        Header h = guest_header(Op::Rw, 1, 2);
        h.len = 1000;
        guest_send(h, bytes_of("short"), false);
    }
    // len beyond the largest payload.
    {
        Header h = guest_header(Op::Rw, 1, 2);
        h.len = VsockMuxer::kMaxPayload + 1;
        guest_send(h, std::vector<uint8_t>(VsockMuxer::kMaxPayload + 1, 0), false);
    }
    // A source CID that is not the guest's.
    {
        Header h = guest_header(Op::Request, 1, 2);
        h.src_cid = 99;
        guest_send(h);
    }
    ASSERT_TRUE(wait_for([&] { return m_dev->stats().dropped.load() == 4; })) << m_dev->stats().dropped.load();
    EXPECT_FALSE(guest_recv(300ms).has_value()) << "dropped packets get no answer";

    // Unknown type and unknown operation: reset.
    {
        Header h = guest_header(Op::Request, 7, 8);
        h.type = 2; // SEQPACKET, not offered
        guest_send(h);
        auto p = guest_recv();
        ASSERT_TRUE(p);
        EXPECT_EQ(p->op(), Op::Rst);
    }
    {
        Header h = guest_header(Op::Request, 7, 8);
        h.op = 99;
        guest_send(h);
        auto p = guest_recv();
        ASSERT_TRUE(p);
        EXPECT_EQ(p->op(), Op::Rst);
    }
    // A destination other than the host: reset, from the address the guest used.
    {
        Header h = guest_header(Op::Request, 7, 8);
        h.dst_cid = 5;
        guest_send(h);
        auto p = guest_recv(5000ms, 5);
        ASSERT_TRUE(p);
        EXPECT_EQ(p->op(), Op::Rst);
    }
    EXPECT_EQ(m_irq.error_count(), 0u);

    // Still working.
    int fd = host_connect(1234);
    (void)fd;
    auto req = guest_recv();
    ASSERT_TRUE(req);
    EXPECT_EQ(req->op(), Op::Request);
}

TEST_F(VirtioVsock, MalformedDescriptorChainStopsTheDevice)
{
    // A descriptor outside guest RAM: the queue is unusable, the device reports it and stops.
    m_tx->write_desc(5, 0xffff'ffff'0000ULL, 64, 0, 0);
    m_tx->publish(5);
    m_dev->notify(1);
    ASSERT_TRUE(wait_for([&] { return m_irq.error_count() == 1; }));
    // Reset and activate again: working.
    m_dev->reset();
    reset_driver_queues();
    activate();
    int fd = host_connect(1234);
    (void)fd;
    auto req = guest_recv();
    ASSERT_TRUE(req);
    EXPECT_EQ(req->op(), Op::Request);
}

TEST_F(VirtioVsock, ShutdownAndCloseBothWays)
{
    auto [fd, local] = establish_host_connection(1234, 1234);
    ASSERT_NE(local, 0u);
    // The guest sends data then SHUTDOWN(SEND): the host reads the data, then EOF, and can still write.
    guest_send(guest_header(Op::Rw, 1234, local), bytes_of("last words"));
    Header shut = guest_header(Op::Shutdown, 1234, local);
    shut.flags = virtio::vsock::kShutdownSend;
    guest_send(shut);
    bool eof = false;
    auto got = host_read(fd, 100, 5000ms, &eof);
    EXPECT_EQ(std::string(got.begin(), got.end()), "last words");
    EXPECT_TRUE(eof);
    send_all(fd, bytes_of("reply"));
    auto p = guest_recv();
    ASSERT_TRUE(p);
    EXPECT_EQ(p->op(), Op::Rw);

    // The host closes its stream: the guest gets SHUTDOWN with both flags (nothing more either way).
    ::shutdown(fd, SHUT_RDWR);
    auto s = guest_recv();
    ASSERT_TRUE(s);
    EXPECT_EQ(s->op(), Op::Shutdown);
    EXPECT_EQ(s->h.flags & virtio::vsock::kShutdownSend, virtio::vsock::kShutdownSend);
    // The guest completes the close with SHUTDOWN(both); the device answers RST and forgets it.
    shut.flags = virtio::vsock::kShutdownBoth;
    guest_send(shut);
    auto r = guest_recv();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->op(), Op::Rst);
    EXPECT_EQ(r->h.src_port, local);
    guest_send(guest_header(Op::Rw, 1234, local), bytes_of("late"));
    auto late = guest_recv();
    ASSERT_TRUE(late);
    EXPECT_EQ(late->op(), Op::Rst) << "the connection is gone";
}

TEST_F(VirtioVsock, GuestCloseDeliversPendingDataThenEof)
{
    auto [fd, local] = establish_host_connection(1234, 1234);
    ASSERT_NE(local, 0u);
    guest_send(guest_header(Op::Rw, 1234, local), bytes_of("bye"));
    Header shut = guest_header(Op::Shutdown, 1234, local);
    shut.flags = virtio::vsock::kShutdownBoth;
    guest_send(shut);
    bool eof = false;
    auto got = host_read(fd, 100, 5000ms, &eof);
    EXPECT_EQ(std::string(got.begin(), got.end()), "bye");
    EXPECT_TRUE(eof);
    auto r = guest_recv();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->op(), Op::Rst);
}

TEST_F(VirtioVsock, BadConnectCommandClosesTheStream)
{
    for (std::string bad : std::vector<std::string> { "HELLO\n", "CONNECT\n", "CONNECT abc\n", "CONNECT 99999999999\n",
             "CONNECT 12 34\n", std::string(100, 'A') }) {
        int fd = unix_connect(m_path);
        m_fds.push_back(fd);
        send_all(fd, bytes_of(bad));
        bool eof = false;
        auto got = host_read(fd, 100, 5000ms, &eof);
        EXPECT_TRUE(eof) << bad;
        EXPECT_TRUE(got.empty()) << bad;
    }
    EXPECT_FALSE(guest_recv(200ms).has_value()) << "no REQUEST for a bad command";
}

TEST_F(VirtioVsock, DataSentWithConnectLineIsKept)
{
    int fd = unix_connect(m_path);
    m_fds.push_back(fd);
    send_all(fd, bytes_of("CONNECT 80\r\nearly data"));
    auto req = guest_recv();
    ASSERT_TRUE(req);
    ASSERT_EQ(req->op(), Op::Request);
    Header resp = guest_header(Op::Response, 80, req->h.src_port);
    guest_send(resp);
    EXPECT_EQ(host_read_line(fd), "OK " + std::to_string(req->h.src_port) + "\n");
    auto p = guest_recv();
    ASSERT_TRUE(p);
    EXPECT_EQ(p->op(), Op::Rw);
    EXPECT_EQ(std::string(p->payload.begin(), p->payload.end()), "early data");
}

TEST_F(VirtioVsock, ResetClosesConnectionsAndReactivationSendsTransportReset)
{
    auto [fd, local] = establish_host_connection(1234, 1234);
    ASSERT_NE(local, 0u);
    // The first activation has no event to send.
    Buffer evbuf;
    evbuf.writable = true;
    evbuf.writable_len = 4;
    m_ev->add({ evbuf });
    m_dev->notify(2);
    std::this_thread::sleep_for(200ms);
    EXPECT_FALSE(m_ev->next_used().has_value());

    m_dev->reset(); // driver reset (e.g. module reload)
    bool eof = false;
    host_read(fd, 1, 5000ms, &eof);
    EXPECT_TRUE(eof) << "the host stream is closed by the reset";

    reset_driver_queues();
    activate();
    m_ev->add({ evbuf });
    m_dev->notify(2);
    std::optional<vsock_test::Used> ev;
    ASSERT_TRUE(wait_for([&] { return (ev = m_ev->next_used()).has_value(); }));
    EXPECT_EQ(ev->len, 4u);
    EXPECT_EQ(virtio::vsock::load_le<uint32_t>(ev->data.data()), virtio::vsock::kEventTransportReset);

    // The listening socket survived: new connections work.
    int fd2 = host_connect(1234);
    (void)fd2;
    auto req = guest_recv();
    ASSERT_TRUE(req);
    EXPECT_EQ(req->op(), Op::Request);
}

TEST_F(VirtioVsock, InterruptsAreSignalled)
{
    int fd = host_connect(1234);
    (void)fd;
    ASSERT_TRUE(guest_recv());
    EXPECT_GE(m_irq.queue_signals[0].load(), 1);
    guest_send(guest_header(Op::Rst, 1, 2));
    ASSERT_TRUE(wait_for([&] { return m_irq.queue_signals[1].load() >= 1; }));
}

TEST_F(VirtioVsock, ConnectionCountIsBounded)
{
    // Guest-initiated connections to a listening host port, beyond the limit: the extra ones are reset.
    int listener = unix_listen(m_path + "_5000");
    m_fds.push_back(listener);
    size_t responses = 0, rsts = 0;
    for (uint32_t i = 0; i < VsockMuxer::kMaxConnections + 4; ++i) {
        guest_send(guest_header(Op::Request, 10000 + i, 5000));
        auto p = guest_recv();
        ASSERT_TRUE(p) << i;
        if (p->op() == Op::Response)
            ++responses;
        else if (p->op() == Op::Rst)
            ++rsts;
        // Keep the listener's backlog short (a full one would refuse connections: RST as well).
        for (;;) {
            pollfd pf { listener, POLLIN, 0 };
            if (::poll(&pf, 1, 0) <= 0)
                break;
            int c = ::accept(listener, nullptr, nullptr);
            if (c < 0)
                break;
            m_fds.push_back(c);
        }
    }
    EXPECT_EQ(responses, VsockMuxer::kMaxConnections);
    EXPECT_EQ(rsts, 4u);
}

// --- creation: the socket path -------------------------------------------------------------------

class VirtioVsockPath : public ::testing::Test {
protected:
    void SetUp() override
    {
        char tmpl[] = "/tmp/vessel-vsock-path-XXXXXX";
        ASSERT_NE(::mkdtemp(tmpl), nullptr);
        m_dir = tmpl;
    }
    void TearDown() override { std::filesystem::remove_all(m_dir); }
    std::string m_dir;
};

TEST_F(VirtioVsockPath, MissingDirectoryIsAClearError)
{
    std::string path = m_dir + "/nonexistent/v.sock";
    auto dev = VsockDevice::create(3, path);
    ASSERT_FALSE(dev.ok());
    EXPECT_NE(dev.error().message().find(path), std::string::npos) << dev.error().message();
    EXPECT_NE(dev.error().message().find("No such file or directory"), std::string::npos) << dev.error().message();
}

TEST_F(VirtioVsockPath, UnwritableDirectoryIsAClearError)
{
    if (::geteuid() == 0)
        GTEST_SKIP() << "root writes to any directory";
    std::string dir = m_dir + "/ro";
    ASSERT_EQ(::mkdir(dir.c_str(), 0555), 0);
    auto dev = VsockDevice::create(3, dir + "/v.sock");
    ASSERT_FALSE(dev.ok());
    EXPECT_NE(dev.error().message().find("Permission denied"), std::string::npos) << dev.error().message();
}

TEST_F(VirtioVsockPath, StaleSocketIsReplaced)
{
    std::string path = m_dir + "/v.sock";
    int fd = unix_listen(path);
    ::close(fd); // the file stays: a stale socket
    auto dev = VsockDevice::create(3, path);
    ASSERT_TRUE(dev.ok()) << dev.error().message();
    int c = unix_connect(path);
    EXPECT_GE(c, 0);
    ::close(c);
    dev.value()->shutdown();
    EXPECT_FALSE(std::filesystem::exists(path));
}

TEST_F(VirtioVsockPath, LiveSocketAndOtherFilesAreNotReplaced)
{
    std::string path = m_dir + "/v.sock";
    int fd = unix_listen(path);
    auto dev = VsockDevice::create(3, path);
    ASSERT_FALSE(dev.ok());
    EXPECT_NE(dev.error().message().find("another process is listening"), std::string::npos) << dev.error().message();
    ::close(fd);

    std::string file = m_dir + "/file";
    {
        FILE* f = std::fopen(file.c_str(), "w");
        ASSERT_NE(f, nullptr);
        std::fclose(f);
    }
    auto dev2 = VsockDevice::create(3, file);
    ASSERT_FALSE(dev2.ok());
    EXPECT_NE(dev2.error().message().find("not a socket"), std::string::npos) << dev2.error().message();
    EXPECT_TRUE(std::filesystem::exists(file));
}

TEST_F(VirtioVsockPath, TooLongPathIsAClearError)
{
    std::string path = m_dir + "/" + std::string(200, 'x');
    auto dev = VsockDevice::create(3, path);
    ASSERT_FALSE(dev.ok());
    EXPECT_NE(dev.error().message().find("bytes long"), std::string::npos) << dev.error().message();
}

TEST_F(VirtioVsock, CountersUnderFirecrackerNames)
{
    auto [fd, local] = establish_host_connection(1234, 1234);
    ASSERT_NE(local, 0u);
    send_all(fd, bytes_of("hello guest"));
    auto rw = guest_recv();
    ASSERT_TRUE(rw);
    guest_send(guest_header(Op::Rw, 1234, local), bytes_of("hi host"));
    EXPECT_EQ(host_read(fd, 7, 5000ms).size(), 7u);
    guest_send(guest_header(Op::Rst, 1234, local)); // the guest drops the connection
    ASSERT_TRUE(wait_for([&] { return m_dev->stats().conns_removed.load() == 1; }));

    struct Report final : MetricsReport {
        void counter(std::string_view field, uint64_t total) override { fields[std::string(field)] = total; }
        void latency(std::string_view, const LatencyCounter&) override { }
        std::map<std::string, uint64_t> fields;
    } r;
    m_dev->report_metrics(r);
    EXPECT_EQ(r.fields["rx_bytes_count"], 11u) << "payload host -> guest";
    EXPECT_EQ(r.fields["tx_bytes_count"], 7u) << "payload guest -> host";
    EXPECT_EQ(r.fields["rx_packets_count"], 2u) << "REQUEST, RW";
    EXPECT_EQ(r.fields["tx_packets_count"], 3u) << "RESPONSE, RW, RST";
    EXPECT_EQ(r.fields["conns_added"], 1u);
    EXPECT_EQ(r.fields["conns_removed"], 1u);
    EXPECT_EQ(r.fields["conns_killed"], 0u);
    EXPECT_EQ(r.fields["rx_queue_event_count"], 3u) << "the initial rx buffers and one per packet received";
    EXPECT_EQ(r.fields["tx_queue_event_count"], 3u);
}

} // namespace
} // namespace vessel
