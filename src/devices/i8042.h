// The i8042 keyboard controller with an MF2 keyboard behind it, registered as one port range
// 0x60..0x64 (layout::kI8042Port, length 5): offset 0 is the data port, offset 4 the status
// (read) / command (write) port; offsets 1..3 read 0xff and ignore writes. Registering that
// whole range hides port 0x61 from any other device; I8042CommandPort (below) lets a VMM
// register 0x60 and 0x64 separately instead.
//
// What it is for: letting Linux's i8042 and atkbd drivers probe cleanly, and rebooting through
// the controller's reset line (command 0xfe, a pulse command with bit 0 clear, or an output-port
// write with bit 0 clear), which calls the StopFn with StopReason::Reset.
//
// Key presses come only from the VMM: press_ctrl_alt_del() (the API's SendCtrlAltDel) makes the
// keyboard send Ctrl+Alt+Del in scan code set 2, which the controller translates to set 1 when
// the command byte asks for it (break codes included). Not modelled: a host keyboard; the aux
// (mouse) port. Nothing is attached to it: its disable bit in the command byte always
// reads 1 and 0xa8 cannot clear it, 0xa9 reports "clock line stuck low" (0x01) and 0xd4 bytes
// are dropped, so Linux's i8042_check_aux() gives up at once and silently. The 0xd3 loop-back
// still works (it is internal to the controller) but raises no IRQ 12. A20 is always enabled.
#pragma once

#include <array>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <vector>

#include "base/counters.h"
#include "bus/bus.h"
#include "devices/irq.h"
#include "devices/vm_control.h"

namespace vessel {

class I8042 final : public BusDevice {
public:
    static constexpr uint64_t kDataOffset = 0;
    static constexpr uint64_t kCommandOffset = 4;
    static constexpr uint64_t kRangeLength = 5;
    static constexpr size_t kQueueSize = 16; // bytes buffered by the controller and the keyboard

    // Who produced the byte in the output buffer.
    enum class Source : uint8_t { Keyboard, Aux };

    struct QueuedByte {
        uint8_t value { 0 };
        Source source { Source::Keyboard };

        bool operator==(const QueuedByte&) const = default;
    };

    // Defaults are the power-on values.
    struct State {
        std::array<uint8_t, 32> ram { 0x65 }; // controller RAM; byte 0 is the command byte:
                                              // KBDINT, SYS, AUXDIS, XLATE
        uint8_t output_port { 0x03 }; // bit 0: reset line (1 = running), bit 1: A20
        uint8_t pending_command { 0 }; // controller command awaiting its data byte
        bool last_write_was_command { false }; // status bit 3
        bool output_full { false };
        QueuedByte output; // the output buffer (also what port 0x60 reads
                           // when it is empty)
        std::vector<QueuedByte> controller_queue; // controller replies not yet in the buffer
        // The keyboard.
        uint8_t kbd_pending_command { 0 }; // keyboard command awaiting its parameter
        uint8_t kbd_scancode_set { 2 };
        uint8_t kbd_leds { 0 };
        uint8_t kbd_typematic { 0x2b };
        bool kbd_scanning { true };
        uint8_t kbd_last_sent { 0 }; // for the resend command
        std::vector<uint8_t> kbd_queue; // bytes the keyboard has yet to send
        bool xlate_break { false }; // translation saw a set 2 break prefix (0xf0)

        bool operator==(const State&) const = default;
    };

    // `kbd_irq` is IRQ 1; `stop` receives StopReason::Reset when the guest pulls the reset line
    // (called on the vCPU thread, with no device lock held).
    I8042(IrqLine kbd_irq, StopFn stop);

    std::string_view name() const override { return "i8042"; }
    void read(uint64_t offset, std::span<uint8_t> data) override;
    void write(uint64_t offset, std::span<const uint8_t> data) override;

    // The keyboard sends Ctrl+Alt+Del (make and break codes) if it is scanning; false if it is
    // not (disabled by the guest) or its buffer is too full to take the sequence.
    bool press_ctrl_alt_del();

    // Firecracker's i8042 metrics: read_count/write_count (data and command port accesses),
    // reset_count (the guest pulled the reset line).
    void report_metrics(MetricsReport& out) const;

    State save() const;
    // Replaces the state and drives the IRQ line to match it. Call while the vCPUs are stopped.
    void restore(const State& state);

private:
    enum class IrqSync { IfChanged, Always };
    enum class Action { None, Reset };

    void load(const State& state);
    uint8_t status() const;
    uint8_t read_data();
    Action write_command(uint8_t command);
    Action write_data(uint8_t value);
    Action write_output_port(uint8_t value);
    void keyboard_command(uint8_t value);
    void queue_controller(uint8_t value, Source source = Source::Keyboard);
    void queue_keyboard(uint8_t value);
    // Moves the next pending byte into the empty output buffer.
    void refill();
    void update_irq(IrqSync sync = IrqSync::IfChanged);
    uint8_t& command_byte() { return m_ram[0]; }
    uint8_t command_byte() const { return m_ram[0]; }
    void set_command_byte(uint8_t value);
    void run(Action action);
    void log_oddity(const char* what, uint8_t value);

    IrqLine m_irq;
    StopFn m_stop;

    mutable std::mutex m_mutex;
    std::array<uint8_t, 32> m_ram {};
    uint8_t m_output_port { 0 };
    uint8_t m_pending_command { 0 };
    bool m_last_write_was_command { false };
    bool m_output_full { false };
    QueuedByte m_output;
    std::deque<QueuedByte> m_controller_queue;
    uint8_t m_kbd_pending_command { 0 };
    uint8_t m_kbd_scancode_set { 2 };
    uint8_t m_kbd_leds { 0 };
    uint8_t m_kbd_typematic { 0 };
    bool m_kbd_scanning { true };
    uint8_t m_kbd_last_sent { 0 };
    std::deque<uint8_t> m_kbd_queue;
    bool m_xlate_break { false };
    Counter m_reads;
    Counter m_writes;
    Counter m_resets;
    bool m_irq_level { false };
    uint64_t m_log_count { 0 };
};

// The controller's status/command port as a bus device of its own (its offset 0 is the i8042's
// offset 4), for a VMM that registers port 0x60 (the I8042, length 1) and port 0x64 (this,
// length 1) separately so that port 0x61 (PC speaker / PIT channel 2 gate, NMI status) stays
// free for the device that owns it.
class I8042CommandPort final : public BusDevice {
public:
    explicit I8042CommandPort(std::shared_ptr<I8042> controller)
        : m_controller(std::move(controller))
    {
    }

    std::string_view name() const override { return "i8042-command"; }
    void read(uint64_t offset, std::span<uint8_t> data) override
    {
        m_controller->read(offset + I8042::kCommandOffset, data);
    }
    void write(uint64_t offset, std::span<const uint8_t> data) override
    {
        m_controller->write(offset + I8042::kCommandOffset, data);
    }

private:
    std::shared_ptr<I8042> m_controller;
};

} // namespace vessel
