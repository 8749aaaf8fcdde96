// The PC's two cascaded 8259A programmable interrupt controllers (master at ports 0x20-0x21,
// slave at 0xa0-0xa1, its INT wired to master IR2) and the edge/level control registers (ELCR,
// ports 0x4d0-0x4d1). One device object serves all three port pairs through its own offsets
// (kMasterCommand...kElcrSlave); the Irqchip maps each pair with a BusWindow.
//
// Modelled: ICW1-ICW4 (vector base, single/cascade, auto-EOI, special fully nested mode), OCW1
// (IMR), OCW2 (non-specific / specific EOI, rotation, set priority), OCW3 (IRR/ISR read select,
// poll, special mask mode), edge or level sensitivity per line from the ELCR, spurious IRQ7 /
// IRQ15 when an INTA finds the request gone. The cascade input follows the slave's INT output as
// a level (like the wired-OR INT line), so a slave request is never lost to a missed edge.
//
// Power-on state (no BIOS): every line masked until the guest initialises the chips.
//
// Not modelled: 8080/85 mode (ICW4 bit 0 clear is treated as 8086 mode), ICW1.LTIM (PCs use the
// ELCR), buffered mode, the edge-sense quirk that drops an edge request removed before INTA.
//
// Thread safety: every method may be called from any thread. The output handler runs with the
// PIC's lock held and must not call back into the PIC (the LAPIC's set_lint does not).
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <mutex>

#include "arch/x86/machine_state.h"
#include "bus/bus.h"

namespace vessel {

class Pic final : public BusDevice {
public:
    using OutputHandler = std::function<void(bool intr)>;

    // The device's register offsets.
    static constexpr uint64_t kMasterCommand = 0;
    static constexpr uint64_t kMasterData = 1;
    static constexpr uint64_t kSlaveCommand = 2;
    static constexpr uint64_t kSlaveData = 3;
    static constexpr uint64_t kElcrMaster = 4;
    static constexpr uint64_t kElcrSlave = 5;
    static constexpr uint64_t kRegisterCount = 6;

    // Where a PC has them.
    static constexpr uint16_t kMasterPort = 0x20;
    static constexpr uint16_t kSlavePort = 0xa0;
    static constexpr uint16_t kElcrPort = 0x4d0;

    static constexpr unsigned kLines = 16;
    static constexpr unsigned kCascadeLine = 2;

    Pic();

    std::string_view name() const override { return "pic"; }
    void read(uint64_t offset, std::span<uint8_t> data) override;
    void write(uint64_t offset, std::span<const uint8_t> data) override;

    // Drives input IRQ `line` (0-15; line 2 is the cascade and ignored).
    void set_irq(unsigned line, bool level);
    // The master's INT output.
    bool interrupt_pending() const { return m_output.load(std::memory_order_acquire); }
    // An INTA cycle: the vector of the highest-priority request (ISR/IRR updated, the slave
    // acknowledged through the cascade), or the spurious IRQ7/IRQ15 vector when none is left.
    int acknowledge();
    // Called whenever the INT output changes. Set before the VM runs.
    void set_output_handler(OutputHandler handler);

    // Snapshots (arch/x86/machine_state.h), master then slave, in KVM's meanings: last_irr holds
    // the input levels, init_state the ICW expected next (0: operational, 1-3: ICW2-ICW4), init4
    // whether ICW4 is expected, with ICW1's single-mode bit (SNGL) in bit 1 (KVM's PIC has no
    // single mode; no guest uses it). ICW3 is not kept: nothing reads it back. restore()
    // recomputes the INT output, which reaches the BSP's LINT0 through the output handler.
    std::array<PicChipState, 2> save() const;
    void restore(const std::array<PicChipState, 2>& state);

private:
    struct Chip {
        uint8_t irr { 0 };
        uint8_t isr { 0 };
        uint8_t imr { 0 };
        uint8_t lines { 0 }; // input levels
        uint8_t elcr { 0 }; // 1 = level-sensitive
        uint8_t elcr_mask { 0 };
        uint8_t vector_base { 0 };
        uint8_t priority_base { 0 }; // the IR with the highest priority (rotation)
        uint8_t icw3 { 0 };
        int init_step { 0 }; // 0 = operational, 1-3 = expecting ICW2-ICW4
        bool icw4_needed { false };
        bool single { false };
        bool auto_eoi { false };
        bool rotate_on_auto_eoi { false };
        bool special_fully_nested { false };
        bool special_mask { false };
        bool read_isr { false };
        bool poll { false };
    };

    static PicChipState save_chip(const Chip& chip);
    static void restore_chip(Chip& chip, const PicChipState& state, uint8_t default_elcr_mask);
    static int priority_of(const Chip& chip, int irq) { return (irq - chip.priority_base) & 7; }
    // The highest-priority unmasked request the chip would pass to its INT output, or -1.
    static int granted_request(const Chip& chip, bool is_master);
    // Highest-priority in-service IR (special mask mode hides masked ones), or -1.
    static int highest_in_service(const Chip& chip);
    static void ack_chip(Chip& chip, int irq);
    static void set_line(Chip& chip, int irq, bool level);
    void write_command(Chip& chip, uint8_t value);
    void write_data(Chip& chip, uint8_t value);
    uint8_t read_command(Chip& chip, bool is_master);
    void write_ocw2(Chip& chip, uint8_t value);
    // Recomputes the cascade input and the master's INT output; calls the handler on change.
    void update();
    void log_oddity(const char* what, uint8_t value);

    mutable std::mutex m_mutex;
    Chip m_master;
    Chip m_slave;
    OutputHandler m_handler;
    std::atomic<bool> m_output { false };
    uint64_t m_log_count { 0 };
};

} // namespace vessel
