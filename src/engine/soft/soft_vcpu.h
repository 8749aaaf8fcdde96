// One software vCPU: the interpreter plus what sits around a real core — its local APIC,
// interrupt acceptance at block boundaries, HLT that sleeps until the next event (interrupt,
// timer deadline, INIT/SIPI, kick) instead of spinning, and the INIT/SIPI start-up protocol.
#pragma once

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>

#include "devices/irqchip/lapic.h"
#include "engine/engine.h"
#include "engine/soft/block_cache.h"
#include "engine/soft/cpu.h"

namespace vessel {

class SoftEngine;

class SoftVcpu : public Vcpu, public LapicClient {
public:
    static Result<std::unique_ptr<SoftVcpu>> create(SoftEngine& engine, uint32_t id, IoHandler& io);
    ~SoftVcpu() override;

    uint32_t id() const override { return m_id; }
    Result<VcpuExit> run() override;
    void kick() override;
    Result<CpuState> get_state() override;
    Result<void> set_state(const CpuState& state) override;
    Result<void> inject_interrupt(uint8_t vector) override;

    // LapicClient
    void lapic_kick() override;
    void lapic_init() override;
    void lapic_sipi(uint8_t vector) override;

    soft::Cpu& cpu() { return m_cpu; }
    uint64_t instructions() const { return m_instructions.load(std::memory_order_relaxed); }
    VcpuStats stats() const override;

private:
    SoftVcpu(SoftEngine& engine, uint32_t id, IoHandler& io);
    void wake();
    void sleep_until(uint64_t deadline_ns);
    void handle_init_sipi();
    bool deliver_pending_events();
    uint64_t next_deadline() const;

    SoftEngine& m_engine;
    uint32_t m_id;
    soft::Cpu m_cpu;
    soft::BlockCache m_cache;
    std::unique_ptr<BusDevice> m_apic_page;
    Lapic* m_lapic { nullptr };

    std::atomic<bool> m_kick { false };
    std::atomic<bool> m_init_pending { false };
    std::atomic<int> m_sipi_pending { -1 };
    std::mutex m_sleep_mutex;
    std::condition_variable m_sleep_cv;
    bool m_wakeup { false };
    std::atomic<uint64_t> m_instructions { 0 }; // written by the vCPU thread only
    std::atomic<uint64_t> m_translations { 0 }; // the translator's count, copied after each slice
    bool m_pvclock_stale { false }; // set_state() ran: rewrite the kvm-clock structure before running
};

} // namespace vessel
