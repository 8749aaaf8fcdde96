// The user-space interrupt controllers and timers of a PC for the software engine: the dual
// 8259A PIC (+ ELCR), the I/O APIC, the 8254 PIT (+ port 0x61), one local APIC per vCPU, and the
// guest clock they all count against. Engine-neutral: vCPUs reach their LAPIC through lapic(i),
// devices raise GSIs through set_irq().
//
// Wiring (matching Vessel's MADT: one I/O APIC with GSI base 0, an ISA override IRQ0 -> GSI 2
// with bus-default flags, LAPIC NMI on LINT1): GSIs 0-15 drive the PIC lines of the same number
// (except 2, the cascade) and I/O APIC pins; GSI 0 (the PIT) goes to I/O APIC pin 2, every other
// GSI n to pin n. The PIC's INT output is the BSP's LINT0 (ExtINT); every LAPIC starts with
// LINT0 = ExtINT and LINT1 = NMI as a PC BIOS leaves them.
//
// Timers are polled: the PIT here (next_deadline_ns / run_timers), each LAPIC's by its vCPU.
//
// Build it, add the LAPICs, register the devices, then run: add_lapic() is not thread-safe
// against deliveries. The Irqchip must outlive every use of the devices it registered.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "base/result.h"
#include "bus/bus.h"
#include "devices/irq.h"
#include "devices/irqchip/apic_bus.h"
#include "devices/irqchip/clock.h"
#include "devices/irqchip/ioapic.h"
#include "devices/irqchip/lapic.h"
#include "devices/irqchip/pic.h"
#include "devices/irqchip/pit.h"

namespace vessel {

class Irqchip final : public ApicBus {
public:
    struct Options {
        uint64_t tsc_khz { VirtualClock::kDefaultTscKhz };
        VirtualClock::Source clock_source { VirtualClock::Source::Host };
        uint64_t lapic_bus_hz { Lapic::kBusFrequencyHz };
        uint8_t ioapic_id { 0 };
    };

    static constexpr uint32_t kPitIoapicPin = 2; // the MADT's IRQ0 -> GSI 2 override

    Irqchip();
    explicit Irqchip(const Options& options);
    Irqchip(const Irqchip&) = delete;
    Irqchip& operator=(const Irqchip&) = delete;

    // Creates the LAPIC of a vCPU (APIC id 0 is the BSP and gets the PIC's output on LINT0).
    // `client` must outlive the Irqchip.
    Result<Lapic*> add_lapic(uint32_t apic_id, LapicClient& client);
    size_t lapic_count() const { return m_lapics.size(); }
    // The i-th LAPIC added.
    Lapic& lapic(size_t index) { return *m_lapics[index]; }
    // The LAPIC with `apic_id`, or nullptr.
    Lapic* lapic_by_id(uint32_t apic_id);

    // Ports 0x20-0x21, 0xa0-0xa1, 0x4d0-0x4d1 (PIC, ELCR), 0x40-0x43 (PIT), 0x61; the I/O APIC
    // at layout::kIoapicBase. Not the LAPIC page: the engine routes each vCPU's own accesses.
    Result<void> register_devices(Bus& pio, Bus& mmio);

    // Drives a GSI (any thread).
    void set_irq(uint32_t gsi, bool level);
    // An IrqLine for devices, bound to `gsi` of this irqchip.
    IrqLine irq_line(uint32_t gsi);

    // ApicBus.
    void deliver(const ApicMessage& message) override;
    void broadcast_eoi(uint8_t vector) override;

    // The PIT's IRQ0 (LAPIC timers belong to their vCPUs).
    uint64_t next_deadline_ns() const { return m_pit->next_deadline_ns(); }
    void run_timers(uint64_t now_ns) { m_pit->run_timers(now_ns); }

    VirtualClock& clock() { return m_clock; }
    Pic& pic() { return *m_pic; }
    IoApic& ioapic() { return *m_ioapic; }
    Pit& pit() { return *m_pit; }

private:
    VirtualClock m_clock;
    const uint64_t m_lapic_bus_hz;
    std::vector<std::unique_ptr<Lapic>> m_lapics;
    Lapic* m_bsp { nullptr };
    std::shared_ptr<Pic> m_pic;
    std::shared_ptr<IoApic> m_ioapic;
    std::shared_ptr<Pit> m_pit;
    std::atomic<uint32_t> m_lowest_priority_turn { 0 };
    std::atomic<uint64_t> m_log_count { 0 };
};

} // namespace vessel
