// Helpers for the virtio snapshot tests (virtio_snapshot_test.cpp): a "machine" side (guest RAM and
// a virtio-mmio transport over a device), a copy of guest RAM for the restored side, and a driver's
// split ring that can move to the copy, with its driver-side bookkeeping, as a guest's driver does
// when its memory is restored.
#pragma once

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <span>
#include <utility>

#include "devices/virtio/mmio.h"
#include "devices/virtio/queue.h"
#include "devices/virtio/virtio.h"
#include "memory/guest_memory.h"
#include "virtio_pause_test_support.h"
#include "virtio_test_support.h"

namespace vessel::snapshot_test {

using virtio_test::Buf;
using virtio_test::UsedElem;

// A fresh GuestMemory with the same layout and contents as `from` (the restored machine's RAM).
inline GuestMemory copy_ram(const GuestMemory& from)
{
    uint64_t total = 0;
    for (const MemoryRegion& r : from.regions())
        total += r.size;
    GuestMemory to = GuestMemory::create(total).release_value();
    EXPECT_EQ(to.regions().size(), from.regions().size());
    for (size_t i = 0; i < from.regions().size() && i < to.regions().size(); ++i)
        std::memcpy(
            to.regions()[i].host, from.regions()[i].host, std::min(from.regions()[i].size, to.regions()[i].size));
    return to;
}

// One machine: guest RAM and a virtio-mmio transport over a device, its interrupt line counted.
struct Side {
    explicit Side(GuestMemory mem)
        : memory(std::move(mem))
    {
    }
    ~Side()
    {
        if (transport)
            transport->shutdown();
    }
    void attach(std::shared_ptr<virtio::VirtioDevice> d)
    {
        device = std::move(d);
        transport = std::make_unique<virtio::MmioTransport>(device, memory, irq.line());
    }
    virtio_test::MmioDriver driver() { return virtio_test::MmioDriver(*transport); }

    GuestMemory memory;
    pause_test::CountingIrq irq; // before the transport, which holds its line
    std::shared_ptr<virtio::VirtioDevice> device;
    std::unique_ptr<virtio::MmioTransport> transport;
};

// A driver's split ring at `base` (descriptors, available ring, used ring 4-aligned); descriptors
// are handed out round-robin, so callers keep fewer than `size` outstanding. rebind() moves the
// driver to a copy of guest RAM (the rings there hold the same bytes).
class SnapRing {
public:
    SnapRing(GuestMemory& mem, uint64_t base, uint16_t size)
        : m_mem(&mem)
        , m_size(size)
        , m_desc(base)
        , m_avail(base + 16ULL * size)
        , m_used((base + 16ULL * size + 6 + 2ULL * size + 3) & ~3ULL)
    {
        EXPECT_TRUE(m_mem->fill(base, 0, end_gpa() - base).ok());
    }

    void rebind(GuestMemory& mem) { m_mem = &mem; }
    uint16_t size() const { return m_size; }
    uint64_t desc_gpa() const { return m_desc; }
    uint64_t avail_gpa() const { return m_avail; }
    uint64_t used_gpa() const { return m_used; }
    uint64_t end_gpa() const { return m_used + 6 + 8ULL * m_size; }

    // The driver's queue set-up through the transport's registers.
    void configure(virtio::MmioTransport& t, uint32_t index) const
    {
        using namespace virtio::mmio_reg;
        auto reg
            = [&](uint64_t offset, uint32_t v) { t.write(offset, std::span(reinterpret_cast<const uint8_t*>(&v), 4)); };
        reg(kQueueSel, index);
        reg(kQueueNum, m_size);
        reg(kQueueDescLow, static_cast<uint32_t>(m_desc));
        reg(kQueueDescHigh, static_cast<uint32_t>(m_desc >> 32));
        reg(kQueueDriverLow, static_cast<uint32_t>(m_avail));
        reg(kQueueDriverHigh, static_cast<uint32_t>(m_avail >> 32));
        reg(kQueueDeviceLow, static_cast<uint32_t>(m_used));
        reg(kQueueDeviceHigh, static_cast<uint32_t>(m_used >> 32));
        reg(kQueueReady, 1);
    }

    // Writes a direct chain over the next descriptors and publishes it; returns its head.
    uint16_t add(std::initializer_list<Buf> bufs)
    {
        uint16_t head = m_next_desc;
        size_t i = 0;
        for (const Buf& b : bufs) {
            uint16_t index = m_next_desc;
            m_next_desc = static_cast<uint16_t>((m_next_desc + 1) % m_size);
            bool last = ++i == bufs.size();
            uint16_t flags = (b.writable ? virtio::kDescWrite : 0) | (last ? 0 : virtio::kDescNext);
            uint16_t next = last ? 0 : m_next_desc;
            uint8_t d[16];
            std::memcpy(d, &b.gpa, 8);
            std::memcpy(d + 8, &b.len, 4);
            std::memcpy(d + 12, &flags, 2);
            std::memcpy(d + 14, &next, 2);
            EXPECT_TRUE(m_mem->write(m_desc + 16ULL * index, d).ok());
        }
        publish(head);
        return head;
    }

    void publish(uint16_t head)
    {
        EXPECT_TRUE(m_mem->write_obj<uint16_t>(m_avail + 4 + 2ULL * (m_avail_idx % m_size), head).ok());
        ++m_avail_idx;
        ref(m_avail + 2).store(m_avail_idx, std::memory_order_release);
    }

    // With EVENT_IDX: ask for an interrupt once the device has used entry `idx` (used_event).
    void interrupt_at(uint16_t idx) { ref(m_avail + 4 + 2ULL * m_size).store(idx, std::memory_order_release); }
    // The device's avail_event: it wants a notification once the driver publishes past it.
    uint16_t avail_event() const { return ref(m_used + 4 + 8ULL * m_size).load(std::memory_order_acquire); }

    uint16_t avail_idx() const { return m_avail_idx; }
    uint16_t used_idx() const { return ref(m_used + 2).load(std::memory_order_acquire); }
    UsedElem used(uint16_t i) const
    {
        UsedElem e {};
        EXPECT_TRUE(m_mem->read(m_used + 4 + 8ULL * (i % m_size), std::span(reinterpret_cast<uint8_t*>(&e), 8)).ok());
        return e;
    }
    bool wait_used(uint16_t count, std::chrono::milliseconds timeout = std::chrono::seconds(10)) const
    {
        return pause_test::wait_until([&] { return used_idx() == count; }, timeout);
    }

private:
    std::atomic_ref<uint16_t> ref(uint64_t gpa) const
    {
        // 2-aligned ring fields inside guest RAM (the constructor zeroed them through the
        // bounds-checked accessor, so the range exists).
        return std::atomic_ref<uint16_t>(*reinterpret_cast<uint16_t*>(m_mem->host_ptr(gpa, 2)));
    }

    GuestMemory* m_mem;
    uint16_t m_size;
    uint64_t m_desc, m_avail, m_used;
    uint16_t m_next_desc { 0 };
    uint16_t m_avail_idx { 0 };
};

} // namespace vessel::snapshot_test
