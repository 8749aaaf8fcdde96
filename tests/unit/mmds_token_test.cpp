// MMDS V2 session tokens: TTL bounds with Firecracker's message, expiry on a fake clock, the
// bounded table, and failures of the random source.
#include <gtest/gtest.h>

#include <set>
#include <string>

#include "mmds/token_authority.h"
#include "mmds_test_support.h"

using namespace vessel;
using namespace vessel::mmds;

namespace {

TEST(MmdsToken, GeneratedTokenIsValidUntilItExpires)
{
    mmds_test::FakeClock clock;
    TokenAuthority tokens(clock.clock());
    auto token = tokens.generate(1);
    ASSERT_TRUE(token.ok()) << token.error().message();
    EXPECT_EQ(token->size(), 48u); // as long as Firecracker's
    EXPECT_EQ(token->find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"),
        std::string::npos);
    EXPECT_TRUE(tokens.is_valid(*token));
    clock.now += 999;
    EXPECT_TRUE(tokens.is_valid(*token));
    clock.now += 1; // expiry = creation + ttl: no longer valid at that instant
    EXPECT_FALSE(tokens.is_valid(*token));
}

TEST(MmdsToken, LongTtlOutlivesShortOne)
{
    mmds_test::FakeClock clock;
    TokenAuthority tokens(clock.clock());
    auto short_lived = tokens.generate(60).release_value();
    auto long_lived = tokens.generate(21600).release_value();
    EXPECT_NE(short_lived, long_lived);
    clock.now += 60'000;
    EXPECT_FALSE(tokens.is_valid(short_lived));
    EXPECT_TRUE(tokens.is_valid(long_lived));
    EXPECT_EQ(tokens.live_tokens(), 1u);
    clock.now += 21600'000 - 60'000 - 1;
    EXPECT_TRUE(tokens.is_valid(long_lived));
    clock.now += 1;
    EXPECT_FALSE(tokens.is_valid(long_lived));
}

TEST(MmdsToken, TtlOutOfRangeHasFirecrackersMessage)
{
    TokenAuthority tokens;
    for (uint32_t ttl : { 0u, 21601u, 4294967295u }) {
        auto token = tokens.generate(ttl);
        ASSERT_FALSE(token.ok());
        EXPECT_EQ(token.error().message(),
            "Invalid time to live value provided for token: " + std::to_string(ttl)
                + ". Please provide a value between 1 and 21600.");
    }
    EXPECT_TRUE(tokens.generate(1).ok());
    EXPECT_TRUE(tokens.generate(21600).ok());
}

TEST(MmdsToken, UnknownTokensAreInvalid)
{
    TokenAuthority tokens;
    auto token = tokens.generate(60).release_value();
    EXPECT_FALSE(tokens.is_valid(""));
    EXPECT_FALSE(tokens.is_valid("not-a-token"));
    EXPECT_FALSE(tokens.is_valid(token.substr(1)));
    EXPECT_FALSE(tokens.is_valid(token + "x"));
    EXPECT_FALSE(tokens.is_valid(std::string(200, 'A')));
    std::string flipped = token;
    flipped[10] = flipped[10] == 'A' ? 'B' : 'A';
    EXPECT_FALSE(tokens.is_valid(flipped));
    // Another authority (a restarted or restored VMM) does not know this one's tokens.
    TokenAuthority other;
    EXPECT_FALSE(other.is_valid(token));
}

TEST(MmdsToken, InvalidateAllForgetsEveryToken)
{
    TokenAuthority tokens;
    auto a = tokens.generate(100).release_value();
    auto b = tokens.generate(100).release_value();
    tokens.invalidate_all();
    EXPECT_FALSE(tokens.is_valid(a));
    EXPECT_FALSE(tokens.is_valid(b));
    EXPECT_EQ(tokens.live_tokens(), 0u);
}

TEST(MmdsToken, TableIsBounded)
{
    mmds_test::FakeClock clock;
    TokenAuthority tokens(clock.clock());
    // Short-lived tokens that expire, then a full table of live ones: the expired go first.
    auto expired = tokens.generate(1).release_value();
    clock.now += 5000;
    std::set<std::string> seen;
    std::string first_live;
    for (size_t i = 0; i < TokenAuthority::kMaxTokens + 100; ++i) {
        // Later tokens live longer, so the oldest is always the one closest to expiring.
        auto token = tokens.generate(static_cast<uint32_t>(1000 + i / 256)).release_value();
        if (i == 0)
            first_live = token;
        seen.insert(token);
        clock.now += 1;
    }
    EXPECT_EQ(seen.size(), TokenAuthority::kMaxTokens + 100);
    EXPECT_LE(tokens.live_tokens(), TokenAuthority::kMaxTokens);
    EXPECT_FALSE(tokens.is_valid(expired));
    EXPECT_FALSE(tokens.is_valid(first_live)); // evicted: it expired soonest
}

TEST(MmdsToken, RandomSourceFailureIsAnError)
{
    TokenAuthority tokens(
        mmds_test::FakeClock().clock(), [](std::span<uint8_t>) -> Result<void> { return Error("no entropy"); });
    auto token = tokens.generate(60);
    ASSERT_FALSE(token.ok());
    EXPECT_EQ(token.error().message(), "Failed to generate token: no entropy");
}

TEST(MmdsToken, InjectedRandomSourceMakesTokensReproducible)
{
    mmds_test::FakeClock clock;
    auto counting = [](std::span<uint8_t> out) -> Result<void> {
        for (size_t i = 0; i < out.size(); ++i)
            out[i] = static_cast<uint8_t>(i);
        return {};
    };
    TokenAuthority tokens(clock.clock(), counting);
    auto token = tokens.generate(10).release_value();
    EXPECT_EQ(token, "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIj");
    EXPECT_TRUE(tokens.is_valid(token));
}

TEST(MmdsToken, FillRandomFillsTheBuffer)
{
    std::array<uint8_t, 64> a {}, b {};
    ASSERT_TRUE(fill_random(a).ok());
    ASSERT_TRUE(fill_random(b).ok());
    EXPECT_NE(a, b);
}

} // namespace
