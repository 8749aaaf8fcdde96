// QEMU isa-debug-exit compatible port (layout::kDebugExitPort): a write of value v (1, 2 or 4
// bytes, little-endian) stops the VM with StopReason::DebugExit and exit status (v << 1) | 1.
// The status is kept as a full int here; the OS truncates a process exit status to 8 bits.
// Reads return 0. Accesses at any offset of the registered range behave the same.
#pragma once

#include <cstdint>

#include "bus/bus.h"
#include "devices/vm_control.h"

namespace vessel {

class DebugExit final : public BusDevice {
public:
    // The device has no state; the struct exists for the uniform save/restore contract.
    struct State {
        bool operator==(const State&) const = default;
    };

    // `stop` is called on the vCPU thread that wrote the port.
    explicit DebugExit(StopFn stop);

    std::string_view name() const override { return "debug-exit"; }
    void read(uint64_t offset, std::span<uint8_t> data) override;
    void write(uint64_t offset, std::span<const uint8_t> data) override;

    State save() const { return {}; }
    void restore(const State&) { }

    // The exit status a write of `value` produces.
    static int exit_status(uint32_t value) { return static_cast<int>((value << 1) | 1); }

private:
    StopFn m_stop;
};

} // namespace vessel
