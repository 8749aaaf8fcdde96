// The POST diagnostic port (0x80): records the last byte written; reads return it. Guests and
// benchmarks hammer it with port-I/O exits, so it is a single relaxed atomic, no lock, no log.
#pragma once

#include <atomic>
#include <cstdint>

#include "bus/bus.h"

namespace vessel {

class PostPort final : public BusDevice {
public:
    static constexpr uint16_t kPort = 0x80;

    struct State {
        uint8_t last { 0 };

        bool operator==(const State&) const = default;
    };

    PostPort() = default;

    std::string_view name() const override { return "post"; }
    void read(uint64_t offset, std::span<uint8_t> data) override;
    void write(uint64_t offset, std::span<const uint8_t> data) override;

    uint8_t last() const { return m_last.load(std::memory_order_relaxed); }

    State save() const { return State { last() }; }
    void restore(const State& state) { m_last.store(state.last, std::memory_order_relaxed); }

private:
    std::atomic<uint8_t> m_last { 0 };
};

} // namespace vessel
