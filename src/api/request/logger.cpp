// PUT /logger and PUT /metrics.
#include "api/request/common.h"
#include "api/router.h"
#include "base/log.h"
#include "vmm/metrics.h"
#include "vmm/vmm.h"

namespace vessel::api {

HttpResponse put_logger(ApiContext& ctx, const HttpRequest& req)
{
    auto body = JsonObject::parse(
        req.body, "LoggerConfig", { "log_path", "level", "show_level", "show_log_origin", "module" });
    if (!body.ok())
        return body_error(body.error());
    std::optional<std::string> path, level_text, module;
    std::optional<bool> show_level, show_origin;
    auto read = [&]() -> Result<void> {
        path = TRY(body->opt_string("log_path"));
        level_text = TRY(body->opt_string("level"));
        show_level = TRY(body->opt_bool("show_level"));
        show_origin = TRY(body->opt_bool("show_log_origin"));
        module = TRY(body->opt_string("module"));
        return {};
    };
    if (auto r = read(); !r.ok())
        return body_error(r.error());
    LogLevel level = LogLevel::Info; // Firecracker's default when "level" is absent
    if (level_text) {
        auto parsed = parse_log_level(*level_text);
        if (!parsed.ok())
            return body_error(make_error("Invalid LevelFilter"));
        level = parsed.value();
    }
    if (auto r = require_not_started(ctx.vmm); !r.ok())
        return bad_request(r.error());
    if (path) {
        LogFileOptions options;
        options.instance_id = ctx.vmm.id();
        options.show_level = show_level.value_or(false);
        options.show_origin = show_origin.value_or(false);
        if (auto r = configure_log_file(*path, options); !r.ok())
            return bad_request(r.error());
    }
    set_log_level(level);
    return HttpResponse::no_content();
}

HttpResponse put_metrics(ApiContext& ctx, const HttpRequest& req)
{
    auto body = JsonObject::parse(req.body, "MetricsConfig", { "metrics_path" });
    if (!body.ok())
        return body_error(body.error());
    auto path = body->string("metrics_path");
    if (!path.ok())
        return body_error(path.error());
    if (auto r = require_not_started(ctx.vmm); !r.ok())
        return bad_request(r.error());
    return outcome(ctx.metrics.init_file(path.value()));
}

} // namespace vessel::api
