// PUT /vsock.
#include "api/request/common.h"
#include "api/router.h"
#include "vmm/metrics.h"
#include "vmm/vmm.h"

namespace vessel::api {

HttpResponse put_vsock(ApiContext& ctx, const HttpRequest& req)
{
    auto body = JsonObject::parse(req.body, "VsockDeviceConfig", { "vsock_id", "guest_cid", "uds_path" });
    if (!body.ok())
        return body_error(body.error());
    VsockConfig vsock;
    auto read = [&]() -> Result<void> {
        TRY(body->opt_string("vsock_id"));
        vsock.cid = static_cast<uint32_t>(TRY(body->unsigned_int("guest_cid", "u32")));
        vsock.socket = TRY(body->string("uds_path"));
        return {};
    };
    if (auto r = read(); !r.ok())
        return body_error(r.error());
    HttpResponse response = [&] {
        if (auto r = require_not_started(ctx.vmm); !r.ok())
            return bad_request(r.error());
        return outcome(ctx.vmm.resources().set_vsock(vsock));
    }();
    if (body->has("vsock_id"))
        return deprecated(ctx, std::move(response));
    return response;
}

} // namespace vessel::api
