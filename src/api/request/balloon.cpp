// GET | PUT | PATCH /balloon, GET | PATCH /balloon/statistics.
#include "api/request/common.h"
#include "api/router.h"
#include "vmm/vmm.h"

namespace vessel::api {

namespace {

// virtio-balloon statistics tags 0..9 and Firecracker's names for them.
constexpr const char* kStatNames[] = { "swap_in", "swap_out", "major_faults", "minor_faults", "free_memory",
    "total_memory", "available_memory", "disk_caches", "hugetlb_allocations", "hugetlb_failures" };

} // namespace

nlohmann::ordered_json balloon_json(const BalloonConfig& b)
{
    nlohmann::ordered_json o;
    o["amount_mib"] = b.amount_mib;
    o["deflate_on_oom"] = b.deflate_on_oom;
    o["stats_polling_interval_s"] = b.stats_polling_interval_s;
    return o;
}

std::optional<BalloonConfig> current_balloon(const Vmm& vmm)
{
    const auto& c = vmm.running_config();
    if (!c.balloon)
        return std::nullopt;
    return BalloonConfig { static_cast<uint32_t>(c.balloon_target_bytes >> 20), c.balloon_deflate_on_oom,
        c.balloon_stats_interval_s };
}

HttpResponse get_balloon(ApiContext& ctx, const PathTokens& tokens)
{
    std::string sub = tokens.size() > 1 ? tokens[1] : "";
    if (sub.empty()) {
        auto b = current_balloon(ctx.vmm);
        if (!b)
            return HttpResponse::fault(400, "Balloon config error: No balloon device found.");
        return HttpResponse::json(200, balloon_json(*b).dump());
    }
    if (sub != "statistics")
        return HttpResponse::fault(400, fmt::format("Unrecognized GET request path `{}`.", sub));
    auto stats = ctx.vmm.balloon_stats();
    if (!stats.ok())
        return bad_request(stats.error());
    nlohmann::ordered_json o;
    o["target_pages"] = stats->target_pages;
    o["actual_pages"] = stats->actual_pages;
    o["target_mib"] = stats->target_pages >> 8;
    o["actual_mib"] = stats->actual_pages >> 8;
    for (size_t i = 0; i < stats->values.size(); ++i)
        if (stats->values[i])
            o[kStatNames[i]] = *stats->values[i];
    return HttpResponse::json(200, o.dump());
}

HttpResponse put_balloon(ApiContext& ctx, const HttpRequest& req, const PathTokens& tokens, bool patch)
{
    std::string sub = tokens.size() > 1 ? tokens[1] : "";
    if (patch && sub == "statistics") {
        auto body = JsonObject::parse(req.body, "BalloonUpdateStatsConfig", { "stats_polling_interval_s" });
        if (!body.ok())
            return body_error(body.error());
        auto interval = body->unsigned_int("stats_polling_interval_s", "u16");
        if (!interval.ok())
            return body_error(interval.error());
        if (auto r = require_started(ctx.vmm); !r.ok())
            return bad_request(r.error());
        return outcome(ctx.vmm.update_balloon_stats_interval(static_cast<uint32_t>(interval.value())));
    }
    if (!sub.empty())
        return HttpResponse::fault(
            400, fmt::format("Unrecognized {} request path `{}`.", patch ? "PATCH" : "PUT", sub));
    if (patch) {
        auto body = JsonObject::parse(req.body, "BalloonUpdateConfig", { "amount_mib" });
        if (!body.ok())
            return body_error(body.error());
        auto amount = body->unsigned_int("amount_mib", "u32");
        if (!amount.ok())
            return body_error(amount.error());
        if (auto r = require_started(ctx.vmm); !r.ok())
            return bad_request(r.error());
        return outcome(ctx.vmm.update_balloon_target(static_cast<uint32_t>(amount.value())));
    }
    auto body = JsonObject::parse(
        req.body, "BalloonDeviceConfig", { "amount_mib", "deflate_on_oom", "stats_polling_interval_s" });
    if (!body.ok())
        return body_error(body.error());
    BalloonConfig b;
    auto read = [&]() -> Result<void> {
        b.amount_mib = static_cast<uint32_t>(TRY(body->unsigned_int("amount_mib", "u32")));
        b.deflate_on_oom = TRY(body->boolean("deflate_on_oom"));
        b.stats_polling_interval_s
            = static_cast<uint32_t>(TRY(body->opt_unsigned("stats_polling_interval_s", "u16")).value_or(0));
        return {};
    };
    if (auto r = read(); !r.ok())
        return body_error(r.error());
    if (auto r = require_not_started(ctx.vmm); !r.ok())
        return bad_request(r.error());
    return outcome(ctx.vmm.resources().set_balloon(b));
}

} // namespace vessel::api
