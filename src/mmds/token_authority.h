// Session tokens for MMDS V2 (PUT /latest/api/token with X-metadata-token-ttl-seconds, then
// GETs carrying X-metadata-token). Firecracker encrypts the expiry into the token (AES-GCM, no
// state); we hand out random tokens from getrandom() and remember their expiry instead: guests
// treat tokens as opaque strings, so either is compatible, and a table needs no cipher.
//
// The table is bounded (kMaxTokens): a guest asking for tokens in a loop cannot grow host
// memory. When it is full, expired tokens go first, then the one closest to expiring.
// Tokens are 48 characters of base64, the length Firecracker's have.
//
// Thread-safe: every net device's I/O thread may mint and check tokens.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>

#include "base/result.h"
#include "mmds/clock.h"

namespace vessel::mmds {

constexpr uint32_t kMinTokenTtlSeconds = 1;
constexpr uint32_t kMaxTokenTtlSeconds = 21600;
// Firecracker refuses longer tokens before decoding them; we do the same before the look-up.
constexpr size_t kMaxTokenLength = 70;

class TokenAuthority {
public:
    static constexpr size_t kMaxTokens = 4096;
    static constexpr size_t kTokenBytes = 36; // 48 base64 characters, no padding

    // Fills a buffer with random bytes (getrandom() unless a test injects its own).
    using RandomSource = std::function<Result<void>(std::span<uint8_t>)>;

    explicit TokenAuthority(Clock clock = monotonic_ms, RandomSource random = {});

    TokenAuthority(const TokenAuthority&) = delete;
    TokenAuthority& operator=(const TokenAuthority&) = delete;

    // A new token valid for `ttl_seconds` (1..21600). The error text for an out-of-range TTL is
    // Firecracker's, which the guest gets as the body of a 400.
    Result<std::string> generate(uint32_t ttl_seconds);

    // True if `token` was generated here and has not expired.
    bool is_valid(std::string_view token) const;

    // Forgets every token (a restored snapshot must not honour tokens minted before it, as
    // Firecracker regenerates its key).
    void invalidate_all();

    size_t live_tokens() const;

private:
    void make_room(uint64_t now);

    Clock m_clock;
    RandomSource m_random;
    mutable std::mutex m_mutex;
    std::unordered_map<std::string, uint64_t> m_expiry_ms; // token → expiry (monotonic ms)
};

// getrandom(2) until the buffer is full.
Result<void> fill_random(std::span<uint8_t> out);

} // namespace vessel::mmds
