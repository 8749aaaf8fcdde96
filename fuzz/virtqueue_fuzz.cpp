// Fuzzes the split virtqueue (src/devices/virtio/queue.cpp) as a device sees it: the input is a
// driver's view of one queue — negotiated features, ring indices, the descriptor table, the
// available ring and a data area for indirect tables and buffers — laid out in a fresh guest
// memory; the device then pops every chain, reads and writes it through ChainReader/ChainWriter
// and returns it with add_used(), as a device does, until the ring is empty or pop() reports a
// protocol violation. Besides the sanitizers, every popped chain is checked against the queue's
// promises (segments in guest RAM, readable before writable, byte counts).
//
// Input layout (short inputs are zero-padded):
//   0      u8   features: bit 0 INDIRECT_DESC, bit 1 EVENT_IDX
//   1      u8   log2 of the queue size (low 3 bits: 1..128 entries)
//   2      u16  avail->idx
//   4      u16  device's next_avail (and next_used) before the run: wrapping indices
//   6      u16  avail->used_event
//   8      u16  avail->flags
//   10     u8   options: bit 0 undo_pop() and pop again once, bit 1 disable notifications first,
//               bit 2 place the rings at the very end of guest RAM
//   11     u8   read/write chunk size (1..256)
//   12..15      reserved
//   16     desc table (16 bytes x size), then avail->ring (2 bytes x size),
//   then   the data area at kDataGpa (indirect tables, buffers).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "devices/virtio/queue.h"
#include "devices/virtio/virtio.h"
#include "memory/guest_memory.h"

using namespace vessel;
using namespace vessel::virtio;

namespace {

constexpr uint64_t kRamSize = 16 << 20; // the smallest guest RAM GuestMemory allows
constexpr uint64_t kDataGpa = 0x10000;
constexpr size_t kMaxData = 64 * 1024;
// A device never copies more than this much per chain here: a descriptor may legally span all
// of RAM, and copying it would only slow the fuzzer down.
constexpr size_t kMaxCopy = 16 * 1024;

[[noreturn]] void fail(const char* what)
{
    std::fprintf(stderr, "virtqueue_fuzz: invariant broken: %s\n", what);
    std::abort();
}

struct Input {
    const uint8_t* data;
    size_t size;
    uint8_t u8(size_t at) const { return at < size ? data[at] : 0; }
    uint16_t u16(size_t at) const { return static_cast<uint16_t>(u8(at) | (u8(at + 1) << 8)); }
    // Copies [at, at+len) of the input (zero-padded) into guest memory at host pointer `to`.
    void copy(size_t at, uint8_t* to, size_t len) const
    {
        std::memset(to, 0, len);
        if (at < size)
            std::memcpy(to, data + at, std::min(len, size - at));
    }
};

void check_chain(const GuestMemory& mem, const Chain& chain, uint16_t queue_size)
{
    if (chain.head >= queue_size)
        fail("head outside the queue");
    uint64_t readable = 0, writable = 0;
    bool seen_writable = false;
    for (const Segment& s : chain.segments) {
        if (mem.host_ptr(s.gpa, s.len) != s.host)
            fail("segment host pointer does not match its guest range");
        if (s.writable)
            seen_writable = true;
        else if (seen_writable)
            fail("readable segment after a writable one");
        (s.writable ? writable : readable) += s.len;
    }
    if (readable != chain.readable_bytes || writable != chain.writable_bytes)
        fail("chain byte counts do not add up");
    if (chain.segments.size() > std::max<size_t>(queue_size, kMaxIndirectEntries) + queue_size)
        fail("chain longer than the queue and an indirect table");
}

// Consumes the chain as a device would: reads its readable part (in `chunk`-byte pieces, so
// segment boundaries fall anywhere), writes a pattern into its writable part.
uint32_t consume(const Chain& chain, size_t chunk)
{
    static std::vector<uint8_t> buffer(kMaxCopy);
    ChainReader reader(chain);
    size_t total = 0;
    while (total < kMaxCopy && reader.remaining() > 0) {
        size_t n = reader.read(std::span(buffer.data(), std::min(chunk, kMaxCopy - total)));
        if (n == 0)
            fail("reader made no progress with bytes remaining");
        total += n;
    }
    uint64_t before_skip = reader.remaining();
    if (reader.skip(before_skip) != before_skip || reader.remaining() != 0)
        fail("reader skip");
    if (reader.read(std::span(buffer.data(), 1)) != 0)
        fail("reader read past the end");

    ChainWriter writer(chain);
    std::memset(buffer.data(), 0xa5, std::min(chunk, kMaxCopy));
    size_t written = 0;
    while (written < kMaxCopy && writer.remaining() > 0) {
        size_t n = writer.write(std::span(buffer.data(), std::min(chunk, kMaxCopy - written)));
        if (n == 0)
            fail("writer made no progress with room remaining");
        written += n;
    }
    // Half of the rest is "written in place" (skipped), like a device filling data directly.
    writer.skip(writer.remaining() / 2);
    if (writer.written() + writer.remaining() != chain.writable_bytes)
        fail("writer accounting");
    return static_cast<uint32_t>(std::min<uint64_t>(writer.written(), UINT32_MAX));
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size)
{
    Input in { data, size };
    auto created = GuestMemory::create(kRamSize);
    if (!created.ok())
        fail("cannot create guest memory");
    GuestMemory mem = created.release_value();

    uint64_t features = kFVersion1;
    if (in.u8(0) & 1)
        features |= kFRingIndirectDesc;
    if (in.u8(0) & 2)
        features |= kFRingEventIdx;
    uint16_t qsize = static_cast<uint16_t>(1u << (in.u8(1) & 7));
    uint8_t options = in.u8(10);
    size_t chunk = static_cast<size_t>(in.u8(11)) + 1;

    // Ring placement: low in RAM, or packed against its end (boundary checks).
    uint64_t desc_gpa = 0x1000, avail_gpa = 0x2000, used_gpa = 0x3000;
    uint64_t desc_len = 16ULL * qsize, avail_len = 6 + 2ULL * qsize, used_len = 6 + 8ULL * qsize;
    if (options & 4) {
        used_gpa = (kRamSize - used_len) & ~3ULL;
        avail_gpa = (used_gpa - avail_len) & ~1ULL;
        desc_gpa = (avail_gpa - desc_len) & ~15ULL;
    }
    uint8_t* desc = mem.host_ptr(desc_gpa, desc_len);
    uint8_t* avail = mem.host_ptr(avail_gpa, avail_len);
    size_t at = 16;
    in.copy(at, desc, desc_len);
    at += desc_len;
    uint16_t avail_flags = in.u16(8), avail_idx = in.u16(2), used_event = in.u16(6);
    std::memcpy(avail + 0, &avail_flags, 2);
    std::memcpy(avail + 2, &avail_idx, 2);
    in.copy(at, avail + 4, 2ULL * qsize);
    at += 2ULL * qsize;
    std::memcpy(avail + 4 + 2ULL * qsize, &used_event, 2);
    if (at < size)
        in.copy(at, mem.host_ptr(kDataGpa, kMaxData), std::min(kMaxData, size - at));

    Queue queue(kMaxQueueSize);
    queue.set_size(qsize);
    queue.set_desc_addr(desc_gpa);
    queue.set_avail_addr(avail_gpa);
    queue.set_used_addr(used_gpa);
    queue.set_ready(true);
    if (!queue.activate(mem, features).ok())
        fail("activation of a well-formed queue failed");
    uint16_t start = in.u16(4);
    queue.set_indices(start, start);
    if (options & 2)
        queue.disable_notifications();

    uint16_t pending = static_cast<uint16_t>(avail_idx - start);
    Chain chain;
    uint32_t popped = 0;
    bool undone = false;
    for (;;) {
        auto r = queue.pop(chain);
        if (!r.ok())
            break; // the device reports DEVICE_NEEDS_RESET and stops using the queue
        if (!r.value())
            break;
        if (++popped > pending || pending > qsize)
            fail("popped more chains than the driver made available");
        check_chain(mem, chain, qsize);
        if ((options & 1) && !undone) {
            uint16_t head = chain.head;
            queue.undo_pop();
            --popped;
            undone = true;
            auto again = queue.pop(chain);
            if (!again.ok() || !again.value() || chain.head != head)
                fail("undo_pop did not give the same chain back");
            ++popped;
        }
        uint32_t written = consume(chain, chunk);
        uint16_t used_before = queue.next_used();
        queue.add_used(chain, written);
        uint16_t used_idx;
        std::memcpy(&used_idx, mem.host_ptr(used_gpa + 2, 2), 2);
        if (used_idx != static_cast<uint16_t>(used_before + 1) || used_idx != queue.next_used())
            fail("used->idx not advanced by one");
        if (popped % 3 == 0)
            (void)queue.needs_interrupt();
    }
    (void)queue.needs_interrupt();
    (void)queue.enable_notifications();
    (void)queue.has_available();
    return 0;
}
