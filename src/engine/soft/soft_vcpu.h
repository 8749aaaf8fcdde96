// One software vCPU: the interpreter plus what sits around a real core — its local APIC,
// interrupt acceptance at block boundaries, HLT that sleeps until the next event (interrupt,
// timer deadline, INIT/SIPI, kick) instead of spinning, and the INIT/SIPI start-up protocol.
#pragma once

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>

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
    // The state at the instruction boundary where the vCPU stopped (call with it stopped). What
    // its thread would do first on resuming is done first, as KVM does before it reports: a
    // pending INIT / SIPI is taken, and LAPIC and PIT timers due by now fire (an expired one-shot
    // count would otherwise read 0 and never fire after a restore).
    Result<CpuState> get_state() override;
    // Everything a running guest needs to continue: registers, x87/SSE, MSRs (kvm-clock, TSC
    // deadline), the TSC (SoftEngine::tsc_offset_for), the LAPIC page with its timer count,
    // pending events (interrupt shadow, NMI pending / masked; an exception, NMI or interrupt a
    // KVM snapshot caught in delivery is delivered when the vCPU next runs), mp_state (halted,
    // waiting for INIT or SIPI). Restore the machine (SoftEngine::restore_machine) first.
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
    void deliver_restored_events();
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
    std::optional<PendingEvents> m_restored_events; // in delivery in a restored state: delivered by run()
};

} // namespace vessel
