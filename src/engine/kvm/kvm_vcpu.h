#pragma once

#include "base/counters.h"

#include <linux/kvm.h>
#include <pthread.h>

#include <atomic>
#include <memory>

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

    // Installs the no-op signal handler used by kick(); idempotent, called by create().
    static void install_kick_signal();

private:
    KvmVcpu(KvmEngine& engine, uint32_t id, IoHandler& io);
    Result<void> setup_cpuid();
    Result<void> setup_lapic_lints();
    void handle_io();
    void handle_mmio();
    std::string exit_location() const;

    KvmEngine& m_engine;
    uint32_t m_id;
    IoHandler& m_io;
    int m_fd { -1 };
    kvm_run* m_run { nullptr };
    std::atomic<pthread_t> m_thread {};
    std::atomic<bool> m_running { false };
    bool m_ran_once { false };
    Counter m_exits_io_in, m_exits_io_out, m_exits_mmio_read, m_exits_mmio_write, m_exits_other;
};

} // namespace vessel
