// Fuzz target: virtio-net transmit and receive driven by the input. Every input gets a fresh
// 16 MiB guest RAM, a fresh device (Manual mode: no thread, poll() runs the queues, so a crash
// reproduces exactly) on a fresh SOCK_SEQPACKET socketpair whose other end plays the host
// network. The input is a program of operations:
//   header: feature bits, queue sizes
//   ops:    transmit chain (header + data, direct or indirect) | receive chain | a frame from
//           the host | raw descriptor bytes | raw avail index | poll | drain the host side |
//           reset and re-activate
// so that well-formed traffic reaches deep paths (MRG_RXBUF splitting, offload checks, full
// backends) and raw writes break the rings in every way. By hand:
//   clang++ -std=c++20 -g -O1 -fsanitize=fuzzer,address,undefined -Isrc fuzz/virtio_net_fuzz.cpp
//     src/devices/virtio/*.cpp src/memory/guest_memory.cpp src/base/*.cpp -DFMT_HEADER_ONLY
//     -DSPDLOG_FMT_EXTERNAL -luring
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <vector>

#include "base/log.h"
#include "devices/virtio/net.h"
#include "devices/virtio/queue.h"
#include "devices/virtio/tap.h"
#include "memory/guest_memory.h"

using namespace vessel;
using namespace vessel::virtio;

namespace {

constexpr uint64_t kRam = 16ULL << 20;
constexpr uint64_t kRing[2] = { 0x10000, 0x20000 };
constexpr uint64_t kData = 0x100000; // buffers: 1 MiB .. 9 MiB
constexpr uint64_t kDataEnd = 0x900000;

class Input {
public:
    Input(const uint8_t* data, size_t size)
        : m_data(data)
        , m_size(size)
    {
    }
    bool empty() const { return m_at >= m_size; }
    uint8_t u8() { return m_at < m_size ? m_data[m_at++] : 0; }
    uint16_t u16() { return static_cast<uint16_t>(u8() | u8() << 8); }
    uint32_t u32() { return u16() | static_cast<uint32_t>(u16()) << 16; }
    // Copies up to n input bytes into p (zero-fills the rest).
    void bytes(uint8_t* p, size_t n)
    {
        if (n == 0)
            return; // p may be null (an empty frame)
        size_t take = std::min(n, m_size - std::min(m_at, m_size));
        if (take)
            std::memcpy(p, m_data + m_at, take);
        std::memset(p + take, 0, n - take);
        m_at += take;
    }

private:
    const uint8_t* m_data;
    size_t m_size;
    size_t m_at { 0 };
};

class NullInterrupt final : public VirtioInterrupt {
public:
    void signal_queue(uint16_t) override { ++signals; }
    void signal_config() override { }
    void device_error(std::string_view) override { failed = true; }
    uint64_t signals { 0 };
    bool failed { false };
};

struct Ring {
    uint16_t size { 0 };
    uint16_t avail_idx { 0 };
    uint16_t next_desc { 0 };
};

class Harness {
public:
    bool setup(Input& in)
    {
        auto mem = GuestMemory::create(kRam);
        if (!mem.ok())
            return false;
        m_mem.emplace(std::move(mem.value()));
        int sv[2];
        if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv) != 0)
            return false;
        // A small send buffer for the device: transmit back-pressure happens often. The host end
        // can send the largest frames.
        int buf = 16384 + 1024 * (in.u8() & 63);
        int host_buf = 512 * 1024;
        ::setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &buf, sizeof(buf));
        ::setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &host_buf, sizeof(host_buf));
        m_peer = sv[1];
        uint8_t offload_bits = in.u8();
        uint32_t offloads = offload_bits & (kNetOffloadCsum | kNetOffloadTso4 | kNetOffloadTso6 | kNetOffloadTsoEcn);
        m_dev.emplace(std::make_unique<SocketBackend>(sv[0], offloads),
            std::array<uint8_t, 6> { 0x52, 0x54, 0, 1, 2, 3 }, NetDevice::Mode::Manual);
        m_queues.assign(2, Queue(NetDevice::kQueueSize));
        return activate(in);
    }

    ~Harness()
    {
        if (m_dev)
            m_dev->shutdown();
        if (m_peer >= 0)
            ::close(m_peer);
    }

    // Features (a subset of the offered ones, chosen by the input) and queue sizes; then
    // DRIVER_OK as the transport would do it.
    bool activate(Input& in)
    {
        uint64_t offered = m_dev->features() | kFVersion1 | kFRingEventIdx | kFRingIndirectDesc;
        uint64_t wanted = static_cast<uint64_t>(in.u32()) | (static_cast<uint64_t>(in.u8()) << 32);
        m_features = (wanted & offered) | kFVersion1;
        for (int q = 0; q < 2; ++q) {
            m_rings[q] = Ring {};
            m_rings[q].size = static_cast<uint16_t>(1u << (in.u8() % 9)); // 1 .. 256
            std::memset(m_mem->host_ptr(kRing[q], 0x8000), 0, 0x8000);
            Queue& queue = m_queues[q];
            queue.reset();
            queue.set_size(m_rings[q].size);
            queue.set_desc_addr(kRing[q]);
            queue.set_avail_addr(avail(q));
            queue.set_used_addr(used(q));
            queue.set_ready(true);
            if (!queue.activate(*m_mem, m_features).ok())
                return false;
        }
        ActivateContext ctx;
        ctx.memory = &*m_mem;
        ctx.interrupt = &m_irq;
        ctx.features = m_features;
        ctx.queues = std::span<Queue>(m_queues);
        m_irq.failed = false;
        return m_dev->activate(ctx).ok();
    }

    uint64_t avail(int q) const { return kRing[q] + 16ULL * m_rings[q].size; }
    uint64_t used(int q) const { return (avail(q) + 6 + 2ULL * m_rings[q].size + 3) & ~3ULL; }

    uint64_t alloc(uint32_t len)
    {
        if (m_next_data + len > kDataEnd)
            m_next_data = kData;
        uint64_t gpa = m_next_data;
        m_next_data += (len + 15) & ~15ULL;
        return gpa;
    }

    void write_desc(uint8_t* table, uint16_t index, uint64_t gpa, uint32_t len, uint16_t flags, uint16_t next)
    {
        uint8_t* d = table + 16ULL * index;
        std::memcpy(d, &gpa, 8);
        std::memcpy(d + 8, &len, 4);
        std::memcpy(d + 12, &flags, 2);
        std::memcpy(d + 14, &next, 2);
    }

    void publish(int q, uint16_t head)
    {
        Ring& r = m_rings[q];
        std::memcpy(m_mem->host_ptr(avail(q) + 4 + 2ULL * (r.avail_idx % r.size), 2), &head, 2);
        ++r.avail_idx;
        std::memcpy(m_mem->host_ptr(avail(q) + 2, 2), &r.avail_idx, 2);
    }

    // A chain of 1-4 buffers for queue q (transmit: header + frame from the input; receive:
    // writable buffers), direct or through an indirect table.
    void chain(int q, Input& in)
    {
        uint8_t shape = in.u8();
        int count = 1 + (shape & 3);
        bool indirect = shape & 4;
        bool big = shape & 8;
        struct Piece {
            uint64_t gpa;
            uint32_t len;
            uint16_t flags;
        };
        std::vector<Piece> pieces;
        for (int i = 0; i < count; ++i) {
            uint32_t len = in.u16() % (big ? 70000 : 4096);
            uint64_t gpa = alloc(len);
            uint16_t flags = q == NetDevice::kTxQueue ? 0 : kDescWrite;
            if (shape & (0x10 << i))
                flags ^= kDescWrite; // the wrong direction now and then
            if (q == NetDevice::kTxQueue && len)
                in.bytes(m_mem->host_ptr(gpa, len), std::min<uint32_t>(len, 64)); // header and the start
            pieces.push_back({ gpa, len, flags });
        }
        Ring& r = m_rings[q];
        if (indirect) {
            uint64_t table_gpa = alloc(16 * count);
            uint8_t* table = m_mem->host_ptr(table_gpa, 16 * count);
            for (int i = 0; i < count; ++i)
                write_desc(table, static_cast<uint16_t>(i), pieces[i].gpa, pieces[i].len,
                    pieces[i].flags | (i + 1 < count ? kDescNext : 0), static_cast<uint16_t>(i + 1));
            uint16_t head = r.next_desc;
            r.next_desc = static_cast<uint16_t>((r.next_desc + 1) % r.size);
            write_desc(m_mem->host_ptr(kRing[q], 16ULL * r.size), head, table_gpa, 16 * count, kDescIndirect, 0);
            publish(q, head);
        } else {
            uint16_t head = r.next_desc;
            for (int i = 0; i < count; ++i) {
                uint16_t index = r.next_desc;
                r.next_desc = static_cast<uint16_t>((r.next_desc + 1) % r.size);
                write_desc(m_mem->host_ptr(kRing[q], 16ULL * r.size), index, pieces[i].gpa, pieces[i].len,
                    pieces[i].flags | (i + 1 < count ? kDescNext : 0), r.next_desc);
            }
            publish(q, head);
        }
        m_dev->notify(static_cast<uint16_t>(q));
    }

    void host_frame(Input& in)
    {
        uint32_t len = in.u16() % 4 == 0 ? in.u32() % 66000 : in.u16() % 2048;
        std::vector<uint8_t> frame(len);
        in.bytes(frame.data(), std::min<size_t>(len, 64));
        [[maybe_unused]] ssize_t n = ::send(m_peer, frame.data(), frame.size(), MSG_DONTWAIT);
    }

    void raw_desc(Input& in)
    {
        int q = in.u8() & 1;
        Ring& r = m_rings[q];
        uint16_t index = in.u16() % r.size;
        in.bytes(m_mem->host_ptr(kRing[q] + 16ULL * index, 16), 16);
        if (in.u8() & 1)
            publish(q, index);
        m_dev->notify(static_cast<uint16_t>(q));
    }

    void raw_avail_idx(Input& in)
    {
        int q = in.u8() & 1;
        uint16_t idx = in.u16();
        std::memcpy(m_mem->host_ptr(avail(q) + 2, 2), &idx, 2);
        m_rings[q].avail_idx = idx;
        m_dev->notify(static_cast<uint16_t>(q));
    }

    void drain()
    {
        std::vector<uint8_t> buf(70000);
        while (::recv(m_peer, buf.data(), buf.size(), MSG_DONTWAIT) > 0) { }
    }

    void run(Input& in)
    {
        for (int ops = 0; !in.empty() && ops < 256; ++ops) {
            switch (in.u8() % 9) {
            case 0: chain(NetDevice::kTxQueue, in); break;
            case 1: chain(NetDevice::kRxQueue, in); break;
            case 2: host_frame(in); break;
            case 3: raw_desc(in); break;
            case 4: raw_avail_idx(in); break;
            case 5:
            case 6: m_dev->poll(); break;
            case 7: drain(); break;
            case 8:
                m_dev->reset();
                if (!activate(in))
                    return;
                break;
            }
        }
        m_dev->poll();
        if (std::getenv("VIRTIO_NET_FUZZ_DEBUG")) { // what an input reached (for seed writing)
            const NetStats& st = m_dev->stats();
            std::fprintf(stderr, "rx %lu/%lu dropped %lu, tx %lu/%lu dropped %lu, signals %lu, failed %d\n",
                st.rx_frames.load(), st.rx_bytes.load(), st.rx_dropped.load(), st.tx_frames.load(), st.tx_bytes.load(),
                st.tx_dropped.load(), m_irq.signals, m_irq.failed);
        }
    }

private:
    std::optional<GuestMemory> m_mem;
    std::vector<Queue> m_queues;
    NullInterrupt m_irq;
    std::optional<NetDevice> m_dev; // destroyed before what it uses
    Ring m_rings[2];
    uint64_t m_features { 0 };
    uint64_t m_next_data { kData };
    int m_peer { -1 };
};

} // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***)
{
    set_log_level(LogLevel::Off);
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size)
{
    Input in(data, size);
    Harness h;
    if (h.setup(in))
        h.run(in);
    return 0;
}
