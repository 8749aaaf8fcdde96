// virtio-rng (virtio v1.2, 5.4): one request queue; every device-writable buffer the driver
// offers is filled from the host's getrandom() on the notifying vCPU's thread (it never blocks
// once the host's pool is initialised, and a request is at most a page).
//
// No thread, yet pause() is not empty: a QueueNotify caught by an ioeventfd reaches notify() from
// the event loop, possibly after the vCPUs parked. While paused such a notification leaves the
// queue alone and resume() serves it.
//
// Rate limiting (Firecracker's entropy device): each request costs one op and the bytes it gets.
// A refused request goes back to the ring. Someone must come back to it when the limiter
// unblocks, and no vCPU will (the driver waits for the interrupt), so a limited device has one
// small thread that sleeps until the limiter's deadline and then serves the queue. m_mutex
// serialises it with notify(), pause() and reset().
#pragma once

#include <condition_variable>
#include <mutex>
#include <optional>
#include <thread>

#include "base/counters.h"
#include "devices/rate_limiter.h"
#include "devices/virtio/queue.h"
#include "devices/virtio/virtio.h"

namespace vessel::virtio {

// Firecracker's entropy metrics that this device can tell (totals since construction).
struct RngMetrics {
    Counter entropy_event_count; // requests popped (a throttled one counts again when retried)
    Counter entropy_bytes; // random bytes handed to the guest
    Counter host_rng_fails; // getrandom() failed
    Counter entropy_rate_limiter_throttled; // requests deferred by the limiter
    Counter rate_limiter_event_count; // the limiter unblocked, or a notification while it blocked
};

class RngDevice final : public VirtioDevice {
public:
    // Largest buffer filled per request; the rest of a longer buffer stays unwritten.
    static constexpr uint32_t kMaxRequestBytes = 64 * 1024;

    // `limiter`: PUT /entropy's rate_limiter; `clock`: its time source (tests).
    explicit RngDevice(const std::optional<RateLimiterConfig>& limiter = std::nullopt, RateLimiterClock clock = {});
    ~RngDevice() override;
    RngDevice(const RngDevice&) = delete;
    RngDevice& operator=(const RngDevice&) = delete;

    DeviceType type() const override { return DeviceType::Rng; }
    std::string_view name() const override { return "rng"; }
    uint64_t features() const override { return 0; }
    std::vector<uint16_t> queue_max_sizes() const override { return { 256 }; }
    void read_config(uint64_t offset, std::span<uint8_t> data) override;
    Result<void> activate(const ActivateContext& ctx) override;
    void notify(uint16_t queue) override;
    void reset() override;
    void pause() override;
    void resume() override;
    void report_metrics(MetricsReport& out) const override;

    uint64_t bytes_served() const { return m_metrics.entropy_bytes.get(); }
    const RngMetrics& metrics() const { return m_metrics; }
    const RateLimiter& rate_limiter() const { return m_limiter; }

private:
    // With m_mutex held.
    void process_locked();
    void retry_loop();
    void stop_retry_thread();

    std::mutex m_mutex;
    std::condition_variable m_wake; // the retry thread: throttled, resumed, or stop
    std::thread m_retry;
    bool m_stop { false };
    ActivateContext m_ctx;
    Chain m_chain;
    bool m_paused { false };
    bool m_throttled { false }; // a request waits in the ring for the limiter
    RateLimiter m_limiter;
    RngMetrics m_metrics;
};

} // namespace vessel::virtio
