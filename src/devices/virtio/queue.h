// The split virtqueue (virtio v1.2, 2.7), device side, shared by every virtio device.
//
// Everything the guest driver writes is untrusted. The rings' addresses are checked against
// guest RAM (and their alignment) once, when the queue is activated; every descriptor is copied
// out of guest memory once and validated before use: index in range, chain not longer than the
// queue (so a loop is caught), indirect tables only when negotiated, never nested, a multiple of
// 16 bytes and bounded, every buffer wholly inside guest RAM, device-readable buffers before
// device-writable ones. A violation makes pop() fail; the device then reports DEVICE_NEEDS_RESET
// (VirtioInterrupt::device_error) and stops using the queue. No host memory outside guest RAM is
// ever touched.
//
// Memory ordering follows the spec's driver/device protocol: avail->idx is read with acquire
// before ring entries, used entries are written before used->idx is published with release, and
// a full fence separates publishing used->idx from reading used_event (event-idx suppression).
#pragma once

#include <algorithm>
#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "base/result.h"

namespace vessel {

class GuestMemory;

namespace virtio {

// Descriptor flags (2.7.5).
constexpr uint16_t kDescNext = 1;
constexpr uint16_t kDescWrite = 2;
constexpr uint16_t kDescIndirect = 4;
// Ring flags.
constexpr uint16_t kAvailNoInterrupt = 1;
constexpr uint16_t kUsedNoNotify = 1;

// Largest queue size the transport accepts (a power of two, as split rings require).
constexpr uint16_t kMaxQueueSize = 1024;
// Largest indirect table (entries); Linux never builds one longer than the queue size.
constexpr uint32_t kMaxIndirectEntries = 1024;

// One buffer of a descriptor chain, already checked to lie in guest RAM.
struct Segment {
    uint64_t gpa;
    uint32_t len;
    bool writable; // device-writable
    uint8_t* host; // host address of [gpa, gpa+len)
};

// A popped descriptor chain: device-readable segments first, then device-writable ones.
struct Chain {
    uint16_t head { 0 };
    std::vector<Segment> segments;
    uint64_t readable_bytes { 0 };
    uint64_t writable_bytes { 0 };

    void clear()
    {
        segments.clear();
        readable_bytes = writable_bytes = 0;
    }
};

// Copies the device-readable bytes of a chain out, in order, across segment boundaries.
class ChainReader {
public:
    explicit ChainReader(const Chain& chain) : m_chain(chain) { }
    // Copies up to out.size() bytes; returns how many were copied.
    size_t read(std::span<uint8_t> out);
    // Skips up to n bytes; returns how many were skipped.
    size_t skip(size_t n);
    uint64_t remaining() const { return m_chain.readable_bytes - m_consumed; }
    // Calls fn(host_ptr, len) for the next up to n readable bytes, piece by piece.
    template<typename Fn>
    size_t for_each(size_t n, Fn&& fn);

private:
    const Chain& m_chain;
    size_t m_segment { 0 };
    uint32_t m_offset { 0 };
    uint64_t m_consumed { 0 };
};

// Copies bytes into the device-writable segments of a chain, in order.
class ChainWriter {
public:
    explicit ChainWriter(const Chain& chain);
    // Copies up to in.size() bytes; returns how many fitted.
    size_t write(std::span<const uint8_t> in);
    // Skips up to n writable bytes (e.g. data a device writes in place); returns how many.
    size_t skip(size_t n);
    uint64_t remaining() const { return m_chain.writable_bytes - m_written; }
    uint64_t written() const { return m_written; }
    template<typename Fn>
    size_t for_each(size_t n, Fn&& fn);

private:
    const Chain& m_chain;
    size_t m_segment { 0 };
    uint32_t m_offset { 0 };
    uint64_t m_written { 0 };
};

class Queue {
public:
    explicit Queue(uint16_t max_size = 256) : m_max_size(max_size) { }

    // --- transport side: the driver's configuration (virtio-mmio registers) ---
    uint16_t max_size() const { return m_max_size; }
    uint16_t size() const { return m_size; }
    void set_size(uint16_t size) { m_size = size; }
    void set_desc_addr(uint64_t a) { m_desc_gpa = a; }
    void set_avail_addr(uint64_t a) { m_avail_gpa = a; }
    void set_used_addr(uint64_t a) { m_used_gpa = a; }
    uint64_t desc_addr() const { return m_desc_gpa; }
    uint64_t avail_addr() const { return m_avail_gpa; }
    uint64_t used_addr() const { return m_used_gpa; }
    bool ready() const { return m_ready; }
    void set_ready(bool ready) { m_ready = ready; }
    // Back to the reset state (size = max, addresses 0, not ready, indices 0).
    void reset();

    // Checks the configuration against guest RAM and binds the queue to it: a power-of-two
    // size <= max, rings aligned (16/2/4) and wholly in RAM. `features` = negotiated bits.
    Result<void> activate(GuestMemory& memory, uint64_t features);
    bool active() const { return m_desc != nullptr; }

    // --- device side ---
    // Takes the next available chain into `out` (its vector is reused). Returns false when the
    // ring is empty, an error when the driver broke the protocol (the queue is then unusable).
    Result<bool> pop(Chain& out);
    // Gives back the last chain pop() returned (e.g. a receive buffer with nothing to put in it).
    void undo_pop() { --m_next_avail; }
    // True if the driver made buffers available that pop() has not taken yet.
    bool has_available() const;
    // Returns a chain to the driver; `written` = bytes the device wrote into its writable part.
    // Reports the writable segments to the memory's write observer.
    void add_used(const Chain& chain, uint32_t written);
    // After a batch of add_used(): must the driver be interrupted? (event idx or NO_INTERRUPT)
    bool needs_interrupt();

    // Notification suppression while the device is busy with the queue. enable_notifications()
    // returns true if buffers arrived meanwhile (the caller should pop again).
    void disable_notifications();
    bool enable_notifications();

    uint16_t next_avail() const { return m_next_avail; }
    uint16_t next_used() const { return m_next_used; }
    // Restores indices (snapshot/migration; and tests).
    void set_indices(uint16_t next_avail, uint16_t next_used)
    {
        m_next_avail = next_avail;
        m_next_used = next_used;
        m_signalled_used = next_used;
    }

    // Snapshots: where the device is in the rings, beyond what the driver configured.
    struct Position {
        uint16_t next_avail { 0 };
        uint16_t next_used { 0 };
        uint16_t signalled_used { 0 }; // used index at the last needs_interrupt() (event idx)
        bool suppressed { false }; // disable_notifications() in force
    };
    Position position() const { return { m_next_avail, m_next_used, m_signalled_used, m_suppressed }; }
    void set_position(const Position& p)
    {
        m_next_avail = p.next_avail;
        m_next_used = p.next_used;
        m_signalled_used = p.signalled_used;
        m_suppressed = p.suppressed;
    }
    // Takes the chain headed by descriptor `head` again, without the available ring: a chain the
    // device held (popped, not used) when its state was saved. Validated as pop() does; `head`
    // comes from a snapshot, so it is untrusted too.
    Result<void> take(uint16_t head, Chain& out);

private:
    Result<void> walk(uint16_t head, Chain& out);
    Result<void> add_segment(Chain& out, uint64_t gpa, uint32_t len, uint16_t flags);
    uint16_t avail_idx() const;
    uint16_t used_event() const;

    uint16_t m_max_size;
    uint16_t m_size { 0 };
    bool m_ready { false };
    uint64_t m_desc_gpa { 0 }, m_avail_gpa { 0 }, m_used_gpa { 0 };

    GuestMemory* m_memory { nullptr };
    uint8_t* m_desc { nullptr };
    uint8_t* m_avail { nullptr };
    uint8_t* m_used { nullptr };
    bool m_event_idx { false };
    bool m_indirect { false };
    uint16_t m_next_avail { 0 };
    uint16_t m_next_used { 0 };
    uint16_t m_signalled_used { 0 };
    bool m_suppressed { false };
};

// Walks up to n bytes of a chain's segments from (segment, offset), calling fn(host, len) per
// piece; stops early at a device-writable segment when `readable_only`. Returns bytes walked.
template<typename Fn>
size_t walk_segments(const Chain& chain, size_t& segment, uint32_t& offset, size_t n, bool readable_only, Fn&& fn)
{
    size_t done = 0;
    while (done < n && segment < chain.segments.size()) {
        const Segment& s = chain.segments[segment];
        if (readable_only && s.writable)
            break;
        size_t take = std::min<size_t>(n - done, s.len - offset);
        if (take)
            fn(s.host + offset, take);
        done += take;
        offset += static_cast<uint32_t>(take);
        if (offset == s.len) {
            ++segment;
            offset = 0;
        }
    }
    return done;
}

template<typename Fn>
size_t ChainReader::for_each(size_t n, Fn&& fn)
{
    size_t done = walk_segments(m_chain, m_segment, m_offset, n, true, std::forward<Fn>(fn));
    m_consumed += done;
    return done;
}

template<typename Fn>
size_t ChainWriter::for_each(size_t n, Fn&& fn)
{
    size_t done = walk_segments(m_chain, m_segment, m_offset, n, false, std::forward<Fn>(fn));
    m_written += done;
    return done;
}

} // namespace virtio
} // namespace vessel
