#include "devices/acpi_pm.h"

#include "base/log.h"

#include "base/log_limit.h"

#include "arch/x86/layout.h"

namespace vessel {

AcpiPm::AcpiPm(StopFn stop)
    : m_stop(std::move(stop))
{
}

void AcpiPm::read(uint64_t offset, std::span<uint8_t> data)
{
    for (size_t i = 0; i < data.size(); ++i) {
        if (offset + i == kSleepStatusOffset)
            data[i] = m_sleep_status.load(std::memory_order_relaxed);
        else if (offset + i < kRangeLength)
            data[i] = 0; // sleep control and reset registers are write-only
        else
            data[i] = 0xff;
    }
}

void AcpiPm::write(uint64_t offset, std::span<const uint8_t> data)
{
    for (size_t i = 0; i < data.size(); ++i) {
        switch (offset + i) {
        case kSleepControlOffset:
            write_sleep_control(data[i]);
            break;
        case kSleepStatusOffset:
            // Write 1 to clear; only WAK_STS is implemented, the other bits are reserved.
            m_sleep_status.fetch_and(static_cast<uint8_t>(~(data[i] & kWakSts)), std::memory_order_relaxed);
            break;
        case kResetOffset:
            write_reset(data[i]);
            break;
        default:
            break;
        }
    }
}

void AcpiPm::write_sleep_control(uint8_t value)
{
    if (!(value & kSlpEn))
        return;
    const uint8_t type = (value >> kSlpTypShift) & kSlpTypMask;
    if (type != layout::kAcpiSlpTypS5) {
        log_oddity("sleep type not supported, ignored", type);
        return;
    }
    log_debug("acpi-pm: guest entered S5 (power off)");
    if (m_stop)
        m_stop(StopRequest { StopReason::PowerOff, 0 });
}

void AcpiPm::write_reset(uint8_t value)
{
    if (value != layout::kAcpiResetValue) {
        log_oddity("unexpected reset register value, ignored", value);
        return;
    }
    log_debug("acpi-pm: guest wrote the reset register");
    if (m_stop)
        m_stop(StopRequest { StopReason::Reset, 0 });
}

void AcpiPm::log_oddity(const char* what, uint8_t value)
{
    if (log_allowed(m_log_count))
        log_debug("acpi-pm: {} ({:#04x})", what, value);
}

AcpiPm::State AcpiPm::save() const
{
    return State { m_sleep_status.load(std::memory_order_relaxed) };
}

void AcpiPm::restore(const State& state)
{
    m_sleep_status.store(state.sleep_status & kWakSts, std::memory_order_relaxed);
}

} // namespace vessel
