// ACPI hardware-reduced power-management registers, one range of 3 byte ports starting at
// layout::kAcpiSleepControlPort:
//   offset 0  SLEEP_CONTROL_REG: SLP_EN (bit 5) with SLP_TYP (bits 2-4) == layout::kAcpiSlpTypS5
//             powers off (StopReason::PowerOff); other sleep types are ignored. Reads return 0.
//   offset 1  SLEEP_STATUS_REG: WAK_STS (bit 7); writing 1 to a bit clears it.
//   offset 2  RESET_REG: writing layout::kAcpiResetValue resets (StopReason::Reset). Reads 0.
// Nothing sets WAK_STS yet (no sleep state is resumable); it is kept for the contract and
// restored from snapshots.
#pragma once

#include <atomic>
#include <cstdint>

#include "bus/bus.h"
#include "devices/vm_control.h"

namespace vessel {

class AcpiPm final : public BusDevice {
public:
    static constexpr uint64_t kSleepControlOffset = 0;
    static constexpr uint64_t kSleepStatusOffset = 1;
    static constexpr uint64_t kResetOffset = 2;
    static constexpr uint64_t kRangeLength = 3;

    static constexpr uint8_t kSlpEn = 0x20;
    static constexpr uint8_t kSlpTypShift = 2;
    static constexpr uint8_t kSlpTypMask = 0x07;
    static constexpr uint8_t kWakSts = 0x80;

    struct State {
        uint8_t sleep_status { 0 };

        bool operator==(const State&) const = default;
    };

    // `stop` is called on the vCPU thread that wrote the register.
    explicit AcpiPm(StopFn stop);

    std::string_view name() const override { return "acpi-pm"; }
    void read(uint64_t offset, std::span<uint8_t> data) override;
    void write(uint64_t offset, std::span<const uint8_t> data) override;

    State save() const;
    void restore(const State& state);

private:
    void write_sleep_control(uint8_t value);
    void write_reset(uint8_t value);
    void log_oddity(const char* what, uint8_t value);

    StopFn m_stop;
    std::atomic<uint8_t> m_sleep_status { 0 };
    std::atomic<uint64_t> m_log_count { 0 };
};

} // namespace vessel
