#include "devices/i8042.h"

#include <algorithm>

#include "base/log.h"

#include "base/log_limit.h"

namespace vessel {

namespace {

// Status register bits.
constexpr uint8_t kStatusOutputFull = 0x01;
constexpr uint8_t kStatusSystem = 0x04;
constexpr uint8_t kStatusCommand = 0x08; // last write went to the command port
constexpr uint8_t kStatusUnlocked = 0x10; // keyboard not inhibited by the key lock
constexpr uint8_t kStatusAuxData = 0x20;

// Command byte (controller RAM byte 0) bits.
constexpr uint8_t kCtrKbdInt = 0x01;
constexpr uint8_t kCtrSystem = 0x04;
constexpr uint8_t kCtrKbdDisable = 0x10;
constexpr uint8_t kCtrAuxDisable = 0x20;
constexpr uint8_t kCtrTranslate = 0x40;
constexpr uint8_t kCtrMask = 0x7f; // bit 7 is reserved (0)

// Controller commands.
constexpr uint8_t kCmdReadRamFirst = 0x20; // 0x20: read command byte
constexpr uint8_t kCmdReadRamLast = 0x3f;
constexpr uint8_t kCmdWriteRamFirst = 0x60; // 0x60: write command byte
constexpr uint8_t kCmdWriteRamLast = 0x7f;
constexpr uint8_t kCmdAuxDisable = 0xa7;
constexpr uint8_t kCmdAuxEnable = 0xa8;
constexpr uint8_t kCmdAuxTest = 0xa9;
constexpr uint8_t kCmdSelfTest = 0xaa;
constexpr uint8_t kCmdKbdTest = 0xab;
constexpr uint8_t kCmdKbdDisable = 0xad;
constexpr uint8_t kCmdKbdEnable = 0xae;
constexpr uint8_t kCmdReadOutputPort = 0xd0;
constexpr uint8_t kCmdWriteOutputPort = 0xd1;
constexpr uint8_t kCmdWriteKbdBuffer = 0xd2;
constexpr uint8_t kCmdWriteAuxBuffer = 0xd3;
constexpr uint8_t kCmdWriteAux = 0xd4;
constexpr uint8_t kCmdPulseFirst = 0xf0; // 0xf0-0xff: pulse output lines (bit clear = pulse)

constexpr uint8_t kSelfTestOk = 0x55;
constexpr uint8_t kInterfaceTestOk = 0x00;
constexpr uint8_t kAuxClockStuckLow = 0x01;
constexpr uint8_t kOutputPortReset = 0x01; // 0 = reset asserted
constexpr uint8_t kOutputPortA20 = 0x02;

// Keyboard commands and replies.
constexpr uint8_t kKbdSetLeds = 0xed;
constexpr uint8_t kKbdEcho = 0xee;
constexpr uint8_t kKbdScancodeSet = 0xf0;
constexpr uint8_t kKbdIdentify = 0xf2;
constexpr uint8_t kKbdTypematic = 0xf3;
constexpr uint8_t kKbdEnable = 0xf4;
constexpr uint8_t kKbdDisable = 0xf5;
constexpr uint8_t kKbdDefaults = 0xf6;
constexpr uint8_t kKbdSet3First = 0xf7; // 0xf7-0xfd: scan code set 3 key types (ignored)
constexpr uint8_t kKbdSet3Last = 0xfd;
constexpr uint8_t kKbdResend = 0xfe;
constexpr uint8_t kKbdReset = 0xff;
constexpr uint8_t kKbdAck = 0xfa;
constexpr uint8_t kKbdSelfTestPassed = 0xaa;
constexpr uint8_t kKbdIdFirst = 0xab;
constexpr uint8_t kKbdIdSecond = 0x83; // MF2 keyboard
constexpr uint8_t kKbdError = 0xfe; // "resend": the reply to a command it does not know

constexpr uint8_t kDefaultTypematic = 0x2b; // 10.9 characters/s after 500 ms

// The controller's set 2 → set 1 translation (the 8042's table), for the bytes this keyboard can
// send: scan code set numbers (replies to 0xf0 0x00), the identify reply's 0x83, and the keys of
// Ctrl+Alt+Del (left Ctrl 0x14 → 0x1d, left Alt 0x11 → 0x38, Delete e0 71 → e0 53). Replies such
// as ACK and the self-test result pass unchanged.
uint8_t translate(uint8_t value)
{
    switch (value) {
    case 0x01: return 0x43;
    case 0x02:
    case 0x83: return 0x41;
    case 0x03: return 0x3f;
    case 0x14: return 0x1d;
    case 0x11: return 0x38;
    case 0x71: return 0x53;
    default: return value;
    }
}

constexpr uint8_t kSet2Break = 0xf0;
constexpr uint8_t kSet2Extended = 0xe0;

} // namespace

I8042::I8042(IrqLine kbd_irq, StopFn stop)
    : m_irq(std::move(kbd_irq))
    , m_stop(std::move(stop))
{
    load(State {});
}

void I8042::report_metrics(MetricsReport& out) const
{
    out.counter("read_count", m_reads.get());
    out.counter("write_count", m_writes.get());
    out.counter("reset_count", m_resets.get());
}

void I8042::read(uint64_t offset, std::span<uint8_t> data)
{
    m_reads.add();
    std::lock_guard lock(m_mutex);
    for (size_t i = 0; i < data.size(); ++i) {
        switch (offset + i) {
        case kDataOffset: data[i] = read_data(); break;
        case kCommandOffset: data[i] = status(); break;
        default: data[i] = 0xff; break;
        }
    }
}

void I8042::write(uint64_t offset, std::span<const uint8_t> data)
{
    m_writes.add();
    Action action = Action::None;
    {
        std::lock_guard lock(m_mutex);
        for (size_t i = 0; i < data.size(); ++i) {
            Action result = Action::None;
            if (offset + i == kDataOffset)
                result = write_data(data[i]);
            else if (offset + i == kCommandOffset)
                result = write_command(data[i]);
            if (result != Action::None)
                action = result;
        }
        refill();
        update_irq();
    }
    run(action);
}

void I8042::run(Action action)
{
    if (action != Action::Reset)
        return;
    log_debug("i8042: guest pulled the reset line");
    m_resets.add();
    if (m_stop)
        m_stop(StopRequest { StopReason::Reset, 0 });
}

uint8_t I8042::status() const
{
    uint8_t value = kStatusUnlocked;
    if (m_output_full) {
        value |= kStatusOutputFull;
        if (m_output.source == Source::Aux)
            value |= kStatusAuxData;
    }
    if (command_byte() & kCtrSystem)
        value |= kStatusSystem;
    if (m_last_write_was_command)
        value |= kStatusCommand;
    // The input buffer is never full (IBF clear): writes are handled immediately.
    return value;
}

uint8_t I8042::read_data()
{
    // An empty output buffer reads back its last byte.
    const uint8_t value = m_output.value;
    if (m_output_full) {
        m_output_full = false;
        update_irq(); // lower the line before the next byte raises it again: one edge per byte
        refill();
        update_irq();
    }
    return value;
}

I8042::Action I8042::write_command(uint8_t command)
{
    m_last_write_was_command = true;
    m_pending_command = 0; // a new command abandons one still waiting for its data byte
    if (command >= kCmdReadRamFirst && command <= kCmdReadRamLast) {
        queue_controller(m_ram[command - kCmdReadRamFirst]);
        return Action::None;
    }
    if (command >= kCmdWriteRamFirst && command <= kCmdWriteRamLast) {
        m_pending_command = command;
        return Action::None;
    }
    if (command >= kCmdPulseFirst) {
        // Bits 0-3 select lines to pulse low; output line 0 is the CPU reset.
        return (command & kOutputPortReset) ? Action::None : Action::Reset;
    }
    switch (command) {
    case kCmdAuxDisable: command_byte() |= kCtrAuxDisable; break;
    case kCmdAuxEnable: log_oddity("aux port enable ignored (no aux device)", command); break;
    case kCmdAuxTest: queue_controller(kAuxClockStuckLow); break;
    case kCmdSelfTest:
        command_byte() |= kCtrSystem;
        queue_controller(kSelfTestOk);
        break;
    case kCmdKbdTest: queue_controller(kInterfaceTestOk); break;
    case kCmdKbdDisable: command_byte() |= kCtrKbdDisable; break;
    case kCmdKbdEnable: command_byte() &= static_cast<uint8_t>(~kCtrKbdDisable); break;
    case kCmdReadOutputPort: queue_controller(m_output_port); break;
    case kCmdWriteOutputPort:
    case kCmdWriteKbdBuffer:
    case kCmdWriteAuxBuffer:
    case kCmdWriteAux: m_pending_command = command; break;
    default: log_oddity("unknown controller command", command); break;
    }
    return Action::None;
}

I8042::Action I8042::write_data(uint8_t value)
{
    m_last_write_was_command = false;
    const uint8_t command = m_pending_command;
    m_pending_command = 0;
    if (command >= kCmdWriteRamFirst && command <= kCmdWriteRamLast) {
        if (command == kCmdWriteRamFirst)
            set_command_byte(value);
        else
            m_ram[command - kCmdWriteRamFirst] = value;
        return Action::None;
    }
    switch (command) {
    case kCmdWriteOutputPort: return write_output_port(value);
    case kCmdWriteKbdBuffer: queue_controller(value, Source::Keyboard); return Action::None;
    case kCmdWriteAuxBuffer: queue_controller(value, Source::Aux); return Action::None;
    case kCmdWriteAux: log_oddity("byte for the aux device dropped (no aux device)", value); return Action::None;
    default: break;
    }
    // No controller command pending: the byte goes to the keyboard. Sending to the keyboard
    // enables its interface again.
    command_byte() &= static_cast<uint8_t>(~kCtrKbdDisable);
    keyboard_command(value);
    return Action::None;
}

I8042::Action I8042::write_output_port(uint8_t value)
{
    m_output_port = value;
    if (!(value & kOutputPortA20))
        log_oddity("A20 disable ignored", value);
    return (value & kOutputPortReset) ? Action::None : Action::Reset;
}

void I8042::set_command_byte(uint8_t value)
{
    // There is no aux port: its disable bit stays set whatever the guest writes.
    command_byte() = static_cast<uint8_t>((value & kCtrMask) | kCtrAuxDisable);
}

void I8042::keyboard_command(uint8_t value)
{
    const auto send = [this](uint8_t byte) {
        m_kbd_last_sent = byte;
        queue_keyboard(byte);
    };
    const auto defaults = [this] {
        m_kbd_scancode_set = 2;
        m_kbd_leds = 0;
        m_kbd_typematic = kDefaultTypematic;
    };

    // The parameter of a previous command, unless the byte is itself a command (a keyboard
    // abandons a parameterised command when it receives a new one instead).
    if (m_kbd_pending_command != 0 && value < kKbdSetLeds) {
        const uint8_t command = m_kbd_pending_command;
        m_kbd_pending_command = 0;
        switch (command) {
        case kKbdSetLeds:
            m_kbd_leds = value & 0x07;
            send(kKbdAck);
            return;
        case kKbdTypematic:
            m_kbd_typematic = value & 0x7f;
            send(kKbdAck);
            return;
        case kKbdScancodeSet:
            if (value == 0) {
                send(kKbdAck);
                send(m_kbd_scancode_set);
            } else if (value <= 3) {
                m_kbd_scancode_set = value;
                send(kKbdAck);
            } else {
                send(kKbdError);
            }
            return;
        default: break;
        }
    }
    m_kbd_pending_command = 0;

    switch (value) {
    case kKbdSetLeds:
    case kKbdTypematic:
    case kKbdScancodeSet:
        m_kbd_pending_command = value;
        send(kKbdAck);
        break;
    case kKbdEcho: send(kKbdEcho); break;
    case kKbdIdentify:
        send(kKbdAck);
        send(kKbdIdFirst);
        send(kKbdIdSecond);
        break;
    case kKbdEnable:
        m_kbd_scanning = true;
        send(kKbdAck);
        break;
    case kKbdDisable:
        m_kbd_scanning = false;
        defaults();
        send(kKbdAck);
        break;
    case kKbdDefaults:
        defaults();
        send(kKbdAck);
        break;
    case kKbdResend: queue_keyboard(m_kbd_last_sent); break;
    case kKbdReset:
        m_kbd_queue.clear();
        m_xlate_break = false;
        defaults();
        m_kbd_scanning = true;
        send(kKbdAck);
        send(kKbdSelfTestPassed);
        break;
    default:
        if (value >= kKbdSet3First && value <= kKbdSet3Last) {
            send(kKbdAck);
            break;
        }
        log_oddity("unknown keyboard command", value);
        send(kKbdError);
        break;
    }
}

void I8042::queue_controller(uint8_t value, Source source)
{
    if (m_controller_queue.size() >= kQueueSize) {
        log_oddity("controller output queue full, reply dropped", value);
        return;
    }
    m_controller_queue.push_back(QueuedByte { value, source });
}

void I8042::queue_keyboard(uint8_t value)
{
    if (m_kbd_queue.size() >= kQueueSize) {
        log_oddity("keyboard output queue full, byte dropped", value);
        return;
    }
    m_kbd_queue.push_back(value);
}

void I8042::refill()
{
    if (m_output_full)
        return;
    if (!m_controller_queue.empty()) {
        m_output = m_controller_queue.front();
        m_controller_queue.pop_front();
        m_output_full = true;
        return;
    }
    // The keyboard can only send while its interface is enabled.
    if (!m_kbd_queue.empty() && !(command_byte() & kCtrKbdDisable)) {
        uint8_t value = m_kbd_queue.front();
        m_kbd_queue.pop_front();
        if (command_byte() & kCtrTranslate) {
            // Set 1 has no break prefix: the controller swallows 0xf0 and sets bit 7 of the
            // translated code that follows it.
            if (value == kSet2Break && !m_kbd_queue.empty()) {
                m_xlate_break = true;
                value = m_kbd_queue.front();
                m_kbd_queue.pop_front();
            }
            value = translate(value);
            if (m_xlate_break && value != kSet2Extended) {
                value |= 0x80;
                m_xlate_break = false;
            }
        }
        m_output = QueuedByte { value, Source::Keyboard };
        m_output_full = true;
    }
}

void I8042::update_irq(IrqSync sync)
{
    // IRQ 1 follows "output buffer holds keyboard-side data" when the command byte enables it.
    // Aux data would raise IRQ 12, which this model does not have.
    const bool level = m_output_full && m_output.source == Source::Keyboard && (command_byte() & kCtrKbdInt);
    if (level == m_irq_level && sync == IrqSync::IfChanged)
        return;
    m_irq_level = level;
    m_irq.set_level(level);
}

void I8042::log_oddity(const char* what, uint8_t value)
{
    if (log_allowed(m_log_count))
        log_debug("i8042: {} ({:#04x})", what, value);
}

I8042::State I8042::save() const
{
    std::lock_guard lock(m_mutex);
    State state;
    state.ram = m_ram;
    state.output_port = m_output_port;
    state.pending_command = m_pending_command;
    state.last_write_was_command = m_last_write_was_command;
    state.output_full = m_output_full;
    state.output = m_output;
    state.controller_queue.assign(m_controller_queue.begin(), m_controller_queue.end());
    state.kbd_pending_command = m_kbd_pending_command;
    state.kbd_scancode_set = m_kbd_scancode_set;
    state.kbd_leds = m_kbd_leds;
    state.kbd_typematic = m_kbd_typematic;
    state.kbd_scanning = m_kbd_scanning;
    state.kbd_last_sent = m_kbd_last_sent;
    state.kbd_queue.assign(m_kbd_queue.begin(), m_kbd_queue.end());
    state.xlate_break = m_xlate_break;
    return state;
}

void I8042::restore(const State& state)
{
    std::lock_guard lock(m_mutex);
    load(state);
    update_irq(IrqSync::Always);
}

void I8042::load(const State& state)
{
    m_ram = state.ram;
    set_command_byte(state.ram[0]);
    m_output_port = state.output_port;
    m_pending_command = state.pending_command;
    m_last_write_was_command = state.last_write_was_command;
    m_output_full = state.output_full;
    m_output = state.output;
    // Bound what a (possibly corrupt) snapshot can queue.
    const size_t controller_bytes = std::min(state.controller_queue.size(), kQueueSize);
    m_controller_queue.assign(
        state.controller_queue.begin(), state.controller_queue.begin() + static_cast<std::ptrdiff_t>(controller_bytes));
    m_kbd_pending_command = state.kbd_pending_command;
    m_kbd_scancode_set = state.kbd_scancode_set;
    m_kbd_leds = state.kbd_leds;
    m_kbd_typematic = state.kbd_typematic;
    m_kbd_scanning = state.kbd_scanning;
    m_kbd_last_sent = state.kbd_last_sent;
    const size_t kbd_bytes = std::min(state.kbd_queue.size(), kQueueSize);
    m_kbd_queue.assign(state.kbd_queue.begin(), state.kbd_queue.begin() + static_cast<std::ptrdiff_t>(kbd_bytes));
    m_xlate_break = state.xlate_break;
}

bool I8042::press_ctrl_alt_del()
{
    // Set 2: Ctrl, Alt, Delete down, then up in reverse order.
    static constexpr uint8_t kSequence[]
        = { 0x14, 0x11, kSet2Extended, 0x71, kSet2Extended, kSet2Break, 0x71, kSet2Break, 0x11, kSet2Break, 0x14 };
    std::lock_guard lock(m_mutex);
    if (!m_kbd_scanning || m_kbd_queue.size() + sizeof(kSequence) > kQueueSize)
        return false;
    for (uint8_t b : kSequence)
        m_kbd_queue.push_back(b);
    refill();
    update_irq();
    return true;
}

} // namespace vessel
