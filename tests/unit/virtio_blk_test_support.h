// Driver-side helpers for testing virtio devices without a transport or a guest: a split
// virtqueue laid out by hand in guest memory (descriptor table, available and used rings), a
// Queue bound to it, and a VirtioInterrupt that counts what the device signals. No gtest here:
// fuzz/virtio_blk_fuzz.cpp uses it too.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "devices/virtio/queue.h"
#include "devices/virtio/virtio.h"
#include "memory/guest_memory.h"

namespace vessel::virtio::test {

class VirtioBlkCountingInterrupt final : public VirtioInterrupt {
public:
    void signal_queue(uint16_t) override { queue_signals.fetch_add(1); }
    void signal_config() override { config_signals.fetch_add(1); }
    void device_error(std::string_view why) override
    {
        std::lock_guard lock(m_lock);
        errors.emplace_back(why);
        error_count.fetch_add(1);
    }
    std::string last_error()
    {
        std::lock_guard lock(m_lock);
        return errors.empty() ? std::string() : errors.back();
    }

    std::atomic<uint32_t> queue_signals { 0 };
    std::atomic<uint32_t> config_signals { 0 };
    std::atomic<uint32_t> error_count { 0 };
    std::vector<std::string> errors;

private:
    std::mutex m_lock;
};

// One buffer of a chain as the driver describes it.
struct VirtioBlkBuf {
    uint64_t gpa;
    uint32_t len;
    bool writable;
};

// A split virtqueue of `size` entries at `base` in guest memory: descriptors, then the available
// ring, then (4-aligned) the used ring. The driver side writes through GuestMemory.
class VirtioBlkRing {
public:
    VirtioBlkRing(GuestMemory& memory, uint64_t base, uint16_t size)
        : m_memory(memory)
        , m_size(size)
    {
        m_desc = base;
        m_avail = base + 16ULL * size;
        m_used = (m_avail + 6 + 2ULL * size + 3) & ~3ULL;
        (void)m_memory.fill(base, 0, m_used + 6 + 8ULL * size - base);
    }

    uint64_t desc_addr() const { return m_desc; }
    uint64_t avail_addr() const { return m_avail; }
    uint64_t used_addr() const { return m_used; }
    uint16_t size() const { return m_size; }
    // First byte after the rings.
    uint64_t end() const { return m_used + 6 + 8ULL * m_size; }

    // Configures `queue` for this layout and binds it (as the transport does at DRIVER_OK).
    Result<void> bind(Queue& queue, uint64_t features)
    {
        queue.reset();
        queue.set_size(m_size);
        queue.set_desc_addr(m_desc);
        queue.set_avail_addr(m_avail);
        queue.set_used_addr(m_used);
        queue.set_ready(true);
        return queue.activate(m_memory, features);
    }

    // Writes a raw descriptor.
    void write_desc(uint16_t index, uint64_t addr, uint32_t len, uint16_t flags, uint16_t next)
    {
        uint8_t d[16];
        std::memcpy(d, &addr, 8);
        std::memcpy(d + 8, &len, 4);
        std::memcpy(d + 12, &flags, 2);
        std::memcpy(d + 14, &next, 2);
        (void)m_memory.write(m_desc + 16ULL * index, d);
    }

    // Puts `head` in the available ring and publishes it.
    void publish(uint16_t head)
    {
        (void)m_memory.write_obj<uint16_t>(m_avail + 4 + 2ULL * (m_avail_idx % m_size), head);
        ++m_avail_idx;
        std::atomic_thread_fence(std::memory_order_release);
        (void)m_memory.write_obj<uint16_t>(m_avail + 2, m_avail_idx);
    }

    // Builds a direct chain from the next free descriptors (wrapping around the table) and
    // publishes it; returns its head.
    uint16_t add_chain(const std::vector<VirtioBlkBuf>& bufs)
    {
        uint16_t head = m_next_desc;
        for (size_t i = 0; i < bufs.size(); ++i) {
            uint16_t index = static_cast<uint16_t>((head + i) % m_size);
            uint16_t next = static_cast<uint16_t>((index + 1) % m_size);
            uint16_t flags = (bufs[i].writable ? kDescWrite : 0) | (i + 1 < bufs.size() ? kDescNext : 0);
            write_desc(index, bufs[i].gpa, bufs[i].len, flags, next);
        }
        m_next_desc = static_cast<uint16_t>((head + bufs.size()) % m_size);
        publish(head);
        return head;
    }

    uint16_t avail_idx() const { return m_avail_idx; }
    uint16_t used_idx() const
    {
        uint16_t v = 0;
        std::memcpy(&v, m_memory.host_ptr(m_used + 2, 2), 2);
        std::atomic_thread_fence(std::memory_order_acquire);
        return v;
    }
    struct UsedElem {
        uint32_t id;
        uint32_t len;
    };
    UsedElem used_elem(uint16_t i) const
    {
        UsedElem e {};
        std::memcpy(&e, m_memory.host_ptr(m_used + 4 + 8ULL * (i % m_size), 8), 8);
        return e;
    }

    // Waits until the device has used `count` chains in total (for devices with a thread).
    bool wait_used(uint16_t count, std::chrono::milliseconds timeout = std::chrono::seconds(10)) const
    {
        auto deadline = std::chrono::steady_clock::now() + timeout;
        while (used_idx() != count) {
            if (std::chrono::steady_clock::now() > deadline)
                return false;
            std::this_thread::sleep_for(std::chrono::microseconds(200));
        }
        return true;
    }

private:
    GuestMemory& m_memory;
    uint16_t m_size;
    uint64_t m_desc, m_avail, m_used;
    uint16_t m_avail_idx { 0 };
    uint16_t m_next_desc { 0 };
};

} // namespace vessel::virtio::test
