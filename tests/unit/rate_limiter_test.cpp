// Firecracker's token bucket and rate limiter (devices/rate_limiter.h) against a fake clock:
// refill rate and its fractional carry, the one-time burst, over-consumption and the block it
// causes, the 100 ms block after a refusal, disabled buckets, and the PATCH update rules.
#include <gtest/gtest.h>

#include <cstdint>

#include "devices/rate_limiter.h"

using namespace vessel;

namespace {

constexpr uint64_t kMs = 1'000'000; // ns

struct FakeClock {
    uint64_t now { 1'000 * kMs }; // not 0: "time 0" must not be special
    RateLimiterClock fn()
    {
        return [this] { return now; };
    }
    void advance_ms(uint64_t ms) { now += ms * kMs; }
};

RateLimiterConfig bandwidth(uint64_t size, uint64_t refill_ms, uint64_t burst = 0)
{
    RateLimiterConfig c;
    c.bandwidth = TokenBucketConfig { size, burst, refill_ms };
    return c;
}

RateLimiterConfig ops(uint64_t size, uint64_t refill_ms, uint64_t burst = 0)
{
    RateLimiterConfig c;
    c.ops = TokenBucketConfig { size, burst, refill_ms };
    return c;
}

} // namespace

TEST(TokenBucket, DisabledBySizeOrRefillTimeZero)
{
    EXPECT_FALSE(TokenBucket::create({ 0, 0, 1000 }, 0));
    EXPECT_FALSE(TokenBucket::create({ 1000, 0, 0 }, 0));
    EXPECT_FALSE(TokenBucket::create({ 0, 500, 0 }, 0));
    // refill_time in ns overflows 64 bits: Firecracker's checked_mul makes it no bucket.
    EXPECT_FALSE(TokenBucket::create({ 10, 0, UINT64_MAX / 1000 }, 0));
    EXPECT_TRUE(TokenBucket::create({ 1, 0, 1 }, 0));
}

TEST(TokenBucket, StartsFullAndRefillsAtSizePerRefillTime)
{
    auto b = TokenBucket::create({ 1000, 0, 1000 }, 0).value();
    EXPECT_EQ(b.budget(), 1000u);
    EXPECT_EQ(b.reduce(1000, 0).outcome, TokenBucket::Outcome::Success);
    EXPECT_EQ(b.budget(), 0u);
    EXPECT_EQ(b.reduce(1, 0).outcome, TokenBucket::Outcome::Failure);
    // 1000 tokens per 1000 ms: 250 ms bring 250.
    EXPECT_EQ(b.reduce(251, 250 * kMs).outcome, TokenBucket::Outcome::Failure);
    EXPECT_EQ(b.budget(), 250u) << "the refill found by the failed reduction stays";
    EXPECT_EQ(b.reduce(250, 250 * kMs).outcome, TokenBucket::Outcome::Success);
    // A whole refill time (or more) fills it, never beyond its size.
    EXPECT_EQ(b.reduce(1001, 5000 * kMs).outcome, TokenBucket::Outcome::OverConsumption);
    b = TokenBucket::create({ 1000, 0, 1000 }, 0).value();
    ASSERT_EQ(b.reduce(600, 0).outcome, TokenBucket::Outcome::Success);
    EXPECT_EQ(b.reduce(900, 60'000 * kMs).outcome, TokenBucket::Outcome::Success);
    EXPECT_EQ(b.budget(), 100u) << "refilled to 1000 (the size), not more";
}

TEST(TokenBucket, FractionalRefillTimeIsCarriedOver)
{
    // 3 tokens per second: one token every 333.33 ms.
    auto b = TokenBucket::create({ 3, 0, 1000 }, 0).value();
    ASSERT_EQ(b.reduce(3, 0).outcome, TokenBucket::Outcome::Success);
    // At 500 ms: 1.5 tokens worth of time; 1 token, and the 0.5 is kept for later.
    EXPECT_EQ(b.reduce(1, 500 * kMs).outcome, TokenBucket::Outcome::Success);
    // At 700 ms: 366.67 ms since the first token's time (333.33 ms) = 1.1 tokens. Without the
    // carry (200 ms since the last refill) there would be none.
    EXPECT_EQ(b.reduce(1, 700 * kMs).outcome, TokenBucket::Outcome::Success);
    EXPECT_EQ(b.reduce(1, 700 * kMs).outcome, TokenBucket::Outcome::Failure);
    // At 1000 ms the third token is there: 3 x 333.33 ms, give or take the nanosecond each step
    // rounds up (so that no fraction of time is spent twice).
    EXPECT_EQ(b.reduce(1, 1000 * kMs - 1000).outcome, TokenBucket::Outcome::Failure);
    EXPECT_EQ(b.reduce(1, 1000 * kMs + 2).outcome, TokenBucket::Outcome::Success);
}

TEST(TokenBucket, LongRunRateIsExact)
{
    // 1 MiB/s in 4 KiB requests at arbitrary (prime) intervals: what passes in 10 s is 10 MiB
    // plus the initial full bucket, to within one request.
    const uint64_t size = 64 * 1024;
    auto b = TokenBucket::create({ size, 0, 62 }, 0).value(); // 64 KiB per 62 ms
    uint64_t passed = 0;
    uint64_t t = 0;
    const uint64_t end = 10'000 * kMs;
    while (t <= end) {
        while (b.reduce(4096, t).outcome == TokenBucket::Outcome::Success)
            passed += 4096;
        t += 1'234'567; // ~1.23 ms
    }
    double expected = double(size) + double(end) * double(size) / double(62 * kMs);
    EXPECT_NEAR(double(passed), expected, 2 * 4096.0);
}

TEST(TokenBucket, OneTimeBurstIsSpentFirstAndNeverRefills)
{
    auto b = TokenBucket::create({ 100, 50, 1000 }, 0).value();
    EXPECT_EQ(b.one_time_burst(), 50u);
    EXPECT_EQ(b.reduce(40, 0).outcome, TokenBucket::Outcome::Success);
    EXPECT_EQ(b.one_time_burst(), 10u);
    EXPECT_EQ(b.budget(), 100u) << "the budget is untouched while the burst covers a request";
    // Partly from the burst, the rest from the budget.
    EXPECT_EQ(b.reduce(30, 0).outcome, TokenBucket::Outcome::Success);
    EXPECT_EQ(b.one_time_burst(), 0u);
    EXPECT_EQ(b.budget(), 80u);
    // Spent: a long wait refills the budget only.
    EXPECT_EQ(b.reduce(80, 0).outcome, TokenBucket::Outcome::Success);
    EXPECT_EQ(b.reduce(100, 10'000 * kMs).outcome, TokenBucket::Outcome::Success);
    EXPECT_EQ(b.one_time_burst(), 0u);
    EXPECT_EQ(b.reduce(1, 10'000 * kMs).outcome, TokenBucket::Outcome::Failure);
}

TEST(TokenBucket, BurstCountsBeforeAnOverConsumption)
{
    auto b = TokenBucket::create({ 100, 30, 1000 }, 0).value();
    auto r = b.reduce(150, 0); // 30 from the burst, 100 from the budget, 20 beyond
    EXPECT_EQ(r.outcome, TokenBucket::Outcome::OverConsumption);
    EXPECT_DOUBLE_EQ(r.ratio, 0.2);
    EXPECT_EQ(b.one_time_burst(), 0u);
    EXPECT_EQ(b.budget(), 0u);
}

TEST(TokenBucket, OverConsumptionEmptiesTheBucketAndReportsTheExcess)
{
    auto b = TokenBucket::create({ 1000, 0, 1000 }, 0).value();
    auto r = b.reduce(2500, 0);
    EXPECT_EQ(r.outcome, TokenBucket::Outcome::OverConsumption);
    EXPECT_DOUBLE_EQ(r.ratio, 1.5) << "(2500 - 1000 in the bucket) / 1000";
    EXPECT_EQ(b.budget(), 0u);
    // From a partly used bucket: the excess is what the budget did not cover.
    b = TokenBucket::create({ 1000, 0, 1000 }, 0).value();
    ASSERT_EQ(b.reduce(600, 0).outcome, TokenBucket::Outcome::Success);
    r = b.reduce(1500, 0);
    EXPECT_EQ(r.outcome, TokenBucket::Outcome::OverConsumption);
    EXPECT_DOUBLE_EQ(r.ratio, 1.1);
    // A request no larger than the bucket is never an over-consumption, only refused.
    EXPECT_EQ(b.reduce(1000, 0).outcome, TokenBucket::Outcome::Failure);
}

TEST(TokenBucket, ForceReplenishIsCapped)
{
    auto b = TokenBucket::create({ 100, 20, 1000 }, 0).value();
    ASSERT_EQ(b.reduce(10, 0).outcome, TokenBucket::Outcome::Success);
    b.force_replenish(50);
    EXPECT_EQ(b.one_time_burst(), 20u) << "back to the burst while one is left, capped at its size";
    ASSERT_EQ(b.reduce(20 + 60, 0).outcome, TokenBucket::Outcome::Success);
    b.force_replenish(1000);
    EXPECT_EQ(b.budget(), 100u);
}

TEST(RateLimiter, WithoutBucketsNothingIsLimited)
{
    FakeClock clock;
    RateLimiter none(std::nullopt, clock.fn());
    RateLimiter zero(bandwidth(0, 100), clock.fn());
    RateLimiter no_refill(ops(100, 0), clock.fn());
    for (RateLimiter* l : { &none, &zero, &no_refill }) {
        EXPECT_FALSE(l->enabled());
        for (int i = 0; i < 1000; ++i) {
            EXPECT_TRUE(l->consume(UINT64_MAX, TokenType::Bytes));
            EXPECT_TRUE(l->consume(1, TokenType::Ops));
        }
        EXPECT_FALSE(l->is_blocked());
        EXPECT_EQ(l->poll_timeout_ms(), -1);
    }
}

TEST(RateLimiter, RefusalBlocksEverythingFor100Ms)
{
    FakeClock clock;
    RateLimiter l(bandwidth(1000, 1000), clock.fn());
    EXPECT_TRUE(l.consume(1000, TokenType::Bytes));
    EXPECT_FALSE(l.is_blocked());
    EXPECT_FALSE(l.consume(1, TokenType::Bytes));
    EXPECT_TRUE(l.is_blocked());
    EXPECT_EQ(l.time_until_unblocked(), std::chrono::milliseconds(100));
    EXPECT_EQ(l.poll_timeout_ms(), 100);
    // While blocked even the (disabled) ops bucket refuses, and tokens that refilled meanwhile
    // are not handed out.
    clock.advance_ms(99);
    EXPECT_FALSE(l.consume(1, TokenType::Ops));
    EXPECT_FALSE(l.consume(1, TokenType::Bytes));
    EXPECT_EQ(l.poll_timeout_ms(), 1);
    clock.advance_ms(1);
    EXPECT_FALSE(l.is_blocked());
    EXPECT_TRUE(l.consume(100, TokenType::Bytes)) << "100 ms of refill at 1000 per second";
    EXPECT_FALSE(l.consume(1, TokenType::Bytes));
}

TEST(RateLimiter, OverConsumptionPassesThenBlocksForTheExcess)
{
    FakeClock clock;
    RateLimiter l(bandwidth(1000, 1000), clock.fn());
    EXPECT_TRUE(l.consume(2500, TokenType::Bytes)) << "larger than the bucket: it passes";
    EXPECT_TRUE(l.is_blocked());
    EXPECT_EQ(l.time_until_unblocked(), std::chrono::milliseconds(1500)) << "ratio 1.5 x 1000 ms";
    clock.advance_ms(1499);
    EXPECT_FALSE(l.consume(1, TokenType::Bytes));
    clock.advance_ms(1);
    EXPECT_TRUE(l.consume(1000, TokenType::Bytes)) << "a whole refill time passed: full";
}

TEST(RateLimiter, OverConsumptionBlockIsInWholeMilliseconds)
{
    FakeClock clock;
    // 10 MB per 100 ms; 10 MB + 25 kB over: ratio 0.0025 -> 0.25 ms -> 0 ms. Firecracker would
    // arm a zero (disarmed) timer and stay blocked for good; here nothing blocks.
    RateLimiter l(bandwidth(10'000'000, 100), clock.fn());
    EXPECT_TRUE(l.consume(10'025'000, TokenType::Bytes));
    EXPECT_FALSE(l.is_blocked());
    EXPECT_FALSE(l.consume(1, TokenType::Bytes)) << "the bucket is empty: a normal refusal";
    EXPECT_EQ(l.time_until_unblocked(), std::chrono::milliseconds(100));
    // 1.375 x 10 ms = 13.75 ms, truncated to 13 ms.
    RateLimiter m(bandwidth(1000, 10), clock.fn());
    EXPECT_TRUE(m.consume(2375, TokenType::Bytes));
    EXPECT_EQ(m.time_until_unblocked(), std::chrono::milliseconds(13));
}

TEST(RateLimiter, RequestChargesAnOpThenBytesAndReturnsTheOpOnRefusal)
{
    FakeClock clock;
    RateLimiterConfig c = bandwidth(100, 1000);
    c.ops = TokenBucketConfig { 10, 0, 1000 };
    RateLimiter l(c, clock.fn());
    EXPECT_TRUE(l.consume_request(80));
    EXPECT_EQ(l.bucket(TokenType::Ops)->budget(), 9u);
    EXPECT_EQ(l.bucket(TokenType::Bytes)->budget(), 20u);
    EXPECT_FALSE(l.consume_request(50));
    EXPECT_EQ(l.bucket(TokenType::Ops)->budget(), 9u) << "the op was given back";
    EXPECT_TRUE(l.is_blocked());
    clock.advance_ms(100);
    EXPECT_TRUE(l.consume_request(0, false)) << "an op without bytes (flush, GET_ID)";
    EXPECT_EQ(l.bucket(TokenType::Ops)->budget(), 8u) << "refill is lazy: only when a bucket runs short";
    EXPECT_EQ(l.bucket(TokenType::Bytes)->budget(), 20u);
    l.replenish_request(10);
    EXPECT_EQ(l.bucket(TokenType::Ops)->budget(), 9u);
    EXPECT_EQ(l.bucket(TokenType::Bytes)->budget(), 30u);
}

TEST(RateLimiter, OpsLimitCountsRequests)
{
    FakeClock clock;
    RateLimiter l(ops(5, 1000), clock.fn());
    int passed = 0;
    for (int i = 0; i < 20; ++i)
        passed += l.consume_request(1 << 20);
    EXPECT_EQ(passed, 5) << "bytes are free without a bandwidth bucket";
}

TEST(RateLimiter, UpdateReplacesKeepsOrDisablesEachBucket)
{
    FakeClock clock;
    RateLimiterConfig c = bandwidth(1000, 1000, 500);
    c.ops = TokenBucketConfig { 10, 0, 1000 };
    RateLimiter l(c, clock.fn());
    ASSERT_TRUE(l.consume(1200, TokenType::Bytes)); // 500 burst + 700 budget
    ASSERT_TRUE(l.consume(4, TokenType::Ops));

    // Only ops given: bandwidth stays as it is (its state too); ops is a fresh, full bucket.
    RateLimiterConfig u;
    u.ops = TokenBucketConfig { 20, 5, 1000 };
    l.update(u);
    EXPECT_EQ(l.bucket(TokenType::Bytes)->budget(), 300u);
    EXPECT_EQ(l.bucket(TokenType::Bytes)->one_time_burst(), 0u);
    EXPECT_EQ(l.bucket(TokenType::Ops)->budget(), 20u);
    EXPECT_EQ(l.bucket(TokenType::Ops)->one_time_burst(), 5u);

    // The same bandwidth again: replaced by a full one, burst granted again (as Firecracker).
    l.update(bandwidth(1000, 1000, 500));
    EXPECT_EQ(l.bucket(TokenType::Bytes)->budget(), 1000u);
    EXPECT_EQ(l.bucket(TokenType::Bytes)->one_time_burst(), 500u);

    // Size 0 disables a bucket; the other stays.
    l.update(bandwidth(0, 0));
    EXPECT_FALSE(l.bucket(TokenType::Bytes));
    EXPECT_TRUE(l.bucket(TokenType::Ops));
    EXPECT_TRUE(l.consume(UINT64_MAX, TokenType::Bytes));
    EXPECT_EQ(l.config().bandwidth, std::nullopt);
    EXPECT_EQ(l.config().ops, (TokenBucketConfig { 20, 5, 1000 }));

    // An empty update changes nothing.
    l.update(RateLimiterConfig {});
    EXPECT_TRUE(l.bucket(TokenType::Ops));
    EXPECT_TRUE(l.enabled());
    l.update(ops(0, 1000));
    EXPECT_FALSE(l.enabled());
}

TEST(RateLimiter, UpdateDoesNotCutARunningBlockShort)
{
    FakeClock clock;
    RateLimiter l(bandwidth(100, 1000), clock.fn());
    ASSERT_TRUE(l.consume(100, TokenType::Bytes));
    ASSERT_FALSE(l.consume(100, TokenType::Bytes));
    l.update(bandwidth(1 << 30, 1000));
    EXPECT_TRUE(l.is_blocked()) << "Firecracker leaves the timer alone";
    EXPECT_FALSE(l.consume(1, TokenType::Bytes));
    clock.advance_ms(100);
    EXPECT_TRUE(l.consume(1 << 29, TokenType::Bytes)) << "then the new, larger bucket applies";
    // Disabling everything while blocked: still blocked until the deadline, then free.
    ASSERT_FALSE(l.consume(1 << 30, TokenType::Bytes));
    l.update(bandwidth(0, 0));
    EXPECT_FALSE(l.consume(1, TokenType::Bytes));
    clock.advance_ms(100);
    EXPECT_TRUE(l.consume(UINT64_MAX, TokenType::Bytes));
    EXPECT_FALSE(l.is_blocked());
}

TEST(RateLimiter, DeviceLoopAtOneMiBPerSecond)
{
    // How a device uses it: 64 KiB requests, retried when the limiter unblocks. 4 MiB through a
    // 1 MiB/s limit with a 256 KiB bucket take (4 MiB - 256 KiB) / 1 MiB/s = 3.75 s, rounded up
    // to the 100 ms retry ticks (3.8 s).
    FakeClock clock;
    const uint64_t start = clock.now;
    RateLimiter l(bandwidth(256 * 1024, 250), clock.fn());
    uint64_t done = 0;
    while (done < (4u << 20)) {
        if (l.consume_request(64 * 1024)) {
            done += 64 * 1024;
            continue;
        }
        uint64_t wait = static_cast<uint64_t>(l.time_until_unblocked().count());
        ASSERT_GT(wait, 0u) << "a refusal always blocks";
        clock.now += wait;
    }
    double seconds = double(clock.now - start) / 1e9;
    EXPECT_NEAR(seconds, 3.75, 0.1);
}
