// Hardware-assisted engine over /dev/kvm: one VM fd, one vCPU fd per vCPU, the in-kernel
// irqchip (LAPIC, IOAPIC, PIC) and PIT. Port I/O and MMIO exits are answered through the
// IoHandler; nothing device-specific lives here.
#pragma once

#include <linux/kvm.h>

#include <atomic>
#include <memory>
#include <vector>

#include "engine/engine.h"

namespace vessel {

class KvmVcpu;

// A KVM_GET_SUPPORTED_CPUID-sized cpuid table.
struct KvmCpuid {
    std::vector<kvm_cpuid_entry2> entries;
};

class KvmEngine final : public Engine {
public:
    static Result<std::unique_ptr<KvmEngine>> create(const EngineConfig& config);
    ~KvmEngine() override;

    std::string_view name() const override { return "kvm"; }
    Result<void> map_memory(const GuestMemory& memory) override;
    Result<std::unique_ptr<Vcpu>> create_vcpu(uint32_t id, IoHandler& io) override;
    Result<void> set_irq_line(uint32_t gsi, bool level) override;
    Result<bool> add_mmio_notifier(uint64_t gpa, uint32_t len, std::optional<uint64_t> value, int fd) override;
    Result<bool> add_irq_notifier(uint32_t gsi, int fd) override;
    uint32_t max_vcpus() const override { return m_max_vcpus; }
    // kvmclock stands still while the VM is paused (KVM_GET_CLOCK at pause, KVM_SET_CLOCK with
    // that value at resume, as QEMU does): guest monotonic time does not count the pause.
    void pause_clock(bool paused) override;

    int vm_fd() const { return m_vm_fd; }
    int kvm_fd() const { return m_kvm_fd; }
    size_t run_mmap_size() const { return m_run_mmap_size; }
    bool has_sync_regs() const { return m_sync_regs; }
    uint32_t xsave_size() const { return m_xsave_size; }
    const KvmCpuid& supported_cpuid() const { return m_supported_cpuid; }
    uint32_t vcpu_count() const { return m_config.vcpus; }

    // Largest number of vCPUs /dev/kvm allows here, without creating a VM (0 if unavailable).
    static uint32_t host_max_vcpus();

private:
    KvmEngine() = default;
    Result<void> setup_irq_routing();

    EngineConfig m_config;
    int m_kvm_fd { -1 };
    int m_vm_fd { -1 };
    size_t m_run_mmap_size { 0 };
    uint32_t m_max_vcpus { 1 };
    uint32_t m_xsave_size { 4096 };
    bool m_sync_regs { false };
    KvmCpuid m_supported_cpuid;
    bool m_clock_saved { false };
    kvm_clock_data m_saved_clock {};
};

} // namespace vessel
