#include "api/request/common.h"

namespace vessel::api {

Result<void> check_resource_id(const std::string& id)
{
    if (id.empty())
        return make_error("The ID cannot be empty.");
    for (unsigned char c : id) {
        // Rust's char::is_alphanumeric() also takes non-ASCII letters; ids are used in metric
        // names here, so only ASCII is accepted.
        if (!(std::isalnum(c) || c == '_'))
            return make_error("API Resource IDs can only contain alphanumeric characters and underscores.");
    }
    return {};
}

namespace {

Result<std::optional<TokenBucketConfig>> read_bucket(const JsonObject& limiter, std::string_view field)
{
    auto bucket = TRY(limiter.opt_object(field, "TokenBucketConfig", { "size", "one_time_burst", "refill_time" }));
    if (!bucket)
        return std::optional<TokenBucketConfig> {};
    TokenBucketConfig out;
    out.size = TRY(bucket->unsigned_int("size", "u64"));
    out.one_time_burst = TRY(bucket->opt_unsigned("one_time_burst", "u64")).value_or(0);
    out.refill_time_ms = TRY(bucket->unsigned_int("refill_time", "u64"));
    return std::optional<TokenBucketConfig>(out);
}

nlohmann::ordered_json bucket_json(const std::optional<TokenBucketConfig>& b)
{
    // A disabled bucket (size or refill time 0) is reported as absent, as Firecracker does.
    if (!b || !b->enabled())
        return nullptr;
    nlohmann::ordered_json o;
    o["size"] = b->size;
    o["one_time_burst"]
        = b->one_time_burst ? nlohmann::ordered_json(b->one_time_burst) : nlohmann::ordered_json(nullptr);
    o["refill_time"] = b->refill_time_ms;
    return o;
}

} // namespace

Result<std::optional<RateLimiterConfig>> read_rate_limiter(const JsonObject& body, std::string_view field)
{
    auto limiter = TRY(body.opt_object(field, "RateLimiterConfig", { "bandwidth", "ops" }));
    if (!limiter)
        return std::optional<RateLimiterConfig> {};
    RateLimiterConfig out;
    out.bandwidth = TRY(read_bucket(*limiter, "bandwidth"));
    out.ops = TRY(read_bucket(*limiter, "ops"));
    return std::optional<RateLimiterConfig>(out);
}

nlohmann::ordered_json rate_limiter_json(const std::optional<RateLimiterConfig>& limiter)
{
    if (!limiter || !limiter->enabled())
        return nullptr;
    nlohmann::ordered_json o;
    o["bandwidth"] = bucket_json(limiter->bandwidth);
    o["ops"] = bucket_json(limiter->ops);
    return o;
}

Result<std::array<uint8_t, 6>> read_mac(const std::string& text)
{
    std::array<uint8_t, 6> mac {};
    // Six ':'-separated groups of exactly two hex digits.
    if (text.size() != 17)
        return make_error("The provided MAC address is invalid.");
    for (size_t i = 0; i < 6; ++i) {
        char hi = text[i * 3], lo = text[i * 3 + 1];
        if (!std::isxdigit(static_cast<unsigned char>(hi)) || !std::isxdigit(static_cast<unsigned char>(lo))
            || (i < 5 && text[i * 3 + 2] != ':'))
            return make_error("The provided MAC address is invalid.");
        mac[i] = static_cast<uint8_t>(std::stoi(text.substr(i * 3, 2), nullptr, 16));
    }
    return mac;
}

std::string mac_string(const std::array<uint8_t, 6>& mac)
{
    return fmt::format("{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]);
}

Result<std::string> path_id(const std::vector<std::string>& tokens)
{
    std::string id = tokens.size() > 1 ? tokens[1] : std::string();
    TRY(check_resource_id(id));
    return id;
}

} // namespace vessel::api
