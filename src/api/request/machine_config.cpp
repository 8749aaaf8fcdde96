// GET | PUT | PATCH /machine-config.
#include "api/request/common.h"
#include "api/router.h"
#include "vmm/metrics.h"
#include "vmm/vmm.h"

namespace vessel::api {

nlohmann::ordered_json machine_config_json(const Vmm& vmm)
{
    const auto& config = vmm.running_config();
    nlohmann::ordered_json o;
    o["vcpu_count"] = config.cpus;
    o["mem_size_mib"] = config.mem_bytes >> 20;
    o["smt"] = false;
    o["track_dirty_pages"] = vmm.resources().track_dirty_pages();
    o["huge_pages"] = config.hugepages ? "2M" : "None";
    return o;
}

HttpResponse get_machine_config(ApiContext& ctx)
{
    return HttpResponse::json(200, machine_config_json(ctx.vmm).dump());
}

HttpResponse put_machine_config(ApiContext& ctx, const HttpRequest& req, bool patch)
{
    auto body = JsonObject::parse(req.body, patch ? "MachineConfigUpdate" : "MachineConfig",
        { "vcpu_count", "mem_size_mib", "smt", "cpu_template", "track_dirty_pages", "huge_pages" });
    if (!body.ok())
        return body_error(body.error());
    MachineConfigUpdate update;
    auto read = [&]() -> Result<void> {
        if (patch) {
            update.vcpu_count = TRY(body->opt_unsigned("vcpu_count", "u8"));
            update.mem_size_mib = TRY(body->opt_unsigned("mem_size_mib", "usize"));
        } else {
            // PUT: the two sizes are required, the rest fall back to their defaults.
            update.vcpu_count = TRY(body->unsigned_int("vcpu_count", "u8"));
            update.mem_size_mib = TRY(body->unsigned_int("mem_size_mib", "usize"));
        }
        update.smt = TRY(body->opt_bool("smt"));
        update.cpu_template
            = TRY(body->opt_variant("cpu_template", { "C3", "T2", "T2S", "T2CL", "T2A", "V1N1", "None" }));
        update.track_dirty_pages = TRY(body->opt_bool("track_dirty_pages"));
        update.huge_pages = TRY(body->opt_variant("huge_pages", { "None", "2M" }));
        if (!patch) {
            update.smt = update.smt.value_or(false);
            update.track_dirty_pages = update.track_dirty_pages.value_or(false);
            update.huge_pages = update.huge_pages.value_or("None");
        }
        return {};
    };
    if (auto r = read(); !r.ok())
        return body_error(r.error());
    if (patch && !update.vcpu_count && !update.mem_size_mib && !update.smt && !update.cpu_template
        && !update.track_dirty_pages && !update.huge_pages)
        return HttpResponse::fault(400, "Empty PATCH request.");
    HttpResponse response = [&] {
        if (auto r = require_not_started(ctx.vmm); !r.ok())
            return bad_request(r.error());
        return outcome(ctx.vmm.resources().update_machine_config(update));
    }();
    if (update.cpu_template)
        return deprecated(ctx, std::move(response));
    return response;
}

} // namespace vessel::api
