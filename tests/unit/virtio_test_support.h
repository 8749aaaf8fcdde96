// The driver's side of virtio for device tests: a split ring laid out in a GuestMemory
// (descriptor table, available and used rings; direct or indirect chains of (gpa, len,
// writable) buffers) and a virtio-mmio driver that negotiates features and sets queues up
// through the transport's registers, as Linux's virtio_mmio does.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <utility>
#include <vector>

#include "devices/irq.h"
#include "devices/virtio/mmio.h"
#include "devices/virtio/queue.h"
#include "devices/virtio/virtio.h"
#include "memory/guest_memory.h"

namespace vessel::virtio_test {

using virtio::kDescIndirect;
using virtio::kDescNext;
using virtio::kDescWrite;

// Activates `device` on `queues` (already set up by the test's rings) as the transport does at
// DRIVER_OK: the context every device test builds.
inline Result<void> activate_device(virtio::VirtioDevice& device, GuestMemory& memory, virtio::VirtioInterrupt& irq,
                                    std::vector<virtio::Queue>& queues, uint64_t features)
{
    virtio::ActivateContext ctx;
    ctx.memory = &memory;
    ctx.interrupt = &irq;
    ctx.features = features;
    ctx.queues = std::span<virtio::Queue>(queues);
    return device.activate(ctx);
}

// One buffer of a chain, as the driver describes it.
struct Buf {
    uint64_t gpa;
    uint32_t len;
    bool writable;
};

struct UsedElem {
    uint32_t id;
    uint32_t len;
};

// A split virtqueue's rings in guest memory, written and read as the driver does. Descriptors
// are handed out in order (wrapping); tests that fill a queue more than once call reset_descs().
class SplitRing {
public:
    // Rings at `base`: descriptors, then the available ring, then the used ring (4-aligned).
    SplitRing(GuestMemory& mem, uint64_t base, uint16_t size)
        : SplitRing(mem, size, base, base + 16ULL * size, align4(base + 16ULL * size + 6 + 2ULL * size))
    {
    }
    SplitRing(GuestMemory& mem, uint16_t size, uint64_t desc_gpa, uint64_t avail_gpa, uint64_t used_gpa)
        : m_mem(mem)
        , m_size(size)
        , m_desc(desc_gpa)
        , m_avail(avail_gpa)
        , m_used(used_gpa)
    {
        // Zeroed where they lie in RAM (tests also describe rings outside it).
        for (auto [gpa, len] : { std::pair { m_desc, 16ULL * size }, std::pair { m_avail, 6 + 2ULL * size },
                 std::pair { m_used, 6 + 8ULL * size } }) {
            if (m_mem.contains(gpa, len)) {
                EXPECT_TRUE(m_mem.fill(gpa, 0, len).ok());
            }
        }
    }

    uint16_t size() const { return m_size; }
    uint64_t desc_gpa() const { return m_desc; }
    uint64_t avail_gpa() const { return m_avail; }
    uint64_t used_gpa() const { return m_used; }
    uint64_t end_gpa() const { return m_used + 6 + 8ULL * m_size; }

    // Points a Queue at these rings (what the transport does from the driver's registers).
    void configure(virtio::Queue& q) const
    {
        q.set_size(m_size);
        q.set_desc_addr(m_desc);
        q.set_avail_addr(m_avail);
        q.set_used_addr(m_used);
        q.set_ready(true);
    }

    // Raw descriptor / indirect-table entry writes.
    void write_desc(uint16_t index, uint64_t addr, uint32_t len, uint16_t flags, uint16_t next)
    {
        write_entry(m_desc + 16ULL * index, addr, len, flags, next);
    }
    void write_entry(uint64_t gpa, uint64_t addr, uint32_t len, uint16_t flags, uint16_t next)
    {
        uint8_t raw[16];
        std::memcpy(raw, &addr, 8);
        std::memcpy(raw + 8, &len, 4);
        std::memcpy(raw + 12, &flags, 2);
        std::memcpy(raw + 14, &next, 2);
        EXPECT_TRUE(m_mem.write(gpa, raw).ok());
    }

    // A direct chain over the next free descriptors; returns its head. Published unless told not.
    uint16_t add_chain(std::span<const Buf> bufs, bool publish_it = true)
    {
        EXPECT_FALSE(bufs.empty());
        uint16_t head = m_next_desc;
        for (size_t i = 0; i < bufs.size(); ++i) {
            uint16_t index = m_next_desc;
            m_next_desc = static_cast<uint16_t>((m_next_desc + 1) % m_size);
            bool last = i + 1 == bufs.size();
            uint16_t flags = (bufs[i].writable ? kDescWrite : 0) | (last ? 0 : kDescNext);
            write_desc(index, bufs[i].gpa, bufs[i].len, flags, last ? 0 : m_next_desc);
        }
        if (publish_it)
            publish(head);
        return head;
    }
    uint16_t add_chain(std::initializer_list<Buf> bufs, bool publish_it = true)
    {
        return add_chain(std::span(bufs.begin(), bufs.size()), publish_it);
    }

    // An indirect chain: the buffers in a table at `table_gpa`, one descriptor pointing to it.
    uint16_t add_indirect(uint64_t table_gpa, std::span<const Buf> bufs, bool publish_it = true)
    {
        for (size_t i = 0; i < bufs.size(); ++i) {
            bool last = i + 1 == bufs.size();
            uint16_t flags = (bufs[i].writable ? kDescWrite : 0) | (last ? 0 : kDescNext);
            write_entry(table_gpa + 16 * i, bufs[i].gpa, bufs[i].len, flags, last ? 0 : static_cast<uint16_t>(i + 1));
        }
        uint16_t head = m_next_desc;
        m_next_desc = static_cast<uint16_t>((m_next_desc + 1) % m_size);
        write_desc(head, table_gpa, static_cast<uint32_t>(16 * bufs.size()), kDescIndirect, 0);
        if (publish_it)
            publish(head);
        return head;
    }
    uint16_t add_indirect(uint64_t table_gpa, std::initializer_list<Buf> bufs, bool publish_it = true)
    {
        return add_indirect(table_gpa, std::span(bufs.begin(), bufs.size()), publish_it);
    }
    void reset_descs(uint16_t next = 0) { m_next_desc = next; }

    // Puts `head` in the next available-ring slot and bumps avail->idx.
    void publish(uint16_t head)
    {
        uint16_t idx = avail_idx();
        write16(m_avail + 4 + 2ULL * (idx % m_size), head);
        set_avail_idx(static_cast<uint16_t>(idx + 1));
    }

    uint16_t avail_idx() const { return read16(m_avail + 2); }
    void set_avail_idx(uint16_t idx) { write16(m_avail + 2, idx); }
    void set_avail_flags(uint16_t flags) { write16(m_avail, flags); }
    void set_used_event(uint16_t event) { write16(m_avail + 4 + 2ULL * m_size, event); }

    uint16_t used_flags() const { return read16(m_used); }
    uint16_t used_idx() const { return read16(m_used + 2); }
    uint16_t avail_event() const { return read16(m_used + 4 + 8ULL * m_size); }
    // The used-ring element in slot `i % size`.
    UsedElem used(uint16_t i) const
    {
        UsedElem e {};
        EXPECT_TRUE(m_mem.read(m_used + 4 + 8ULL * (i % m_size), std::span(reinterpret_cast<uint8_t*>(&e), 8)).ok());
        return e;
    }

private:
    static uint64_t align4(uint64_t v) { return (v + 3) & ~3ULL; }
    uint16_t read16(uint64_t gpa) const
    {
        auto v = m_mem.read_obj<uint16_t>(gpa);
        EXPECT_TRUE(v.ok());
        return v.ok() ? v.value() : 0;
    }
    void write16(uint64_t gpa, uint16_t v) { EXPECT_TRUE(m_mem.write_obj(gpa, v).ok()); }

    GuestMemory& m_mem;
    uint16_t m_size;
    uint64_t m_desc, m_avail, m_used;
    uint16_t m_next_desc { 0 };
};

// Counts the edges a device pulses on its interrupt line (and remembers the line's level).
struct IrqRecorder {
    int rising_edges { 0 };
    bool level { false };

    IrqLine line(uint32_t gsi = 16)
    {
        return IrqLine(gsi, [this](uint32_t, bool l) {
            if (l && !level)
                ++rising_edges;
            level = l;
        });
    }
};

// Linux's virtio_mmio probe sequence, register by register.
class MmioDriver {
public:
    explicit MmioDriver(virtio::MmioTransport& transport)
        : m_t(transport)
    {
    }

    uint32_t read(uint64_t offset)
    {
        uint32_t v = 0;
        m_t.read(offset, std::span(reinterpret_cast<uint8_t*>(&v), 4));
        return v;
    }
    void write(uint64_t offset, uint32_t v) { m_t.write(offset, std::span(reinterpret_cast<const uint8_t*>(&v), 4)); }

    uint64_t device_features()
    {
        using namespace virtio::mmio_reg;
        write(kDeviceFeaturesSel, 0);
        uint64_t lo = read(kDeviceFeatures);
        write(kDeviceFeaturesSel, 1);
        return lo | (uint64_t(read(kDeviceFeatures)) << 32);
    }
    void set_driver_features(uint64_t features)
    {
        using namespace virtio::mmio_reg;
        write(kDriverFeaturesSel, 0);
        write(kDriverFeatures, static_cast<uint32_t>(features));
        write(kDriverFeaturesSel, 1);
        write(kDriverFeatures, static_cast<uint32_t>(features >> 32));
    }
    uint32_t status() { return read(virtio::mmio_reg::kStatus); }
    void add_status(uint32_t bits) { write(virtio::mmio_reg::kStatus, status() | bits); }

    // Reset, ACKNOWLEDGE, DRIVER, features, FEATURES_OK; returns whether FEATURES_OK stuck.
    bool negotiate(uint64_t features)
    {
        using namespace virtio;
        write(mmio_reg::kStatus, 0);
        add_status(kStatusAcknowledge);
        add_status(kStatusDriver);
        set_driver_features(features);
        add_status(kStatusFeaturesOk);
        return status() & kStatusFeaturesOk;
    }

    void setup_queue(uint32_t index, const SplitRing& ring)
    {
        using namespace virtio::mmio_reg;
        write(kQueueSel, index);
        write(kQueueNum, ring.size());
        write(kQueueDescLow, static_cast<uint32_t>(ring.desc_gpa()));
        write(kQueueDescHigh, static_cast<uint32_t>(ring.desc_gpa() >> 32));
        write(kQueueDriverLow, static_cast<uint32_t>(ring.avail_gpa()));
        write(kQueueDriverHigh, static_cast<uint32_t>(ring.avail_gpa() >> 32));
        write(kQueueDeviceLow, static_cast<uint32_t>(ring.used_gpa()));
        write(kQueueDeviceHigh, static_cast<uint32_t>(ring.used_gpa() >> 32));
        write(kQueueReady, 1);
    }

    void driver_ok() { add_status(virtio::kStatusDriverOk); }
    void notify(uint32_t queue) { write(virtio::mmio_reg::kQueueNotify, queue); }

private:
    virtio::MmioTransport& m_t;
};

} // namespace vessel::virtio_test
