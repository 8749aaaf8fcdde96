#include "mmds/token_authority.h"

#include <sys/random.h>

#include <array>
#include <cerrno>

#include <fmt/format.h>

namespace vessel::mmds {

namespace {

std::string base64(std::span<const uint8_t> bytes)
{
    static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    std::string out;
    out.reserve((bytes.size() + 2) / 3 * 4);
    size_t i = 0;
    for (; i + 3 <= bytes.size(); i += 3) {
        const uint32_t v
            = static_cast<uint32_t>(bytes[i]) << 16 | static_cast<uint32_t>(bytes[i + 1]) << 8 | bytes[i + 2];
        out += kAlphabet[v >> 18 & 63];
        out += kAlphabet[v >> 12 & 63];
        out += kAlphabet[v >> 6 & 63];
        out += kAlphabet[v & 63];
    }
    if (i < bytes.size()) {
        const bool two = i + 1 < bytes.size();
        const uint32_t v = static_cast<uint32_t>(bytes[i]) << 16 | (two ? static_cast<uint32_t>(bytes[i + 1]) << 8 : 0);
        out += kAlphabet[v >> 18 & 63];
        out += kAlphabet[v >> 12 & 63];
        out += two ? kAlphabet[v >> 6 & 63] : '=';
        out += '=';
    }
    return out;
}

} // namespace

Result<void> fill_random(std::span<uint8_t> out)
{
    size_t done = 0;
    while (done < out.size()) {
        // SAFETY: writes at most out.size() - done bytes into the caller's buffer.
        const ssize_t n = getrandom(out.data() + done, out.size() - done, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return Error::from_errno("getrandom");
        }
        done += static_cast<size_t>(n);
    }
    return {};
}

TokenAuthority::TokenAuthority(Clock clock, RandomSource random)
    : m_clock(clock ? std::move(clock) : Clock(monotonic_ms))
    , m_random(random ? std::move(random) : RandomSource(fill_random))
{
}

Result<std::string> TokenAuthority::generate(uint32_t ttl_seconds)
{
    if (ttl_seconds < kMinTokenTtlSeconds || ttl_seconds > kMaxTokenTtlSeconds)
        return make_error(
            "Invalid time to live value provided for token: {}. Please provide a value between {} and {}.", ttl_seconds,
            kMinTokenTtlSeconds, kMaxTokenTtlSeconds);

    std::array<uint8_t, kTokenBytes> bytes {};
    TRY_CTX(m_random(bytes), "Failed to generate token");
    std::string token = base64(bytes);

    std::lock_guard lock(m_mutex);
    const uint64_t now = m_clock();
    make_room(now);
    // 288 random bits: a collision with a live token is not a case worth a branch, but
    // insert_or_assign keeps the table consistent even then.
    m_expiry_ms.insert_or_assign(token, now + static_cast<uint64_t>(ttl_seconds) * 1000);
    return token;
}

void TokenAuthority::make_room(uint64_t now)
{
    if (m_expiry_ms.size() < kMaxTokens)
        return;
    std::erase_if(m_expiry_ms, [now](const auto& entry) { return entry.second <= now; });
    if (m_expiry_ms.size() < kMaxTokens)
        return;
    auto soonest = m_expiry_ms.begin();
    for (auto it = m_expiry_ms.begin(); it != m_expiry_ms.end(); ++it) {
        if (it->second < soonest->second)
            soonest = it;
    }
    m_expiry_ms.erase(soonest);
}

bool TokenAuthority::is_valid(std::string_view token) const
{
    if (token.empty() || token.size() > kMaxTokenLength)
        return false;
    std::lock_guard lock(m_mutex);
    auto it = m_expiry_ms.find(std::string(token));
    // Firecracker: valid while expiry > now.
    return it != m_expiry_ms.end() && it->second > m_clock();
}

void TokenAuthority::invalidate_all()
{
    std::lock_guard lock(m_mutex);
    m_expiry_ms.clear();
}

size_t TokenAuthority::live_tokens() const
{
    std::lock_guard lock(m_mutex);
    const uint64_t now = m_clock();
    size_t count = 0;
    for (const auto& entry : m_expiry_ms)
        count += entry.second > now ? 1 : 0;
    return count;
}

} // namespace vessel::mmds
