#include "devices/irqchip/irqchip.h"

#include "arch/x86/layout.h"
#include "base/log.h"
#include "base/log_limit.h"
#include "devices/irqchip/bus_window.h"

namespace vessel {

Irqchip::Irqchip()
    : Irqchip(Options {})
{
}

Irqchip::Irqchip(const Options& options)
    : m_clock(options.tsc_khz, options.clock_source)
    , m_lapic_bus_hz(options.lapic_bus_hz)
    , m_pic(std::make_shared<Pic>())
    , m_ioapic(std::make_shared<IoApic>(*this, options.ioapic_id))
    , m_pit(std::make_shared<Pit>(m_clock, irq_line(0)))
{
    static_assert(IoApic::kPins == layout::kIoapicPins);
    // The PIC's INT is the BSP's LINT0. Called with the PIC lock held; set_lint takes only the
    // LAPIC's lock.
    m_pic->set_output_handler([this](bool intr) {
        if (m_bsp)
            m_bsp->set_lint(0, intr);
    });
}

Result<Lapic*> Irqchip::add_lapic(uint32_t apic_id, LapicClient& client)
{
    if (apic_id >= ApicMessage::kBroadcast)
        return make_error("APIC id {} is not a valid xAPIC id", apic_id);
    if (lapic_by_id(apic_id))
        return make_error("APIC id {} is already in use", apic_id);
    auto lapic = std::make_unique<Lapic>(apic_id, m_clock, *this, client, m_lapic_bus_hz);
    lapic->set_pc_bios_lints();
    lapic->set_extint_handler([this] { return m_pic->acknowledge(); });
    Lapic* raw = lapic.get();
    m_lapics.push_back(std::move(lapic));
    if (apic_id == 0) {
        m_bsp = raw;
        raw->set_lint(0, m_pic->interrupt_pending());
    }
    return raw;
}

Lapic* Irqchip::lapic_by_id(uint32_t apic_id)
{
    for (auto& lapic : m_lapics) {
        if (lapic->apic_id() == apic_id)
            return lapic.get();
    }
    return nullptr;
}

Result<void> Irqchip::register_devices(Bus& pio, Bus& mmio)
{
    TRY(pio.insert(std::make_shared<BusWindow>(m_pic, Pic::kMasterCommand, "pic-master"), Pic::kMasterPort, 2));
    TRY(pio.insert(std::make_shared<BusWindow>(m_pic, Pic::kSlaveCommand, "pic-slave"), Pic::kSlavePort, 2));
    TRY(pio.insert(std::make_shared<BusWindow>(m_pic, Pic::kElcrMaster, "pic-elcr"), Pic::kElcrPort, 2));
    TRY(pio.insert(m_pit, Pit::kPort, 4));
    TRY(pio.insert(std::make_shared<PitSpeakerPort>(m_pit), Pit::kSpeakerPort, 1));
    TRY(mmio.insert(m_ioapic, layout::kIoapicBase, layout::kIoapicSize));
    return {};
}

IrqLine Irqchip::irq_line(uint32_t gsi)
{
    return IrqLine(gsi, [this](uint32_t g, bool level) { set_irq(g, level); });
}

void Irqchip::set_irq(uint32_t gsi, bool level)
{
    if (gsi >= IoApic::kPins) {
        if (log_allowed(m_log_count))
            log_warn("irqchip: GSI {} is beyond the I/O APIC's {} pins", gsi, IoApic::kPins);
        return;
    }
    if (gsi < Pic::kLines && gsi != Pic::kCascadeLine)
        m_pic->set_irq(gsi, level);
    m_ioapic->set_irq(gsi == 0 ? kPitIoapicPin : gsi, level);
}

void Irqchip::deliver(const ApicMessage& message)
{
    // Collect the addressed LAPICs (at most a few hundred; no allocation for small VMs).
    Lapic* stack_targets[16];
    std::vector<Lapic*> heap_targets;
    std::span<Lapic*> targets;
    if (m_lapics.size() <= std::size(stack_targets)) {
        targets = std::span(stack_targets, m_lapics.size());
    } else {
        heap_targets.resize(m_lapics.size());
        targets = heap_targets;
    }
    size_t count = 0;
    for (auto& lapic : m_lapics) {
        bool addressed = false;
        switch (message.shorthand) {
        case ApicShorthand::None: addressed = lapic->matches_destination(message.dest, message.logical); break;
        case ApicShorthand::Self: addressed = lapic->apic_id() == message.source_id; break;
        case ApicShorthand::AllIncludingSelf: addressed = true; break;
        case ApicShorthand::AllExcludingSelf: addressed = lapic->apic_id() != message.source_id; break;
        }
        if (addressed)
            targets[count++] = lapic.get();
    }
    if (count == 0)
        return;
    if (message.delivery_mode == ApicDeliveryMode::LowestPriority && count > 1) {
        // The enabled LAPIC with the lowest task priority; ties rotate.
        const size_t start = m_lowest_priority_turn.fetch_add(1, std::memory_order_relaxed) % count;
        Lapic* chosen = nullptr;
        uint32_t best = UINT32_MAX;
        for (size_t i = 0; i < count; ++i) {
            Lapic* lapic = targets[(start + i) % count];
            const uint32_t priority = lapic->accepts_fixed() ? lapic->task_priority() : 0x100;
            if (priority < best) {
                best = priority;
                chosen = lapic;
            }
        }
        chosen->accept(message);
        return;
    }
    for (size_t i = 0; i < count; ++i)
        targets[i]->accept(message);
}

void Irqchip::broadcast_eoi(uint8_t vector)
{
    m_ioapic->eoi(vector);
}

} // namespace vessel
