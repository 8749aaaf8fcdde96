#include "devices/irqchip/ioapic.h"

#include <algorithm>
#include <cstring>

#include "base/log.h"
#include "base/log_limit.h"

namespace vessel {

namespace {

// Guest-writable bits of an entry: vector, delivery mode, destination mode, polarity, trigger
// mode, mask (low half) and the destination byte. Delivery status and remote IRR are read-only.
constexpr uint64_t kRteWritable = 0xff000000'0001afffull;

} // namespace

IoApic::IoApic(ApicBus& bus, uint8_t id)
    : m_bus(bus)
    , m_id(id & 0x0f)
{
    for (auto& entry : m_entries)
        entry = kRteMasked;
}

void IoApic::read(uint64_t offset, std::span<uint8_t> data)
{
    std::memset(data.data(), 0, data.size());
    const uint64_t reg = offset & ~uint64_t { 3 };
    const uint64_t shift = offset & 3;
    if (shift + data.size() > 4)
        return; // accesses spanning two registers read as zero
    uint32_t value = 0;
    {
        std::lock_guard lock(m_mutex);
        if (reg == kRegSel)
            value = m_regsel;
        else if (reg == kWindow)
            value = read_register(m_regsel);
    }
    value >>= 8 * shift;
    std::memcpy(data.data(), &value, data.size());
}

void IoApic::write(uint64_t offset, std::span<const uint8_t> data)
{
    const uint64_t reg = offset & ~uint64_t { 3 };
    if ((offset & 3) != 0 || data.size() > 8) {
        std::lock_guard lock(m_mutex);
        if (log_allowed(m_log_count))
            log_debug("ioapic: unaligned {}-byte write at {:#x} ignored", data.size(), offset);
        return;
    }
    uint32_t value = 0;
    std::memcpy(&value, data.data(), std::min<size_t>(data.size(), 4));
    if (reg == kEoi) {
        eoi(static_cast<uint8_t>(value));
        return;
    }
    std::lock_guard lock(m_mutex);
    if (reg == kRegSel) {
        m_regsel = static_cast<uint8_t>(value);
    } else if (reg == kWindow) {
        if (data.size() < 4) {
            // A narrow write replaces the low bytes of the register.
            uint32_t old = read_register(m_regsel);
            std::memcpy(&old, data.data(), data.size());
            value = old;
        }
        write_register(m_regsel, value);
    }
}

uint32_t IoApic::read_register(uint8_t index) const
{
    switch (index) {
    case kRegId:
    case kRegArbitration: return static_cast<uint32_t>(m_id) << 24;
    case kRegVersion: return ((kPins - 1) << 16) | kVersion;
    default: break;
    }
    if (index >= kRegRedirection && index < kRegRedirection + 2 * kPins) {
        const uint64_t entry = m_entries[(index - kRegRedirection) / 2];
        return (index & 1) ? static_cast<uint32_t>(entry >> 32) : static_cast<uint32_t>(entry);
    }
    return 0;
}

void IoApic::write_register(uint8_t index, uint32_t value)
{
    if (index == kRegId) {
        m_id = (value >> 24) & 0x0f;
        return;
    }
    if (index < kRegRedirection || index >= kRegRedirection + 2 * kPins)
        return; // version and arbitration id are read-only
    const unsigned pin = (index - kRegRedirection) / 2;
    uint64_t entry = m_entries[pin];
    if (index & 1)
        entry = (entry & 0x00000000'ffffffffull) | (static_cast<uint64_t>(value) << 32);
    else
        entry = (entry & 0xffffffff'00000000ull) | value;
    write_entry(pin, entry);
}

void IoApic::write_entry(unsigned pin, uint64_t entry)
{
    uint64_t& current = m_entries[pin];
    current = (current & ~kRteWritable) | (entry & kRteWritable);
    // Remote IRR only means something for a level-triggered entry (Linux clears a stuck one by
    // switching the entry to edge and back).
    if (!(current & kRteLevel))
        current &= ~kRteRemoteIrr;
    service_level(pin);
}

void IoApic::set_irq(unsigned pin, bool level)
{
    if (pin >= kPins)
        return;
    std::lock_guard lock(m_mutex);
    const uint32_t mask = 1u << pin;
    const bool was = m_lines & mask;
    if (level)
        m_lines |= mask;
    else
        m_lines &= ~mask;
    const uint64_t entry = m_entries[pin];
    if (entry & kRteLevel)
        service_level(pin);
    else if (level && !was && !(entry & kRteMasked))
        send(pin);
}

void IoApic::eoi(uint8_t vector)
{
    std::lock_guard lock(m_mutex);
    for (unsigned pin = 0; pin < kPins; ++pin) {
        uint64_t& entry = m_entries[pin];
        if ((entry & kRteLevel) && (entry & kRteRemoteIrr) && (entry & kRteVectorMask) == vector) {
            entry &= ~kRteRemoteIrr;
            service_level(pin);
        }
    }
}

void IoApic::service_level(unsigned pin)
{
    uint64_t& entry = m_entries[pin];
    if (!(entry & kRteLevel) || (entry & (kRteMasked | kRteRemoteIrr)) || !(m_lines & (1u << pin)))
        return;
    entry |= kRteRemoteIrr;
    send(pin);
}

void IoApic::send(unsigned pin)
{
    const uint64_t entry = m_entries[pin];
    ApicMessage message;
    message.dest = static_cast<uint32_t>(entry >> kRteDestShift);
    message.logical = entry & kRteLogical;
    message.delivery_mode = static_cast<ApicDeliveryMode>((entry >> kRteDeliveryShift) & 7);
    message.vector = static_cast<uint8_t>(entry & kRteVectorMask);
    message.level = true;
    message.trigger_level = entry & kRteLevel;
    message.shorthand = ApicShorthand::None;
    message.source_id = ApicMessage::kFromIoApic;
    if (message.delivery_mode == ApicDeliveryMode::RemoteRead) {
        if (log_allowed(m_log_count))
            log_debug("ioapic: pin {} has reserved delivery mode 3; dropped", pin);
        return;
    }
    m_bus.deliver(message);
}

uint64_t IoApic::redirection(unsigned pin) const
{
    std::lock_guard lock(m_mutex);
    return pin < kPins ? m_entries[pin] : 0;
}

void IoApic::set_redirection(unsigned pin, uint64_t entry)
{
    if (pin >= kPins)
        return;
    std::lock_guard lock(m_mutex);
    m_entries[pin] = entry & (kRteWritable | kRteRemoteIrr);
    service_level(pin);
}

IoapicState IoApic::save() const
{
    std::lock_guard lock(m_mutex);
    IoapicState state;
    state.id = static_cast<uint32_t>(m_id) << 24;
    state.ioregsel = m_regsel;
    state.irr = m_lines;
    for (unsigned pin = 0; pin < kPins; ++pin)
        state.redirection[pin] = m_entries[pin];
    return state;
}

void IoApic::restore(const IoapicState& state)
{
    static_assert(IoapicState::kPins == kPins);
    std::lock_guard lock(m_mutex);
    m_id = static_cast<uint8_t>((state.id >> 24) & 0x0f);
    m_regsel = static_cast<uint8_t>(state.ioregsel);
    m_lines = state.irr & ((1u << kPins) - 1);
    for (unsigned pin = 0; pin < kPins; ++pin) {
        uint64_t entry = state.redirection[pin] & (kRteWritable | kRteRemoteIrr);
        if (!(entry & kRteLevel))
            entry &= ~kRteRemoteIrr;
        m_entries[pin] = entry;
    }
}

} // namespace vessel
