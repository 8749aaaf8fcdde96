// Firecracker's rate limiter (src/vmm/src/rate_limiter/mod.rs), same semantics, for virtio-blk,
// virtio-net (rx and tx) and virtio-rng.
//
// A TokenBucket holds up to `size` tokens and refills continuously at `size` tokens per
// `refill_time_ms`, lazily (only when a reduction finds the budget short), with nanosecond
// resolution and the fractional remainder of time carried over. It starts full. A one-time burst
// is spent before the budget and never refills. A request larger than the whole bucket still
// passes (over-consumption): the bucket is emptied and the limiter blocks for as long as the
// excess takes to refill (ratio × refill_time). A bucket of size 0 or refill time 0 is disabled:
// it never limits.
//
// A RateLimiter has a bandwidth bucket (bytes) and an ops bucket (requests/frames) and one timer.
// A refused request blocks the limiter for 100 ms (Firecracker's retry timer); while blocked it
// refuses everything, whatever the buckets hold. Devices charge one op, then the bytes, and give
// the op back if the bytes are refused (consume_request()).
//
// The timer is a deadline on an injectable monotonic clock instead of Firecracker's timerfd: the
// device's thread asks time_until_unblocked() and waits that long in whatever it already waits in
// (epoll, poll, io_uring, a condition variable); unit tests drive a fake clock.
//
// Threads: every method may be called from any thread (the device's I/O thread consumes, the API
// thread updates); one mutex, and an atomic fast path when nothing limits.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>

namespace vessel {

// Firecracker's TokenBucket: `size` tokens, refilled completely every `refill_time_ms`
// milliseconds (continuously), plus a one-time burst spent first. A size or refill time of 0
// disables the bucket.
struct TokenBucketConfig {
    uint64_t size { 0 };
    uint64_t one_time_burst { 0 };
    uint64_t refill_time_ms { 0 };

    bool enabled() const { return size != 0 && refill_time_ms != 0; }
    bool operator==(const TokenBucketConfig&) const = default;
};

// Firecracker's RateLimiter: a bandwidth bucket (bytes) and an ops bucket (requests/frames).
struct RateLimiterConfig {
    std::optional<TokenBucketConfig> bandwidth;
    std::optional<TokenBucketConfig> ops;

    bool enabled() const { return (bandwidth && bandwidth->enabled()) || (ops && ops->enabled()); }
    bool operator==(const RateLimiterConfig&) const = default;
};

// Monotonic time in nanoseconds. The default reads CLOCK_MONOTONIC (steady_clock).
using RateLimiterClock = std::function<uint64_t()>;
uint64_t monotonic_now_ns();

class TokenBucket {
public:
    enum class Outcome { Success, Failure, OverConsumption };
    struct Reduction {
        Outcome outcome;
        double ratio { 0 }; // OverConsumption: the excess in multiples of the bucket's size
    };

    // Disabled (nullopt) when size or refill time is 0, or refill_time_ms in ns overflows 64 bits.
    static std::optional<TokenBucket> create(const TokenBucketConfig& config, uint64_t now_ns);

    Reduction reduce(uint64_t tokens, uint64_t now_ns);
    // Gives tokens back (a request that was charged but not served): to the burst while one is
    // left (capped at its initial size), else to the budget (capped at size).
    void force_replenish(uint64_t tokens);

    uint64_t size() const { return m_size; }
    uint64_t refill_time_ms() const { return m_refill_time_ms; }
    uint64_t budget() const { return m_budget; }
    uint64_t one_time_burst() const { return m_one_time_burst; }
    uint64_t initial_one_time_burst() const { return m_initial_one_time_burst; }
    TokenBucketConfig config() const { return { m_size, m_initial_one_time_burst, m_refill_time_ms }; }

private:
    TokenBucket() = default;
    void auto_replenish(uint64_t now_ns);

    uint64_t m_size { 0 };
    uint64_t m_initial_one_time_burst { 0 };
    uint64_t m_refill_time_ms { 0 };
    uint64_t m_one_time_burst { 0 };
    uint64_t m_budget { 0 };
    uint64_t m_last_update_ns { 0 };
    // size / gcd and refill_ns / gcd: refill = elapsed * capacity / refill_time without overflow.
    uint64_t m_processed_capacity { 0 };
    uint64_t m_processed_refill_time { 0 };
};

enum class TokenType { Bytes, Ops };

class RateLimiter {
public:
    // How long a refused request blocks the limiter before the device retries.
    static constexpr uint64_t kRefillTimerMs = 100;

    // No config (or a disabled one): never limits, but can be enabled by update() later.
    explicit RateLimiter(const std::optional<RateLimiterConfig>& config = std::nullopt, RateLimiterClock clock = {});
    RateLimiter(const RateLimiter&) = delete;
    RateLimiter& operator=(const RateLimiter&) = delete;

    // Firecracker's consume(): false while blocked; a disabled bucket always passes; a refusal
    // blocks for kRefillTimerMs; an over-consumption passes and blocks for ratio × refill_time.
    bool consume(uint64_t tokens, TokenType type);
    // Firecracker's manual_replenish() (TokenBucket::force_replenish on the bucket, if any).
    void manual_replenish(uint64_t tokens, TokenType type);
    // A device request: one op, then `bytes` when `charge_bytes`; the op is given back when the
    // bytes are refused. True: serve it; false: leave it queued until the limiter unblocks.
    bool consume_request(uint64_t bytes, bool charge_bytes = true);
    // Gives a request's op and bytes back (it was charged but could not be served after all).
    void replenish_request(uint64_t bytes);

    // The timer runs: everything is refused until it expires.
    bool is_blocked() const;
    // 0 when not blocked.
    std::chrono::nanoseconds time_until_unblocked() const;
    // For poll()/epoll_wait(): milliseconds until unblocked, rounded up; -1 when not blocked.
    int poll_timeout_ms() const;

    // PATCH: an absent bucket stays as it is; a present one replaces the bucket with a fresh,
    // full one (burst re-granted, as Firecracker does); a present one of size 0 or refill time 0
    // disables it. A running block is not cut short.
    void update(const RateLimiterConfig& config);
    // The buckets in effect (disabled ones absent).
    RateLimiterConfig config() const;
    // Any bucket enabled.
    bool enabled() const;

    // Test hooks: a copy of a bucket's state (nullopt when disabled).
    std::optional<TokenBucket> bucket(TokenType type) const;

private:
    bool consume_locked(uint64_t tokens, TokenType type, uint64_t now);
    std::optional<TokenBucket>& bucket_locked(TokenType type) { return type == TokenType::Bytes ? m_bandwidth : m_ops; }
    void block_locked(uint64_t now, uint64_t ns);
    void refresh_fast_path_locked();
    uint64_t now() const { return m_clock(); }

    RateLimiterClock m_clock;
    mutable std::mutex m_mutex;
    std::optional<TokenBucket> m_bandwidth;
    std::optional<TokenBucket> m_ops;
    bool m_timer_active { false };
    uint64_t m_blocked_until_ns { 0 };
    // False when no bucket is enabled and no block runs: consume() passes without the mutex.
    std::atomic<bool> m_limiting { false };
    uint64_t m_over_consumption_logs { 0 };
};

} // namespace vessel
