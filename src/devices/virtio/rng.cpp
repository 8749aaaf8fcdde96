#include "devices/virtio/rng.h"

#include <pthread.h>
#include <signal.h>
#include <sys/random.h>

#include <cerrno>
#include <cstring>

#include "base/log.h"

namespace vessel::virtio {

RngDevice::RngDevice(const std::optional<RateLimiterConfig>& limiter, RateLimiterClock clock)
    : m_limiter(limiter, std::move(clock))
{
}

RngDevice::~RngDevice()
{
    stop_retry_thread();
}

void RngDevice::read_config(uint64_t, std::span<uint8_t> data)
{
    std::memset(data.data(), 0, data.size());
}

Result<void> RngDevice::activate(const ActivateContext& ctx)
{
    if (ctx.queues.empty() || !ctx.queues[0].active())
        return make_error("virtio-rng: the request queue is not set up");
    stop_retry_thread();
    {
        std::lock_guard lock(m_mutex);
        m_ctx = ctx;
        m_paused = ctx.paused; // a snapshot restore: resume() serves the queue
        m_throttled = false;
        m_stop = false;
    }
    // Only a limited device can have a request waiting that no notification will bring back.
    if (m_limiter.enabled()) {
        try {
            m_retry = std::thread([this] { retry_loop(); });
        } catch (const std::system_error& e) {
            std::lock_guard lock(m_mutex);
            m_ctx = {};
            return make_error("virtio-rng: cannot start the rate limiter's thread: {}", e.what());
        }
    }
    return {};
}

void RngDevice::stop_retry_thread()
{
    if (!m_retry.joinable())
        return;
    {
        std::lock_guard lock(m_mutex);
        m_stop = true;
    }
    m_wake.notify_all();
    m_retry.join();
}

void RngDevice::reset()
{
    stop_retry_thread();
    std::lock_guard lock(m_mutex);
    m_ctx = {};
    m_paused = false;
    m_throttled = false;
}

void RngDevice::pause()
{
    // Under the mutex: once this returns, the retry thread cannot be inside process_locked().
    std::lock_guard lock(m_mutex);
    m_paused = true;
}

void RngDevice::resume()
{
    {
        std::lock_guard lock(m_mutex);
        m_paused = false;
        // Buffers the driver notified while paused (looking costs one read of avail->idx); while
        // the limiter blocks, the retry thread comes back to them.
        if (!m_limiter.is_blocked())
            process_locked();
    }
    m_wake.notify_all();
}

void RngDevice::notify(uint16_t queue)
{
    if (queue != 0)
        return;
    std::lock_guard lock(m_mutex);
    if (!m_ctx.interrupt || m_paused)
        return;
    if (m_limiter.is_blocked()) {
        // Firecracker counts a queue event that finds its limiter blocked here (not as
        // throttled); the retry thread serves the queue when the block ends.
        m_metrics.rate_limiter_event_count.add();
        return;
    }
    process_locked();
}

void RngDevice::retry_loop()
{
    // Signals belong to the VMM's event loop and the vCPU threads.
    sigset_t all;
    sigfillset(&all);
    ::pthread_sigmask(SIG_BLOCK, &all, nullptr);
    ::pthread_setname_np(::pthread_self(), "vessel-rng");
    std::unique_lock lock(m_mutex);
    while (!m_stop) {
        if (!m_throttled || m_paused || !m_ctx.interrupt) {
            m_wake.wait(lock);
            continue;
        }
        auto wait = m_limiter.time_until_unblocked();
        if (wait.count() > 0) {
            m_wake.wait_for(lock, wait);
            continue;
        }
        m_metrics.rate_limiter_event_count.add();
        process_locked(); // clears m_throttled, or sets it again (with a new deadline)
    }
}

void RngDevice::process_locked()
{
    if (!m_ctx.interrupt || m_paused)
        return;
    Queue& q = m_ctx.queues[0];
    bool used = false;
    bool was_throttled = m_throttled;
    m_throttled = false;
    for (;;) {
        auto popped = q.pop(m_chain);
        if (!popped.ok()) {
            m_ctx.interrupt->device_error(popped.error().message());
            return;
        }
        if (!popped.value())
            break;
        m_metrics.entropy_event_count.add();
        ChainWriter writer(m_chain);
        size_t want = std::min<uint64_t>(writer.remaining(), kMaxRequestBytes);
        // Charged what it will get (at most kMaxRequestBytes; Firecracker fills, and charges,
        // the whole buffer).
        if (!m_limiter.consume_request(want)) {
            q.undo_pop();
            m_metrics.entropy_rate_limiter_throttled.add();
            m_throttled = true;
            break;
        }
        size_t filled = 0;
        bool failed = false;
        writer.for_each(want, [&](uint8_t* p, size_t n) {
            size_t got = 0;
            while (got < n && !failed) {
                ssize_t r = ::getrandom(p + got, n - got, 0);
                if (r < 0) {
                    if (errno == EINTR)
                        continue;
                    failed = true;
                    break;
                }
                got += static_cast<size_t>(r);
            }
            filled += got;
        });
        if (failed)
            m_metrics.host_rng_fails.add();
        q.add_used(m_chain, static_cast<uint32_t>(filled));
        m_metrics.entropy_bytes.add(filled);
        used = true;
    }
    if (used && q.needs_interrupt())
        m_ctx.interrupt->signal_queue(0);
    // A new block: the retry thread computes its deadline again.
    if (m_throttled && !was_throttled)
        m_wake.notify_all();
}

void RngDevice::report_metrics(MetricsReport& out) const
{
    out.counter("entropy_event_count", m_metrics.entropy_event_count.get());
    out.counter("entropy_bytes", m_metrics.entropy_bytes.get());
    out.counter("host_rng_fails", m_metrics.host_rng_fails.get());
    out.counter("entropy_rate_limiter_throttled", m_metrics.entropy_rate_limiter_throttled.get());
    out.counter("rate_limiter_event_count", m_metrics.rate_limiter_event_count.get());
}

} // namespace vessel::virtio
