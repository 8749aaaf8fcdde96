// The software engine: every guest instruction is interpreted (engine/soft/*), on any x86-64
// host, with or without /dev/kvm. Interrupt controllers and timers are the user-space models of
// devices/irqchip, which this engine puts on the VM's buses.
#pragma once

#include <memory>
#include <mutex>
#include <optional>
#include <vector>

#include "devices/irqchip/irqchip.h"
#include "engine/engine.h"
#include "engine/soft/mmu.h"

namespace vessel {

class SoftEngine : public Engine {
public:
    static Result<std::unique_ptr<SoftEngine>> create(const EngineConfig& config);
    ~SoftEngine() override;

    std::string_view name() const override { return "soft"; }
    Result<void> map_memory(const GuestMemory& memory) override;
    Result<void> register_devices(Bus& pio, Bus& mmio) override;
    Result<std::unique_ptr<Vcpu>> create_vcpu(uint32_t id, IoHandler& io) override;
    Result<void> set_irq_line(uint32_t gsi, bool level) override;
    uint32_t max_vcpus() const override;
    void pause_clock(bool paused) override;
    void memory_written(uint64_t gpa, uint64_t len) override;

    // Snapshots. save_machine() first fires PIT edges already due (the chip would have), so a
    // state taken with the clock paused is exact; restore_machine() sets the guest clock to the
    // saved time (a paused clock stays paused there) before the models, whose timers count
    // from it. Restore the machine before the vCPUs (SoftVcpu::set_state re-arms LAPIC timers
    // against the clock).
    Result<MachineState> save_machine() override;
    Result<void> restore_machine(const MachineState& state) override;
    // The leaves of the soft CPU model (cpuid.cpp) for vCPU `vcpu`, subleaves included. Bits that
    // follow the vCPU's state at run time show their static value: OSXSAVE clear (it follows
    // CR4.OSXSAVE), APIC as the vCPU's IA32_APIC_BASE.EN.
    Result<CpuidTable> cpuid_table(uint32_t vcpu) override;
    // Dirty tracking marks `bitmap` directly from every vCPU thread at once (its marks are atomic
    // ORs); see engine/soft/mmu.h for how translated code's stores are caught. Call all three
    // with every vCPU stopped; `bitmap` must cover guest RAM and outlive the tracking. collect_dirty()
    // takes the same bitmap (after the VMM took its bits) and makes the next write to every
    // page mark it again.
    Result<void> start_dirty_tracking(DirtyBitmap& bitmap) override;
    Result<void> collect_dirty(DirtyBitmap& bitmap) override;
    void stop_dirty_tracking() override;

    // The TSC offset (guest TSC - VM clock TSC) a vCPU gets whose state sets its TSC to `tsc`
    // now. As KVM matches TSC writes: 0 (a reset or boot state) keeps `current`; a value within
    // a second of what the offset chosen last gives (the other vCPUs of the same state, set one
    // after the other while the clock runs) takes that offset, so the vCPUs' TSCs never drift
    // apart; anything else is exact (a restore: with the clock paused at the saved guest time,
    // the guest TSC continues exactly).
    int64_t tsc_offset_for(uint64_t tsc, int64_t current);

    Irqchip& irqchip() { return *m_irqchip; }
    soft::SoftMachine& machine() { return *m_machine; }
    uint32_t vcpu_count() const { return m_config.vcpus; }

private:
    explicit SoftEngine(const EngineConfig& config);

    EngineConfig m_config;
    std::unique_ptr<Irqchip> m_irqchip;
    std::unique_ptr<soft::SoftMachine> m_machine;
    std::mutex m_tsc_mutex;
    std::optional<int64_t> m_tsc_offset; // the offset tsc_offset_for() chose last
};

} // namespace vessel
