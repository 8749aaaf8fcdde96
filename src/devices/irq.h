// How a device raises an interrupt without knowing the engine: the VM hands each device an
// IrqLine bound to a GSI of the interrupt controller (in-kernel with KVM, a model with soft).
#pragma once

#include <cstdint>
#include <functional>

namespace vessel {

class IrqLine {
public:
    IrqLine() = default;
    IrqLine(uint32_t gsi, std::function<void(uint32_t gsi, bool level)> set_level)
        : m_gsi(gsi)
        , m_set_level(std::move(set_level))
    {
    }

    uint32_t gsi() const { return m_gsi; }
    bool connected() const { return static_cast<bool>(m_set_level); }
    void set_level(bool level) const
    {
        if (m_set_level)
            m_set_level(m_gsi, level);
    }
    // An edge: raise then lower.
    void pulse() const
    {
        set_level(true);
        set_level(false);
    }

private:
    uint32_t m_gsi { 0 };
    std::function<void(uint32_t, bool)> m_set_level;
};

} // namespace vessel
