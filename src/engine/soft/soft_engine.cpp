#include "engine/soft/soft_engine.h"

#include "engine/soft/cpuid.h"
#include "engine/soft/soft_vcpu.h"
#include "memory/dirty_bitmap.h"
#include "memory/guest_memory.h"

namespace vessel {

// The MADT and MP table limit what a guest can address; 255 xAPIC IDs minus the broadcast.
constexpr uint32_t kSoftMaxVcpus = 254;
// TSC frequencies a guest can be shown: 1 MHz to 100 GHz.
constexpr uint64_t kMinTscKhz = 1'000, kMaxTscKhz = 100'000'000;

SoftEngine::SoftEngine(const EngineConfig& config)
    : m_config(config)
{
}

SoftEngine::~SoftEngine() = default;

Result<std::unique_ptr<SoftEngine>> SoftEngine::create(const EngineConfig& config)
{
    if (config.vcpus == 0 || config.vcpus > kSoftMaxVcpus)
        return make_error("the soft engine supports 1 to {} vCPUs, {} requested", kSoftMaxVcpus, config.vcpus);
    const uint64_t tsc_khz = config.tsc_khz ? config.tsc_khz : VirtualClock::kDefaultTscKhz;
    if (tsc_khz < kMinTscKhz || tsc_khz > kMaxTscKhz)
        return make_error(
            "the soft engine's TSC runs at {} to {} kHz, {} kHz requested", kMinTscKhz, kMaxTscKhz, config.tsc_khz);
    std::unique_ptr<SoftEngine> engine(new SoftEngine(config));
    Irqchip::Options options;
    options.ioapic_id = config.vcpus; // the MADT numbers the I/O APIC after the vCPUs
    options.tsc_khz = tsc_khz;
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

Result<void> SoftEngine::register_devices(Bus& pio, Bus& mmio)
{
    return m_irqchip->register_devices(pio, mmio);
}

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

uint32_t SoftEngine::max_vcpus() const
{
    return kSoftMaxVcpus;
}

void SoftEngine::pause_clock(bool paused)
{
    if (paused)
        m_irqchip->clock().pause();
    else
        m_irqchip->clock().resume();
}

int64_t SoftEngine::tsc_offset_for(uint64_t tsc, int64_t current)
{
    if (tsc == 0)
        return current;
    VirtualClock& clock = m_irqchip->clock();
    const int64_t wanted = static_cast<int64_t>(tsc - clock.tsc(clock.now_ns()));
    const uint64_t second = clock.tsc_khz() * 1000;
    std::lock_guard lock(m_tsc_mutex);
    if (m_tsc_offset) {
        const uint64_t diff = wanted > *m_tsc_offset ? static_cast<uint64_t>(wanted - *m_tsc_offset)
                                                     : static_cast<uint64_t>(*m_tsc_offset - wanted);
        if (diff < second)
            return *m_tsc_offset;
    }
    m_tsc_offset = wanted;
    return wanted;
}

Result<MachineState> SoftEngine::save_machine()
{
    VirtualClock& clock = m_irqchip->clock();
    const uint64_t now = clock.now_ns();
    // The PIT is polled by vCPU 0: an IRQ0 edge due by now may not have been raised yet. Raise
    // it, so the state holds it (in the PIC / a LAPIC) and the PIT's counts it as delivered.
    m_irqchip->run_timers(now);
    MachineState state;
    state.ioapic = m_irqchip->ioapic().save();
    state.pic = m_irqchip->pic().save();
    state.pit = m_irqchip->pit().save();
    state.guest_time_ns = now;
    state.tsc_khz = clock.tsc_khz();
    return state;
}

Result<void> SoftEngine::restore_machine(const MachineState& state)
{
    VirtualClock& clock = m_irqchip->clock();
    if (state.tsc_khz != clock.tsc_khz())
        return make_error("the saved machine's TSC runs at {} kHz, this soft engine's at {} kHz (create the engine "
                          "with the saved frequency)",
            state.tsc_khz, clock.tsc_khz());
    // A paused clock stays paused, at the saved time (VirtualClock::set_now).
    clock.set_now(state.guest_time_ns);
    {
        std::lock_guard lock(m_tsc_mutex);
        m_tsc_offset.reset(); // a new timeline: the first vCPU restored sets the offset exactly
    }
    m_irqchip->ioapic().restore(state.ioapic);
    m_irqchip->pic().restore(state.pic);
    m_irqchip->pit().restore(state.pit);
    return {};
}

Result<CpuidTable> SoftEngine::cpuid_table(uint32_t vcpu)
{
    if (vcpu >= m_config.vcpus)
        return make_error("the soft engine has no vCPU {} ({} vCPUs)", vcpu, m_config.vcpus);
    if (!m_machine)
        return make_error("soft engine: guest memory must be mapped before the CPUID is read");
    // A scratch CPU with the vCPU's identity; Cpu is large (its TLB), so not on the stack.
    auto c = std::make_unique<soft::Cpu>();
    c->id = vcpu;
    c->machine = m_machine.get();
    c->clock = &m_irqchip->clock();
    if (Lapic* lapic = m_irqchip->lapic_by_id(vcpu))
        c->apic_base = lapic->apic_base_msr();
    return soft::cpuid_entries(*c);
}

Result<void> SoftEngine::start_dirty_tracking(DirtyBitmap& bitmap)
{
    if (!m_machine)
        return make_error("soft engine: guest memory must be mapped before dirty tracking starts");
    const uint64_t pages = (m_machine->memory().end_address() + DirtyBitmap::kPageSize - 1) >> DirtyBitmap::kPageShift;
    if (bitmap.pages() < pages)
        return make_error("a dirty bitmap of {} pages cannot cover the guest's {} pages", bitmap.pages(), pages);
    DirtyBitmap* current = m_machine->dirty_log();
    if (current && current != &bitmap)
        return make_error("soft engine: dirty tracking is already on, into another bitmap");
    m_machine->set_dirty_log(&bitmap);
    // Write entries filled before now were never marked.
    m_machine->drop_write_entries();
    return {};
}

Result<void> SoftEngine::collect_dirty(DirtyBitmap& bitmap)
{
    DirtyBitmap* current = m_machine ? m_machine->dirty_log() : nullptr;
    if (!current)
        return make_error("soft engine: dirty tracking is off");
    if (current != &bitmap)
        return make_error("soft engine: dirty pages are tracked into the bitmap tracking started with, not this one");
    // Every write so far is in the bitmap already; the next write to each page must mark it
    // again, so no vCPU keeps a write entry (dropped before the vCPUs next run guest code).
    m_machine->drop_write_entries();
    return {};
}

void SoftEngine::stop_dirty_tracking()
{
    if (m_machine)
        m_machine->set_dirty_log(nullptr);
}

} // namespace vessel
