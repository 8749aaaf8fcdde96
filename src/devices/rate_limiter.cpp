#include "devices/rate_limiter.h"

#include <algorithm>
#include <numeric>

#include "base/log.h"
#include "base/log_limit.h"

namespace vessel {

namespace {

constexpr uint64_t kNsPerMs = 1'000'000;

} // namespace

uint64_t monotonic_now_ns()
{
    return static_cast<uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
            .count());
}

// --- TokenBucket ---------------------------------------------------------------------------------

std::optional<TokenBucket> TokenBucket::create(const TokenBucketConfig& config, uint64_t now_ns)
{
    if (config.size == 0 || config.refill_time_ms == 0)
        return std::nullopt;
    uint64_t refill_ns;
    if (__builtin_mul_overflow(config.refill_time_ms, kNsPerMs, &refill_ns))
        return std::nullopt; // Firecracker's checked_mul: such a bucket is no bucket
    TokenBucket b;
    b.m_size = config.size;
    b.m_initial_one_time_burst = b.m_one_time_burst = config.one_time_burst;
    b.m_refill_time_ms = config.refill_time_ms;
    b.m_budget = config.size; // starts full
    b.m_last_update_ns = now_ns;
    uint64_t common = std::gcd(config.size, refill_ns);
    b.m_processed_capacity = config.size / common;
    b.m_processed_refill_time = refill_ns / common;
    return b;
}

void TokenBucket::auto_replenish(uint64_t now_ns)
{
    uint64_t delta = now_ns > m_last_update_ns ? now_ns - m_last_update_ns : 0;
    if (delta >= m_refill_time_ms * kNsPerMs) {
        m_budget = m_size;
        m_last_update_ns = now_ns;
        return;
    }
    // delta < refill_ns fits 64 bits and so does each factor: the 128-bit products cannot overflow.
    using u128 = unsigned __int128;
    u128 tokens = u128(delta) * m_processed_capacity / m_processed_refill_time;
    // Advance last_update only by the time those whole tokens took (rounded up, so no fraction of
    // a nanosecond is spent twice): the remainder counts towards the next token.
    u128 spent = tokens * m_processed_refill_time;
    u128 adjustment = spent / m_processed_capacity + (spent % m_processed_capacity != 0 ? 1 : 0);
    m_last_update_ns += static_cast<uint64_t>(adjustment);
    uint64_t add = static_cast<uint64_t>(tokens); // < size, since delta < refill time
    m_budget = std::min(m_budget > UINT64_MAX - add ? UINT64_MAX : m_budget + add, m_size);
}

TokenBucket::Reduction TokenBucket::reduce(uint64_t tokens, uint64_t now_ns)
{
    // The one-time burst first: while it covers a request, the budget is untouched and refill
    // time does not accumulate (last_update moves along).
    if (m_one_time_burst > 0) {
        if (m_one_time_burst >= tokens) {
            m_one_time_burst -= tokens;
            m_last_update_ns = now_ns;
            return { Outcome::Success };
        }
        tokens -= m_one_time_burst;
        m_one_time_burst = 0; // not given back if the rest is refused (as Firecracker)
    }
    if (tokens > m_budget) {
        auto_replenish(now_ns);
        if (tokens > m_size) {
            // Larger than the whole bucket: it would never fit, so it passes, empties the bucket,
            // and the caller blocks for the time the excess takes to refill.
            tokens -= m_budget;
            m_budget = 0;
            return { Outcome::OverConsumption, static_cast<double>(tokens) / static_cast<double>(m_size) };
        }
        if (tokens > m_budget)
            return { Outcome::Failure };
    }
    m_budget -= tokens;
    return { Outcome::Success };
}

void TokenBucket::force_replenish(uint64_t tokens)
{
    // Still in the burst: give them to the burst (a reduction that also took budget loses that
    // part, which Firecracker accepts as inconsequential).
    if (m_one_time_burst > 0) {
        uint64_t sum = m_one_time_burst > UINT64_MAX - tokens ? UINT64_MAX : m_one_time_burst + tokens;
        m_one_time_burst = std::min(sum, m_initial_one_time_burst);
        return;
    }
    uint64_t sum = m_budget > UINT64_MAX - tokens ? UINT64_MAX : m_budget + tokens;
    m_budget = std::min(sum, m_size);
}

// --- RateLimiter ---------------------------------------------------------------------------------

RateLimiter::RateLimiter(const std::optional<RateLimiterConfig>& config, RateLimiterClock clock)
    : m_clock(clock ? std::move(clock) : RateLimiterClock(monotonic_now_ns))
{
    if (config) {
        uint64_t t = now();
        if (config->bandwidth)
            m_bandwidth = TokenBucket::create(*config->bandwidth, t);
        if (config->ops)
            m_ops = TokenBucket::create(*config->ops, t);
    }
    std::lock_guard lock(m_mutex);
    refresh_fast_path_locked();
}

void RateLimiter::refresh_fast_path_locked()
{
    m_limiting.store(m_bandwidth || m_ops || m_timer_active, std::memory_order_relaxed);
}

void RateLimiter::block_locked(uint64_t now_ns, uint64_t ns)
{
    m_timer_active = true;
    m_blocked_until_ns = now_ns + ns;
    m_limiting.store(true, std::memory_order_relaxed);
}

bool RateLimiter::consume_locked(uint64_t tokens, TokenType type, uint64_t t)
{
    if (m_timer_active) {
        if (t < m_blocked_until_ns)
            return false;
        // The timer expired (Firecracker's event handler would have cleared it by now).
        m_timer_active = false;
        refresh_fast_path_locked();
    }
    auto& bucket = bucket_locked(type);
    if (!bucket)
        return true;
    TokenBucket::Reduction r = bucket->reduce(tokens, t);
    switch (r.outcome) {
    case TokenBucket::Outcome::Success: return true;
    case TokenBucket::Outcome::Failure: block_locked(t, kRefillTimerMs * kNsPerMs); return false;
    case TokenBucket::Outcome::OverConsumption: {
        if (log_allowed(m_over_consumption_logs))
            log_debug("rate limiter: consumed {} tokens from a bucket of size {}", tokens, bucket->size());
        // Whole milliseconds, as Firecracker's timer. Firecracker would arm a zero timer when
        // that rounds to 0, which disarms a timerfd and leaves the limiter blocked for good;
        // here such a short block is simply not taken.
        double ms = r.ratio * static_cast<double>(bucket->refill_time_ms());
        uint64_t whole_ms = ms >= 1.8e13 ? uint64_t(1.8e13) : static_cast<uint64_t>(ms);
        if (whole_ms > 0)
            block_locked(t, whole_ms * kNsPerMs);
        return true;
    }
    }
    return true;
}

bool RateLimiter::consume(uint64_t tokens, TokenType type)
{
    if (!m_limiting.load(std::memory_order_relaxed))
        return true;
    std::lock_guard lock(m_mutex);
    return consume_locked(tokens, type, now());
}

void RateLimiter::manual_replenish(uint64_t tokens, TokenType type)
{
    std::lock_guard lock(m_mutex);
    if (auto& bucket = bucket_locked(type))
        bucket->force_replenish(tokens);
}

bool RateLimiter::consume_request(uint64_t bytes, bool charge_bytes)
{
    if (!m_limiting.load(std::memory_order_relaxed))
        return true;
    std::lock_guard lock(m_mutex);
    uint64_t t = now();
    if (!consume_locked(1, TokenType::Ops, t))
        return false;
    if (charge_bytes && !consume_locked(bytes, TokenType::Bytes, t)) {
        if (m_ops)
            m_ops->force_replenish(1);
        return false;
    }
    return true;
}

void RateLimiter::replenish_request(uint64_t bytes)
{
    std::lock_guard lock(m_mutex);
    if (m_ops)
        m_ops->force_replenish(1);
    if (m_bandwidth)
        m_bandwidth->force_replenish(bytes);
}

bool RateLimiter::is_blocked() const
{
    if (!m_limiting.load(std::memory_order_relaxed))
        return false;
    std::lock_guard lock(m_mutex);
    return m_timer_active && now() < m_blocked_until_ns;
}

std::chrono::nanoseconds RateLimiter::time_until_unblocked() const
{
    if (!m_limiting.load(std::memory_order_relaxed))
        return std::chrono::nanoseconds(0);
    std::lock_guard lock(m_mutex);
    uint64_t t = now();
    if (!m_timer_active || t >= m_blocked_until_ns)
        return std::chrono::nanoseconds(0);
    return std::chrono::nanoseconds(m_blocked_until_ns - t);
}

int RateLimiter::poll_timeout_ms() const
{
    if (!is_blocked())
        return -1;
    uint64_t ns = static_cast<uint64_t>(time_until_unblocked().count());
    uint64_t ms = (ns + kNsPerMs - 1) / kNsPerMs;
    return static_cast<int>(std::min<uint64_t>(ms, INT32_MAX));
}

void RateLimiter::update(const RateLimiterConfig& config)
{
    std::lock_guard lock(m_mutex);
    uint64_t t = now();
    // Firecracker's BucketUpdate: None (absent), Disabled (size or refill 0), Update(new full bucket).
    if (config.bandwidth)
        m_bandwidth = TokenBucket::create(*config.bandwidth, t);
    if (config.ops)
        m_ops = TokenBucket::create(*config.ops, t);
    refresh_fast_path_locked();
}

RateLimiterConfig RateLimiter::config() const
{
    std::lock_guard lock(m_mutex);
    RateLimiterConfig c;
    if (m_bandwidth)
        c.bandwidth = m_bandwidth->config();
    if (m_ops)
        c.ops = m_ops->config();
    return c;
}

bool RateLimiter::enabled() const
{
    std::lock_guard lock(m_mutex);
    return m_bandwidth || m_ops;
}

std::optional<TokenBucket> RateLimiter::bucket(TokenType type) const
{
    std::lock_guard lock(m_mutex);
    return type == TokenType::Bytes ? m_bandwidth : m_ops;
}

} // namespace vessel
