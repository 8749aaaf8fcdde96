// Hardware-assisted engine over /dev/kvm: one VM fd, one vCPU fd per vCPU, the in-kernel
// irqchip (LAPIC, IOAPIC, PIC) and PIT. Port I/O and MMIO exits are answered through the
// IoHandler; nothing device-specific lives here.
#pragma once

#include <linux/kvm.h>

#include <atomic>
#include <memory>
#include <mutex>
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
    bool restore_machine_after_vcpus() const override { return true; }
    Result<void> map_memory(const GuestMemory& memory) override;
    Result<std::unique_ptr<Vcpu>> create_vcpu(uint32_t id, IoHandler& io) override;
    Result<void> set_irq_line(uint32_t gsi, bool level) override;
    Result<bool> add_mmio_notifier(uint64_t gpa, uint32_t len, std::optional<uint64_t> value, int fd) override;
    Result<bool> add_irq_notifier(uint32_t gsi, int fd) override;
    uint32_t max_vcpus() const override { return m_max_vcpus; }
    // kvmclock stands still while the VM is paused (KVM_GET_CLOCK at pause, KVM_SET_CLOCK with
    // that value at resume, as QEMU does): guest monotonic time does not count the pause.
    void pause_clock(bool paused) override;

    // Snapshots (kvm_machine.cpp, kvm_dirty.cpp). Restore order: create the engine with the
    // snapshot's tsc_khz, map the memory, create the vCPUs and set_state() each, then
    // restore_machine() (the IOAPIC may deliver to the LAPICs restored with the vCPUs).
    Result<MachineState> save_machine() override;
    Result<void> restore_machine(const MachineState& state) override;
    Result<CpuidTable> cpuid_table(uint32_t vcpu) override;
    Result<bool> present_cpuid(uint32_t vcpu, const CpuidTable& table) override;
    Result<void> start_dirty_tracking(DirtyBitmap& bitmap) override;
    Result<void> collect_dirty(DirtyBitmap& bitmap) override;
    void stop_dirty_tracking() override;

    int vm_fd() const { return m_vm_fd; }
    int kvm_fd() const { return m_kvm_fd; }
    size_t run_mmap_size() const { return m_run_mmap_size; }
    bool has_sync_regs() const { return m_sync_regs; }
    uint32_t xsave_size() const { return m_xsave_size; }
    const KvmCpuid& supported_cpuid() const { return m_supported_cpuid; }
    uint32_t vcpu_count() const { return m_config.vcpus; }
    // The TSC frequency new vCPUs present (kHz; 0: the host's) and whether KVM can scale the TSC.
    uint64_t wanted_tsc_khz() const { return m_config.tsc_khz; }
    bool has_tsc_control() const { return m_tsc_control; }

    // KvmVcpu registers itself for the VM-wide operations that need a vCPU fd (TSC frequency,
    // CPUID); the engine outlives its vCPUs.
    void add_vcpu(KvmVcpu* vcpu);
    void remove_vcpu(KvmVcpu* vcpu);

    // Largest number of vCPUs /dev/kvm allows here, without creating a VM (0 if unavailable).
    static uint32_t host_max_vcpus();

private:
    KvmEngine() = default;
    Result<void> setup_irq_routing();
    Result<void> set_slot_flags(uint32_t flags);
    KvmVcpu* find_vcpu(uint32_t id);

    EngineConfig m_config;
    int m_kvm_fd { -1 };
    int m_vm_fd { -1 };
    size_t m_run_mmap_size { 0 };
    uint32_t m_max_vcpus { 1 };
    uint32_t m_xsave_size { 4096 };
    bool m_sync_regs { false };
    bool m_tsc_control { false };
    KvmCpuid m_supported_cpuid;
    bool m_clock_saved { false };
    kvm_clock_data m_saved_clock {};
    int64_t m_saved_clock_host_ns { 0 }; // CLOCK_MONOTONIC when m_saved_clock was taken
    std::vector<kvm_userspace_memory_region> m_slots; // as registered by map_memory()
    bool m_dirty_tracking { false };
    std::mutex m_vcpus_mutex;
    std::vector<KvmVcpu*> m_vcpus;
};

} // namespace vessel
