// PUT /entropy (virtio-rng) and PUT /serial.
#include "api/request/common.h"
#include "api/router.h"
#include "vmm/vmm.h"

namespace vessel::api {

HttpResponse put_entropy(ApiContext& ctx, const HttpRequest& req)
{
    auto body = JsonObject::parse(req.body, "EntropyDeviceConfig", { "rate_limiter" });
    if (!body.ok())
        return body_error(body.error());
    auto limiter = read_rate_limiter(*body, "rate_limiter");
    if (!limiter.ok())
        return body_error(limiter.error());
    if (auto r = require_not_started(ctx.vmm); !r.ok())
        return bad_request(r.error());
    return outcome(ctx.vmm.resources().set_entropy(limiter.value()));
}

HttpResponse put_serial(ApiContext& ctx, const HttpRequest& req)
{
    auto body = JsonObject::parse(req.body, "SerialConfig", { "serial_out_path", "rate_limiter" });
    if (!body.ok())
        return body_error(body.error());
    auto path = body->opt_string("serial_out_path");
    if (!path.ok())
        return body_error(path.error());
    if (body->raw("rate_limiter"))
        return HttpResponse::fault(400,
            "Vessel does not rate-limit the serial console's output (rate_limiter); the "
            "console never blocks the guest.");
    if (auto r = require_not_started(ctx.vmm); !r.ok())
        return bad_request(r.error());
    return outcome(ctx.vmm.resources().set_serial_out(path.value().value_or("")));
}

} // namespace vessel::api
