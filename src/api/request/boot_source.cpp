// PUT /boot-source.
#include "api/request/common.h"
#include "api/router.h"
#include "vmm/vmm.h"

namespace vessel::api {

HttpResponse put_boot_source(ApiContext& ctx, const HttpRequest& req)
{
    auto body = JsonObject::parse(req.body, "BootSourceConfig", { "kernel_image_path", "initrd_path", "boot_args" });
    if (!body.ok())
        return body_error(body.error());
    BootSourceConfig boot;
    auto read = [&]() -> Result<void> {
        boot.kernel_image_path = TRY(body->string("kernel_image_path"));
        boot.initrd_path = TRY(body->opt_string("initrd_path"));
        boot.boot_args = TRY(body->opt_string("boot_args"));
        return {};
    };
    if (auto r = read(); !r.ok())
        return body_error(r.error());
    if (auto r = require_not_started(ctx.vmm); !r.ok())
        return bad_request(r.error());
    return outcome(ctx.vmm.resources().set_boot_source(boot));
}

} // namespace vessel::api
