// PUT /snapshot/create and /snapshot/load, with Firecracker's bodies and rules: create needs a
// paused VM; load only goes into a VMM that has neither started a VM nor been given boot-specific
// resources.
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
        Vm::SnapshotOptions options;
        auto read = [&]() -> Result<void> {
            options.diff = TRY(body->opt_variant("snapshot_type", { "Full", "Diff" })).value_or("Full") == "Diff";
            options.state_path = TRY(body->string("snapshot_path"));
            options.mem_path = TRY(body->string("mem_file_path"));
            return {};
        };
        if (auto r = read(); !r.ok())
            return body_error(r.error());
        if (auto r = require_started(ctx.vmm); !r.ok())
            return bad_request(r.error());
        if (auto r = ctx.vmm.create_snapshot(options); !r.ok())
            return bad_request(r.error());
        return HttpResponse::no_content();
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
        Vm::RestoreOptions options;
        bool resume_vm = false;
        auto read = [&]() -> Result<void> {
            options.state_path = *path;
            if (file) {
                options.mem_path = TRY(body->string("mem_file_path"));
            } else {
                auto mem = TRY(body->opt_object("mem_backend", "MemBackendConfig", { "backend_type", "backend_path" }));
                auto type = TRY(mem->variant("backend_type", { "File", "Uffd" }));
                options.mem_path = TRY(mem->string("backend_path"));
                // Uffd: backend_path is the page-fault handler's socket (memory/uffd_memory.h).
                if (type == "Uffd")
                    options.mem_backend = Vm::MemBackend::Uffd;
            }
            bool diff = TRY(body->opt_bool("enable_diff_snapshots")).value_or(false);
            options.track_dirty_pages = TRY(body->opt_bool("track_dirty_pages")).value_or(diff);
            resume_vm = TRY(body->opt_bool("resume_vm")).value_or(false);
            if (TRY(body->opt_bool("clock_realtime")).value_or(false))
                return make_error("Load snapshot error: clock_realtime is not supported by Vessel (the guest's "
                                  "clock continues from the moment of the snapshot).");
            if (const auto* overrides = body->raw("network_overrides")) {
                if (!overrides->is_array())
                    return make_error("invalid type: {}, expected a sequence", describe_json_value(*overrides));
                for (const auto& o : *overrides) {
                    auto item = TRY(JsonObject::read(o, "NetworkOverride", { "iface_id", "host_dev_name" }));
                    options.net_overrides.emplace_back(TRY(item.string("iface_id")), TRY(item.string("host_dev_name")));
                }
            }
            if (auto vsock = TRY(body->opt_object("vsock_override", "VsockOverride", { "uds_path" })))
                options.vsock_uds_path = TRY(vsock->string("uds_path"));
            return {};
        };
        if (auto r = read(); !r.ok())
            return r.error().message().starts_with("Load snapshot error") ? bad_request(r.error()) : body_error(r.error());
        if (auto r = ctx.vmm.load_snapshot(options, resume_vm); !r.ok())
            return bad_request(r.error());
        return HttpResponse::no_content();
    }
    return HttpResponse::fault(400, fmt::format("Invalid request method and/or path: PUT /snapshot/{}.", op));
}

} // namespace vessel::api
