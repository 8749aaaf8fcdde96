#include "engine/soft/soft_engine.h"

#include "engine/soft/soft_vcpu.h"

namespace vessel {

// The MADT and MP table limit what a guest can address; 255 xAPIC IDs minus the broadcast.
constexpr uint32_t kSoftMaxVcpus = 254;

SoftEngine::SoftEngine(const EngineConfig& config)
    : m_config(config)
{
}

SoftEngine::~SoftEngine() = default;

Result<std::unique_ptr<SoftEngine>> SoftEngine::create(const EngineConfig& config)
{
    if (config.vcpus == 0 || config.vcpus > kSoftMaxVcpus)
        return make_error("the soft engine supports 1 to {} vCPUs, {} requested", kSoftMaxVcpus, config.vcpus);
    std::unique_ptr<SoftEngine> engine(new SoftEngine(config));
    Irqchip::Options options;
    options.ioapic_id = config.vcpus; // the MADT numbers the I/O APIC after the vCPUs
    engine->m_irqchip = std::make_unique<Irqchip>(options);
    return engine;
}

Result<void> SoftEngine::map_memory(const GuestMemory& memory)
{
    m_machine = std::make_unique<soft::SoftMachine>(memory);
    m_machine->set_vcpu_count(m_config.vcpus); // CPUID topology and HTT
    return {};
}

void SoftEngine::memory_written(uint64_t gpa, uint64_t len)
{
    if (!m_machine || len == 0)
        return;
    // Only pages holding decoded blocks need work; the check is one relaxed load per page.
    for (uint64_t page = gpa & ~0xfffULL; page < gpa + len && page >= (gpa & ~0xfffULL); page += 0x1000)
        if (m_machine->is_code_page(page))
            m_machine->code_page_written(page);
}

Result<void> SoftEngine::register_devices(Bus& pio, Bus& mmio) { return m_irqchip->register_devices(pio, mmio); }

Result<std::unique_ptr<Vcpu>> SoftEngine::create_vcpu(uint32_t id, IoHandler& io)
{
    if (!m_machine)
        return make_error("soft engine: guest memory must be mapped before vCPUs are created");
    auto vcpu = TRY(SoftVcpu::create(*this, id, io));
    return std::unique_ptr<Vcpu>(std::move(vcpu));
}

Result<void> SoftEngine::set_irq_line(uint32_t gsi, bool level)
{
    m_irqchip->set_irq(gsi, level);
    return {};
}

uint32_t SoftEngine::max_vcpus() const { return kSoftMaxVcpus; }

void SoftEngine::pause_clock(bool paused)
{
    if (paused)
        m_irqchip->clock().pause();
    else
        m_irqchip->clock().resume();
}

} // namespace vessel
