// An 82093AA-style I/O APIC (version 0x20, 24 pins) at layout::kIoapicBase: IOREGSEL (offset
// 0x00) selects a register that IOWIN (0x10) reads or writes; the EOI register (0x40) takes a
// vector like a directed EOI. Registers: 0x00 ID, 0x01 version, 0x02 arbitration id,
// 0x10 + 2n / 0x11 + 2n the low / high halves of redirection entry n.
//
// Inputs follow set_irq(): an edge-triggered pin delivers on each rising edge while unmasked
// (edges on a masked pin are lost, as on the chip); a level-triggered pin delivers while
// asserted, unmasked and its remote IRR is clear, then holds remote IRR until a LAPIC EOIs the
// vector (eoi() / the EOI register) and re-delivers if the line is still asserted. Unmasking an
// asserted level pin delivers it.
//
// set_irq()'s `level` is the logical assertion: the polarity bit is stored and reported but not
// applied (every Vessel device drives its line active high and the MADT declares no active-low
// override). Delivery status (bit 12) always reads idle.
//
// Thread safety: any thread. Messages go to the ApicBus with the I/O APIC lock held (LAPICs
// never call back into the I/O APIC while holding their own locks).
#pragma once

#include <array>
#include <cstdint>
#include <mutex>

#include "arch/x86/machine_state.h"
#include "bus/bus.h"
#include "devices/irqchip/apic_bus.h"

namespace vessel {

class IoApic final : public BusDevice {
public:
    static constexpr uint32_t kPins = 24;
    static constexpr uint32_t kVersion = 0x20;

    // MMIO offsets.
    static constexpr uint64_t kRegSel = 0x00;
    static constexpr uint64_t kWindow = 0x10;
    static constexpr uint64_t kEoi = 0x40;
    static constexpr uint64_t kMmioSize = 0x1000;

    // Indirect registers.
    static constexpr uint8_t kRegId = 0x00;
    static constexpr uint8_t kRegVersion = 0x01;
    static constexpr uint8_t kRegArbitration = 0x02;
    static constexpr uint8_t kRegRedirection = 0x10;

    // Redirection entry bits.
    static constexpr uint64_t kRteVectorMask = 0xff;
    static constexpr unsigned kRteDeliveryShift = 8;
    static constexpr uint64_t kRteLogical = 1ull << 11;
    static constexpr uint64_t kRteDeliveryStatus = 1ull << 12;
    static constexpr uint64_t kRteActiveLow = 1ull << 13;
    static constexpr uint64_t kRteRemoteIrr = 1ull << 14;
    static constexpr uint64_t kRteLevel = 1ull << 15;
    static constexpr uint64_t kRteMasked = 1ull << 16;
    static constexpr unsigned kRteDestShift = 56;

    IoApic(ApicBus& bus, uint8_t id = 0);

    std::string_view name() const override { return "ioapic"; }
    void read(uint64_t offset, std::span<uint8_t> data) override;
    void write(uint64_t offset, std::span<const uint8_t> data) override;

    // Drives input `pin` (any thread).
    void set_irq(unsigned pin, bool level);
    // A LAPIC EOI'd level-triggered `vector`.
    void eoi(uint8_t vector);

    // Direct access to a redirection entry (tests, state save/restore).
    uint64_t redirection(unsigned pin) const;
    void set_redirection(unsigned pin, uint64_t entry);

    // Snapshots (arch/x86/machine_state.h): ID, IOREGSEL, the pin levels and the redirection
    // entries with their remote IRR. restore() sends no message: in a saved state an asserted,
    // unmasked level pin already holds remote IRR, and the LAPICs are restored after the chip.
    IoapicState save() const;
    void restore(const IoapicState& state);

private:
    uint32_t read_register(uint8_t index) const;
    void write_register(uint8_t index, uint32_t value);
    void write_entry(unsigned pin, uint64_t entry);
    // Delivers a level pin if asserted, unmasked and not waiting for an EOI.
    void service_level(unsigned pin);
    void send(unsigned pin);

    ApicBus& m_bus;
    mutable std::mutex m_mutex;
    uint8_t m_regsel { 0 };
    uint8_t m_id { 0 };
    uint32_t m_lines { 0 };
    std::array<uint64_t, kPins> m_entries {};
    uint64_t m_log_count { 0 };
};

} // namespace vessel
