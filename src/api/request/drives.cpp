// PUT /drives/{drive_id} (before boot) and PATCH /drives/{drive_id} (after: the rate limiter).
#include "api/request/common.h"
#include "api/router.h"
#include "vmm/vmm.h"

namespace vessel::api {

namespace {

constexpr const char* kIdMismatch = "The id from the path does not match the id from the body!";

} // namespace

nlohmann::ordered_json drive_json(const DiskConfig& d)
{
    nlohmann::ordered_json o;
    o["drive_id"] = d.id;
    o["partuuid"] = d.partuuid ? nlohmann::ordered_json(*d.partuuid) : nlohmann::ordered_json(nullptr);
    o["is_root_device"] = d.root;
    o["cache_type"] = d.cache_type;
    o["is_read_only"] = d.read_only;
    o["path_on_host"] = d.path;
    o["rate_limiter"] = rate_limiter_json(d.rate_limiter);
    o["io_engine"] = d.io_engine;
    o["socket"] = nullptr;
    return o;
}

HttpResponse put_drive(ApiContext& ctx, const HttpRequest& req, const PathTokens& tokens, bool patch)
{
    auto id = path_id(tokens);
    if (!id.ok())
        return bad_request(id.error());
    if (patch) {
        auto body
            = JsonObject::parse(req.body, "BlockDeviceUpdateConfig", { "drive_id", "path_on_host", "rate_limiter" });
        if (!body.ok())
            return body_error(body.error());
        auto drive_id = body->string("drive_id");
        if (!drive_id.ok())
            return body_error(drive_id.error());
        auto path = body->opt_string("path_on_host");
        if (!path.ok())
            return body_error(path.error());
        auto limiter = read_rate_limiter(*body, "rate_limiter");
        if (!limiter.ok())
            return body_error(limiter.error());
        if (drive_id.value() != id.value())
            return HttpResponse::fault(400, kIdMismatch);
        if (auto r = require_started(ctx.vmm); !r.ok())
            return bad_request(r.error());
        return outcome(ctx.vmm.update_drive(id.value(), path.value(), limiter.value()));
    }

    auto body = JsonObject::parse(req.body, "BlockDeviceConfig",
        { "drive_id", "partuuid", "is_root_device", "cache_type", "is_read_only", "path_on_host", "rate_limiter",
            "io_engine", "socket" });
    if (!body.ok())
        return body_error(body.error());
    DiskConfig disk;
    std::optional<std::string> socket;
    auto read = [&]() -> Result<void> {
        disk.id = TRY(body->string("drive_id"));
        disk.partuuid = TRY(body->opt_string("partuuid"));
        disk.root = TRY(body->boolean("is_root_device"));
        disk.cache_type = TRY(body->opt_variant("cache_type", { "Unsafe", "Writeback" })).value_or("Unsafe");
        disk.read_only = TRY(body->opt_bool("is_read_only")).value_or(false);
        disk.path = TRY(body->opt_string("path_on_host")).value_or("");
        disk.rate_limiter = TRY(read_rate_limiter(*body, "rate_limiter"));
        disk.io_engine = TRY(body->opt_variant("io_engine", { "Sync", "Async" })).value_or("Sync");
        socket = TRY(body->opt_string("socket"));
        return {};
    };
    if (auto r = read(); !r.ok())
        return body_error(r.error());
    if (disk.id != id.value())
        return HttpResponse::fault(400, kIdMismatch);
    if (auto r = require_not_started(ctx.vmm); !r.ok())
        return bad_request(r.error());
    if (socket)
        return HttpResponse::fault(400,
            "Drive config error: Vessel has no vhost-user block devices (socket); give "
            "path_on_host and is_read_only for a virtio-blk drive.");
    if (!body->has("path_on_host") || !body->has("is_read_only"))
        return HttpResponse::fault(400, "Drive config error: Invalid block config.");
    return outcome(ctx.vmm.resources().set_drive(disk));
}

} // namespace vessel::api
