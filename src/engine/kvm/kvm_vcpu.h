#pragma once

#include "base/counters.h"

#include <linux/kvm.h>
#include <pthread.h>

#include <atomic>
#include <memory>
#include <vector>

#include "engine/engine.h"

namespace vessel {

class KvmEngine;

class KvmVcpu final : public Vcpu {
public:
    static Result<std::unique_ptr<KvmVcpu>> create(KvmEngine& engine, uint32_t id, IoHandler& io);
    ~KvmVcpu() override;

    uint32_t id() const override { return m_id; }
    Result<VcpuExit> run() override;
    void kick() override;
    Result<CpuState> get_state() override;
    Result<void> set_state(const CpuState& state) override;
    Result<void> inject_interrupt(uint8_t vector) override;
    VcpuStats stats() const override;

    int fd() const { return m_fd; }
    // The CPUID entries KVM holds for this vCPU (KVM_GET_CPUID2; else what setup_cpuid() set).
    Result<CpuidTable> cpuid_table();
    // KVM_SET_CPUID2 with `table` (before the vCPU first runs).
    Result<void> set_cpuid_table(const CpuidTable& table);
    // The TSC frequency this vCPU presents (KVM_GET_TSC_KHZ; 0 if KVM cannot tell).
    uint64_t tsc_khz() const;
    // Makes the vCPU's TSC tick at `khz` (0: leaves it as it is), or fails naming both
    // frequencies. KeepTsc::Yes carries the guest's TSC value across the change (a vCPU whose
    // state was already restored).
    enum class KeepTsc { No, Yes };
    Result<void> set_tsc_khz(uint64_t khz, KeepTsc keep);

    // Installs the no-op signal handler used by kick(); idempotent, called by create().
    static void install_kick_signal();

private:
    KvmVcpu(KvmEngine& engine, uint32_t id, IoHandler& io);
    Result<void> setup_cpuid();
    Result<void> setup_lapic_lints();
    void handle_io();
    void handle_mmio();
    std::string exit_location() const;
    Result<uint64_t> read_msr(uint32_t index);
    Result<void> write_msr(uint32_t index, uint64_t value);

    KvmEngine& m_engine;
    uint32_t m_id;
    IoHandler& m_io;
    int m_fd { -1 };
    kvm_run* m_run { nullptr };
    std::atomic<pthread_t> m_thread {};
    std::atomic<bool> m_running { false };
    bool m_ran_once { false };
    std::vector<kvm_cpuid_entry2> m_cpuid; // what setup_cpuid() gave KVM_SET_CPUID2
    Counter m_exits_io_in, m_exits_io_out, m_exits_mmio_read, m_exits_mmio_write, m_exits_other;
};

} // namespace vessel
