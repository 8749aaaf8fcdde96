// Fuzz target: the virtio-vsock packet parser and connection state machine (VsockMuxer), driven
// without the device thread. Every input gets fresh state: a 16 MiB GuestMemory, rx/tx/event queues
// laid out by a minimal driver here, and a muxer whose host side is socketpairs (guest-initiated
// connections to even ports get one, odd ports are refused; host streams are injected with a
// CONNECT line). The input is a little program:
//
//   0 <len:2> <bytes>            raw tx packet (any header), split into 1-3 descriptors
//   1 <op> <ports> <flags> <credit:8> <len:2> <bytes>
//                                tx packet with a valid routing header (our CID -> host, stream)
//                                so that the state machine is reached, ports from a small set
//   2 <n> <size>                 n rx buffers of a chosen size
//   3 <which> <action> ...       host-side action on a socketpair peer: write bytes, read/drain,
//                                shut down writing, close
//   4 <port> <junk>              a new host stream: "CONNECT <port>\n" (or junk) written into it
//   5                            poll (the muxer runs after every command anyway)
//   6                            an event buffer
//   7 <desc bytes:16>            a raw tx descriptor (malformed chains: the queue must fail safely)
//
// Invariants checked: nothing crashes or touches memory outside guest RAM (ASan), used entries
// name chains the driver offered, used lengths never exceed what the driver offered, and an rx
// buffer comes back empty (too small for a header) or with at least a header.
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "base/log.h"
#include "devices/virtio/queue.h"
#include "devices/virtio/virtio.h"
#include "devices/virtio/vsock_muxer.h"
#include "memory/guest_memory.h"

using namespace vessel;
using namespace vessel::virtio;

namespace {

constexpr uint64_t kCid = 3;
constexpr uint16_t kQSize = 16;
constexpr uint64_t kMemSize = 16ULL << 20; // the smallest GuestMemory::create() allows

class Input {
public:
    Input(const uint8_t* data, size_t size)
        : m_data(data)
        , m_size(size)
    {
    }
    bool empty() const { return m_pos >= m_size; }
    uint8_t u8() { return m_pos < m_size ? m_data[m_pos++] : 0; }
    uint16_t u16() { return static_cast<uint16_t>(u8() | u8() << 8); }
    uint32_t u32() { return u16() | uint32_t(u16()) << 16; }
    std::span<const uint8_t> bytes(size_t n)
    {
        n = std::min(n, m_size - std::min(m_pos, m_size));
        std::span<const uint8_t> s(m_data + m_pos, n);
        m_pos += n;
        return s;
    }

private:
    const uint8_t* m_data;
    size_t m_size;
    size_t m_pos { 0 };
};

class NullInterrupt final : public VirtioInterrupt {
public:
    void signal_queue(uint16_t) override { }
    void signal_config() override { }
    void device_error(std::string_view) override { ++errors; }
    int errors { 0 };
};

// The driver's side of one split queue: rings at `ring`, buffers in [data, data + 256 KiB).
struct DriverQueue {
    GuestMemory& mem;
    uint64_t ring;
    uint64_t data;
    uint64_t data_next { 0 };
    uint16_t avail_idx { 0 };
    uint16_t used_seen { 0 };
    uint16_t next_desc { 0 };
    // Per head: descriptors in the chain (0 = no chain outstanding) and its writable bytes.
    std::vector<uint16_t> chain_descs = std::vector<uint16_t>(kQSize, 0);
    std::vector<uint32_t> offered = std::vector<uint32_t>(kQSize, 0);
    unsigned in_flight { 0 }; // descriptors the device has not returned

    // Chains are returned in order here (vsock completes each queue in order), so descriptors can be
    // handed out round-robin as long as no more than the queue size are in flight.
    bool room(unsigned descs) const { return in_flight + descs <= kQSize; }

    uint64_t desc() const { return ring; }
    uint64_t avail() const { return ring + 16 * kQSize; }
    uint64_t used() const { return ring + 0x400; }

    void configure(Queue& q) const
    {
        q.set_size(kQSize);
        q.set_desc_addr(desc());
        q.set_avail_addr(avail());
        q.set_used_addr(used());
        q.set_ready(true);
    }
    uint64_t alloc(uint32_t len)
    {
        uint64_t aligned = (uint64_t(len) + 15) & ~15ULL;
        if (data_next + aligned > (256 << 10))
            data_next = 0;
        uint64_t gpa = data + data_next;
        data_next += aligned;
        return gpa;
    }
    void write_desc(uint16_t i, uint64_t addr, uint32_t len, uint16_t flags, uint16_t next)
    {
        uint8_t d[16];
        std::memcpy(d, &addr, 8);
        std::memcpy(d + 8, &len, 4);
        std::memcpy(d + 12, &flags, 2);
        std::memcpy(d + 14, &next, 2);
        (void)mem.write(desc() + 16ULL * (i % kQSize), d);
    }
    void publish(uint16_t head)
    {
        (void)mem.write_obj<uint16_t>(avail() + 4 + 2 * (avail_idx % kQSize), head);
        ++avail_idx;
        (void)mem.write_obj<uint16_t>(avail() + 2, avail_idx);
    }
    // A chain of `parts` buffers; readable bytes or writable lengths.
    void add(std::span<const uint8_t> readable, uint32_t writable, unsigned parts)
    {
        parts = std::max(1u, std::min(parts, 3u));
        if (!room(parts))
            return;
        uint16_t head = next_desc;
        std::vector<std::pair<uint64_t, uint32_t>> pieces;
        if (!readable.empty()) {
            size_t at = 0;
            for (unsigned p = 0; p < parts; ++p) {
                size_t n = p + 1 == parts ? readable.size() - at : readable.size() / parts;
                uint64_t gpa = alloc(static_cast<uint32_t>(n));
                (void)mem.write(gpa, readable.subspan(at, n));
                pieces.push_back({ gpa, static_cast<uint32_t>(n) });
                at += n;
            }
        } else {
            uint32_t at = 0;
            for (unsigned p = 0; p < parts; ++p) {
                uint32_t n = p + 1 == parts ? writable - at : writable / parts;
                pieces.push_back({ alloc(n), n });
                at += n;
            }
        }
        for (size_t i = 0; i < pieces.size(); ++i) {
            uint16_t idx = static_cast<uint16_t>((head + i) % kQSize);
            uint16_t flags = (readable.empty() ? kDescWrite : 0) | (i + 1 < pieces.size() ? kDescNext : 0);
            write_desc(idx, pieces[i].first, pieces[i].second, flags, static_cast<uint16_t>((idx + 1) % kQSize));
        }
        offered[head % kQSize] = readable.empty() ? writable : 0;
        chain_descs[head % kQSize] = static_cast<uint16_t>(pieces.size());
        in_flight += static_cast<unsigned>(pieces.size());
        next_desc = static_cast<uint16_t>((head + pieces.size()) % kQSize);
        publish(head);
    }
    // Checks what the device returned.
    void check_used(bool rx)
    {
        uint16_t idx = mem.read_obj<uint16_t>(used() + 2).value();
        while (used_seen != idx) {
            uint64_t e = used() + 4 + 8ULL * (used_seen % kQSize);
            uint32_t id = mem.read_obj<uint32_t>(e).value();
            uint32_t len = mem.read_obj<uint32_t>(e + 4).value();
            if (id >= kQSize || chain_descs[id] == 0)
                std::abort(); // a chain the driver never offered (or returned twice)
            if (len > offered[id])
                std::abort(); // the device wrote more than the driver offered
            if (rx && len != 0 && len < vsock::kHeaderSize)
                std::abort(); // an rx packet without a whole header
            in_flight -= chain_descs[id];
            chain_descs[id] = 0;
            ++used_seen;
        }
    }
};

struct Harness {
    GuestMemory mem;
    NullInterrupt irq;
    std::vector<Queue> queues;
    DriverQueue rx, tx, ev;
    std::vector<int> peers; // our ends of the muxer's host sockets
    std::unique_ptr<VsockMuxer> muxer;

    explicit Harness(GuestMemory m)
        : mem(std::move(m))
        , rx { mem, 0x10000, 0x100000 }
        , tx { mem, 0x20000, 0x200000 }
        , ev { mem, 0x30000, 0x300000 }
    {
        for (int i = 0; i < 3; ++i)
            queues.emplace_back(kQSize);
        rx.configure(queues[0]);
        tx.configure(queues[1]);
        ev.configure(queues[2]);
        for (auto& q : queues)
            if (!q.activate(mem, kFVersion1 | kFRingEventIdx).ok())
                std::abort();
        muxer = std::make_unique<VsockMuxer>(kCid, [this](uint32_t port) -> Result<int> {
            if (port & 1)
                return make_error("refused");
            int sv[2];
            if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
                return make_error("socketpair");
            peers.push_back(sv[1]);
            return sv[0];
        });
        if (!muxer->init().ok())
            std::abort();
        muxer->attach(&irq, &queues[0], &queues[1], &queues[2]);
    }
    ~Harness()
    {
        muxer.reset();
        for (int fd : peers)
            if (fd >= 0)
                ::close(fd);
    }
    void run()
    {
        for (int i = 0; i < 3; ++i)
            muxer->poll(0);
        rx.check_used(true);
        tx.check_used(false);
        ev.check_used(false);
    }
};

const uint32_t kPorts[] = { 1234, 1235, 5000, 5001, 1U << 30, (1U << 30) + 1, 0, 0xffffffff };

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size)
{
    static bool quiet = [] {
        set_log_level(LogLevel::Off);
        return true;
    }();
    (void)quiet;
    auto mem = GuestMemory::create(kMemSize);
    if (!mem.ok())
        std::abort();
    Harness h(std::move(mem.value()));
    Input in(data, size);
    h.rx.add({}, 44 + 4096, 2);
    h.rx.add({}, 44 + 4096, 1);
    for (unsigned steps = 0; !in.empty() && steps < 64; ++steps) {
        switch (in.u8() % 8) {
        case 0: {
            uint16_t len = in.u16() % 2048;
            h.tx.add(in.bytes(len), 0, in.u8() % 3 + 1);
            break;
        }
        case 1: {
            vsock::Header hdr;
            hdr.src_cid = kCid;
            hdr.dst_cid = vsock::kHostCid;
            uint8_t op = in.u8();
            hdr.op = op % 9;
            uint8_t ports = in.u8();
            hdr.src_port = kPorts[ports & 7];
            hdr.dst_port = kPorts[(ports >> 3) & 7];
            hdr.type = vsock::kTypeStream;
            hdr.flags = in.u8() & 7;
            hdr.buf_alloc = in.u32();
            hdr.fwd_cnt = in.u32();
            uint16_t len = in.u16() % 4096;
            auto payload = in.bytes(len);
            hdr.len = (op & 0x80) ? len : static_cast<uint32_t>(payload.size()); // sometimes a lie
            std::vector<uint8_t> pkt(vsock::kHeaderSize);
            uint8_t raw[vsock::kHeaderSize];
            vsock::encode_header(hdr, raw);
            std::memcpy(pkt.data(), raw, sizeof(raw));
            pkt.insert(pkt.end(), payload.begin(), payload.end());
            h.tx.add(pkt, 0, (op >> 4) % 3 + 1);
            break;
        }
        case 2: {
            unsigned n = in.u8() % 4 + 1;
            uint8_t sz = in.u8();
            uint32_t len = sz < 16 ? sz : (sz < 128 ? 44 + sz * 32u : 44 + 4096);
            for (unsigned i = 0; i < n; ++i)
                h.rx.add({}, len, sz % 3 + 1);
            break;
        }
        case 3: {
            if (h.peers.empty())
                break;
            size_t which = in.u8() % h.peers.size();
            int& fd = h.peers[which];
            uint8_t action = in.u8();
            if (fd < 0)
                break;
            switch (action % 4) {
            case 0: {
                auto b = in.bytes(in.u8() * 64u);
                [[maybe_unused]] ssize_t n = ::send(fd, b.data(), b.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
                break;
            }
            case 1: {
                static uint8_t sink[1 << 16];
                while (::recv(fd, sink, sizeof(sink), MSG_DONTWAIT) > 0) { }
                break;
            }
            case 2: ::shutdown(fd, SHUT_WR); break;
            case 3:
                ::close(fd);
                fd = -1;
                break;
            }
            break;
        }
        case 4: {
            int sv[2];
            if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
                break;
            uint8_t sel = in.u8();
            std::string line;
            if (sel & 0x80) {
                line = "CONNECT " + std::to_string(kPorts[sel & 7]) + "\n";
            } else {
                auto junk = in.bytes(sel & 31);
                line.assign(junk.begin(), junk.end());
            }
            [[maybe_unused]] ssize_t n = ::send(sv[1], line.data(), line.size(), MSG_NOSIGNAL);
            h.peers.push_back(sv[1]);
            h.muxer->add_host_stream(sv[0]);
            break;
        }
        case 5: break;
        case 6:
            h.ev.add({}, in.u8() % 8 + 1, 1);
            h.muxer->queue_transport_reset_event();
            break;
        case 7: {
            uint64_t addr = in.u32() | uint64_t(in.u16()) << 32;
            uint32_t len = in.u32();
            uint16_t flags = in.u16();
            uint16_t next = in.u16();
            if (!h.tx.room(1))
                break;
            uint16_t idx = h.tx.next_desc;
            h.tx.write_desc(idx, addr, len, flags, next);
            h.tx.offered[idx] = 0;
            // A malformed chain breaks the queue (nothing comes back); a valid one comes back
            // whole, counted here as one descriptor even if NEXT made it longer.
            h.tx.chain_descs[idx] = 1;
            ++h.tx.in_flight;
            h.tx.next_desc = static_cast<uint16_t>((idx + 1) % kQSize);
            h.tx.publish(idx);
            break;
        }
        }
        h.run();
    }
    h.run();
    if (std::getenv("VSOCK_FUZZ_STATS")) { // to check that seeds reach the deep states
        const VsockStats& st = h.muxer->stats();
        std::fprintf(stderr,
            "tx=%lu rx=%lu dropped=%lu rsts=%lu to_host=%lu to_guest=%lu opened=%lu violations=%lu "
            "conns=%zu errors=%d\n",
            st.tx_packets.load(), st.rx_packets.load(), st.dropped.load(), st.rsts_sent.load(), st.bytes_to_host.load(),
            st.bytes_to_guest.load(), st.connections_opened.load(), st.credit_violations.load(),
            h.muxer->connection_count(), h.irq.errors);
    }
    return 0;
}
