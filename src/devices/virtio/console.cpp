#include "devices/virtio/console.h"

#include <pthread.h>

#include <algorithm>
#include <cstring>

#include "base/log.h"
#include "devices/virtio/state_json.h"

namespace vessel::virtio {

ConsoleDevice::ConsoleDevice(OutputSink sink)
    : m_sink(std::move(sink))
{
    m_output.reserve(kOutputBufferSize);
    m_writer = std::thread([this] { writer_thread(); });
}

ConsoleDevice::~ConsoleDevice()
{
    stop_writer();
}

void ConsoleDevice::read_config(uint64_t offset, std::span<uint8_t> data)
{
    // No F_SIZE and no MULTIPORT: cols, rows and max_nr_ports read as zero; emerg_wr is
    // write-only. Every byte of the window reads zero.
    (void)offset;
    std::memset(data.data(), 0, data.size());
}

Result<void> ConsoleDevice::activate(const ActivateContext& ctx)
{
    if (ctx.queues.size() < 2 || !ctx.queues[kReceiveQueue].active() || !ctx.queues[kTransmitQueue].active())
        return make_error("virtio-console: receiveq and transmitq must both be set up");
    bool notify_space;
    {
        std::lock_guard lock(m_mutex);
        m_ctx = ctx;
        m_failed = false;
        m_paused = ctx.paused; // a snapshot restore: resume() does what follows
        m_tx_stalled = false;
        // The driver posts receive buffers and may transmit before DRIVER_OK; those
        // notifications were not delivered (the transport was not activated yet).
        process_tx();
        notify_space = deliver_input();
    }
    if (notify_space && m_input_space_notifier)
        m_input_space_notifier();
    return {};
}

void ConsoleDevice::reset()
{
    std::lock_guard lock(m_mutex);
    // Host input not yet delivered and output already taken from the guest are kept: they
    // belong to the host's side of the console, not to the driver's queues.
    m_ctx = {};
    m_failed = false;
    m_paused = false;
    m_tx_stalled = false;
}

void ConsoleDevice::shutdown()
{
    reset();
    stop_writer();
}

void ConsoleDevice::pause()
{
    std::lock_guard lock(m_mutex);
    m_paused = true;
}

void ConsoleDevice::resume()
{
    bool notify_space;
    {
        std::lock_guard lock(m_mutex);
        m_paused = false;
        // Transmit chains notified while paused, input that arrived meanwhile.
        process_tx();
        notify_space = deliver_input();
    }
    if (notify_space && m_input_space_notifier)
        m_input_space_notifier();
}

nlohmann::json ConsoleDevice::save_state() const
{
    std::lock_guard lock(m_mutex);
    return { { "input", nlohmann::json::binary(std::vector<uint8_t>(m_input.begin(), m_input.end())) } };
}

Result<void> ConsoleDevice::restore_state(const nlohmann::json& state)
{
    auto input = TRY(state::get_binary(state, "input", "virtio-console", kInputQueueSize));
    std::lock_guard lock(m_mutex);
    m_input.assign(input.begin(), input.end());
    // A full queue holds stdin back until the guest has taken half of it, as before the snapshot.
    m_input_stalled = m_input.size() >= kInputQueueSize;
    return {};
}

void ConsoleDevice::notify(uint16_t queue)
{
    bool notify_space = false;
    {
        std::lock_guard lock(m_mutex);
        if (queue == kTransmitQueue)
            process_tx();
        else if (queue == kReceiveQueue)
            notify_space = deliver_input();
    }
    if (notify_space && m_input_space_notifier)
        m_input_space_notifier();
}

void ConsoleDevice::fail(std::string_view why)
{
    m_failed = true;
    m_ctx.interrupt->device_error(why);
}

void ConsoleDevice::process_tx()
{
    if (!running() || m_tx_stalled)
        return;
    Queue& q = m_ctx.queues[kTransmitQueue];
    bool used = false;
    size_t before = m_output.size();
    for (;;) {
        auto popped = q.pop(m_chain);
        if (!popped.ok()) {
            fail(popped.error().message());
            return;
        }
        if (!popped.value())
            break;
        uint64_t take = std::min<uint64_t>(m_chain.readable_bytes, kOutputBufferSize);
        if (m_output.size() + take > kOutputBufferSize) {
            // No room: the chain stays in the ring until the writer thread has taken the
            // buffer's contents (it then calls process_tx() again).
            q.undo_pop();
            m_tx_stalled = true;
            break;
        }
        ChainReader reader(m_chain);
        reader.for_each(take, [&](const uint8_t* p, size_t n) { m_output.insert(m_output.end(), p, p + n); });
        m_counters.tx_discarded_bytes += m_chain.readable_bytes - take;
        // Writable segments in a transmit buffer are not ours to fill: nothing written.
        q.add_used(m_chain, 0);
        used = true;
    }
    if (m_output.size() != before)
        m_output_cv.notify_one();
    if (used && q.needs_interrupt())
        m_ctx.interrupt->signal_queue(kTransmitQueue);
}

bool ConsoleDevice::deliver_input()
{
    if (running() && !m_input.empty()) {
        Queue& q = m_ctx.queues[kReceiveQueue];
        bool used = false;
        while (!m_input.empty()) {
            auto popped = q.pop(m_chain);
            if (!popped.ok()) {
                fail(popped.error().message());
                return false;
            }
            if (!popped.value())
                break;
            ChainWriter writer(m_chain);
            size_t n = std::min<uint64_t>(writer.remaining(), m_input.size());
            writer.for_each(n, [&](uint8_t* p, size_t len) {
                std::copy_n(m_input.begin(), len, p);
                m_input.erase(m_input.begin(), m_input.begin() + static_cast<std::ptrdiff_t>(len));
            });
            // A buffer without device-writable space goes back empty.
            q.add_used(m_chain, static_cast<uint32_t>(n));
            m_counters.rx_bytes += n;
            used = true;
        }
        if (used && q.needs_interrupt())
            m_ctx.interrupt->signal_queue(kReceiveQueue);
    }
    if (m_input_stalled && m_input.size() <= kInputQueueSize / 2) {
        m_input_stalled = false;
        return true;
    }
    return false;
}

void ConsoleDevice::enqueue_input(std::span<const uint8_t> bytes)
{
    bool notify_space;
    {
        std::lock_guard lock(m_mutex);
        size_t take = std::min(bytes.size(), kInputQueueSize - m_input.size());
        m_input.insert(m_input.end(), bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(take));
        if (take < bytes.size()) {
            m_counters.input_dropped += bytes.size() - take;
            log_debug("virtio-console: input queue full, dropped {} byte(s)", bytes.size() - take);
        }
        if (m_input.size() >= kInputQueueSize)
            m_input_stalled = true;
        notify_space = deliver_input();
    }
    if (notify_space && m_input_space_notifier)
        m_input_space_notifier();
}

bool ConsoleDevice::wants_input() const
{
    return input_space() > 0;
}

size_t ConsoleDevice::input_space() const
{
    std::lock_guard lock(m_mutex);
    return kInputQueueSize - m_input.size();
}

void ConsoleDevice::set_input_space_notifier(std::function<void()> notifier)
{
    m_input_space_notifier = std::move(notifier);
}

void ConsoleDevice::flush_output()
{
    std::unique_lock lock(m_mutex);
    m_drained_cv.wait(lock, [&] { return m_output.empty() && !m_writing; });
}

ConsoleDevice::Counters ConsoleDevice::counters() const
{
    std::lock_guard lock(m_mutex);
    return m_counters;
}

void ConsoleDevice::writer_thread()
{
    ::pthread_setname_np(::pthread_self(), "vessel-hvc-out");
    std::vector<uint8_t> chunk;
    chunk.reserve(kOutputBufferSize);
    std::unique_lock lock(m_mutex);
    for (;;) {
        m_output_cv.wait(lock, [&] { return !m_output.empty() || m_stop; });
        if (m_output.empty())
            break; // stopping, and everything was written
        chunk.swap(m_output);
        m_writing = true;
        // The buffer is free again: take the chains that did not fit while the sink writes.
        if (m_tx_stalled) {
            m_tx_stalled = false;
            process_tx();
        }
        lock.unlock();
        m_sink(chunk);
        lock.lock();
        m_counters.tx_bytes += chunk.size();
        chunk.clear();
        m_writing = false;
        m_drained_cv.notify_all();
    }
}

void ConsoleDevice::stop_writer()
{
    {
        std::lock_guard lock(m_mutex);
        if (!m_writer.joinable())
            return;
        m_stop = true;
        m_output_cv.notify_one();
    }
    // The writer hands what is left (at most kOutputBufferSize) to the sink before it exits, so
    // the guest's last words reach stdout.
    m_writer.join();
}

} // namespace vessel::virtio
