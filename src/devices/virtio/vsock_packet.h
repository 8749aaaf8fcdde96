// virtio-vsock packets (virtio v1.2, 5.10.6): every packet on the rx and tx queues starts with a
// 44-byte little-endian header (struct virtio_vsock_hdr, packed), followed by `len` payload bytes
// for OP_RW. Encoding and decoding go field by field through memcpy: guest memory is unaligned and
// untrusted, and a decoded header is a private copy that later guest writes cannot change.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace vessel::virtio::vsock {

// Well-known CIDs (5.10.4): the host is always 2; guests get 3 and up.
constexpr uint64_t kHostCid = 2;

// Feature bits (5.10.3). Without any, a device supports stream sockets only (Linux 6.1 knows only
// SEQPACKET and negotiates nothing: it assumes stream).
constexpr uint64_t kFStream = 1ULL << 0;

// Queues (5.10.2).
constexpr uint16_t kRxQueue = 0;
constexpr uint16_t kTxQueue = 1;
constexpr uint16_t kEventQueue = 2;

// Socket types.
constexpr uint16_t kTypeStream = 1;

// Operations.
enum class Op : uint16_t {
    Invalid = 0,
    Request = 1,
    Response = 2,
    Rst = 3,
    Shutdown = 4,
    Rw = 5,
    CreditUpdate = 6,
    CreditRequest = 7,
};

// OP_SHUTDOWN flags: the sender will receive (RCV) / send (SEND) no more data.
constexpr uint32_t kShutdownRcv = 1;
constexpr uint32_t kShutdownSend = 2;
constexpr uint32_t kShutdownBoth = kShutdownRcv | kShutdownSend;

// Event queue: struct virtio_vsock_event { le32 id; } (5.10.6.7).
constexpr uint32_t kEventTransportReset = 0;
constexpr size_t kEventSize = 4;

constexpr size_t kHeaderSize = 44;

struct Header {
    uint64_t src_cid { 0 };
    uint64_t dst_cid { 0 };
    uint32_t src_port { 0 };
    uint32_t dst_port { 0 };
    uint32_t len { 0 };
    uint16_t type { 0 };
    uint16_t op { 0 };
    uint32_t flags { 0 };
    uint32_t buf_alloc { 0 };
    uint32_t fwd_cnt { 0 };
};

// Field offsets in the wire format.
namespace offset {
constexpr size_t kSrcCid = 0;
constexpr size_t kDstCid = 8;
constexpr size_t kSrcPort = 16;
constexpr size_t kDstPort = 20;
constexpr size_t kLen = 24;
constexpr size_t kType = 28;
constexpr size_t kOp = 30;
constexpr size_t kFlags = 32;
constexpr size_t kBufAlloc = 36;
constexpr size_t kFwdCnt = 40;
} // namespace offset

// x86-64 only (like the rest of Vessel): host byte order is the wire's little endian.
template<typename T>
inline T load_le(const uint8_t* p)
{
    T v;
    std::memcpy(&v, p, sizeof(v));
    return v;
}
template<typename T>
inline void store_le(uint8_t* p, T v)
{
    std::memcpy(p, &v, sizeof(v));
}

inline Header decode_header(const uint8_t (&in)[kHeaderSize])
{
    Header h;
    h.src_cid = load_le<uint64_t>(in + offset::kSrcCid);
    h.dst_cid = load_le<uint64_t>(in + offset::kDstCid);
    h.src_port = load_le<uint32_t>(in + offset::kSrcPort);
    h.dst_port = load_le<uint32_t>(in + offset::kDstPort);
    h.len = load_le<uint32_t>(in + offset::kLen);
    h.type = load_le<uint16_t>(in + offset::kType);
    h.op = load_le<uint16_t>(in + offset::kOp);
    h.flags = load_le<uint32_t>(in + offset::kFlags);
    h.buf_alloc = load_le<uint32_t>(in + offset::kBufAlloc);
    h.fwd_cnt = load_le<uint32_t>(in + offset::kFwdCnt);
    return h;
}

inline void encode_header(const Header& h, uint8_t (&out)[kHeaderSize])
{
    store_le(out + offset::kSrcCid, h.src_cid);
    store_le(out + offset::kDstCid, h.dst_cid);
    store_le(out + offset::kSrcPort, h.src_port);
    store_le(out + offset::kDstPort, h.dst_port);
    store_le(out + offset::kLen, h.len);
    store_le(out + offset::kType, h.type);
    store_le(out + offset::kOp, h.op);
    store_le(out + offset::kFlags, h.flags);
    store_le(out + offset::kBufAlloc, h.buf_alloc);
    store_le(out + offset::kFwdCnt, h.fwd_cnt);
}

} // namespace vessel::virtio::vsock
