#include "devices/irqchip/pic.h"

#include "base/log.h"
#include "base/log_limit.h"

namespace vessel {

namespace {

// ICW1 (command port, bit 4 set).
constexpr uint8_t kIcw1 = 0x10;
constexpr uint8_t kIcw1Ic4 = 0x01;
constexpr uint8_t kIcw1Single = 0x02;
constexpr uint8_t kIcw1Ltim = 0x08;
// OCW3 (command port, bits 4:3 = 01).
constexpr uint8_t kOcw3 = 0x08;
constexpr uint8_t kOcw3ReadRegister = 0x02;
constexpr uint8_t kOcw3ReadIsr = 0x01;
constexpr uint8_t kOcw3Poll = 0x04;
constexpr uint8_t kOcw3SetSpecialMask = 0x40;
constexpr uint8_t kOcw3SpecialMask = 0x20;
// ICW4.
constexpr uint8_t kIcw4Upm = 0x01;
constexpr uint8_t kIcw4AutoEoi = 0x02;
constexpr uint8_t kIcw4Sfnm = 0x10;

// Lines that can be level-sensitive (ELCR): never the timer, keyboard or cascade on the master,
// nor the RTC (IRQ8) or FPU (IRQ13) on the slave.
constexpr uint8_t kElcrMasterMask = 0xf8;
constexpr uint8_t kElcrSlaveMask = 0xde;

constexpr int kSpuriousIrq = 7;

} // namespace

Pic::Pic()
{
    m_master.elcr_mask = kElcrMasterMask;
    m_slave.elcr_mask = kElcrSlaveMask;
    // With no BIOS to program them, the chips come up with every line masked: an unprogrammed
    // PIC (vector base 0) must never inject vectors 0-7 into a guest that enables interrupts
    // without touching it. ICW1 clears the masks as on the chip.
    m_master.imr = 0xff;
    m_slave.imr = 0xff;
}

void Pic::set_output_handler(OutputHandler handler)
{
    std::lock_guard lock(m_mutex);
    m_handler = std::move(handler);
}

int Pic::granted_request(const Chip& chip, bool is_master)
{
    const uint8_t requests = chip.irr & ~chip.imr;
    if (!requests)
        return -1;
    int request = -1;
    for (int i = 0; i < 8; ++i) {
        const int irq = (chip.priority_base + i) & 7;
        if (requests & (1u << irq)) {
            request = irq;
            break;
        }
    }
    const int in_service = highest_in_service(chip);
    if (in_service < 0 || priority_of(chip, request) < priority_of(chip, in_service))
        return request;
    // Special fully nested mode: the slave may interrupt again while one of its IRQs is served.
    if (is_master && chip.special_fully_nested && request == static_cast<int>(kCascadeLine) && in_service == request)
        return request;
    return -1;
}

int Pic::highest_in_service(const Chip& chip)
{
    const uint8_t isr = chip.special_mask ? chip.isr & ~chip.imr : chip.isr;
    if (!isr)
        return -1;
    for (int i = 0; i < 8; ++i) {
        const int irq = (chip.priority_base + i) & 7;
        if (isr & (1u << irq))
            return irq;
    }
    return -1;
}

void Pic::ack_chip(Chip& chip, int irq)
{
    const uint8_t mask = static_cast<uint8_t>(1u << irq);
    if (!(chip.elcr & mask))
        chip.irr &= ~mask; // an edge request is consumed; a level one stays while the line is high
    if (chip.auto_eoi) {
        if (chip.rotate_on_auto_eoi)
            chip.priority_base = static_cast<uint8_t>((irq + 1) & 7);
    } else {
        chip.isr |= mask;
    }
}

void Pic::set_line(Chip& chip, int irq, bool level)
{
    const uint8_t mask = static_cast<uint8_t>(1u << irq);
    if (chip.elcr & mask) {
        if (level)
            chip.irr |= mask;
        else
            chip.irr &= ~mask;
    } else if (level && !(chip.lines & mask)) {
        chip.irr |= mask; // rising edge; the request stays latched when the line drops
    }
    if (level)
        chip.lines |= mask;
    else
        chip.lines &= ~mask;
}

void Pic::set_irq(unsigned line, bool level)
{
    if (line >= kLines || line == kCascadeLine)
        return;
    std::lock_guard lock(m_mutex);
    if (line < 8)
        set_line(m_master, static_cast<int>(line), level);
    else
        set_line(m_slave, static_cast<int>(line - 8), level);
    update();
}

int Pic::acknowledge()
{
    std::lock_guard lock(m_mutex);
    int vector;
    const int irq = granted_request(m_master, true);
    if (irq < 0) {
        vector = m_master.vector_base + kSpuriousIrq; // no ISR bit set for a spurious interrupt
    } else {
        ack_chip(m_master, irq);
        if (irq == static_cast<int>(kCascadeLine) && !m_master.single) {
            const int slave_irq = granted_request(m_slave, false);
            if (slave_irq < 0) {
                vector = m_slave.vector_base + kSpuriousIrq;
            } else {
                ack_chip(m_slave, slave_irq);
                vector = m_slave.vector_base + slave_irq;
            }
        } else {
            vector = m_master.vector_base + irq;
        }
    }
    update();
    return vector;
}

void Pic::update()
{
    if (!m_master.single) {
        // The slave's INT output drives IR2 like a level.
        const bool slave_out = granted_request(m_slave, false) >= 0;
        constexpr uint8_t cascade = 1u << kCascadeLine;
        m_master.irr = static_cast<uint8_t>((m_master.irr & ~cascade) | (slave_out ? cascade : 0));
        m_master.lines = static_cast<uint8_t>((m_master.lines & ~cascade) | (slave_out ? cascade : 0));
    }
    const bool out = granted_request(m_master, true) >= 0;
    if (out != m_output.load(std::memory_order_relaxed)) {
        m_output.store(out, std::memory_order_release);
        if (m_handler)
            m_handler(out);
    }
}

void Pic::read(uint64_t offset, std::span<uint8_t> data)
{
    std::lock_guard lock(m_mutex);
    for (size_t i = 0; i < data.size(); ++i) {
        switch (offset + i) {
        case kMasterCommand: data[i] = read_command(m_master, true); break;
        case kMasterData: data[i] = m_master.imr; break;
        case kSlaveCommand: data[i] = read_command(m_slave, false); break;
        case kSlaveData: data[i] = m_slave.imr; break;
        case kElcrMaster: data[i] = m_master.elcr; break;
        case kElcrSlave: data[i] = m_slave.elcr; break;
        default: data[i] = 0xff; break;
        }
    }
    update();
}

void Pic::write(uint64_t offset, std::span<const uint8_t> data)
{
    std::lock_guard lock(m_mutex);
    for (size_t i = 0; i < data.size(); ++i) {
        const uint8_t value = data[i];
        switch (offset + i) {
        case kMasterCommand: write_command(m_master, value); break;
        case kMasterData: write_data(m_master, value); break;
        case kSlaveCommand: write_command(m_slave, value); break;
        case kSlaveData: write_data(m_slave, value); break;
        case kElcrMaster:
        case kElcrSlave: {
            Chip& chip = offset + i == kElcrMaster ? m_master : m_slave;
            chip.elcr = value & chip.elcr_mask;
            // Level lines request while high; edge lines keep what they latched.
            chip.irr = static_cast<uint8_t>((chip.irr & ~chip.elcr) | (chip.lines & chip.elcr));
            break;
        }
        default: break;
        }
        update();
    }
}

uint8_t Pic::read_command(Chip& chip, bool is_master)
{
    if (chip.poll) {
        // Poll command: the read acts as an INTA for this chip and returns 0x80 | IR.
        chip.poll = false;
        const int irq = granted_request(chip, is_master);
        if (irq < 0)
            return 0;
        ack_chip(chip, irq);
        return static_cast<uint8_t>(0x80 | irq);
    }
    return chip.read_isr ? chip.isr : chip.irr;
}

void Pic::write_command(Chip& chip, uint8_t value)
{
    if (value & kIcw1) {
        // ICW1 starts initialisation: masks, requests and in-service bits clear, priorities reset,
        // IRR selected for reading; edge lines need a new rising edge.
        const uint8_t elcr = chip.elcr;
        const uint8_t elcr_mask = chip.elcr_mask;
        const uint8_t lines = chip.lines;
        chip = Chip {};
        chip.elcr = elcr;
        chip.elcr_mask = elcr_mask;
        chip.lines = lines;
        chip.irr = lines & elcr;
        chip.icw4_needed = value & kIcw1Ic4;
        chip.single = value & kIcw1Single;
        chip.init_step = 1;
        if (value & kIcw1Ltim)
            log_oddity("ICW1.LTIM (level-triggered mode) ignored; the ELCR decides", value);
        return;
    }
    if (value & kOcw3) {
        if (value & kOcw3Poll)
            chip.poll = true;
        if (value & kOcw3ReadRegister)
            chip.read_isr = value & kOcw3ReadIsr;
        if (value & kOcw3SetSpecialMask)
            chip.special_mask = value & kOcw3SpecialMask;
        return;
    }
    write_ocw2(chip, value);
}

void Pic::write_ocw2(Chip& chip, uint8_t value)
{
    const int level = value & 7;
    const auto clear_isr = [&](int irq) { chip.isr &= static_cast<uint8_t>(~(1u << irq)); };
    switch (value >> 5) {
    case 0: chip.rotate_on_auto_eoi = false; break;
    case 4: chip.rotate_on_auto_eoi = true; break;
    case 1: // non-specific EOI
    case 5: { // rotate on non-specific EOI
        const int irq = highest_in_service(chip);
        if (irq >= 0) {
            clear_isr(irq);
            if (value >> 5 == 5)
                chip.priority_base = static_cast<uint8_t>((irq + 1) & 7);
        }
        break;
    }
    case 3: clear_isr(level); break; // specific EOI
    case 7: // rotate on specific EOI
        clear_isr(level);
        chip.priority_base = static_cast<uint8_t>((level + 1) & 7);
        break;
    case 6: chip.priority_base = static_cast<uint8_t>((level + 1) & 7); break; // set priority
    default: break; // 2: no operation
    }
}

void Pic::write_data(Chip& chip, uint8_t value)
{
    switch (chip.init_step) {
    case 0: chip.imr = value; break; // OCW1
    case 1: // ICW2
        chip.vector_base = value & 0xf8;
        chip.init_step = !chip.single ? 2 : chip.icw4_needed ? 3 : 0;
        break;
    case 2: // ICW3
        chip.icw3 = value;
        chip.init_step = chip.icw4_needed ? 3 : 0;
        break;
    case 3: // ICW4
        chip.auto_eoi = value & kIcw4AutoEoi;
        chip.special_fully_nested = value & kIcw4Sfnm;
        if (!(value & kIcw4Upm))
            log_oddity("ICW4 selects 8080/85 mode; running in 8086 mode", value);
        chip.init_step = 0;
        break;
    default: break;
    }
}

void Pic::log_oddity(const char* what, uint8_t value)
{
    if (log_allowed(m_log_count))
        log_debug("pic: {} ({:#04x})", what, value);
}

PicChipState Pic::save_chip(const Chip& chip)
{
    PicChipState s;
    s.last_irr = chip.lines;
    s.irr = chip.irr;
    s.imr = chip.imr;
    s.isr = chip.isr;
    s.priority_add = chip.priority_base;
    s.irq_base = chip.vector_base;
    s.read_reg_select = chip.read_isr;
    s.poll = chip.poll;
    s.special_mask = chip.special_mask;
    s.init_state = static_cast<uint8_t>(chip.init_step);
    s.auto_eoi = chip.auto_eoi;
    s.rotate_on_auto_eoi = chip.rotate_on_auto_eoi;
    s.special_fully_nested_mode = chip.special_fully_nested;
    s.init4 = static_cast<uint8_t>((chip.icw4_needed ? kIcw1Ic4 : 0) | (chip.single ? kIcw1Single : 0));
    s.elcr = chip.elcr;
    s.elcr_mask = chip.elcr_mask;
    return s;
}

void Pic::restore_chip(Chip& chip, const PicChipState& s, uint8_t default_elcr_mask)
{
    chip = Chip {};
    chip.lines = s.last_irr;
    chip.irr = s.irr;
    chip.imr = s.imr;
    chip.isr = s.isr;
    chip.priority_base = s.priority_add & 7;
    chip.vector_base = s.irq_base & 0xf8;
    chip.read_isr = s.read_reg_select != 0;
    chip.poll = s.poll != 0;
    chip.special_mask = s.special_mask != 0;
    chip.init_step = s.init_state <= 3 ? s.init_state : 0;
    chip.auto_eoi = s.auto_eoi != 0;
    chip.rotate_on_auto_eoi = s.rotate_on_auto_eoi != 0;
    chip.special_fully_nested = s.special_fully_nested_mode != 0;
    chip.icw4_needed = s.init4 & kIcw1Ic4;
    chip.single = s.init4 & kIcw1Single;
    chip.elcr_mask = s.elcr_mask ? s.elcr_mask : default_elcr_mask;
    chip.elcr = s.elcr & chip.elcr_mask;
}

std::array<PicChipState, 2> Pic::save() const
{
    std::lock_guard lock(m_mutex);
    return { save_chip(m_master), save_chip(m_slave) };
}

void Pic::restore(const std::array<PicChipState, 2>& state)
{
    std::lock_guard lock(m_mutex);
    restore_chip(m_master, state[0], kElcrMasterMask);
    restore_chip(m_slave, state[1], kElcrSlaveMask);
    update();
}

} // namespace vessel
