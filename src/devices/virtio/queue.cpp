#include "devices/virtio/queue.h"

#include <atomic>
#include <cstring>

#include "devices/virtio/virtio.h"
#include "memory/guest_memory.h"

namespace vessel::virtio {

namespace {

struct Desc {
    uint64_t addr;
    uint32_t len;
    uint16_t flags;
    uint16_t next;
};
static_assert(sizeof(Desc) == 16);

// Ring layout (2.7.6, 2.7.8): avail = flags, idx, ring[size], used_event;
// used = flags, idx, ring[size] of {id u32, len u32}, avail_event.
constexpr uint64_t avail_bytes(uint16_t size) { return 6 + 2ULL * size; }
constexpr uint64_t used_bytes(uint16_t size) { return 6 + 8ULL * size; }

// Shared ring fields are accessed atomically: the driver runs concurrently on another vCPU.
uint16_t load_u16(const uint8_t* p, std::memory_order order)
{
    return std::atomic_ref<uint16_t>(*reinterpret_cast<uint16_t*>(const_cast<uint8_t*>(p))).load(order);
}
void store_u16(uint8_t* p, uint16_t v, std::memory_order order)
{
    std::atomic_ref<uint16_t>(*reinterpret_cast<uint16_t*>(p)).store(v, order);
}

Desc read_desc(const uint8_t* table, uint32_t index)
{
    Desc d;
    std::memcpy(&d, table + 16ULL * index, sizeof(d)); // one copy: later guest writes cannot race the checks
    return d;
}

} // namespace

size_t ChainReader::read(std::span<uint8_t> out)
{
    size_t at = 0;
    return for_each(out.size(), [&](const uint8_t* p, size_t n) {
        std::memcpy(out.data() + at, p, n);
        at += n;
    });
}

size_t ChainReader::skip(size_t n)
{
    return for_each(n, [](const uint8_t*, size_t) { });
}

ChainWriter::ChainWriter(const Chain& chain) : m_chain(chain)
{
    while (m_segment < chain.segments.size() && !chain.segments[m_segment].writable)
        ++m_segment;
}

size_t ChainWriter::write(std::span<const uint8_t> in)
{
    size_t at = 0;
    return for_each(in.size(), [&](uint8_t* p, size_t n) {
        std::memcpy(p, in.data() + at, n);
        at += n;
    });
}

size_t ChainWriter::skip(size_t n)
{
    return for_each(n, [](uint8_t*, size_t) { });
}

void Queue::reset()
{
    m_size = m_max_size;
    m_ready = false;
    m_desc_gpa = m_avail_gpa = m_used_gpa = 0;
    m_memory = nullptr;
    m_desc = m_avail = m_used = nullptr;
    m_event_idx = m_indirect = false;
    m_next_avail = m_next_used = m_signalled_used = 0;
    m_suppressed = false;
}

Result<void> Queue::activate(GuestMemory& memory, uint64_t features)
{
    if (m_size == 0 || m_size > m_max_size || (m_size & (m_size - 1)) != 0)
        return make_error("queue size {} is not a power of two up to {}", m_size, m_max_size);
    if (m_desc_gpa % 16 || m_avail_gpa % 2 || m_used_gpa % 4)
        return make_error("queue rings misaligned (descriptors {:#x}, driver area {:#x}, device area {:#x})",
                          m_desc_gpa, m_avail_gpa, m_used_gpa);
    uint8_t* desc = memory.host_ptr(m_desc_gpa, 16ULL * m_size);
    uint8_t* avail = memory.host_ptr(m_avail_gpa, avail_bytes(m_size));
    uint8_t* used = memory.host_ptr(m_used_gpa, used_bytes(m_size));
    if (!desc || !avail || !used)
        return make_error("queue rings outside guest RAM (descriptors {:#x}, driver area {:#x}, device area {:#x}, "
                          "size {})",
                          m_desc_gpa, m_avail_gpa, m_used_gpa, m_size);
    m_memory = &memory;
    m_desc = desc;
    m_avail = avail;
    m_used = used;
    m_event_idx = features & kFRingEventIdx;
    m_indirect = features & kFRingIndirectDesc;
    return {};
}

uint16_t Queue::avail_idx() const { return load_u16(m_avail + 2, std::memory_order_acquire); }
uint16_t Queue::used_event() const { return load_u16(m_avail + 4 + 2ULL * m_size, std::memory_order_relaxed); }

bool Queue::has_available() const { return active() && avail_idx() != m_next_avail; }

Result<bool> Queue::pop(Chain& out)
{
    if (!active())
        return make_error("queue used before activation");
    uint16_t idx = avail_idx();
    if (idx == m_next_avail) {
        if (!m_event_idx || m_suppressed)
            return false;
        // Empty: ask for a notification at the next buffer (avail_event), then look once more
        // in case the driver added one before it could see that request.
        if (!enable_notifications())
            return false;
        idx = avail_idx();
    }
    uint16_t pending = static_cast<uint16_t>(idx - m_next_avail);
    if (pending > m_size)
        return make_error("driver published {} buffers on a queue of {} (avail idx {}, next {})", pending, m_size, idx,
                          m_next_avail);
    uint16_t head = load_u16(m_avail + 4 + 2ULL * (m_next_avail % m_size), std::memory_order_relaxed);
    if (head >= m_size)
        return make_error("available ring entry {} names descriptor {} of a queue of {}", m_next_avail, head, m_size);
    out.clear();
    out.head = head;
    TRY(walk(head, out));
    ++m_next_avail;
    return true;
}

Result<void> Queue::take(uint16_t head, Chain& out)
{
    if (!active())
        return make_error("queue used before activation");
    if (head >= m_size)
        return make_error("descriptor {} is outside a queue of {}", head, m_size);
    out.clear();
    out.head = head;
    return walk(head, out);
}

Result<void> Queue::add_segment(Chain& out, uint64_t gpa, uint32_t len, uint16_t flags)
{
    bool writable = flags & kDescWrite;
    // Ask the previous segment, not writable_bytes: a zero-length writable buffer followed by a
    // readable one would otherwise pass, and ChainReader (which stops at the first writable
    // segment) would then never reach bytes counted in readable_bytes.
    if (!writable && !out.segments.empty() && out.segments.back().writable)
        return make_error("device-readable buffer after a device-writable one");
    uint8_t* host = m_memory->host_ptr(gpa, len);
    if (!host)
        return make_error("buffer of {} bytes at {:#x} is outside guest RAM", len, gpa);
    out.segments.push_back({ gpa, len, writable, host });
    (writable ? out.writable_bytes : out.readable_bytes) += len;
    return {};
}

Result<void> Queue::walk(uint16_t head, Chain& out)
{
    uint32_t index = head;
    for (uint32_t steps = 0;; ++steps) {
        if (steps >= m_size)
            return make_error("descriptor chain from {} is longer than the queue (a loop?)", head);
        Desc d = read_desc(m_desc, index);
        if (d.flags & kDescIndirect) {
            if (!m_indirect)
                return make_error("indirect descriptor without VIRTIO_F_INDIRECT_DESC");
            if (d.flags & kDescNext)
                return make_error("indirect descriptor with NEXT set");
            if (d.len == 0 || d.len % 16 || d.len / 16 > kMaxIndirectEntries)
                return make_error("indirect table of {} bytes (must be 16..{} in steps of 16)", d.len,
                                  16 * kMaxIndirectEntries);
            const uint8_t* table = m_memory->host_ptr(d.addr, d.len);
            if (!table)
                return make_error("indirect table at {:#x} ({} bytes) is outside guest RAM", d.addr, d.len);
            uint32_t entries = d.len / 16;
            uint32_t i = 0;
            for (uint32_t isteps = 0;; ++isteps) {
                if (isteps >= entries)
                    return make_error("indirect chain longer than its table (a loop?)");
                Desc e = read_desc(table, i);
                if (e.flags & kDescIndirect)
                    return make_error("nested indirect descriptor");
                TRY(add_segment(out, e.addr, e.len, e.flags));
                if (!(e.flags & kDescNext))
                    break;
                if (e.next >= entries)
                    return make_error("indirect descriptor {} points past its table of {}", e.next, entries);
                i = e.next;
            }
            return {}; // an indirect descriptor is the whole chain (2.7.5.3.1)
        }
        TRY(add_segment(out, d.addr, d.len, d.flags));
        if (!(d.flags & kDescNext))
            return {};
        if (d.next >= m_size)
            return make_error("descriptor {} points to {} past a queue of {}", index, d.next, m_size);
        index = d.next;
    }
}

void Queue::add_used(const Chain& chain, uint32_t written)
{
    if (!active())
        return;
    for (const Segment& s : chain.segments)
        if (s.writable)
            m_memory->note_written(s.gpa, s.len);
    uint64_t slot = 4 + 8ULL * (m_next_used % m_size);
    uint8_t* elem = m_used + slot;
    uint32_t id = chain.head;
    std::memcpy(elem, &id, 4);
    std::memcpy(elem + 4, &written, 4);
    ++m_next_used;
    store_u16(m_used + 2, m_next_used, std::memory_order_release);
    // The used ring is guest RAM the device writes too (dirty pages for snapshots, migration).
    m_memory->note_written(m_used_gpa + slot, 8);
    m_memory->note_written(m_used_gpa + 2, 2);
}

bool Queue::needs_interrupt()
{
    if (!active())
        return false;
    // Publishing used->idx must be visible before the driver's suppression state is read.
    std::atomic_thread_fence(std::memory_order_seq_cst);
    uint16_t old_used = m_signalled_used;
    uint16_t new_used = m_next_used;
    m_signalled_used = new_used;
    if (m_event_idx) {
        // vring_need_event (2.7.10): interrupt if used_event lies in [old, new).
        uint16_t event = used_event();
        return static_cast<uint16_t>(new_used - event - 1) < static_cast<uint16_t>(new_used - old_used);
    }
    if (old_used == new_used)
        return false;
    return !(load_u16(m_avail, std::memory_order_relaxed) & kAvailNoInterrupt);
}

void Queue::disable_notifications()
{
    if (!active() || m_suppressed)
        return;
    m_suppressed = true;
    if (!m_event_idx) {
        store_u16(m_used, kUsedNoNotify, std::memory_order_relaxed);
        m_memory->note_written(m_used_gpa, 2);
    }
    // With event idx, not advancing avail_event suppresses notifications by itself.
}

bool Queue::enable_notifications()
{
    if (!active())
        return false;
    m_suppressed = false;
    if (m_event_idx) {
        store_u16(m_used + 4 + 8ULL * m_size, m_next_avail, std::memory_order_relaxed); // avail_event
        m_memory->note_written(m_used_gpa + 4 + 8ULL * m_size, 2);
    } else {
        store_u16(m_used, 0, std::memory_order_relaxed);
        m_memory->note_written(m_used_gpa, 2);
    }
    // The driver may have added buffers before it could see the store above: look again.
    std::atomic_thread_fence(std::memory_order_seq_cst);
    return avail_idx() != m_next_avail;
}

} // namespace vessel::virtio
