// The 8254 programmable interval timer (ports 0x40-0x43) and the PC's port 0x61 (PitSpeakerPort),
// counting at 1,193,182 Hz of guest time (VirtualClock).
//
// Each channel is modelled from the time its count was loaded (no per-tick work): modes 0-5
// (6 and 7 alias 2 and 3), binary or BCD counting, LSB / MSB / LSB-then-MSB access, the counter
// latch command and the read-back command (count and status). Channel 0 drives IRQ0 (GSI 0)
// with one edge per OUT rising edge: terminal count in modes 0 and 4, every period in modes 2
// and 3. IRQ0 is polled like the LAPIC timer: next_deadline_ns() / run_timers(now), which raises
// at most one edge per call — periods missed in between are dropped, not queued. Channel 1
// counts but drives nothing. Channel 2's gate is port 0x61 bit 0 and its OUT reads back as
// port 0x61 bit 5 (what Linux's PIT TSC calibration polls).
//
// Approximations: a new count written in modes 2 and 3 restarts the period at once (the chip
// waits for the current period to end); the one-clock load delay after a count write is not
// modelled (OUT in mode 0 rises after exactly N clocks); the mode 3 count sequence on odd
// reload values is approximate; writing the first byte of a two-byte count does not stop the
// counter. Port 0x61 bit 4 toggles every 15 µs (refresh), the NMI status bits read zero.
//
// Thread safety: any thread; the IRQ line is driven with no PIT lock held.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>

#include "arch/x86/machine_state.h"
#include "bus/bus.h"
#include "devices/irq.h"
#include "devices/irqchip/clock.h"

namespace vessel {

class Pit final : public BusDevice {
public:
    static constexpr uint64_t kFrequencyHz = 1'193'182;
    static constexpr uint16_t kPort = 0x40;
    static constexpr uint16_t kSpeakerPort = 0x61;
    static constexpr uint64_t kControlOffset = 3;

    // `clock` must outlive the PIT; `irq0` is channel 0's output.
    Pit(VirtualClock& clock, IrqLine irq0);

    std::string_view name() const override { return "pit"; }
    void read(uint64_t offset, std::span<uint8_t> data) override;
    void write(uint64_t offset, std::span<const uint8_t> data) override;

    // Port 0x61: bit 0 channel 2 gate, bit 1 speaker data enable, bits 2-3 stored, bit 4
    // refresh toggle, bit 5 channel 2 OUT.
    uint8_t read_speaker_port();
    void write_speaker_port(uint8_t value);

    // Guest time of channel 0's next IRQ0 edge; UINT64_MAX when none is due. Lock-free.
    uint64_t next_deadline_ns() const { return m_deadline.load(std::memory_order_acquire); }
    // Raises IRQ0 if its edge is due by `now_ns` (at most one edge per call).
    void run_timers(uint64_t now_ns);

    // Snapshots (arch/x86/machine_state.h), in KVM's field meanings with times on the guest
    // clock, which must read the saved time when restore() runs. Per channel: `count` is the
    // reload value in clocks (0: no count written since the control word); count_load_time_ns
    // is when counting started, less any time a low gate held the count; count_latched,
    // read_state and write_state use KVM's RW_STATE_* numbers (LSB 1, MSB 2, WORD0 3, WORD1 4);
    // `status` is the read-back status byte, as latched or else as it reads at the save, where
    // null count (bit 6) has the 8254's meaning: set until the count is in the counter, which in
    // modes 1 and 5 is the gate's trigger. IRQ0 edges due by the saved time count as delivered
    // (run_timers() first, as SoftEngine::save_machine does). Port 0x61 keeps bits 0 (channel 2's
    // gate) and 1 (speaker data); bits 2-3 (parity / I/O check disable, which only Linux's NMI
    // handler pulses) are not saved.
    PitState save() const;
    void restore(const PitState& state);

private:
    struct Channel {
        uint8_t mode { 0 };
        uint8_t access { 3 }; // 1 LSB, 2 MSB, 3 LSB then MSB
        bool bcd { false };
        uint32_t reload { 0x10000 }; // N in counts (0 written = 65536 / 10000)
        bool loaded { false }; // a count has been written since the control word
        bool null_count { true }; // status bit 6: the count written is not yet in the counter
        bool gate { true };
        bool triggered { false }; // modes 1 and 5: a gate rising edge since the load
        bool running { false }; // the counting clock is enabled
        uint64_t start_ns { 0 }; // when `running` last began
        uint64_t counted_ns { 0 }; // time counted before that (gate pauses in modes 0 / 4)
        bool write_msb_next { false };
        uint8_t write_lsb { 0 };
        bool read_msb_next { false };
        std::optional<uint16_t> latched_count;
        bool latched_msb_next { false };
        std::optional<uint8_t> latched_status;
        uint64_t edges_done { 0 }; // channel 0: IRQ edges delivered since the load
    };

    PitChannelState save_channel(const Channel& ch, uint64_t now) const;
    void restore_channel(Channel& ch, const PitChannelState& state, uint64_t now);
    uint64_t elapsed_ticks(const Channel& ch, uint64_t now) const;
    uint16_t counter_value(const Channel& ch, uint64_t now) const;
    bool output(const Channel& ch, uint64_t now) const;
    uint8_t status(const Channel& ch, uint64_t now) const;
    uint8_t read_channel(Channel& ch, uint64_t now);
    void write_channel(Channel& ch, uint8_t value, uint64_t now);
    void write_control(uint8_t value, uint64_t now);
    void load_count(Channel& ch, uint16_t value, uint64_t now);
    void set_gate(Channel& ch, bool gate, uint64_t now);
    // Tick `tick` (counted from the load) of channel 0 in guest ns.
    uint64_t tick_time(const Channel& ch, uint64_t tick) const;
    // When channel 0's next undelivered edge happens (UINT64_MAX: none).
    uint64_t next_edge(const Channel& ch) const;
    void publish_deadline();

    VirtualClock& m_clock;
    IrqLine m_irq0;
    std::atomic<uint64_t> m_deadline { UINT64_MAX };

    mutable std::mutex m_mutex;
    std::array<Channel, 3> m_channels {};
    uint8_t m_speaker { 0 }; // port 0x61 bits 0-3
    uint64_t m_log_count { 0 };
};

// Port 0x61 as a bus device of its own.
class PitSpeakerPort final : public BusDevice {
public:
    explicit PitSpeakerPort(std::shared_ptr<Pit> pit)
        : m_pit(std::move(pit))
    {
    }

    std::string_view name() const override { return "pit-port61"; }
    void read(uint64_t, std::span<uint8_t> data) override
    {
        for (auto& byte : data)
            byte = m_pit->read_speaker_port();
    }
    void write(uint64_t, std::span<const uint8_t> data) override
    {
        if (!data.empty())
            m_pit->write_speaker_port(data[0]);
    }

private:
    std::shared_ptr<Pit> m_pit;
};

} // namespace vessel
