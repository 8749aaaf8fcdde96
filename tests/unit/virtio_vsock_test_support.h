// The driver's side of split virtqueues, written by hand into a GuestMemory, for the virtio-vsock
// unit tests (and shaped like what Linux's virtio_vsock driver puts there: header and payload in
// separate descriptors).
#pragma once

#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "devices/virtio/queue.h"
#include "devices/virtio/virtio.h"
#include "memory/guest_memory.h"

namespace vessel::vsock_test {

// Records what the device signals.
class RecordingInterrupt final : public virtio::VirtioInterrupt {
public:
    void signal_queue(uint16_t queue) override
    {
        if (queue < 3)
            ++queue_signals[queue];
    }
    void signal_config() override { ++config_signals; }
    void device_error(std::string_view why) override
    {
        std::lock_guard lock(mutex);
        errors.emplace_back(why);
    }
    size_t error_count()
    {
        std::lock_guard lock(mutex);
        return errors.size();
    }

    std::atomic<int> queue_signals[3] { 0, 0, 0 };
    std::atomic<int> config_signals { 0 };
    std::mutex mutex;
    std::vector<std::string> errors;
};

// One buffer of a chain the test adds: readable bytes, or `writable_len` device-writable bytes.
struct Buffer {
    std::vector<uint8_t> bytes;
    uint32_t writable_len { 0 };
    bool writable { false };
};

struct Used {
    uint16_t head;
    uint32_t len;
    std::vector<uint8_t> data; // the chain's writable bytes (first `len` of them)
};

// A split virtqueue as a driver sees it: descriptor table, avail ring and used ring at `ring_gpa`,
// buffers carved from [data_gpa, data_gpa + data_size) round-robin (callers keep few in flight).
class DriverQueue {
public:
    DriverQueue(GuestMemory& memory, uint64_t ring_gpa, uint16_t size, uint64_t data_gpa, uint64_t data_size)
        : m_memory(memory)
        , m_size(size)
        , m_desc(ring_gpa)
        , m_avail(ring_gpa + 16ULL * size)
        , m_used((ring_gpa + 16ULL * size + 6 + 2ULL * size + 3) & ~3ULL)
        , m_data(data_gpa)
        , m_data_size(data_size)
        , m_chains(size)
    {
        for (uint16_t i = 0; i < size; ++i)
            m_free.push_back(static_cast<uint16_t>(size - 1 - i));
    }

    void configure(virtio::Queue& q) const
    {
        q.set_size(m_size);
        q.set_desc_addr(m_desc);
        q.set_avail_addr(m_avail);
        q.set_used_addr(m_used);
        q.set_ready(true);
    }

    size_t free_descriptors() const { return m_free.size(); }

    // Writes a descriptor chain and publishes it in the avail ring; returns its head.
    uint16_t add(const std::vector<Buffer>& buffers)
    {
        EXPECT_LE(buffers.size(), m_free.size());
        std::vector<uint16_t> ids;
        for (size_t i = 0; i < buffers.size(); ++i) {
            ids.push_back(m_free.back());
            m_free.pop_back();
        }
        Chain chain;
        for (size_t i = 0; i < buffers.size(); ++i) {
            const Buffer& b = buffers[i];
            uint32_t len = b.writable ? b.writable_len : static_cast<uint32_t>(b.bytes.size());
            uint64_t gpa = allocate(len);
            if (!b.writable && len) {
                EXPECT_TRUE(m_memory.write(gpa, b.bytes).ok());
            }
            uint16_t flags = (b.writable ? virtio::kDescWrite : 0) | (i + 1 < buffers.size() ? virtio::kDescNext : 0);
            write_desc(ids[i], gpa, len, flags, i + 1 < buffers.size() ? ids[i + 1] : 0);
            if (b.writable)
                chain.writable.push_back({ gpa, len });
        }
        chain.ids = ids;
        m_chains[ids[0]] = chain;
        publish(ids[0]);
        return ids[0];
    }

    // A raw descriptor (for malformed chains); the caller publishes with publish().
    void write_desc(uint16_t index, uint64_t gpa, uint32_t len, uint16_t flags, uint16_t next)
    {
        uint8_t d[16];
        std::memcpy(d, &gpa, 8);
        std::memcpy(d + 8, &len, 4);
        std::memcpy(d + 12, &flags, 2);
        std::memcpy(d + 14, &next, 2);
        EXPECT_TRUE(m_memory.write(m_desc + 16ULL * index, d).ok());
    }

    void publish(uint16_t head)
    {
        EXPECT_TRUE(m_memory.write_obj<uint16_t>(m_avail + 4 + 2ULL * (m_avail_idx % m_size), head).ok());
        ++m_avail_idx;
        std::atomic_thread_fence(std::memory_order_release);
        EXPECT_TRUE(m_memory.write_obj<uint16_t>(m_avail + 2, m_avail_idx).ok());
    }

    uint16_t used_idx() const
    {
        std::atomic_thread_fence(std::memory_order_acquire);
        return m_memory.read_obj<uint16_t>(m_used + 2).value();
    }

    bool has_used() const { return used_idx() != m_last_used; }

    // The next used entry, if the device returned one.
    std::optional<Used> next_used()
    {
        if (used_idx() == m_last_used)
            return std::nullopt;
        std::atomic_thread_fence(std::memory_order_acquire);
        uint64_t elem = m_used + 4 + 8ULL * (m_last_used % m_size);
        ++m_last_used;
        Used u;
        u.head = static_cast<uint16_t>(m_memory.read_obj<uint32_t>(elem).value());
        u.len = m_memory.read_obj<uint32_t>(elem + 4).value();
        if (u.head >= m_size) {
            ADD_FAILURE() << "used entry names descriptor " << u.head;
            return u;
        }
        Chain& chain = m_chains[u.head];
        uint32_t left = u.len;
        for (auto& [gpa, len] : chain.writable) {
            uint32_t take = std::min(left, len);
            size_t at = u.data.size();
            u.data.resize(at + take);
            EXPECT_TRUE(m_memory.read(gpa, std::span(u.data.data() + at, take)).ok());
            left -= take;
        }
        for (uint16_t id : chain.ids)
            m_free.push_back(id);
        chain = {};
        return u;
    }

    uint64_t avail_gpa() const { return m_avail; }
    uint64_t used_gpa() const { return m_used; }

private:
    struct Chain {
        std::vector<uint16_t> ids;
        std::vector<std::pair<uint64_t, uint32_t>> writable;
    };

    uint64_t allocate(uint32_t len)
    {
        uint64_t aligned = (len + 15ULL) & ~15ULL;
        if (m_data_next + aligned > m_data_size)
            m_data_next = 0;
        uint64_t gpa = m_data + m_data_next;
        m_data_next += aligned;
        return gpa;
    }

    GuestMemory& m_memory;
    uint16_t m_size;
    uint64_t m_desc, m_avail, m_used;
    uint64_t m_data, m_data_size, m_data_next { 0 };
    std::vector<Chain> m_chains;
    std::vector<uint16_t> m_free;
    uint16_t m_avail_idx { 0 };
    uint16_t m_last_used { 0 };
};

} // namespace vessel::vsock_test
