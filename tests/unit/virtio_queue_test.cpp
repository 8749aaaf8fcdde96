// The split virtqueue, device side: chains (direct, indirect), copying across segments, every
// validation rule, interrupt and notification suppression, index wrapping.
#include <gtest/gtest.h>

#include <numeric>
#include <string>
#include <utility>
#include <vector>

#include "devices/virtio/queue.h"
#include "devices/virtio/virtio.h"
#include "memory/guest_memory.h"
#include "virtio_test_support.h"

using namespace vessel;
using namespace vessel::virtio;
using namespace vessel::virtio_test;

namespace {

constexpr uint64_t kRam = 16 << 20;
constexpr uint64_t kRings = 0x1000;
constexpr uint64_t kData = 0x100000;
constexpr uint64_t kTable = 0x80000; // indirect tables

class VirtioQueue : public ::testing::Test {
protected:
    // Builds rings of `size` entries and activates a queue on them with `features`.
    void start(uint16_t size = 8, uint64_t features = kFVersion1)
    {
        ring = std::make_unique<SplitRing>(mem, kRings, size);
        queue = Queue(256);
        ring->configure(queue);
        auto r = queue.activate(mem, features);
        ASSERT_TRUE(r.ok()) << r.error().message();
    }

    // Pops one chain; the test fails unless pop() returned a chain.
    Chain pop_one()
    {
        Chain c;
        auto r = queue.pop(c);
        EXPECT_TRUE(r.ok()) << r.error().message();
        EXPECT_TRUE(r.ok() && r.value());
        return c;
    }

    // pop() must fail with a message containing `what`.
    void expect_pop_error(const std::string& what)
    {
        Chain c;
        auto r = queue.pop(c);
        ASSERT_FALSE(r.ok()) << "pop() accepted a chain that breaks: " << what;
        EXPECT_NE(r.error().message().find(what), std::string::npos) << r.error().message();
    }

    void fill(uint64_t gpa, std::vector<uint8_t> bytes) { ASSERT_TRUE(mem.write(gpa, bytes).ok()); }
    std::vector<uint8_t> peek(uint64_t gpa, size_t n)
    {
        std::vector<uint8_t> out(n);
        EXPECT_TRUE(mem.read(gpa, out).ok());
        return out;
    }

    GuestMemory mem { GuestMemory::create(kRam).release_value() };
    std::unique_ptr<SplitRing> ring;
    Queue queue;
};

std::vector<uint8_t> iota_bytes(size_t n, uint8_t first)
{
    std::vector<uint8_t> v(n);
    std::iota(v.begin(), v.end(), first);
    return v;
}

} // namespace

// --- popping chains -------------------------------------------------------------------------

TEST_F(VirtioQueue, PopsADirectChainReadableThenWritable)
{
    start();
    uint16_t head = ring->add_chain({ { kData, 16, false }, { kData + 0x100, 8, false }, { kData + 0x200, 64, true } });
    EXPECT_TRUE(queue.has_available());
    Chain c = pop_one();
    EXPECT_EQ(c.head, head);
    ASSERT_EQ(c.segments.size(), 3u);
    EXPECT_EQ(c.readable_bytes, 24u);
    EXPECT_EQ(c.writable_bytes, 64u);
    EXPECT_EQ(c.segments[1].gpa, kData + 0x100);
    EXPECT_EQ(c.segments[1].len, 8u);
    EXPECT_FALSE(c.segments[1].writable);
    EXPECT_TRUE(c.segments[2].writable);
    for (const Segment& s : c.segments)
        EXPECT_EQ(s.host, mem.host_ptr(s.gpa, s.len));
    EXPECT_EQ(queue.next_avail(), 1u);
    EXPECT_FALSE(queue.has_available());
    Chain empty;
    auto r = queue.pop(empty);
    ASSERT_TRUE(r.ok());
    EXPECT_FALSE(r.value());
}

TEST_F(VirtioQueue, PopsChainsInAvailOrder)
{
    start();
    uint16_t a = ring->add_chain({ { kData, 1, true } }, false);
    uint16_t b = ring->add_chain({ { kData + 1, 1, true } }, false);
    ring->publish(b);
    ring->publish(a);
    EXPECT_EQ(pop_one().head, b);
    EXPECT_EQ(pop_one().head, a);
}

TEST_F(VirtioQueue, PopsAnIndirectChain)
{
    start(8, kFVersion1 | kFRingIndirectDesc);
    uint16_t head = ring->add_indirect(
        kTable, { { kData, 10, false }, { kData + 0x100, 20, true }, { kData + 0x200, 30, true } });
    Chain c = pop_one();
    EXPECT_EQ(c.head, head);
    ASSERT_EQ(c.segments.size(), 3u);
    EXPECT_EQ(c.readable_bytes, 10u);
    EXPECT_EQ(c.writable_bytes, 50u);
    EXPECT_EQ(c.segments[2].gpa, kData + 0x200);
    EXPECT_EQ(c.segments[2].host, mem.host_ptr(kData + 0x200, 30));
}

TEST_F(VirtioQueue, IndirectTableEntriesMayComeInAnyOrder)
{
    start(8, kFVersion1 | kFRingIndirectDesc);
    // Entry 0 -> 2 -> 1, a 3-entry table.
    ring->write_entry(kTable, kData, 1, kDescNext, 2);
    ring->write_entry(kTable + 16, kData + 2, 4, kDescWrite, 0);
    ring->write_entry(kTable + 32, kData + 1, 1, kDescNext, 1);
    ring->write_desc(0, kTable, 48, kDescIndirect, 0);
    ring->publish(0);
    Chain c = pop_one();
    ASSERT_EQ(c.segments.size(), 3u);
    EXPECT_EQ(c.segments[1].gpa, kData + 1);
    EXPECT_EQ(c.segments[2].gpa, kData + 2);
}

TEST_F(VirtioQueue, AChainAsLongAsTheQueueIsAccepted)
{
    start(4);
    ring->add_chain({ { kData, 1, false }, { kData + 1, 1, false }, { kData + 2, 1, true }, { kData + 3, 1, true } });
    EXPECT_EQ(pop_one().segments.size(), 4u);
}

TEST_F(VirtioQueue, BufferEndingExactlyAtTheEndOfRamIsAccepted)
{
    start();
    ring->add_chain({ { kRam - 64, 64, true } });
    Chain c = pop_one();
    EXPECT_EQ(c.segments[0].host, mem.host_ptr(kRam - 64, 64));
}

TEST_F(VirtioQueue, ZeroLengthBuffersAreAccepted)
{
    start();
    ring->add_chain({ { kData, 0, false }, { kData, 4, false }, { kData + 8, 0, true } });
    Chain c = pop_one();
    EXPECT_EQ(c.readable_bytes, 4u);
    EXPECT_EQ(c.writable_bytes, 0u);
}

TEST_F(VirtioQueue, UndoPopGivesTheSameChainBack)
{
    start();
    ring->add_chain({ { kData, 4, true } });
    ring->add_chain({ { kData + 4, 4, true } });
    uint16_t first = pop_one().head;
    queue.undo_pop();
    EXPECT_TRUE(queue.has_available());
    EXPECT_EQ(pop_one().head, first);
    EXPECT_NE(pop_one().head, first);
}

TEST_F(VirtioQueue, PopBeforeActivationIsAnError)
{
    Queue q;
    Chain c;
    EXPECT_FALSE(q.pop(c).ok());
    EXPECT_FALSE(q.has_available());
    q.add_used(c, 0); // ignored, no crash
    EXPECT_FALSE(q.needs_interrupt());
}

// --- ChainReader / ChainWriter ----------------------------------------------------------------

TEST_F(VirtioQueue, ChainReaderCopiesAcrossSegments)
{
    start();
    fill(kData, iota_bytes(3, 0));
    fill(kData + 0x100, iota_bytes(5, 3));
    fill(kData + 0x200, iota_bytes(7, 8));
    fill(kData + 0x300, { 0xee, 0xee });
    ring->add_chain(
        { { kData, 3, false }, { kData + 0x100, 5, false }, { kData + 0x200, 7, false }, { kData + 0x300, 2, true } });
    Chain c = pop_one();
    ChainReader reader(c);
    EXPECT_EQ(reader.remaining(), 15u);
    std::vector<uint8_t> got;
    uint8_t buf[4];
    size_t n;
    while ((n = reader.read(buf)) > 0)
        got.insert(got.end(), buf, buf + n);
    EXPECT_EQ(got, iota_bytes(15, 0)); // never the writable segment's bytes
    EXPECT_EQ(reader.remaining(), 0u);
}

TEST_F(VirtioQueue, ChainReaderSkipsAndWalksPieces)
{
    start();
    fill(kData, iota_bytes(4, 0));
    fill(kData + 0x100, iota_bytes(4, 4));
    ring->add_chain({ { kData, 4, false }, { kData + 0x100, 4, false } });
    Chain c = pop_one();
    ChainReader reader(c);
    EXPECT_EQ(reader.skip(3), 3u);
    std::vector<std::pair<uint64_t, size_t>> pieces;
    EXPECT_EQ(reader.for_each(4, [&](const uint8_t* p, size_t len) { pieces.emplace_back(*p, len); }), 4u);
    ASSERT_EQ(pieces.size(), 2u);
    EXPECT_EQ(pieces[0], std::make_pair(uint64_t { 3 }, size_t { 1 }));
    EXPECT_EQ(pieces[1], std::make_pair(uint64_t { 4 }, size_t { 3 }));
    EXPECT_EQ(reader.skip(100), 1u); // only what is left
    uint8_t b;
    EXPECT_EQ(reader.read(std::span(&b, 1)), 0u);
}

TEST_F(VirtioQueue, ChainWriterFillsWritableSegmentsOnly)
{
    start();
    fill(kData, { 0x11, 0x11 });
    fill(kData + 0x100, { 0, 0, 0 });
    fill(kData + 0x200, { 0, 0, 0, 0, 0 });
    ring->add_chain({ { kData, 2, false }, { kData + 0x100, 3, true }, { kData + 0x200, 5, true } });
    Chain c = pop_one();
    ChainWriter writer(c);
    EXPECT_EQ(writer.remaining(), 8u);
    auto data = iota_bytes(6, 0xa0);
    EXPECT_EQ(writer.write(std::span(data).first(2)), 2u);
    EXPECT_EQ(writer.skip(2), 2u); // crosses into the second segment
    EXPECT_EQ(writer.write(data), 4u); // only 4 bytes of room left
    EXPECT_EQ(writer.written(), 8u);
    EXPECT_EQ(writer.remaining(), 0u);
    EXPECT_EQ(peek(kData, 2), (std::vector<uint8_t> { 0x11, 0x11 })); // readable part untouched
    EXPECT_EQ(peek(kData + 0x100, 3), (std::vector<uint8_t> { 0xa0, 0xa1, 0 }));
    EXPECT_EQ(peek(kData + 0x200, 5), (std::vector<uint8_t> { 0, 0xa0, 0xa1, 0xa2, 0xa3 }));
}

TEST_F(VirtioQueue, ChainWriterOnAReadOnlyChainWritesNothing)
{
    start();
    ring->add_chain({ { kData, 8, false } });
    Chain c = pop_one();
    ChainWriter writer(c);
    uint8_t b[4] = {};
    EXPECT_EQ(writer.remaining(), 0u);
    EXPECT_EQ(writer.write(b), 0u);
}

// --- validation: a driver that breaks the protocol makes pop() fail ---------------------------

TEST_F(VirtioQueue, RejectsAnAvailEntryNamingADescriptorPastTheQueue)
{
    start(8);
    ring->write_desc(0, kData, 4, kDescWrite, 0);
    ring->publish(8);
    expect_pop_error("names descriptor 8");
}

TEST_F(VirtioQueue, RejectsANextIndexPastTheQueue)
{
    start(8);
    ring->write_desc(0, kData, 4, kDescNext, 9);
    ring->publish(0);
    expect_pop_error("points to 9");
}

TEST_F(VirtioQueue, RejectsALoop)
{
    start(8);
    ring->write_desc(0, kData, 4, kDescNext, 1);
    ring->write_desc(1, kData, 4, kDescNext, 0);
    ring->publish(0);
    expect_pop_error("longer than the queue");
}

TEST_F(VirtioQueue, RejectsAChainLongerThanTheQueue)
{
    start(4);
    // 0 -> 1 -> 2 -> 3 -> 1: five descriptors walked in a queue of four.
    for (uint16_t i = 0; i < 4; ++i)
        ring->write_desc(i, kData + i, 1, kDescNext, static_cast<uint16_t>(i == 3 ? 1 : i + 1));
    ring->publish(0);
    expect_pop_error("longer than the queue");
}

TEST_F(VirtioQueue, RejectsIndirectWithoutTheFeature)
{
    start(8, kFVersion1);
    ring->add_indirect(kTable, { { kData, 4, true } });
    expect_pop_error("without VIRTIO_F_INDIRECT_DESC");
}

TEST_F(VirtioQueue, RejectsNestedIndirect)
{
    start(8, kFVersion1 | kFRingIndirectDesc);
    ring->write_entry(kTable, kData, 4, kDescNext, 1);
    ring->write_entry(kTable + 16, kTable + 0x100, 16, kDescIndirect, 0);
    ring->write_desc(0, kTable, 32, kDescIndirect, 0);
    ring->publish(0);
    expect_pop_error("nested indirect");
}

TEST_F(VirtioQueue, RejectsIndirectWithNext)
{
    start(8, kFVersion1 | kFRingIndirectDesc);
    ring->write_entry(kTable, kData, 4, kDescWrite, 0);
    ring->write_desc(0, kTable, 16, kDescIndirect | kDescNext, 1);
    ring->write_desc(1, kData, 4, kDescWrite, 0);
    ring->publish(0);
    expect_pop_error("indirect descriptor with NEXT");
}

TEST_F(VirtioQueue, RejectsBadIndirectTableLengths)
{
    for (uint32_t len : { 0u, 8u, 20u, 16u * (kMaxIndirectEntries + 1) }) {
        SCOPED_TRACE(len);
        start(8, kFVersion1 | kFRingIndirectDesc);
        ring->write_entry(kTable, kData, 4, kDescWrite, 0);
        ring->write_desc(0, kTable, len, kDescIndirect, 0);
        ring->publish(0);
        expect_pop_error("indirect table of");
    }
}

TEST_F(VirtioQueue, AcceptsTheLargestIndirectTable)
{
    start(8, kFVersion1 | kFRingIndirectDesc);
    std::vector<Buf> bufs(kMaxIndirectEntries, Buf { kData, 1, true });
    ring->add_indirect(kTable, bufs);
    EXPECT_EQ(pop_one().segments.size(), kMaxIndirectEntries);
}

TEST_F(VirtioQueue, RejectsAnIndirectTableOutsideRam)
{
    start(8, kFVersion1 | kFRingIndirectDesc);
    ring->write_desc(0, kRam - 16, 32, kDescIndirect, 0); // straddles the end
    ring->publish(0);
    expect_pop_error("indirect table at");
}

TEST_F(VirtioQueue, RejectsAnIndirectNextPastItsTable)
{
    start(8, kFVersion1 | kFRingIndirectDesc);
    ring->write_entry(kTable, kData, 4, kDescNext, 2);
    ring->write_entry(kTable + 16, kData, 4, 0, 0);
    ring->write_desc(0, kTable, 32, kDescIndirect, 0);
    ring->publish(0);
    expect_pop_error("points past its table");
}

TEST_F(VirtioQueue, RejectsALoopInAnIndirectTable)
{
    start(8, kFVersion1 | kFRingIndirectDesc);
    ring->write_entry(kTable, kData, 4, kDescNext, 1);
    ring->write_entry(kTable + 16, kData, 4, kDescNext, 0);
    ring->write_desc(0, kTable, 32, kDescIndirect, 0);
    ring->publish(0);
    expect_pop_error("indirect chain longer than its table");
}

TEST_F(VirtioQueue, RejectsBuffersOutsideRam)
{
    struct Case {
        uint64_t gpa;
        uint32_t len;
    };
    for (Case c :
        { Case { kRam, 1 }, Case { kRam - 8, 16 }, Case { 0xd0000000, 4 }, Case { ~0ULL - 7, 16 }, Case { kRam, 0 } }) {
        SCOPED_TRACE(c.gpa);
        start();
        ring->add_chain({ { kData, 4, false }, { c.gpa, c.len, true } });
        expect_pop_error("outside guest RAM");
    }
}

TEST_F(VirtioQueue, RejectsBuffersOutsideRamInAnIndirectTable)
{
    start(8, kFVersion1 | kFRingIndirectDesc);
    ring->add_indirect(kTable, { { kData, 4, false }, { kRam - 4, 8, true } });
    expect_pop_error("outside guest RAM");
}

TEST_F(VirtioQueue, RejectsReadableAfterWritable)
{
    start();
    ring->add_chain({ { kData, 4, true }, { kData + 4, 4, false } });
    expect_pop_error("device-readable buffer after a device-writable one");
}

TEST_F(VirtioQueue, RejectsReadableAfterAnEmptyWritable)
{
    // Found by fuzz/virtqueue_fuzz: a zero-length writable buffer must not let a readable one
    // follow (ChainReader stops at the first writable segment and would never reach it).
    start();
    ring->add_chain({ { kData, 0, true }, { kData + 4, 4, false } });
    expect_pop_error("device-readable buffer after a device-writable one");
}

TEST_F(VirtioQueue, RejectsReadableAfterWritableInAnIndirectTable)
{
    start(8, kFVersion1 | kFRingIndirectDesc);
    ring->add_indirect(kTable, { { kData, 4, true }, { kData + 4, 4, false } });
    expect_pop_error("device-readable buffer after a device-writable one");
}

TEST_F(VirtioQueue, RejectsAvailIdxJumpingPastTheQueueSize)
{
    start(8);
    ring->write_desc(0, kData, 4, kDescWrite, 0);
    ring->set_avail_idx(9);
    expect_pop_error("published 9 buffers on a queue of 8");
}

TEST_F(VirtioQueue, AcceptsAFullRingAcrossTheIndexWrap)
{
    start(4);
    queue.set_indices(0xfffe, 0xfffe);
    ring->set_avail_idx(0xfffe);
    for (int i = 0; i < 4; ++i)
        ring->add_chain({ { kData + static_cast<uint64_t>(i), 1, true } }); // avail idx 0xfffe -> 2
    EXPECT_EQ(ring->avail_idx(), 2u);
    for (int i = 0; i < 4; ++i)
        EXPECT_EQ(pop_one().segments[0].gpa, kData + static_cast<uint64_t>(i));
    EXPECT_EQ(queue.next_avail(), 2u);
}

// --- activation ---------------------------------------------------------------------------

TEST_F(VirtioQueue, ActivationChecksSizeAlignmentAndPlacement)
{
    auto try_activate = [&](uint16_t size, uint64_t desc, uint64_t avail, uint64_t used) {
        Queue q(256);
        q.set_size(size);
        q.set_desc_addr(desc);
        q.set_avail_addr(avail);
        q.set_used_addr(used);
        return q.activate(mem, kFVersion1).ok();
    };
    EXPECT_TRUE(try_activate(8, 0x1000, 0x2000, 0x3000));
    EXPECT_TRUE(try_activate(1, 0x1000, 0x2002, 0x3004)); // minimum alignments 16/2/4
    EXPECT_FALSE(try_activate(0, 0x1000, 0x2000, 0x3000));
    EXPECT_FALSE(try_activate(6, 0x1000, 0x2000, 0x3000)); // not a power of two
    EXPECT_FALSE(try_activate(512, 0x1000, 0x2000, 0x3000)); // above max
    EXPECT_FALSE(try_activate(8, 0x1008, 0x2000, 0x3000));
    EXPECT_FALSE(try_activate(8, 0x1000, 0x2001, 0x3000));
    EXPECT_FALSE(try_activate(8, 0x1000, 0x2000, 0x3002));
    EXPECT_FALSE(try_activate(8, kRam - 64, 0x2000, 0x3000)); // descriptor table crosses the end
    EXPECT_FALSE(try_activate(8, 0x1000, kRam - 20, 0x3000)); // avail ring (22 bytes) crosses it
    EXPECT_FALSE(try_activate(8, 0x1000, 0x2000, kRam - 68)); // used ring (70 bytes) crosses it
    EXPECT_TRUE(try_activate(8, 0x1000, 0x2000, kRam - 72)); // ... and fits just below it
    EXPECT_FALSE(try_activate(8, 0xd0000000, 0x2000, 0x3000)); // in the MMIO hole
}

// --- used ring and interrupts -------------------------------------------------------------

TEST_F(VirtioQueue, AddUsedWritesTheElementAndPublishesTheIndex)
{
    start(4);
    ring->add_chain({ { kData, 4, false }, { kData + 4, 16, true } });
    Chain c = pop_one();
    queue.add_used(c, 12);
    EXPECT_EQ(ring->used_idx(), 1u);
    EXPECT_EQ(ring->used(0).id, c.head);
    EXPECT_EQ(ring->used(0).len, 12u);
}

TEST_F(VirtioQueue, AddUsedWrapsAroundTheRingAndTheIndex)
{
    start(4);
    queue.set_indices(0xfffd, 0xfffd);
    ring->set_avail_idx(0xfffd);
    for (int round = 0; round < 6; ++round) {
        ring->reset_descs(static_cast<uint16_t>(round % 4));
        uint16_t head = ring->add_chain({ { kData, 8, true } });
        Chain c = pop_one();
        EXPECT_EQ(c.head, head);
        queue.add_used(c, static_cast<uint32_t>(round));
        uint16_t slot = static_cast<uint16_t>(0xfffd + round);
        EXPECT_EQ(ring->used_idx(), static_cast<uint16_t>(slot + 1));
        EXPECT_EQ(ring->used(slot).id, head) << round;
        EXPECT_EQ(ring->used(slot).len, static_cast<uint32_t>(round));
    }
    EXPECT_EQ(queue.next_used(), 3u);
}

TEST_F(VirtioQueue, AddUsedReportsWritableSegmentsToTheWriteObserver)
{
    start();
    std::vector<std::pair<uint64_t, uint64_t>> writes;
    mem.set_write_observer([&](uint64_t gpa, uint64_t len) { writes.emplace_back(gpa, len); });
    ring->add_chain({ { kData, 4, false }, { kData + 0x100, 16, true }, { kData + 0x200, 8, true } });
    Chain c = pop_one();
    writes.clear();
    queue.add_used(c, 24);
    mem.set_write_observer(nullptr);
    std::vector<std::pair<uint64_t, uint64_t>> want { { kData + 0x100, 16 }, { kData + 0x200, 8 } };
    std::vector<std::pair<uint64_t, uint64_t>> data, ring_writes;
    for (const auto& w : writes)
        (w.first >= kData ? data : ring_writes).push_back(w);
    EXPECT_EQ(data, want);
    // The used ring is written by the device too (dirty page tracking): its element and its index.
    std::vector<std::pair<uint64_t, uint64_t>> want_ring { { queue.used_addr() + 4, 8 }, { queue.used_addr() + 2, 2 } };
    EXPECT_EQ(ring_writes, want_ring);
}

TEST_F(VirtioQueue, InterruptUnlessTheDriverSetNoInterrupt)
{
    start();
    EXPECT_FALSE(queue.needs_interrupt()); // nothing used yet
    ring->add_chain({ { kData, 4, true } });
    queue.add_used(pop_one(), 0);
    EXPECT_TRUE(queue.needs_interrupt());
    EXPECT_FALSE(queue.needs_interrupt()); // nothing new since
    ring->set_avail_flags(kAvailNoInterrupt);
    ring->add_chain({ { kData, 4, true } });
    queue.add_used(pop_one(), 0);
    EXPECT_FALSE(queue.needs_interrupt());
    ring->set_avail_flags(0);
    ring->add_chain({ { kData, 4, true } });
    queue.add_used(pop_one(), 0);
    EXPECT_TRUE(queue.needs_interrupt());
}

TEST_F(VirtioQueue, EventIdxInterruptsOnlyWhenUsedEventIsCrossed)
{
    start(8, kFVersion1 | kFRingEventIdx);
    auto complete = [&](int n) {
        for (int i = 0; i < n; ++i) {
            ring->add_chain({ { kData, 4, true } });
            queue.add_used(pop_one(), 4);
        }
    };
    // used 0 -> 1; the driver wants an interrupt once entry 0 is used.
    ring->set_used_event(0);
    complete(1);
    EXPECT_TRUE(queue.needs_interrupt());
    // 1 -> 2 with used_event 5: not yet.
    ring->set_used_event(5);
    complete(1);
    EXPECT_FALSE(queue.needs_interrupt());
    // 2 -> 5 does not reach entry 5 ...
    complete(3);
    EXPECT_FALSE(queue.needs_interrupt());
    // ... 5 -> 6 uses it.
    complete(1);
    EXPECT_TRUE(queue.needs_interrupt());
    // A batch 6 -> 9 crossing used_event 7 interrupts once.
    ring->set_used_event(7);
    complete(3);
    EXPECT_TRUE(queue.needs_interrupt());
    EXPECT_FALSE(queue.needs_interrupt());
    // NO_INTERRUPT is ignored with event idx (used_event rules).
    ring->set_avail_flags(kAvailNoInterrupt);
    ring->set_used_event(9);
    complete(1);
    EXPECT_TRUE(queue.needs_interrupt());
}

TEST_F(VirtioQueue, EventIdxAcrossTheIndexWrap)
{
    start(8, kFVersion1 | kFRingEventIdx);
    queue.set_indices(0xfffe, 0xfffe);
    ring->set_avail_idx(0xfffe);
    ring->set_used_event(0xffff);
    for (int i = 0; i < 3; ++i) { // used 0xfffe -> 1, crossing 0xffff
        ring->add_chain({ { kData, 4, true } });
        queue.add_used(pop_one(), 4);
    }
    EXPECT_TRUE(queue.needs_interrupt());
    ring->set_used_event(0xfffd); // already behind: no interrupt for 1 -> 2
    ring->add_chain({ { kData, 4, true } });
    queue.add_used(pop_one(), 4);
    EXPECT_FALSE(queue.needs_interrupt());
}

TEST_F(VirtioQueue, NotificationSuppressionWithoutEventIdx)
{
    start();
    queue.disable_notifications();
    EXPECT_EQ(ring->used_flags(), kUsedNoNotify);
    EXPECT_FALSE(queue.enable_notifications()); // nothing arrived meanwhile
    EXPECT_EQ(ring->used_flags(), 0u);
    queue.disable_notifications();
    ring->add_chain({ { kData, 4, true } });
    EXPECT_TRUE(queue.enable_notifications()); // a buffer arrived while disabled
    EXPECT_EQ(ring->used_flags(), 0u);
}

TEST_F(VirtioQueue, NotificationSuppressionWithEventIdx)
{
    start(8, kFVersion1 | kFRingEventIdx);
    ring->add_chain({ { kData, 4, true } });
    ring->add_chain({ { kData, 4, true } });
    pop_one();
    pop_one();
    // Finding the ring empty asks for a notification at the next buffer.
    Chain c;
    auto r = queue.pop(c);
    ASSERT_TRUE(r.ok() && !r.value());
    EXPECT_EQ(ring->avail_event(), 2u);
    EXPECT_EQ(ring->used_flags(), 0u); // the flag is not used with event idx

    // While disabled, an empty ring leaves avail_event behind (no notifications).
    queue.disable_notifications();
    ring->add_chain({ { kData, 4, true } });
    pop_one();
    r = queue.pop(c);
    ASSERT_TRUE(r.ok() && !r.value());
    EXPECT_EQ(ring->avail_event(), 2u);
    // Enabling publishes the next index and reports buffers that came meanwhile.
    EXPECT_FALSE(queue.enable_notifications());
    EXPECT_EQ(ring->avail_event(), 3u);
    queue.disable_notifications();
    ring->add_chain({ { kData, 4, true } });
    EXPECT_TRUE(queue.enable_notifications());
}

TEST_F(VirtioQueue, ResetForgetsEverything)
{
    start(8, kFVersion1 | kFRingEventIdx | kFRingIndirectDesc);
    ring->add_chain({ { kData, 4, true } });
    queue.add_used(pop_one(), 0);
    queue.reset();
    EXPECT_FALSE(queue.active());
    EXPECT_FALSE(queue.ready());
    EXPECT_EQ(queue.size(), queue.max_size());
    EXPECT_EQ(queue.desc_addr(), 0u);
    EXPECT_EQ(queue.next_avail(), 0u);
    EXPECT_EQ(queue.next_used(), 0u);
    Chain c;
    EXPECT_FALSE(queue.pop(c).ok());
}
