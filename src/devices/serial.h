// A 16550A UART (COM1 at layout::kCom1Port, IRQ layout::kCom1Irq): eight byte-wide registers.
//
// Transmission is instantaneous: every byte the guest writes to THR (outside loopback) is handed
// to the output sink at once, so THRE/TEMT are always set. Reception has two stages: a bounded
// host-side input queue (filled by enqueue_input() from the event loop) feeds the receiver FIFO
// the guest sees (16 bytes with FIFOs enabled, 1 without). Input arriving while the host queue is
// full is dropped and reported to the guest as an overrun (LSR.OE); the event loop avoids that by
// reading stdin only while wants_input() is true (at most input_space() bytes at a time) and
// resuming when the input-space notifier fires.
//
// Not modelled: baud rate / character timing (the divisor latch is stored only), parity, framing
// and break conditions (PE/FE/BI never set), DMA mode, the PC's OUT2 gate on the IRQ line (like
// QEMU and Firecracker, the interrupt line follows IIR whatever OUT2 says). The character-timeout
// interrupt (IIR 0x0c) is reported as soon as the FIFO holds fewer bytes than the trigger level,
// as if the four character times had already elapsed.
#pragma once

#include "base/counters.h"

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <span>
#include <vector>

#include "bus/bus.h"
#include "devices/console_input.h"
#include "devices/irq.h"

namespace vessel {

class Serial final : public BusDevice, public ConsoleInput {
public:
    using OutputSink = std::function<void(std::span<const uint8_t>)>;

    static constexpr uint64_t kRegisterCount = 8;
    static constexpr size_t kFifoSize = 16;
    static constexpr size_t kInputQueueSize = 4096;

    // Register offsets.
    static constexpr uint64_t kRbrThr = 0; // DLL when LCR.DLAB
    static constexpr uint64_t kIer = 1; // DLM when LCR.DLAB
    static constexpr uint64_t kIirFcr = 2;
    static constexpr uint64_t kLcr = 3;
    static constexpr uint64_t kMcr = 4;
    static constexpr uint64_t kLsr = 5;
    static constexpr uint64_t kMsr = 6;
    static constexpr uint64_t kScr = 7;

    // A plain snapshot of everything guest-visible, including input not yet read by the guest.
    struct State {
        // Defaults are the power-on values.
        uint8_t ier { 0 };
        uint8_t lcr { 0x03 }; // 8N1
        uint8_t mcr { 0x08 }; // OUT2
        uint8_t fcr { 0 }; // FIFO enable, RX trigger level and DMA mode bits as written
        uint8_t msr { 0xb0 }; // modem status: inputs (bits 4-7: DCD, DSR, CTS) and deltas
        uint8_t scr { 0 };
        uint8_t dll { 12 }; // 9600 baud
        uint8_t dlm { 0 };
        uint8_t rbr { 0 }; // last byte read (what RBR returns when the FIFO is empty)
        bool overrun { false }; // LSR.OE
        bool thr_interrupt { false }; // THR-empty interrupt latched (cleared by IIR read / THR write)
        std::vector<uint8_t> rx_fifo; // receiver FIFO, oldest first
        std::vector<uint8_t> rx_queue; // host-side input not yet in the FIFO, oldest first

        bool operator==(const State&) const = default;
    };

    // `irq` is raised while an enabled interrupt is pending; `sink` receives every transmitted
    // byte (called on the vCPU thread that wrote THR, one call per byte, never concurrently).
    Serial(IrqLine irq, OutputSink sink);

    std::string_view name() const override { return "serial"; }
    void read(uint64_t offset, std::span<uint8_t> data) override;
    void write(uint64_t offset, std::span<const uint8_t> data) override;

    // Host input (any thread). Bytes that find both the receiver FIFO and the host queue full
    // are dropped and set LSR.OE.
    void enqueue_input(std::span<const uint8_t> bytes) override;
    // True while the host-side input queue has room.
    bool wants_input() const override;
    // How many bytes enqueue_input() is sure to take without dropping (room in the host queue).
    size_t input_space() const override;
    // Called (on a vCPU thread, with no device lock held) once the guest has drained a full
    // queue to half, so an event loop that stopped reading stdin can resume. Set before the VM
    // runs.
    void set_input_space_notifier(std::function<void()> notifier) override;

    State save() const;
    // Replaces the state and drives the IRQ line to match it. Call while the vCPUs are stopped.
    void restore(const State& state);

    // Firecracker's uart metrics: read_count (received bytes the guest read), write_count
    // (bytes it transmitted), missed_read_count (host input dropped on a full queue).
    void report_metrics(MetricsReport& out) const;

private:
    enum class IrqSync { IfChanged, Always };

    void load(const State& state); // m_mutex held (or not yet shared)
    uint8_t read_register(uint64_t offset, bool& notify);
    // Returns whether `out` holds a byte to transmit.
    bool write_register(uint64_t offset, uint8_t value, uint8_t& out);
    void write_fcr(uint8_t value);
    void write_mcr(uint8_t value);
    void receive_byte(uint8_t byte);
    // Moves host input into the FIFO while there is room (and not in loopback).
    void fill_fifo();
    size_t fifo_depth() const;
    bool fifo_enabled() const;
    uint8_t modem_inputs() const;
    uint8_t lsr() const;
    uint8_t iir() const;
    // Drives the IRQ line to the current interrupt state (Always: even if the level is unchanged).
    void update_irq(IrqSync sync = IrqSync::IfChanged);
    void log_oddity(const char* what, uint64_t offset, uint8_t value);

    IrqLine m_irq;
    OutputSink m_sink;
    std::function<void()> m_input_space_notifier;

    mutable std::mutex m_tx_mutex; // orders sink calls; taken before m_mutex, never after
    mutable std::mutex m_mutex; // everything below
    uint8_t m_ier { 0 };
    uint8_t m_lcr { 0 };
    uint8_t m_mcr { 0 };
    uint8_t m_fcr { 0 };
    uint8_t m_msr { 0 };
    uint8_t m_scr { 0 };
    uint8_t m_dll { 0 };
    uint8_t m_dlm { 0 };
    uint8_t m_rbr { 0 };
    bool m_overrun { false };
    bool m_thr_interrupt { false };
    std::deque<uint8_t> m_rx_fifo;
    std::deque<uint8_t> m_rx_queue;
    bool m_input_stalled { false }; // the queue filled up; notify when half of it is free
    bool m_irq_level { false };
    uint64_t m_log_count { 0 };
    Counter m_bytes_read;
    Counter m_bytes_written;
    Counter m_input_dropped;
};

} // namespace vessel
