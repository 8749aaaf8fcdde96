// A slice of a larger device's register space registered on a bus on its own: offset 0 of the
// window is `offset` of the target. Lets one device object serve disjoint port ranges (the two
// 8259As and their ELCRs) without claiming the ports in between.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "bus/bus.h"

namespace vessel {

class BusWindow final : public BusDevice {
public:
    BusWindow(std::shared_ptr<BusDevice> target, uint64_t offset, std::string name)
        : m_target(std::move(target))
        , m_offset(offset)
        , m_name(std::move(name))
    {
    }

    std::string_view name() const override { return m_name; }
    void read(uint64_t offset, std::span<uint8_t> data) override { m_target->read(m_offset + offset, data); }
    void write(uint64_t offset, std::span<const uint8_t> data) override { m_target->write(m_offset + offset, data); }

private:
    std::shared_ptr<BusDevice> m_target;
    uint64_t m_offset;
    std::string m_name;
};

} // namespace vessel
