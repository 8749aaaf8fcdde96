#include "bus/bus.h"

#include <algorithm>
#include <cstring>

namespace vessel {

Result<void> Bus::insert(std::shared_ptr<BusDevice> device, uint64_t base, uint64_t len)
{
    if (!device)
        return make_error("{} bus: null device at {:#x}", m_name, base);
    if (len == 0)
        return make_error("{} bus: empty range for {} at {:#x}", m_name, device->name(), base);
    if (base + len < base)
        return make_error("{} bus: range of {} at {:#x} (+{:#x}) wraps around", m_name, device->name(), base, len);
    auto it = std::lower_bound(m_entries.begin(), m_entries.end(), base,
                               [](const Entry& e, uint64_t b) { return e.base < b; });
    if (it != m_entries.end() && it->base < base + len)
        return make_error("{} bus: {} at [{:#x}, {:#x}) overlaps {} at [{:#x}, {:#x})", m_name, device->name(), base,
                          base + len, it->device->name(), it->base, it->base + it->len);
    if (it != m_entries.begin()) {
        auto prev = std::prev(it);
        if (prev->base + prev->len > base)
            return make_error("{} bus: {} at [{:#x}, {:#x}) overlaps {} at [{:#x}, {:#x})", m_name, device->name(),
                              base, base + len, prev->device->name(), prev->base, prev->base + prev->len);
    }
    m_entries.insert(it, Entry { base, len, std::move(device) });
    return {};
}

const Bus::Entry* Bus::find(uint64_t addr) const
{
    auto it = std::upper_bound(m_entries.begin(), m_entries.end(), addr,
                               [](uint64_t a, const Entry& e) { return a < e.base; });
    if (it == m_entries.begin())
        return nullptr;
    --it;
    if (addr - it->base < it->len)
        return &*it;
    return nullptr;
}

bool Bus::read(uint64_t addr, std::span<uint8_t> data) const
{
    const Entry* e = find(addr);
    if (!e) {
        std::memset(data.data(), 0xff, data.size());
        return false;
    }
    e->device->read(addr - e->base, data);
    return true;
}

bool Bus::write(uint64_t addr, std::span<const uint8_t> data) const
{
    const Entry* e = find(addr);
    if (!e)
        return false;
    e->device->write(addr - e->base, data);
    return true;
}

} // namespace vessel
