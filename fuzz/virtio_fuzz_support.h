// Shared pieces of the virtio device fuzz targets: a reader over the fuzz input, an interrupt
// sink that remembers driver errors, and the set-up of a device's queues at fixed ring addresses.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string_view>
#include <vector>

#include "devices/virtio/queue.h"
#include "devices/virtio/virtio.h"
#include "memory/guest_memory.h"

namespace vessel::virtio::fuzz {

class Input {
public:
    Input(const uint8_t* data, size_t size)
        : m_data(data)
        , m_size(size)
    {
    }
    bool take(void* out, size_t n)
    {
        if (m_size - m_at < n)
            return false;
        std::memcpy(out, m_data + m_at, n);
        m_at += n;
        return true;
    }
    template<typename T>
    bool get(T& v)
    {
        return take(&v, sizeof(T));
    }
    std::span<const uint8_t> bytes(size_t n)
    {
        n = std::min(n, m_size - m_at);
        auto s = std::span(m_data + m_at, n);
        m_at += n;
        return s;
    }
    bool empty() const { return m_at >= m_size; }

private:
    const uint8_t* m_data;
    size_t m_size;
    size_t m_at { 0 };
};

class NullInterrupt final : public VirtioInterrupt {
public:
    void signal_queue(uint16_t) override { }
    void signal_config() override { }
    void device_error(std::string_view) override { failed = true; }
    bool failed { false };
};

// Lays out one queue per entry of `ring_bases` (descriptors at the base, driver area at +0x1000,
// device area at +0x2000), activates them and then the device. False if either refuses.
inline bool activate_device(VirtioDevice& dev, VirtioInterrupt& irq, GuestMemory& memory, std::vector<Queue>& queues,
    std::span<const uint64_t> ring_bases, uint16_t size, uint64_t features)
{
    queues.clear();
    for (uint64_t base : ring_bases) {
        queues.emplace_back(16);
        Queue& q = queues.back();
        q.reset();
        q.set_size(size);
        q.set_desc_addr(base);
        q.set_avail_addr(base + 0x1000);
        q.set_used_addr(base + 0x2000);
        q.set_ready(true);
        if (!q.activate(memory, features).ok())
            return false;
    }
    ActivateContext ctx;
    ctx.memory = &memory;
    ctx.interrupt = &irq;
    ctx.features = features;
    ctx.queues = std::span<Queue>(queues);
    return dev.activate(ctx).ok();
}

} // namespace vessel::virtio::fuzz
