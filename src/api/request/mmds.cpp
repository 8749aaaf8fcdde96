// GET | PUT | PATCH /mmds (the metadata store, any time) and PUT /mmds/config (before boot).
#include "api/request/common.h"
#include "api/router.h"
#include "mmds/data_store.h"
#include "vmm/vmm.h"

namespace vessel::api {

namespace {

HttpResponse store_outcome(const Result<void>& r)
{
    if (r.ok())
        return HttpResponse::no_content();
    if (mmds::is_limit_exceeded(r.error()))
        return HttpResponse::fault(413, fmt::format("MMDS limit exceeded error: {}", mmds::kLimitExceededMessage));
    return HttpResponse::fault(400, fmt::format("MMDS error: {}", r.error().message()));
}

HttpResponse put_mmds_config(ApiContext& ctx, const HttpRequest& req)
{
    auto body
        = JsonObject::parse(req.body, "MmdsConfig", { "version", "network_interfaces", "ipv4_address", "imds_compat" });
    if (!body.ok())
        return body_error(body.error());
    MmdsConfig config;
    bool version_given = false;
    auto read = [&]() -> Result<void> {
        if (auto v = TRY(body->opt_variant("version", { "V1", "V2" }))) {
            config.version = *v;
            version_given = true;
        }
        const auto* list = body->raw("network_interfaces");
        if (!list)
            return make_error("missing field `network_interfaces`");
        if (!list->is_array())
            return make_error("invalid type: {}, expected a sequence", describe_json_value(*list));
        for (auto& item : *list) {
            if (!item.is_string())
                return make_error("invalid type: {}, expected a string", describe_json_value(item));
            config.network_interfaces.push_back(item.get<std::string>());
        }
        config.ipv4_address = TRY(body->opt_string("ipv4_address")).value_or("169.254.169.254");
        config.imds_compat = TRY(body->opt_bool("imds_compat")).value_or(false);
        return {};
    };
    if (auto r = read(); !r.ok())
        return body_error(r.error());
    HttpResponse response = [&] {
        if (auto r = require_not_started(ctx.vmm); !r.ok())
            return bad_request(r.error());
        if (auto r = ctx.vmm.resources().set_mmds_config(config); !r.ok())
            return bad_request(r.error());
        if (ctx.mmds) {
            ctx.mmds->set_version(config.version == "V2" ? mmds::Version::V2 : mmds::Version::V1);
            ctx.mmds->set_imds_compat(config.imds_compat);
        }
        return HttpResponse::no_content();
    }();
    // Firecracker marks V1 (also when it is the default) deprecated.
    if (config.version == "V1" || !version_given)
        return deprecated(ctx, std::move(response));
    return response;
}

} // namespace

HttpResponse get_mmds(ApiContext& ctx, const PathTokens&)
{
    if (!ctx.mmds)
        return HttpResponse::fault(400, "MMDS error: the metadata service is not available.");
    return HttpResponse::json(200, ctx.mmds->to_json());
}

HttpResponse put_mmds(ApiContext& ctx, const HttpRequest& req, const PathTokens& tokens, bool patch)
{
    std::string sub = tokens.size() > 1 ? tokens[1] : "";
    if (!patch && sub == "config")
        return put_mmds_config(ctx, req);
    if (!patch && !sub.empty())
        return HttpResponse::fault(400, fmt::format("Unrecognized PUT request path `{}`.", sub));
    if (!ctx.mmds)
        return HttpResponse::fault(400, "MMDS error: the metadata service is not available.");
    auto value = parse_json(req.body);
    if (!value.ok())
        return body_error(value.error());
    if (patch)
        return store_outcome(ctx.mmds->patch(value.value()));
    return store_outcome(ctx.mmds->put(std::move(value.value())));
}

} // namespace vessel::api
