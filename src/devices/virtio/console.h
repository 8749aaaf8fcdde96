// virtio-console (virtio v1.2, 5.3): a single port (port 0, no MULTIPORT) with receiveq (0) and
// transmitq (1). With --console virtio it takes the VMM's stdin (ConsoleInput) and its output
// goes to stdout: the guest's hvc0.
//
// Output (transmitq). A vCPU must not wait for a slow stdout (a terminal scrolled back, a pipe
// nobody reads), so transmitted bytes are copied into a bounded host-side buffer
// (kOutputBufferSize) on the notifying vCPU and a writer thread hands them to the sink. When the
// buffer is full the device stops taking chains: they stay in the ring, the guest waits for its
// buffers to come back (Linux's hvc spins in put_chars) and the writer thread resumes the queue as
// soon as it has taken the buffer's contents. So the guest sees back-pressure, the host memory is
// bounded (the buffer plus one chunk being written), nothing is dropped, and a vCPU never blocks
// on stdout. A single chain is taken up to kOutputBufferSize bytes; the rest of a longer one is
// discarded and counted (Linux never sends more than a page per buffer to hvc).
//
// Input (receiveq). Like the UART: a bounded host-side queue (kInputQueueSize) fed by
// enqueue_input() from the event loop, drained into whatever receive buffers the driver has
// posted, on the enqueuing thread or on the vCPU that notifies receiveq. The event loop reads
// stdin only while there is room and resumes when the input-space notifier fires (the queue
// drained to half after it had filled up).
//
// Threads: the transport calls activate/notify/reset/read_config under its lock on vCPU threads;
// the event loop calls enqueue_input; the writer thread resumes transmitq. m_mutex serialises all
// queue access (lock order: transport lock, then m_mutex). The input-space notifier is called
// with m_mutex released (from notify() the transport's lock is still held; the VM's notifier only
// writes an eventfd).
//
// VM pause: every queue access happens under m_mutex, so pause() only has to take it and mark the
// device paused; from then on transmit notifications, host input and the writer thread's restart
// of a stalled transmitq leave the queues alone (input waits in its bounded queue, which holds
// stdin back when full), and resume() does what they could not. The writer thread goes on handing
// output already copied out of the guest to the sink: host memory only.
//
// Not offered: VIRTIO_CONSOLE_F_SIZE (Linux reads cols/rows only on a configuration-change
// interrupt, which cannot be sent safely right at DRIVER_OK, before the driver has set up its
// handler; `stty rows R cols C` in the guest does the same), MULTIPORT, EMERG_WRITE.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <span>
#include <thread>
#include <vector>

#include "devices/console_input.h"
#include "devices/virtio/queue.h"
#include "devices/virtio/virtio.h"

namespace vessel::virtio {

class ConsoleDevice final : public VirtioDevice, public ConsoleInput {
public:
    using OutputSink = std::function<void(std::span<const uint8_t>)>;

    static constexpr uint16_t kReceiveQueue = 0;
    static constexpr uint16_t kTransmitQueue = 1;
    static constexpr uint16_t kQueueSize = 128;
    static constexpr size_t kInputQueueSize = 4096;
    static constexpr size_t kOutputBufferSize = 64 * 1024;
    // Configuration space (5.3.4): cols, rows (le16), max_nr_ports, emerg_wr (le32).
    static constexpr size_t kConfigSize = 12;

    struct Counters {
        uint64_t tx_bytes { 0 }; // handed to the sink
        uint64_t tx_discarded_bytes { 0 }; // beyond kOutputBufferSize in one chain
        uint64_t rx_bytes { 0 }; // delivered to the guest
        uint64_t input_dropped { 0 }; // enqueued while the input queue was full
    };

    // `sink` gets the guest's output, on the device's writer thread (one call at a time).
    explicit ConsoleDevice(OutputSink sink);
    ~ConsoleDevice() override;
    ConsoleDevice(const ConsoleDevice&) = delete;
    ConsoleDevice& operator=(const ConsoleDevice&) = delete;

    // VirtioDevice
    DeviceType type() const override { return DeviceType::Console; }
    std::string_view name() const override { return "console"; }
    uint64_t features() const override { return 0; }
    std::vector<uint16_t> queue_max_sizes() const override { return { kQueueSize, kQueueSize }; }
    void read_config(uint64_t offset, std::span<uint8_t> data) override;
    Result<void> activate(const ActivateContext& ctx) override;
    void notify(uint16_t queue) override;
    void reset() override;
    // Flushes the buffered output to the sink and stops the writer thread.
    void shutdown() override;
    void pause() override;
    void resume() override;
    // Snapshots: host input not yet delivered to the guest ("input"). Output already taken from
    // transmitq is the host's: the writer thread hands it to the sink even while paused (and
    // shutdown() flushes it), so the VMM that saved the state writes it, not the restored one.
    nlohmann::json save_state() const override;
    Result<void> restore_state(const nlohmann::json& state) override;

    // ConsoleInput (any thread). Bytes beyond the queue's room are dropped and counted.
    void enqueue_input(std::span<const uint8_t> bytes) override;
    bool wants_input() const override;
    size_t input_space() const override;
    void set_input_space_notifier(std::function<void()> notifier) override;

    // Waits until every byte taken from transmitq has been handed to the sink.
    void flush_output();
    Counters counters() const;

private:
    // All with m_mutex held. deliver_input() returns true when the input-space notifier is due.
    void process_tx();
    bool deliver_input();
    void fail(std::string_view why);
    bool running() const { return m_ctx.interrupt != nullptr && !m_failed && !m_stop && !m_paused; }
    void writer_thread();
    void stop_writer();

    OutputSink m_sink;
    std::function<void()> m_input_space_notifier;

    mutable std::mutex m_mutex; // everything below
    ActivateContext m_ctx; // interrupt == nullptr while not activated
    bool m_failed { false }; // the driver broke the protocol; idle until reset
    bool m_paused { false }; // the VM is paused: the queues are not touched
    Chain m_chain;
    std::deque<uint8_t> m_input;
    bool m_input_stalled { false }; // the input queue filled up; notify when half of it is free
    std::vector<uint8_t> m_output; // taken from transmitq, not yet handed to the writer
    bool m_tx_stalled { false }; // chains left in transmitq for lack of room in m_output
    bool m_writing { false }; // the writer thread is in the sink
    bool m_stop { false };
    Counters m_counters;
    std::condition_variable m_output_cv; // m_output filled or m_stop
    std::condition_variable m_drained_cv; // the writer finished a chunk
    std::thread m_writer;
};

} // namespace vessel::virtio
