#include "devices/serial.h"

#include <algorithm>

#include "base/log.h"

#include "base/log_limit.h"

namespace vessel {

namespace {

// IER bits.
constexpr uint8_t kIerRxData = 0x01;
constexpr uint8_t kIerThrEmpty = 0x02;
constexpr uint8_t kIerLineStatus = 0x04;
constexpr uint8_t kIerModemStatus = 0x08;
constexpr uint8_t kIerMask = 0x0f;

// IIR values (bits 0-3) and the FIFO-enabled flag bits.
constexpr uint8_t kIirNone = 0x01;
constexpr uint8_t kIirModemStatus = 0x00;
constexpr uint8_t kIirThrEmpty = 0x02;
constexpr uint8_t kIirRxData = 0x04;
constexpr uint8_t kIirLineStatus = 0x06;
constexpr uint8_t kIirRxTimeout = 0x0c;
constexpr uint8_t kIirFifosEnabled = 0xc0;

// FCR bits.
constexpr uint8_t kFcrEnable = 0x01;
constexpr uint8_t kFcrClearRx = 0x02;
constexpr uint8_t kFcrClearTx = 0x04;
constexpr uint8_t kFcrStored = 0xc9; // enable, DMA mode, trigger level

// LCR / MCR bits.
constexpr uint8_t kLcrDlab = 0x80;
constexpr uint8_t kMcrDtr = 0x01;
constexpr uint8_t kMcrRts = 0x02;
constexpr uint8_t kMcrOut1 = 0x04;
constexpr uint8_t kMcrOut2 = 0x08;
constexpr uint8_t kMcrLoop = 0x10;
constexpr uint8_t kMcrMask = 0x1f;

// LSR bits.
constexpr uint8_t kLsrDataReady = 0x01;
constexpr uint8_t kLsrOverrun = 0x02;
constexpr uint8_t kLsrThrEmpty = 0x20;
constexpr uint8_t kLsrTxEmpty = 0x40;

// MSR bits.
constexpr uint8_t kMsrDeltaCts = 0x01;
constexpr uint8_t kMsrDeltaDsr = 0x02;
constexpr uint8_t kMsrTrailingRi = 0x04;
constexpr uint8_t kMsrDeltaDcd = 0x08;
constexpr uint8_t kMsrDeltaMask = 0x0f;
constexpr uint8_t kMsrCts = 0x10;
constexpr uint8_t kMsrDsr = 0x20;
constexpr uint8_t kMsrRi = 0x40;
constexpr uint8_t kMsrDcd = 0x80;

// What the far end of the (virtual) cable presents: carrier, DSR and CTS asserted.
constexpr uint8_t kHostModemInputs = kMsrDcd | kMsrDsr | kMsrCts;

} // namespace

Serial::Serial(IrqLine irq, OutputSink sink)
    : m_irq(std::move(irq))
    , m_sink(std::move(sink))
{
    // Power-on values. A real 16550A resets LCR and MCR to 0; with no firmware to program the
    // port, 8N1, OUT2 and 9600 baud (see State) are friendlier to bare guests.
    load(State {});
}

void Serial::set_input_space_notifier(std::function<void()> notifier)
{
    m_input_space_notifier = std::move(notifier);
}

void Serial::report_metrics(MetricsReport& out) const
{
    out.counter("read_count", m_bytes_read.get());
    out.counter("write_count", m_bytes_written.get());
    out.counter("missed_read_count", m_input_dropped.get());
}

void Serial::read(uint64_t offset, std::span<uint8_t> data)
{
    // A wider access behaves like consecutive byte accesses (an 8-bit ISA device).
    bool notify = false;
    {
        std::lock_guard lock(m_mutex);
        for (size_t i = 0; i < data.size(); ++i)
            data[i] = offset + i < kRegisterCount ? read_register(offset + i, notify) : 0xff;
        update_irq();
    }
    if (notify && m_input_space_notifier)
        m_input_space_notifier();
}

void Serial::write(uint64_t offset, std::span<const uint8_t> data)
{
    // The TX lock keeps sink calls in THR order without holding the state lock while the sink
    // (stdout) may block, so enqueue_input() on the event loop never waits for the terminal.
    std::lock_guard tx_lock(m_tx_mutex);
    for (size_t i = 0; i < data.size(); ++i) {
        uint8_t out = 0;
        bool transmit = false;
        {
            std::lock_guard lock(m_mutex);
            if (offset + i < kRegisterCount)
                transmit = write_register(offset + i, data[i], out);
            update_irq();
        }
        if (transmit) {
            m_bytes_written.add();
            if (m_sink)
                m_sink(std::span<const uint8_t>(&out, 1));
        }
    }
}

uint8_t Serial::read_register(uint64_t offset, bool& notify)
{
    const bool dlab = m_lcr & kLcrDlab;
    switch (offset) {
    case kRbrThr: {
        if (dlab)
            return m_dll;
        if (m_rx_fifo.empty())
            return m_rbr;
        m_rbr = m_rx_fifo.front();
        m_rx_fifo.pop_front();
        m_bytes_read.add();
        fill_fifo();
        // Wake a stalled producer once half the queue is free, not for every byte.
        if (m_input_stalled && m_rx_queue.size() <= kInputQueueSize / 2) {
            m_input_stalled = false;
            notify = true;
        }
        return m_rbr;
    }
    case kIer: return dlab ? m_dlm : m_ier;
    case kIirFcr: {
        const uint8_t id = iir();
        // Reading IIR while THR-empty is the reported cause acknowledges it.
        if (id == kIirThrEmpty)
            m_thr_interrupt = false;
        return id | (fifo_enabled() ? kIirFifosEnabled : 0);
    }
    case kLcr: return m_lcr;
    case kMcr: return m_mcr;
    case kLsr: {
        const uint8_t value = lsr();
        m_overrun = false; // reading LSR clears the error bits and the line-status interrupt
        return value;
    }
    case kMsr: {
        const uint8_t value = m_msr;
        m_msr &= ~kMsrDeltaMask;
        return value;
    }
    case kScr: return m_scr;
    }
    return 0xff;
}

bool Serial::write_register(uint64_t offset, uint8_t value, uint8_t& out)
{
    const bool dlab = m_lcr & kLcrDlab;
    switch (offset) {
    case kRbrThr:
        if (dlab) {
            m_dll = value;
            return false;
        }
        // The byte leaves the transmitter at once: THR is empty again and, if enabled, says so.
        m_thr_interrupt = true;
        if (m_mcr & kMcrLoop) {
            receive_byte(value);
            return false;
        }
        out = value;
        return true;
    case kIer: {
        if (dlab) {
            m_dlm = value;
            return false;
        }
        const uint8_t old = m_ier;
        m_ier = value & kIerMask;
        // Enabling the THR-empty interrupt while THR is empty raises it (Linux's 8250 driver
        // relies on this to detect working TX interrupts).
        if ((m_ier & kIerThrEmpty) && !(old & kIerThrEmpty))
            m_thr_interrupt = true;
        return false;
    }
    case kIirFcr: write_fcr(value); return false;
    case kLcr: m_lcr = value; return false;
    case kMcr: write_mcr(value); return false;
    case kLsr:
    case kMsr: log_oddity("write to read-only register", offset, value); return false;
    case kScr: m_scr = value; return false;
    }
    return false;
}

void Serial::write_fcr(uint8_t value)
{
    const bool was_enabled = fifo_enabled();
    const bool enable = value & kFcrEnable;
    if (enable != was_enabled) {
        // Changing FCR0 clears both FIFOs.
        m_rx_fifo.clear();
    } else if (enable && (value & kFcrClearRx)) {
        m_rx_fifo.clear();
    }
    if (enable && (value & kFcrClearTx))
        m_thr_interrupt = true; // the (always empty) transmitter FIFO is reset: THR empty
    m_fcr = value & kFcrStored;
    if (!enable)
        m_fcr = 0; // the trigger level bits are only writable with FIFOs enabled
    fill_fifo();
}

void Serial::write_mcr(uint8_t value)
{
    const uint8_t old_inputs = modem_inputs();
    const bool was_loopback = m_mcr & kMcrLoop;
    m_mcr = value & kMcrMask;
    const uint8_t inputs = modem_inputs();
    const uint8_t changed = old_inputs ^ inputs;
    uint8_t deltas = m_msr & kMsrDeltaMask;
    if (changed & kMsrCts)
        deltas |= kMsrDeltaCts;
    if (changed & kMsrDsr)
        deltas |= kMsrDeltaDsr;
    if ((old_inputs & kMsrRi) && !(inputs & kMsrRi))
        deltas |= kMsrTrailingRi;
    if (changed & kMsrDcd)
        deltas |= kMsrDeltaDcd;
    m_msr = inputs | deltas;
    if (was_loopback && !(m_mcr & kMcrLoop))
        fill_fifo(); // the receiver is connected to the host again
}

void Serial::receive_byte(uint8_t byte)
{
    if (m_rx_fifo.size() < fifo_depth()) {
        m_rx_fifo.push_back(byte);
        return;
    }
    // Overrun: without FIFOs the new character overwrites RBR; with FIFOs it is lost in the
    // shift register. Either way the guest learns about it through LSR.OE.
    m_overrun = true;
    if (!fifo_enabled() && !m_rx_fifo.empty())
        m_rx_fifo.back() = byte;
}

void Serial::fill_fifo()
{
    if (m_mcr & kMcrLoop)
        return; // in loopback the serial input is disconnected; host input waits
    while (!m_rx_queue.empty() && m_rx_fifo.size() < fifo_depth()) {
        m_rx_fifo.push_back(m_rx_queue.front());
        m_rx_queue.pop_front();
    }
}

bool Serial::fifo_enabled() const
{
    return m_fcr & kFcrEnable;
}

size_t Serial::fifo_depth() const
{
    return fifo_enabled() ? kFifoSize : 1;
}

uint8_t Serial::modem_inputs() const
{
    if (!(m_mcr & kMcrLoop))
        return kHostModemInputs;
    uint8_t inputs = 0;
    if (m_mcr & kMcrRts)
        inputs |= kMsrCts;
    if (m_mcr & kMcrDtr)
        inputs |= kMsrDsr;
    if (m_mcr & kMcrOut1)
        inputs |= kMsrRi;
    if (m_mcr & kMcrOut2)
        inputs |= kMsrDcd;
    return inputs;
}

uint8_t Serial::lsr() const
{
    uint8_t value = kLsrThrEmpty | kLsrTxEmpty;
    if (!m_rx_fifo.empty())
        value |= kLsrDataReady;
    if (m_overrun)
        value |= kLsrOverrun;
    return value;
}

uint8_t Serial::iir() const
{
    // Priorities per the 16550A datasheet: line status, received data (or character timeout),
    // THR empty, modem status.
    if ((m_ier & kIerLineStatus) && m_overrun)
        return kIirLineStatus;
    if ((m_ier & kIerRxData) && !m_rx_fifo.empty()) {
        if (!fifo_enabled())
            return kIirRxData;
        static constexpr size_t kTriggerLevels[4] = { 1, 4, 8, 14 };
        return m_rx_fifo.size() >= kTriggerLevels[m_fcr >> 6] ? kIirRxData : kIirRxTimeout;
    }
    if ((m_ier & kIerThrEmpty) && m_thr_interrupt)
        return kIirThrEmpty;
    if ((m_ier & kIerModemStatus) && (m_msr & kMsrDeltaMask))
        return kIirModemStatus;
    return kIirNone;
}

void Serial::update_irq(IrqSync sync)
{
    const bool level = iir() != kIirNone;
    if (level == m_irq_level && sync == IrqSync::IfChanged)
        return;
    m_irq_level = level;
    m_irq.set_level(level);
}

void Serial::enqueue_input(std::span<const uint8_t> bytes)
{
    if (bytes.empty())
        return;
    std::lock_guard lock(m_mutex);
    fill_fifo();
    // Straight into the receiver FIFO while it has room (and nothing queued ahead), else into
    // the host-side queue; beyond that the byte is lost and the guest sees an overrun.
    const bool receiver_connected = !(m_mcr & kMcrLoop);
    size_t dropped = 0;
    for (uint8_t byte : bytes) {
        if (receiver_connected && m_rx_queue.empty() && m_rx_fifo.size() < fifo_depth())
            m_rx_fifo.push_back(byte);
        else if (m_rx_queue.size() < kInputQueueSize)
            m_rx_queue.push_back(byte);
        else
            ++dropped;
    }
    if (m_rx_queue.size() >= kInputQueueSize)
        m_input_stalled = true;
    if (dropped > 0) {
        m_input_dropped.add(dropped);
        m_overrun = true;
        if (log_allowed(m_log_count))
            log_debug("serial: input queue full, dropped {} byte(s) (overrun)", dropped);
    }
    update_irq();
}

bool Serial::wants_input() const
{
    return input_space() > 0;
}

size_t Serial::input_space() const
{
    std::lock_guard lock(m_mutex);
    return kInputQueueSize - std::min(kInputQueueSize, m_rx_queue.size());
}

void Serial::log_oddity(const char* what, uint64_t offset, uint8_t value)
{
    if (log_allowed(m_log_count))
        log_debug("serial: {} (offset {}, value {:#04x})", what, offset, value);
}

Serial::State Serial::save() const
{
    std::lock_guard lock(m_mutex);
    State state;
    state.ier = m_ier;
    state.lcr = m_lcr;
    state.mcr = m_mcr;
    state.fcr = m_fcr;
    state.msr = m_msr;
    state.scr = m_scr;
    state.dll = m_dll;
    state.dlm = m_dlm;
    state.rbr = m_rbr;
    state.overrun = m_overrun;
    state.thr_interrupt = m_thr_interrupt;
    state.rx_fifo.assign(m_rx_fifo.begin(), m_rx_fifo.end());
    state.rx_queue.assign(m_rx_queue.begin(), m_rx_queue.end());
    return state;
}

void Serial::restore(const State& state)
{
    std::lock_guard lock(m_mutex);
    load(state);
    update_irq(IrqSync::Always);
}

void Serial::load(const State& state)
{
    m_ier = state.ier & kIerMask;
    m_lcr = state.lcr;
    m_mcr = state.mcr & kMcrMask;
    m_fcr = state.fcr & kFcrStored;
    m_msr = state.msr;
    m_scr = state.scr;
    m_dll = state.dll;
    m_dlm = state.dlm;
    m_rbr = state.rbr;
    m_overrun = state.overrun;
    m_thr_interrupt = state.thr_interrupt;
    // Bound what a (possibly corrupt) snapshot can put in the queues.
    const size_t fifo_bytes = std::min(state.rx_fifo.size(), fifo_depth());
    m_rx_fifo.assign(state.rx_fifo.begin(), state.rx_fifo.begin() + static_cast<std::ptrdiff_t>(fifo_bytes));
    const size_t queue_bytes = std::min(state.rx_queue.size(), kInputQueueSize);
    m_rx_queue.assign(state.rx_queue.begin(), state.rx_queue.begin() + static_cast<std::ptrdiff_t>(queue_bytes));
    m_input_stalled = m_rx_queue.size() >= kInputQueueSize;
}

} // namespace vessel
