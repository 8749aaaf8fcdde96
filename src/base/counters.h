// Monotonic counters a device or engine keeps about itself (requests, bytes, exits, latencies).
// They only ever grow; whoever reports them (the metrics file's per-period deltas, Prometheus'
// running totals) reads them. Relaxed atomics: a reader may see a count a moment late, never a
// torn one, and the hot paths pay one uncontended add.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <string_view>

namespace vessel {

class Counter {
public:
    void add(uint64_t n = 1) { m_value.fetch_add(n, std::memory_order_relaxed); }
    uint64_t get() const { return m_value.load(std::memory_order_relaxed); }

private:
    std::atomic<uint64_t> m_value { 0 };
};

// Durations of an operation: how many, their sum, and the smallest and largest seen.
class LatencyCounter {
public:
    void record(std::chrono::microseconds duration)
    {
        uint64_t us = static_cast<uint64_t>(duration.count() < 0 ? 0 : duration.count());
        m_count.add();
        m_sum_us.add(us);
        uint64_t min = m_min_us.load(std::memory_order_relaxed);
        while ((min == 0 || us < min) && !m_min_us.compare_exchange_weak(min, us, std::memory_order_relaxed)) { }
        uint64_t max = m_max_us.load(std::memory_order_relaxed);
        while (us > max && !m_max_us.compare_exchange_weak(max, us, std::memory_order_relaxed)) { }
    }
    uint64_t count() const { return m_count.get(); }
    uint64_t sum_us() const { return m_sum_us.get(); }
    uint64_t min_us() const { return m_min_us.load(std::memory_order_relaxed); }
    uint64_t max_us() const { return m_max_us.load(std::memory_order_relaxed); }

private:
    Counter m_count;
    Counter m_sum_us;
    std::atomic<uint64_t> m_min_us { 0 };
    std::atomic<uint64_t> m_max_us { 0 };
};

// Where a device reports its counters, by Firecracker's field names ("read_bytes",
// "rx_packets_count", ...). The metrics writer lays them out in Firecracker's groups; a field a
// device does not report is 0.
class MetricsReport {
public:
    virtual ~MetricsReport() = default;
    virtual void counter(std::string_view field, uint64_t total) = 0;
    virtual void latency(std::string_view field, const LatencyCounter& latency) = 0;
};

} // namespace vessel
