// A local APIC in xAPIC mode, one per vCPU, for the software engine. The engine routes its
// vCPU's accesses to the APIC page (mmio_read/mmio_write, offsets 0x000-0xfff from base_address())
// and the IA32_APIC_BASE / IA32_TSC_DEADLINE MSRs here, and asks before each instruction block
// whether an interrupt or NMI is pending.
//
// Registers: ID, version (0x50014: max LVT 5, no EOI-broadcast suppression), TPR, APR, PPR, EOI,
// LDR, DFR (flat and cluster), SVR (software enable, spurious vector), ISR/TMR/IRR, ESR (send /
// receive illegal vector), ICR, the LVTs (timer, thermal, performance, LINT0, LINT1, error), and
// the timer (initial / current count, divide configuration; one-shot, periodic and TSC-deadline
// modes). The timer runs at bus_hz (kBusFrequencyHz unless told otherwise) and is polled:
// next_deadline_ns() says when it fires next, run_timers(now) fires what is due — the vCPU calls
// both at block boundaries and sleeps until the deadline while halted. The thermal and
// performance LVTs never fire. x2APIC is not modelled (IA32_APIC_BASE.EXTD cannot be set).
//
// Threads: the owning vCPU thread does the MMIO / MSR accesses and the CPU-side calls; accept()
// and set_lint() come from any thread. One small mutex guards the state; the pending flags the
// vCPU polls are an atomic kept in sync with it, so has_pending_interrupt() takes no lock. The
// LAPIC never holds its lock while calling out (ApicBus, the ExtINT acknowledge handler, the
// client), so the I/O APIC and PIC may call in while holding theirs.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <span>

#include "devices/irqchip/apic_bus.h"
#include "devices/irqchip/clock.h"

namespace vessel {

// What the LAPIC needs from its vCPU. Calls may come from any thread (the vCPU's own included)
// and must not call back into the LAPIC's message side synchronously.
class LapicClient {
public:
    virtual ~LapicClient() = default;
    // An interrupt or NMI became pending: wake from HLT or make the running vCPU look.
    virtual void lapic_kick() = 0;
    // An INIT was accepted (the LAPIC has already reset itself): the vCPU resets and, unless it
    // is the BSP, waits for a SIPI.
    virtual void lapic_init() = 0;
    // A start-up IPI arrived; meaningful only while the vCPU waits for one.
    virtual void lapic_sipi(uint8_t vector) = 0;
};

class Lapic {
public:
    using RegisterPage = std::array<uint8_t, 1024>; // KVM's struct kvm_lapic_state layout

    // The APIC timer's input clock. CPUID leaf 0x15 / 0x16 should report this frequency.
    static constexpr uint64_t kBusFrequencyHz = 1'000'000'000;
    static constexpr uint32_t kVersion = 0x00050014;

    static constexpr uint32_t kMsrApicBase = 0x1b;
    static constexpr uint32_t kMsrTscDeadline = 0x6e0;
    static constexpr uint64_t kApicBaseBsp = 1ull << 8;
    static constexpr uint64_t kApicBaseExtd = 1ull << 10;
    static constexpr uint64_t kApicBaseEnable = 1ull << 11;
    static constexpr uint64_t kDefaultBase = 0xfee00000;

    // Register offsets in the APIC page.
    static constexpr uint32_t kRegId = 0x020;
    static constexpr uint32_t kRegVersion = 0x030;
    static constexpr uint32_t kRegTpr = 0x080;
    static constexpr uint32_t kRegApr = 0x090;
    static constexpr uint32_t kRegPpr = 0x0a0;
    static constexpr uint32_t kRegEoi = 0x0b0;
    static constexpr uint32_t kRegRrd = 0x0c0;
    static constexpr uint32_t kRegLdr = 0x0d0;
    static constexpr uint32_t kRegDfr = 0x0e0;
    static constexpr uint32_t kRegSvr = 0x0f0;
    static constexpr uint32_t kRegIsr = 0x100; // 8 registers, 16 bytes apart
    static constexpr uint32_t kRegTmr = 0x180;
    static constexpr uint32_t kRegIrr = 0x200;
    static constexpr uint32_t kRegEsr = 0x280;
    static constexpr uint32_t kRegIcrLow = 0x300;
    static constexpr uint32_t kRegIcrHigh = 0x310;
    static constexpr uint32_t kRegLvtTimer = 0x320;
    static constexpr uint32_t kRegLvtThermal = 0x330;
    static constexpr uint32_t kRegLvtPerf = 0x340;
    static constexpr uint32_t kRegLvtLint0 = 0x350;
    static constexpr uint32_t kRegLvtLint1 = 0x360;
    static constexpr uint32_t kRegLvtError = 0x370;
    static constexpr uint32_t kRegTimerInitial = 0x380;
    static constexpr uint32_t kRegTimerCurrent = 0x390;
    static constexpr uint32_t kRegTimerDivide = 0x3e0;

    // Register bits.
    static constexpr uint32_t kSvrEnable = 1u << 8;
    static constexpr uint32_t kLvtMasked = 1u << 16;
    static constexpr uint32_t kLvtTimerPeriodic = 1u << 17;
    static constexpr uint32_t kLvtTimerTscDeadline = 2u << 17;
    static constexpr uint32_t kEsrSendIllegalVector = 1u << 5;
    static constexpr uint32_t kEsrReceiveIllegalVector = 1u << 6;

    // `apic_id` 0 is the BSP (IA32_APIC_BASE.BSP set). `clock`, `bus` and `client` must outlive
    // the LAPIC.
    Lapic(uint32_t apic_id, VirtualClock& clock, ApicBus& bus, LapicClient& client, uint64_t bus_hz = kBusFrequencyHz);
    Lapic(const Lapic&) = delete;
    Lapic& operator=(const Lapic&) = delete;

    uint32_t apic_id() const;
    bool is_bsp() const;

    // --- Owning vCPU: APIC page and MSRs ---
    // Any width; the register containing `offset` is read (bytes past it read as zero).
    void mmio_read(uint64_t offset, std::span<uint8_t> data);
    // Aligned 32-bit writes only (the SDM's requirement); others are ignored.
    void mmio_write(uint64_t offset, std::span<const uint8_t> data);
    uint32_t read_register(uint32_t offset);
    void write_register(uint32_t offset, uint32_t value);
    // IA32_APIC_BASE and IA32_TSC_DEADLINE; false for any other MSR or a value that must #GP.
    bool read_msr(uint32_t index, uint64_t& value) const;
    bool write_msr(uint32_t index, uint64_t value);
    uint64_t apic_base_msr() const;
    uint64_t base_address() const { return apic_base_msr() & ~uint64_t { 0xfff }; }
    bool hardware_enabled() const { return apic_base_msr() & kApicBaseEnable; }
    // Guest TSC = VirtualClock::tsc(now) + offset (what the vCPU's RDTSC returns); the
    // TSC-deadline timer compares against it.
    void set_tsc_offset(int64_t offset);

    // --- Owning vCPU: interrupt acceptance ---
    // A maskable interrupt is ready for an INTA (IRR vector above PPR, or ExtINT). Lock-free.
    bool has_pending_interrupt() const { return m_pending.load(std::memory_order_acquire) & kPendingInterrupt; }
    bool has_pending_nmi() const { return m_pending.load(std::memory_order_acquire) & kPendingNmi; }
    // Either of the two (one load).
    bool has_pending_event() const { return m_pending.load(std::memory_order_acquire) != 0; }
    // Highest IRR vector whose priority class beats PPR, or -1 (ExtINT vectors are unknown
    // before the INTA and not reported).
    int pending_vector() const;
    // INTA: the vector to deliver (IRR -> ISR; ExtINT through the PIC's acknowledge), or the
    // spurious vector (SVR) when the interrupt went away.
    uint8_t acknowledge();
    // Takes the pending NMI; false when none was pending.
    bool acknowledge_nmi();
    // Makes an NMI pending or drops one (snapshots: CpuState::events.nmi_pending).
    void set_nmi_pending(bool pending);
    // CR8 (TPR[7:4]).
    void set_tpr(uint8_t cr8);
    uint8_t get_tpr() const;
    // Same as writing the EOI register.
    void eoi();

    // --- Owning vCPU: timer ---
    // Guest time at which the timer fires next; UINT64_MAX when it is not armed. Lock-free.
    uint64_t next_deadline_ns() const { return m_timer_deadline.load(std::memory_order_acquire); }
    void run_timers(uint64_t now_ns);

    // --- Any thread ---
    // An interrupt message addressed to this LAPIC.
    void accept(const ApicMessage& message);
    // LINT0 / LINT1 pin levels (pin 0 or 1).
    void set_lint(int pin, bool level);
    // Whether a message to `dest` (physical id or logical MDA) addresses this LAPIC.
    bool matches_destination(uint32_t dest, bool logical) const;
    // TPR, for lowest-priority arbitration.
    uint8_t task_priority() const;
    // Fixed interrupts are accepted (hardware and software enabled).
    bool accepts_fixed() const;

    // --- Set-up and state (vCPU stopped) ---
    // How an ExtINT is acknowledged (the PIC's INTA). Unset: the spurious vector.
    void set_extint_handler(std::function<int()> acknowledge);
    // LINT0 = ExtINT and LINT1 = NMI, unmasked, as a PC BIOS leaves them.
    void set_pc_bios_lints();
    // Power-on reset: registers, IA32_APIC_BASE, ID back to the constructor's.
    void reset();
    // The architectural register page (register at MMIO offset X at byte X; the current count
    // computed now). IA32_TSC_DEADLINE is an MSR, saved separately.
    void save_regs(RegisterPage& page) const;
    // Loads a page; re-arms the timer to continue from the saved current count. Restore
    // IA32_TSC_DEADLINE afterwards.
    void restore_regs(const RegisterPage& page);

private:
    static constexpr uint32_t kPendingInterrupt = 1;
    static constexpr uint32_t kPendingNmi = 2;
    static constexpr int kLvtCount = 6; // timer, thermal, perf, LINT0, LINT1, error
    enum Lvt { LvtTimer, LvtThermal, LvtPerf, LvtLint0, LvtLint1, LvtError };

    struct Vectors {
        std::array<uint64_t, 4> bits {};
        bool test(unsigned v) const { return bits[v / 64] >> (v % 64) & 1; }
        void set(unsigned v) { bits[v / 64] |= 1ull << (v % 64); }
        void clear(unsigned v) { bits[v / 64] &= ~(1ull << (v % 64)); }
        int highest() const;
        uint32_t word(unsigned i) const { return static_cast<uint32_t>(bits[i / 2] >> (32 * (i % 2))); }
        void set_word(unsigned i, uint32_t value);
    };

    // Work to do once the lock is released.
    struct Effects {
        std::optional<ApicMessage> send;
        int eoi_vector { -1 };
        bool kick { false };
        bool init { false };
        int sipi { -1 };
    };

    void flush(const Effects& fx);
    void reset_registers(); // INIT: everything but the ID and IA32_APIC_BASE
    uint32_t read_locked(uint32_t offset, uint64_t now) const;
    void write_locked(uint32_t offset, uint32_t value, Effects& fx);
    void write_lvt(Lvt lvt, uint32_t value);
    void write_icr(uint32_t value, Effects& fx);
    void do_eoi(Effects& fx);
    uint8_t ppr() const;
    uint8_t apr() const;
    bool sw_enabled() const { return m_svr & kSvrEnable; }
    bool extint_pending() const;
    // Sets IRR (and TMR) for `vector`, or flags a receive-illegal-vector error.
    void raise_vector(uint8_t vector, bool level);
    void error(uint32_t esr_bit);
    // Recomputes the pending flags; true if a flag was newly set.
    bool update_pending();

    // Timer.
    uint32_t timer_mode() const { return m_lvt[LvtTimer] & (3u << 17); }
    uint64_t divisor() const;
    uint64_t ticks_to_ns(uint64_t ticks) const;
    uint64_t ns_to_ticks(uint64_t ns) const;
    uint32_t current_count(uint64_t now) const;
    // Counting from `count` down (one-shot / periodic), as if started earlier.
    void arm_countdown(uint64_t now, uint32_t count);
    void disarm_timer();
    uint64_t tsc_deadline_ns() const;
    void publish_timer();
    void fire_timer();

    VirtualClock& m_clock;
    ApicBus& m_bus;
    LapicClient& m_client;
    const uint64_t m_bus_hz;
    const uint32_t m_initial_id;
    std::function<int()> m_extint_ack;

    std::atomic<uint32_t> m_pending { 0 };
    std::atomic<uint64_t> m_timer_deadline { UINT64_MAX };

    mutable std::mutex m_mutex; // everything below
    uint64_t m_apic_base { 0 };
    uint32_t m_id { 0 };
    uint32_t m_tpr { 0 };
    uint32_t m_ldr { 0 };
    uint32_t m_dfr { 0 };
    uint32_t m_svr { 0 };
    uint32_t m_esr { 0 };
    uint32_t m_esr_pending { 0 };
    uint32_t m_icr_low { 0 };
    uint32_t m_icr_high { 0 };
    std::array<uint32_t, kLvtCount> m_lvt {};
    uint32_t m_timer_initial { 0 };
    uint32_t m_timer_divide { 0 };
    Vectors m_irr, m_isr, m_tmr;
    bool m_nmi_pending { false };
    bool m_extint_message { false };
    std::array<bool, 2> m_lint_level {};
    // One-shot / periodic countdown.
    bool m_counting { false };
    int64_t m_timer_start_ns { 0 }; // may lie before time 0 after a restore / divide change
    uint64_t m_timer_period_ns { 0 };
    uint64_t m_timer_next_ns { UINT64_MAX };
    // TSC-deadline mode.
    uint64_t m_tsc_deadline { 0 };
    int64_t m_tsc_offset { 0 };
    uint64_t m_log_count { 0 };
};

} // namespace vessel
