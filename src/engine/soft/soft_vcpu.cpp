#include "engine/soft/soft_vcpu.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <utility>

#include "base/log.h"
#include "bus/bus.h"
#include "engine/soft/exceptions.h"
#include "engine/soft/flags.h"
#include "engine/soft/interpreter.h"
#include "engine/soft/jit_emit.h"
#include "engine/soft/platform.h"
#include "engine/soft/pvclock.h"
#include "engine/soft/segments.h"
#include "engine/soft/soft_engine.h"
#include "engine/soft/state.h"

namespace vessel {

using namespace soft;

namespace {

// Instructions between looks at timers and the kick flag. Interrupts arriving from other
// threads raise cpu.attention and are seen at the next block boundary regardless.
constexpr uint64_t kSlice = 20'000;

// How long a halted vCPU spins for an event before it sleeps (see sleep_until): KVM's default
// halt_poll_ns. A 1 MiB virtio-blk read completes in ~100 us; 50 us was too short to catch it.
constexpr uint64_t kHaltPollNs = 200'000;

// The vCPU's APIC page as the MMU sees it (only the owning vCPU's thread accesses it).
class ApicPage : public BusDevice {
public:
    ApicPage(Lapic& lapic, Cpu& cpu)
        : m_lapic(lapic)
        , m_cpu(cpu)
    {
    }
    std::string_view name() const override { return "lapic"; }
    void read(uint64_t offset, std::span<uint8_t> data) override { m_lapic.mmio_read(offset, data); }
    void write(uint64_t offset, std::span<const uint8_t> data) override
    {
        m_lapic.mmio_write(offset, data);
        interrupt_window_opened(m_cpu); // an EOI or a lower TPR can unblock a pending interrupt
    }

private:
    Lapic& m_lapic;
    Cpu& m_cpu;
};

} // namespace

SoftVcpu::SoftVcpu(SoftEngine& engine, uint32_t id, IoHandler& io)
    : m_engine(engine)
    , m_id(id)
    , m_cache(engine.machine())
{
    m_cpu.machine = &engine.machine();
    engine.machine().watch_code_epoch(&m_cpu.attention);
    m_cpu.io = &io;
    m_cpu.id = id;
    m_cpu.clock = &engine.irqchip().clock();
}

SoftVcpu::~SoftVcpu()
{
    std::string faults;
    for (size_t v = 0; v < m_cpu.fault_counts.size(); ++v)
        if (m_cpu.fault_counts[v])
            faults += fmt::format(" #{}:{}", v, m_cpu.fault_counts[v]);
    log_debug("soft engine: vCPU {} executed {} instructions; exceptions delivered:{}", m_id, instructions(),
        faults.empty() ? " none" : faults);
    if (soft::g_jit_stats)
        std::fprintf(
            stderr, "jit: vCPU %u executed %lu instructions\n", m_id, static_cast<unsigned long>(instructions()));
}

Result<std::unique_ptr<SoftVcpu>> SoftVcpu::create(SoftEngine& engine, uint32_t id, IoHandler& io)
{
    std::unique_ptr<SoftVcpu> vcpu(new SoftVcpu(engine, id, io));
    Cpu& c = vcpu->m_cpu;
    Lapic* lapic = TRY(engine.irqchip().add_lapic(id, *vcpu));
    vcpu->m_lapic = lapic;
    vcpu->m_apic_page = std::make_unique<ApicPage>(*lapic, c);
    c.lapic = lapic;
    c.apic_page = vcpu->m_apic_page.get();
    try {
        reset_cpu(c);
    } catch (const EngineAbort& abort) {
        return make_error("soft engine: vCPU {} reset: {}", id, abort.what);
    }
    c.apic_base = lapic->apic_base_msr();
    // TSC offset 0 on every vCPU: the guest TSC is the VM's clock, identical on all vCPUs.
    // The BSP runs from its boot state; APs wait for INIT and SIPI from the guest.
    c.mp_state = id == 0 ? MpState::Runnable : MpState::Uninitialized;
    return vcpu;
}

void SoftVcpu::wake()
{
    {
        std::lock_guard lock(m_sleep_mutex);
        m_wakeup = true;
    }
    m_cpu.attention.store(true, std::memory_order_release);
    m_sleep_cv.notify_one();
}

void SoftVcpu::kick()
{
    m_kick.store(true, std::memory_order_release);
    wake();
}

void SoftVcpu::lapic_kick()
{
    wake();
}

void SoftVcpu::lapic_init()
{
    // A SIPI from before this INIT is void; one sent after it must survive until this vCPU
    // thread gets round to the INIT (on a busy host INIT and both SIPIs often arrive first).
    m_sipi_pending.store(-1, std::memory_order_release);
    m_init_pending.store(true, std::memory_order_release);
    wake();
}

void SoftVcpu::lapic_sipi(uint8_t vector)
{
    m_sipi_pending.store(vector, std::memory_order_release);
    wake();
}

Result<void> SoftVcpu::inject_interrupt(uint8_t vector)
{
    ApicMessage message {};
    message.dest = m_lapic->apic_id();
    message.vector = vector;
    m_lapic->accept(message);
    return {};
}

uint64_t SoftVcpu::next_deadline() const
{
    uint64_t deadline = m_lapic->next_deadline_ns();
    if (m_id == 0)
        deadline = std::min(deadline, m_engine.irqchip().next_deadline_ns());
    return deadline;
}

void SoftVcpu::sleep_until(uint64_t deadline_ns)
{
    VirtualClock& clock = m_engine.irqchip().clock();
    if (deadline_ns != UINT64_MAX) {
        // Halt polling (KVM's halt_poll_ns): the interrupt a halted guest waits for (an I/O
        // completion, an IPI) often comes within microseconds; spinning briefly saves the
        // futex sleep and wake-up on both sides.
        uint64_t start = clock.now_ns();
        uint64_t until = std::min(deadline_ns, start + kHaltPollNs);
        while (!m_cpu.attention.load(std::memory_order_acquire) && clock.now_ns() < until)
            __builtin_ia32_pause();
    }
    std::unique_lock lock(m_sleep_mutex);
    if (m_wakeup) {
        m_wakeup = false;
        return;
    }
    if (deadline_ns == UINT64_MAX) {
        m_sleep_cv.wait(lock, [&] { return m_wakeup; });
    } else {
        uint64_t now = clock.now_ns();
        if (deadline_ns > now)
            m_sleep_cv.wait_for(lock, std::chrono::nanoseconds(deadline_ns - now), [&] { return m_wakeup; });
    }
    m_wakeup = false;
}

void SoftVcpu::handle_init_sipi()
{
    Cpu& c = m_cpu;
    if (m_init_pending.exchange(false, std::memory_order_acq_rel)) {
        uint64_t apic_base = c.apic_base;
        int64_t tsc_offset = c.tsc_offset;
        reset_cpu(c);
        c.apic_base = apic_base;
        c.tsc_offset = tsc_offset;
        c.halted = false;
        c.mp_state = m_id == 0 ? MpState::Runnable : MpState::InitReceived;
    }
    int sipi = m_sipi_pending.exchange(-1, std::memory_order_acq_rel);
    if (sipi >= 0 && c.mp_state == MpState::InitReceived) {
        // Start-up: real mode at vector * 4 KiB.
        c.seg[CS].selector = static_cast<uint16_t>(sipi << 8);
        c.seg[CS].base = static_cast<uint64_t>(sipi) << 12;
        c.rip = 0;
        c.mp_state = MpState::Runnable;
        c.update_mode();
        log_debug("soft engine: vCPU {} started at {:#x}", m_id, c.seg[CS].base);
    }
}

// Delivers a pending NMI or maskable interrupt when the CPU can take it. Returns true if the
// vCPU has something to run (it was woken or is running).
bool SoftVcpu::deliver_pending_events()
{
    Cpu& c = m_cpu;
    try {
        if (m_lapic->has_pending_nmi() && !c.nmi_masked && !c.interrupt_shadow) {
            if (m_lapic->acknowledge_nmi()) {
                c.halted = false;
                c.nmi_masked = true;
                deliver_event(c, kExcNMI, EventKind::Nmi, false, 0);
            }
        } else if (m_lapic->has_pending_interrupt() && (c.rflags & kIF) && !c.interrupt_shadow) {
            uint8_t vector = m_lapic->acknowledge();
            c.halted = false;
            deliver_event(c, vector, EventKind::External, false, 0);
        }
    } catch (const GuestFault& fault) {
        deliver_fault(c, fault);
    }
    return !c.halted;
}

Result<VcpuExit> SoftVcpu::run()
{
    Cpu& c = m_cpu;
    VirtualClock& clock = m_engine.irqchip().clock();
    if (std::exchange(m_pvclock_stale, false))
        pvclock_update(c);
    try {
        if (m_restored_events)
            deliver_restored_events();
        for (;;) {
            if (m_kick.exchange(false, std::memory_order_acq_rel))
                return VcpuExit { VcpuExitKind::Kicked, {} };
            c.attention.store(false, std::memory_order_relaxed);
            handle_init_sipi();
            if (c.mp_state != MpState::Runnable) {
                sleep_until(UINT64_MAX);
                continue;
            }
            uint64_t now = clock.now_ns();
            m_lapic->run_timers(now);
            if (m_id == 0)
                m_engine.irqchip().run_timers(now);
            if (!deliver_pending_events()) {
                sleep_until(next_deadline());
                continue;
            }
            // An event held back only by an STI / MOV SS interrupt shadow: run just the next block
            // (it ends the shadow), then come back here to deliver it.
            const uint64_t budget = c.interrupt_shadow && m_lapic->has_pending_event() ? 1 : kSlice;
            m_instructions.store(m_instructions.load(std::memory_order_relaxed) + execute(c, m_cache, budget),
                std::memory_order_relaxed);
            if (const auto* jit = m_cache.jit())
                m_translations.store(jit->translations(), std::memory_order_relaxed);
        }
    } catch (const TripleFault&) {
        return VcpuExit { VcpuExitKind::Shutdown,
            fmt::format("vCPU {} shut down (triple fault) at RIP {:#x}", m_id, c.insn_start) };
    } catch (const EngineAbort& abort) {
        return VcpuExit { VcpuExitKind::InternalError,
            fmt::format("vCPU {}: {} ({:#x}) at CS:RIP {:#x}:{:#x}", m_id, abort.what, abort.detail, c.seg[CS].selector,
                c.insn_start) };
    }
}

VcpuStats SoftVcpu::stats() const
{
    VcpuStats s;
    s.instructions = instructions();
    s.translations = m_translations.load(std::memory_order_relaxed);
    return s;
}

Result<CpuState> SoftVcpu::get_state()
{
    handle_init_sipi();
    const uint64_t now = m_engine.irqchip().clock().now_ns();
    m_engine.irqchip().run_timers(now); // before any vCPU's LAPIC page is read (IRQ0 may go there)
    m_lapic->run_timers(now);
    CpuState s = state_from_cpu(m_cpu);
    m_lapic->save_regs(s.lapic);
    // IA32_TSC_DEADLINE lives in the LAPIC: it reads 0 once the deadline fired.
    uint64_t deadline = 0;
    m_lapic->read_msr(Lapic::kMsrTscDeadline, deadline);
    s.msrs.tsc_deadline = deadline;
    s.events.nmi_pending = m_lapic->has_pending_nmi();
    if (m_restored_events) {
        const PendingEvents& e = *m_restored_events;
        s.events.exception_pending = e.exception_pending;
        s.events.exception_injected = e.exception_injected;
        s.events.exception_nr = e.exception_nr;
        s.events.exception_has_error_code = e.exception_has_error_code;
        s.events.exception_error_code = e.exception_error_code;
        s.events.nmi_injected = e.nmi_injected;
        s.events.interrupt_injected = e.interrupt_injected;
        s.events.interrupt_nr = e.interrupt_nr;
    }
    return s;
}

Result<void> SoftVcpu::set_state(const CpuState& state)
{
    TRY_CTX(check_state(state), fmt::format("vCPU {} state", m_id));
    cpu_from_state(m_cpu, state);
    // INIT / SIPI sent to the vCPU before this state are void.
    m_init_pending.store(false, std::memory_order_release);
    m_sipi_pending.store(-1, std::memory_order_release);
    // The TSC first: the LAPIC's TSC-deadline timer counts against it. No kvm-clock update here
    // (guest RAM may not be restored yet): run() rewrites the structure (m_pvclock_stale).
    m_cpu.tsc_offset = m_engine.tsc_offset_for(state.tsc, m_cpu.tsc_offset);
    m_lapic->set_tsc_offset(m_cpu.tsc_offset);
    m_lapic->write_msr(Lapic::kMsrApicBase, state.apic_base);
    m_lapic->restore_regs(state.lapic);
    m_cpu.apic_base = m_lapic->apic_base_msr();
    // CR8 is TPR[7:4]: a CR8 that agrees with the page's TPR keeps TPR[3:0].
    if ((state.cr8 & 0xf) != m_lapic->get_tpr())
        set_cr8(m_cpu, static_cast<uint8_t>(state.cr8));
    m_lapic->write_msr(Lapic::kMsrTscDeadline, state.msrs.tsc_deadline);
    m_lapic->set_nmi_pending(state.events.nmi_pending);
    const PendingEvents& e = state.events;
    if (e.exception_pending || e.exception_injected || e.nmi_injected || e.interrupt_injected)
        m_restored_events = e;
    else
        m_restored_events.reset();
    // A restored kvm-clock MSR: the structure is rewritten before the vCPU next runs, when guest
    // RAM holds the restored page whatever order a restore writes RAM and vCPU state in.
    m_pvclock_stale = true;
    return {};
}

// An event a KVM snapshot caught half-delivered (KVM_GET_VCPU_EVENTS): the soft engine delivers
// events whole, so it delivers it now, before the first instruction.
void SoftVcpu::deliver_restored_events()
{
    Cpu& c = m_cpu;
    const PendingEvents e = *m_restored_events;
    m_restored_events.reset();
    try {
        if (e.exception_pending || e.exception_injected) {
            // CR2 of a #PF is in the state already.
            deliver_fault(
                c, GuestFault { e.exception_nr, e.exception_has_error_code != 0, e.exception_error_code, c.cr2 });
        } else if (e.nmi_injected) {
            c.nmi_masked = true;
            deliver_event(c, kExcNMI, EventKind::Nmi, false, 0);
        } else if (e.interrupt_injected) {
            deliver_event(c, e.interrupt_nr, EventKind::External, false, 0);
        }
        c.halted = false;
    } catch (const GuestFault& fault) {
        deliver_fault(c, fault);
    }
}

} // namespace vessel
