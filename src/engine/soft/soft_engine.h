// The software engine: every guest instruction is interpreted (engine/soft/*), on any x86-64
// host, with or without /dev/kvm. Interrupt controllers and timers are the user-space models of
// devices/irqchip, which this engine puts on the VM's buses.
#pragma once

#include <memory>
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

    Irqchip& irqchip() { return *m_irqchip; }
    soft::SoftMachine& machine() { return *m_machine; }
    uint32_t vcpu_count() const { return m_config.vcpus; }

private:
    explicit SoftEngine(const EngineConfig& config);

    EngineConfig m_config;
    std::unique_ptr<Irqchip> m_irqchip;
    std::unique_ptr<soft::SoftMachine> m_machine;
};

} // namespace vessel
