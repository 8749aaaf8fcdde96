// PUT /network-interfaces/{iface_id} (before boot) and PATCH (after: the rate limiters).
#include "api/request/common.h"
#include "api/router.h"
#include "vmm/vmm.h"

namespace vessel::api {

nlohmann::ordered_json net_json(const NetConfig& n)
{
    nlohmann::ordered_json o;
    o["iface_id"] = n.id;
    o["host_dev_name"] = n.tap;
    o["guest_mac"] = n.mac ? nlohmann::ordered_json(mac_string(*n.mac)) : nlohmann::ordered_json(nullptr);
    o["rx_rate_limiter"] = rate_limiter_json(n.rx_rate_limiter);
    o["tx_rate_limiter"] = rate_limiter_json(n.tx_rate_limiter);
    return o;
}

HttpResponse put_net(ApiContext& ctx, const HttpRequest& req, const PathTokens& tokens, bool patch)
{
    auto id = path_id(tokens);
    if (!id.ok())
        return bad_request(id.error());
    auto mismatch = [&](const std::string& body_id) {
        return HttpResponse::fault(400,
            fmt::format("The id from the path [{}] does not match the id from the body [{}]!", id.value(), body_id));
    };
    if (patch) {
        auto body = JsonObject::parse(
            req.body, "NetworkInterfaceUpdateConfig", { "iface_id", "rx_rate_limiter", "tx_rate_limiter" });
        if (!body.ok())
            return body_error(body.error());
        auto iface_id = body->string("iface_id");
        if (!iface_id.ok())
            return body_error(iface_id.error());
        auto rx = read_rate_limiter(*body, "rx_rate_limiter");
        if (!rx.ok())
            return body_error(rx.error());
        auto tx = read_rate_limiter(*body, "tx_rate_limiter");
        if (!tx.ok())
            return body_error(tx.error());
        if (iface_id.value() != id.value())
            return mismatch(iface_id.value());
        if (auto r = require_started(ctx.vmm); !r.ok())
            return bad_request(r.error());
        return outcome(ctx.vmm.update_net(id.value(), rx.value(), tx.value()));
    }

    auto body = JsonObject::parse(req.body, "NetworkInterfaceConfig",
        { "iface_id", "host_dev_name", "guest_mac", "rx_rate_limiter", "tx_rate_limiter" });
    if (!body.ok())
        return body_error(body.error());
    NetConfig net;
    auto read = [&]() -> Result<void> {
        net.id = TRY(body->string("iface_id"));
        net.tap = TRY(body->string("host_dev_name"));
        if (auto mac = TRY(body->opt_string("guest_mac")))
            net.mac = TRY(read_mac(*mac));
        net.rx_rate_limiter = TRY(read_rate_limiter(*body, "rx_rate_limiter"));
        net.tx_rate_limiter = TRY(read_rate_limiter(*body, "tx_rate_limiter"));
        return {};
    };
    if (auto r = read(); !r.ok())
        return body_error(r.error());
    if (net.id != id.value())
        return mismatch(net.id);
    if (auto r = require_not_started(ctx.vmm); !r.ok())
        return bad_request(r.error());
    return outcome(ctx.vmm.resources().set_net(net));
}

} // namespace vessel::api
