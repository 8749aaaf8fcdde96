// PUT /snapshot/create and /snapshot/load: parsed as Firecracker's, answered with a 400 until
// Vessel has snapshots (its snapshot work implements them behind these same requests).
#include "api/request/common.h"
#include "api/router.h"
#include "vmm/vmm.h"

namespace vessel::api {

HttpResponse put_snapshot(ApiContext& ctx, const HttpRequest& req, const PathTokens& tokens)
{
    std::string op = tokens.size() > 1 ? tokens[1] : "";
    if (op.empty())
        return HttpResponse::fault(400, "Missing snapshot operation type.");
    if (op == "create") {
        auto body = JsonObject::parse(
            req.body, "CreateSnapshotParams", { "snapshot_type", "snapshot_path", "mem_file_path" });
        if (!body.ok())
            return body_error(body.error());
        auto read = [&]() -> Result<void> {
            TRY(body->opt_variant("snapshot_type", { "Full", "Diff" }));
            TRY(body->string("snapshot_path"));
            TRY(body->string("mem_file_path"));
            return {};
        };
        if (auto r = read(); !r.ok())
            return body_error(r.error());
        if (auto r = require_started(ctx.vmm); !r.ok())
            return bad_request(r.error());
        return HttpResponse::fault(400,
            "Create snapshot error: snapshots are not implemented in this version of "
            "Vessel yet.");
    }
    if (op == "load") {
        auto body = JsonObject::parse(req.body, "LoadSnapshotConfig",
            { "snapshot_path", "mem_file_path", "mem_backend", "enable_diff_snapshots", "track_dirty_pages",
                "resume_vm", "network_overrides", "vsock_override", "clock_realtime" });
        if (!body.ok())
            return body_error(body.error());
        auto path = body->string("snapshot_path");
        if (!path.ok())
            return body_error(path.error());
        bool file = body->raw("mem_file_path") != nullptr, backend = body->raw("mem_backend") != nullptr;
        if (!file && !backend)
            return body_error(make_error("missing field: either `mem_backend` or `mem_file_path` is required"));
        if (file && backend)
            return body_error(
                make_error("too many fields: either `mem_backend` or `mem_file_path` exclusively is required"));
        if (auto r = require_not_started(ctx.vmm); !r.ok())
            return bad_request(r.error());
        if (ctx.vmm.resources().boot_specific_configured())
            return HttpResponse::fault(400,
                "Load snapshot error: Loading a microVM snapshot not allowed after configuring "
                "boot-specific resources.");
        return HttpResponse::fault(400,
            "Load snapshot error: snapshots are not implemented in this version of Vessel "
            "yet.");
    }
    return HttpResponse::fault(400, fmt::format("Invalid request method and/or path: PUT /snapshot/{}.", op));
}

} // namespace vessel::api
