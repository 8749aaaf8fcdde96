// Fuzz target: the MMDS (src/mmds) as a guest reaches it — Ethernet frames into the network
// stack, reply frames out of it — plus its HTTP handler and data store directly. Every input
// gets a fresh data store, token authority and stack on a fake clock with fixed initial sequence
// numbers and a counting "random" source (the first V2 token is therefore always the same), so a
// crash reproduces exactly. The input is a program of operations:
//   header: version V1/V2, imds_compat, size limit
//   ops:    raw frame | ARP request | TCP segment from one of 4 guest ports | pop replies into a
//           buffer of chosen size | advance the clock | one HTTP request to the handler | PUT or
//           PATCH JSON text | change the MMDS address
// TCP segments can take their sequence number from what that port sent so far and acknowledge
// what the stack sent it, so that handshakes complete and requests reach the HTTP layer; flags,
// options, windows and payloads come from the input. Every reply frame is checked with a
// checksum written here, independently of the stack's. By hand:
//   clang++ -std=c++20 -g -O1 -fsanitize=fuzzer,address,undefined -Isrc fuzz/mmds_fuzz.cpp
//     src/mmds/*.cpp -DFMT_HEADER_ONLY
#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "mmds/data_store.h"
#include "mmds/http_handler.h"
#include "mmds/stack.h"
#include "mmds/token_authority.h"

using namespace vessel;
using namespace vessel::mmds;

namespace {

constexpr MacAddress kGuestMac { 0x52, 0x54, 0x00, 0xaa, 0xbb, 0xcc };
constexpr Ipv4Address kGuestIp { 10, 0, 0, 2 };
constexpr Ipv4Address kOtherMmdsIp { 169, 254, 170, 2 };

const std::string_view kRequests[] = {
    "GET /latest/meta-data/ami-id HTTP/1.1\r\nHost: 169.254.169.254\r\nUser-Agent: Wget\r\nConnection: close\r\n\r\n",
    "GET / HTTP/1.0\r\nAccept: application/json\r\n\r\n",
    "GET /big HTTP/1.1\r\n\r\n",
    "PUT /latest/api/token HTTP/1.1\r\nX-metadata-token-ttl-seconds: 21600\r\n\r\n",
    // The first token of the counting random source (bytes 0, 1, 2, ... in base64).
    "GET /latest HTTP/1.1\r\nX-metadata-token: AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIj\r\n\r\n",
    "PUT / HTTP/1.1\r\nX-Forwarded-For: x\r\n\r\n",
    "PATCH / HTTP/1.1\r\n\r\n",
    "POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
    "GET / HTTP/1.1\r\nContent-Length: alpha\r\n\r\n",
    "GET //latest//meta-data/ HTTP/1.1\n\n",
};

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
    // Up to n bytes of input (fewer at its end).
    std::string_view bytes(size_t n)
    {
        const size_t take = std::min(n, m_size - std::min(m_at, m_size));
        std::string_view out(reinterpret_cast<const char*>(m_data + m_at), take);
        m_at += take;
        return out;
    }

private:
    const uint8_t* m_data;
    size_t m_size;
    size_t m_at { 0 };
};

void put16(std::vector<uint8_t>& v, uint16_t x)
{
    v.push_back(static_cast<uint8_t>(x >> 8));
    v.push_back(static_cast<uint8_t>(x));
}

void put32(std::vector<uint8_t>& v, uint32_t x)
{
    put16(v, static_cast<uint16_t>(x >> 16));
    put16(v, static_cast<uint16_t>(x));
}

uint16_t be16(const uint8_t* p)
{
    return static_cast<uint16_t>(p[0] << 8 | p[1]);
}

// RFC 1071 without shortcuts, separate from the stack's implementation.
uint16_t checksum(const uint8_t* p, size_t n, uint64_t sum = 0)
{
    for (size_t i = 0; i < n; ++i)
        sum += (i % 2 == 0) ? static_cast<uint64_t>(p[i]) << 8 : p[i];
    while (sum >> 16)
        sum = (sum & 0xffff) + (sum >> 16);
    return static_cast<uint16_t>(~sum);
}

[[noreturn]] void fail(const char* what)
{
    std::fprintf(stderr, "mmds_fuzz: %s\n", what);
    std::abort();
}

// A guest port: the sequence numbers it used and the highest the stack sent it.
struct Peer {
    uint16_t port;
    uint32_t next_seq;
    uint32_t seen_end { 0 };
    bool seen { false };
};

struct World {
    uint64_t now { 1'000'000 };
    std::shared_ptr<DataStore> store;
    std::shared_ptr<TokenAuthority> tokens;
    std::unique_ptr<Stack> stack;
    std::array<Peer, 4> peers {};
    Ipv4Address mmds_ip { kDefaultMmdsIpv4 };
};

// Checks one reply frame and learns from it what the peer would acknowledge.
void check_reply(World& world, const std::vector<uint8_t>& buffer, size_t n)
{
    if (n > buffer.size())
        fail("pop_rx overran the buffer");
    if (n < 14)
        fail("runt reply");
    const uint8_t* f = buffer.data();
    if (std::memcmp(f + 6, kMmdsMac.data(), 6) != 0)
        fail("reply not from the MMDS MAC");
    if (be16(f + 12) == kEtherTypeArp) {
        if (n != kArpFrameBytes || be16(f + 20) != kArpOperReply)
            fail("bad ARP reply");
        return;
    }
    if (be16(f + 12) != kEtherTypeIpv4 || n < kTcpFrameOverhead)
        fail("reply is neither ARP nor IPv4/TCP");
    const uint8_t* ip = f + 14;
    if (ip[0] != 0x45 || ip[8] != kReplyTtl || ip[9] != kIpProtocolTcp || be16(ip + 2) + 14u != n)
        fail("bad IPv4 header");
    if (checksum(ip, 20) != 0)
        fail("bad IPv4 checksum");
    const size_t tcp_len = n - 34;
    uint64_t pseudo = static_cast<uint64_t>(ip[12] << 8 | ip[13]) + (ip[14] << 8 | ip[15]) + (ip[16] << 8 | ip[17])
        + (ip[18] << 8 | ip[19]) + kIpProtocolTcp + tcp_len;
    const uint8_t* tcp = ip + 20;
    if (checksum(tcp, tcp_len, pseudo) != 0)
        fail("bad TCP checksum");
    if (be16(tcp) != kMmdsTcpPort)
        fail("reply not from port 80");
    const size_t header = static_cast<size_t>(tcp[12] >> 4) * 4;
    if (header < 20 || header > tcp_len)
        fail("bad TCP header length");
    for (auto& peer : world.peers) {
        if (peer.port != be16(tcp + 2))
            continue;
        const uint32_t seq = static_cast<uint32_t>(tcp[4]) << 24 | tcp[5] << 16 | tcp[6] << 8 | tcp[7];
        const uint8_t flags = tcp[13];
        if (flags & tcp::kRst)
            return;
        const uint32_t end = seq + static_cast<uint32_t>(tcp_len - header) + ((flags & tcp::kSyn) ? 1 : 0)
            + ((flags & tcp::kFin) ? 1 : 0);
        if (!peer.seen || seq_gt(end, peer.seen_end))
            peer.seen_end = end;
        peer.seen = true;
    }
}

void pop(World& world, size_t size, int count)
{
    std::vector<uint8_t> buffer(size);
    for (int i = 0; i < count && world.stack->has_rx(); ++i) {
        const size_t n = world.stack->pop_rx(buffer);
        if (n == 0) {
            if (size >= Stack::kMinRxBuffer)
                fail("has_rx() but nothing popped into a usable buffer");
            return;
        }
        check_reply(world, buffer, n);
    }
}

std::vector<uint8_t> arp_frame(Input& in, const World& world)
{
    Ipv4Address target = world.mmds_ip;
    if (in.u8() & 1)
        target = { in.u8(), in.u8(), in.u8(), in.u8() };
    std::vector<uint8_t> f(6, 0xff);
    f.insert(f.end(), kGuestMac.begin(), kGuestMac.end());
    put16(f, kEtherTypeArp);
    put16(f, 1);
    put16(f, kEtherTypeIpv4);
    f.push_back(6);
    f.push_back(4);
    put16(f, in.u8() % 3);
    f.insert(f.end(), kGuestMac.begin(), kGuestMac.end());
    f.insert(f.end(), kGuestIp.begin(), kGuestIp.end());
    f.insert(f.end(), 6, 0);
    f.insert(f.end(), target.begin(), target.end());
    if (in.u8() & 1)
        f.resize(60, 0);
    return f;
}

std::vector<uint8_t> tcp_frame(Input& in, World& world)
{
    Peer& peer = world.peers[in.u8() % world.peers.size()];
    const uint8_t flags = in.u8();
    const uint8_t seq_mode = in.u8();
    const uint32_t seq = seq_mode & 1 ? in.u32() : peer.next_seq - (seq_mode >> 1) % 4;
    const uint8_t ack_mode = in.u8();
    const uint32_t ack = ack_mode & 1 ? in.u32() : peer.seen_end - (ack_mode >> 1) % 4;
    const uint16_t window = in.u8() & 1 ? in.u16() : 64240;
    const size_t option_bytes = (in.u8() % 11) * 4;
    const std::string_view options = in.bytes(option_bytes);
    std::string payload;
    switch (in.u8() % 3) {
    case 0: break;
    case 1: payload = kRequests[in.u8() % std::size(kRequests)]; break;
    default: payload = in.bytes(in.u16() % 3000); break;
    }
    const uint8_t misc = in.u8();

    std::vector<uint8_t> tcp;
    put16(tcp, peer.port);
    put16(tcp, misc & 8 ? static_cast<uint16_t>(in.u16()) : kMmdsTcpPort);
    put32(tcp, seq);
    put32(tcp, ack);
    tcp.push_back(static_cast<uint8_t>((20 + options.size()) / 4 << 4));
    tcp.push_back(flags);
    put16(tcp, window);
    put16(tcp, 0); // the stack does not verify checksums (offload), so none is computed
    put16(tcp, 0);
    tcp.insert(tcp.end(), options.begin(), options.end());
    tcp.insert(tcp.end(), payload.begin(), payload.end());

    std::vector<uint8_t> f(kMmdsMac.begin(), kMmdsMac.end());
    f.insert(f.end(), kGuestMac.begin(), kGuestMac.end());
    put16(f, kEtherTypeIpv4);
    f.push_back(0x45);
    f.push_back(0);
    put16(f, static_cast<uint16_t>(20 + tcp.size()));
    put16(f, 0);
    put16(f, misc & 4 ? 0x2000 : 0x4000); // more fragments, or DF
    f.push_back(64);
    f.push_back(misc & 2 ? 17 : kIpProtocolTcp);
    put16(f, 0);
    f.insert(f.end(), kGuestIp.begin(), kGuestIp.end());
    f.insert(f.end(), world.mmds_ip.begin(), world.mmds_ip.end());
    f.insert(f.end(), tcp.begin(), tcp.end());
    if (misc & 1)
        f.resize(std::max<size_t>(f.size(), 60) + (misc >> 4), 0);
    if (misc & 0x80) // lie about the total length
        f.resize(f.size() - std::min<size_t>(f.size(), misc & 0x3f));

    if (!(seq_mode & 1)) {
        const uint32_t used
            = static_cast<uint32_t>(payload.size()) + ((flags & tcp::kSyn) ? 1 : 0) + ((flags & tcp::kFin) ? 1 : 0);
        peer.next_seq = seq + used;
    }
    return f;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size)
{
    Input in(data, size);
    World world;
    const uint8_t header = in.u8();
    world.store = std::make_shared<DataStore>(header & 4 ? 512 : kDefaultSizeLimit);
    world.store->set_version(header & 1 ? Version::V2 : Version::V1);
    world.store->set_imds_compat(header & 2);
    (void)world.store->put_json(R"({"latest":{"meta-data":{"ami-id":"ami-12345678","list":[1,"two"]}},"big":")"
        + std::string(header & 8 ? 6000 : 60, 'x') + R"("})");
    uint8_t counter = 0;
    world.tokens = std::make_shared<TokenAuthority>([&world] { return world.now; },
        [&counter](std::span<uint8_t> out) -> Result<void> {
            for (auto& b : out)
                b = counter++;
            return {};
        });
    StackConfig config;
    config.isn_seed = 7;
    config.max_connections = header & 16 ? 2 : 30;
    world.stack = std::make_unique<Stack>(world.store, world.tokens, config, [&world] { return world.now; });
    for (size_t i = 0; i < world.peers.size(); ++i)
        world.peers[i] = Peer { static_cast<uint16_t>(40000 + i), static_cast<uint32_t>(1000 * (i + 1)) };

    for (int ops = 0; !in.empty() && ops < 4096; ++ops) {
        switch (in.u8() % 8) {
        case 0: {
            const std::string_view frame = in.bytes(in.u16() % 2048);
            (void)world.stack->handle_tx({ reinterpret_cast<const uint8_t*>(frame.data()), frame.size() });
            break;
        }
        case 1: (void)world.stack->handle_tx(arp_frame(in, world)); break;
        case 2: (void)world.stack->handle_tx(tcp_frame(in, world)); break;
        case 3: {
            const uint8_t choice = in.u8();
            const size_t buffer = choice & 1 ? in.u16() % 2048 : 1514;
            pop(world, buffer, 1 + (choice >> 1) % 32);
            break;
        }
        case 4: {
            const uint16_t ms = in.u16();
            world.now += in.u8() & 1 ? ms * 100ULL : ms;
            break;
        }
        case 5: {
            const std::string_view request = in.bytes(in.u16() % 3000);
            const std::string response = handle_request(request, *world.store, *world.tokens);
            if (response.rfind("HTTP/1.", 0) != 0 || response.find("\r\n\r\n") == std::string::npos)
                fail("malformed HTTP response");
            break;
        }
        case 6: {
            const uint8_t kind = in.u8();
            const std::string_view text = in.bytes(in.u16() % 4096);
            (void)(kind & 1 ? world.store->patch_json(text) : world.store->put_json(text));
            (void)world.store->to_json();
            break;
        }
        default:
            world.mmds_ip = in.u8() & 1 ? kOtherMmdsIp : kDefaultMmdsIpv4;
            world.stack->set_ipv4(world.mmds_ip);
            break;
        }
        if (world.stack->connection_count() > config.max_connections)
            fail("connection table over its limit");
    }
    // Whatever is left must drain into ordinary buffers in bounded time.
    for (int i = 0; i < 4 && world.stack->has_rx(); ++i) {
        pop(world, 1514, 4096);
        world.now += 60'000;
    }
    return 0;
}
