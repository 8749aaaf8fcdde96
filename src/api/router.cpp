#include "api/router.h"

#include <chrono>

#include "base/log.h"
#include "vmm/metrics.h"

namespace vessel::api {

namespace {

// Firecracker takes the path of an absolute-form request ("http://localhost/x") too.
std::string request_path(const std::string& target)
{
    if (target.rfind("http://", 0) == 0) {
        size_t slash = target.find('/', 7);
        return slash == std::string::npos ? std::string() : target.substr(slash);
    }
    if (!target.empty() && target[0] == '/')
        return target;
    return std::string();
}

PathTokens split_path(const std::string& path)
{
    PathTokens tokens;
    size_t start = 0;
    while (start < path.size() && path[start] == '/')
        ++start;
    while (start < path.size()) {
        size_t slash = path.find('/', start);
        if (slash == std::string::npos) {
            tokens.push_back(path.substr(start));
            break;
        }
        tokens.push_back(path.substr(start, slash - start));
        start = slash + 1;
    }
    // Rust's split_terminator: a trailing '/' adds no empty segment (inner empty ones stay).
    return tokens;
}

} // namespace

HttpResponse body_error(const Error& error)
{
    // serde's own messages end without a period (Firecracker adds one); ours sometimes have one.
    const std::string& m = error.message();
    return HttpResponse::fault(400,
        fmt::format(
            "An error occurred when deserializing the json body of a request: {}{}", m, m.ends_with('.') ? "" : "."));
}

HttpResponse bad_request(const Error& error)
{
    return HttpResponse::fault(400, error.message());
}

HttpResponse outcome(const Result<void>& result)
{
    if (!result.ok())
        return bad_request(result.error());
    return HttpResponse::no_content();
}

HttpResponse deprecated(ApiContext& ctx, HttpResponse response)
{
    ctx.metrics.deprecated_api_call();
    response.headers.emplace_back("Deprecation", "true");
    return response;
}

HttpResponse invalid_path(const std::string& method, std::string_view resource)
{
    return HttpResponse::fault(400, fmt::format("Invalid request method and/or path: {} {}.", method, resource));
}

HttpResponse unsupported(std::string_view resource)
{
    std::string why;
    if (resource == "cpu-config")
        why = "Vessel does not take custom CPU templates: each engine presents its own CPUID model (see `vessel "
              "probe` and the README).";
    else if (resource == "pmem")
        why = "Vessel has no virtio-pmem device; attach the image as a drive instead.";
    else if (resource == "hotplug")
        why = "Vessel does not model memory hot-plug (virtio-mem); size the VM with machine-config.";
    else
        why = fmt::format("Vessel does not model {}.", resource);
    return HttpResponse::fault(400, why);
}

Router::Router(ApiContext context)
    : m_ctx(std::move(context))
{
}

HttpResponse Router::handle(const HttpRequest& request)
{
    auto t0 = std::chrono::steady_clock::now();
    PathTokens tokens = split_path(request_path(request.path));
    std::string counter; // Firecracker's counter stem for this request (machine_cfg, drive, ...)
    std::string route; // the path template for Prometheus
    HttpResponse response = dispatch(request, tokens, counter, route);
    auto latency = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0);
    m_ctx.metrics.api_request(request.method, counter, route.empty() ? "other" : route, response.status, latency);
    if (response.status >= 400)
        log_debug("API {} {}: {} {}", request.method, request.path, response.status, response.body);
    return response;
}

HttpResponse Router::dispatch(
    const HttpRequest& req, const PathTokens& tokens, std::string& counter, std::string& route)
{
    const std::string& method = req.method;
    const std::string resource = tokens.empty() ? std::string() : tokens[0];
    const std::string sub = tokens.size() > 1 ? tokens[1] : std::string();
    const bool has_body = !req.body.empty();
    route = "/" + resource;

    if (method == "GET") {
        if (has_body)
            return HttpResponse::fault(400, "GET request cannot have a body.");
        if (resource.empty()) {
            counter = "instance_info";
            return get_instance_info(m_ctx);
        }
        if (resource == "version") {
            counter = "vmm_version";
            return get_version(m_ctx);
        }
        if (resource == "machine-config") {
            counter = "machine_cfg";
            return get_machine_config(m_ctx);
        }
        if (resource == "vm" && sub == "config") {
            route = "/vm/config";
            return get_vm_config(m_ctx);
        }
        if (resource == "vm" && sub == "info") {
            route = "/vm/info";
            return get_vm_info(m_ctx);
        }
        if (resource == "balloon") {
            if (!sub.empty())
                route = "/balloon/" + sub;
            return get_balloon(m_ctx, tokens);
        }
        if (resource == "mmds") {
            counter = "mmds";
            return get_mmds(m_ctx, tokens);
        }
        if (resource == "metrics")
            return get_metrics(m_ctx);
        if (resource == "console")
            return get_console(m_ctx, req);
        if (resource == "hotplug" && sub == "memory")
            return unsupported("hotplug");
        return invalid_path(method, resource);
    }

    if (method == "PUT") {
        if (!has_body)
            return HttpResponse::fault(400, "Empty PUT request.");
        if (resource == "actions") {
            counter = "actions";
            return put_actions(m_ctx, req);
        }
        if (resource == "boot-source") {
            counter = "boot_source";
            return put_boot_source(m_ctx, req);
        }
        if (resource == "machine-config") {
            counter = "machine_cfg";
            return put_machine_config(m_ctx, req, false);
        }
        if (resource == "drives") {
            counter = "drive";
            route = "/drives/{drive_id}";
            return put_drive(m_ctx, req, tokens, false);
        }
        if (resource == "network-interfaces") {
            counter = "network";
            route = "/network-interfaces/{iface_id}";
            return put_net(m_ctx, req, tokens, false);
        }
        if (resource == "vsock") {
            counter = "vsock";
            return put_vsock(m_ctx, req);
        }
        if (resource == "balloon")
            return put_balloon(m_ctx, req, tokens, false);
        if (resource == "entropy")
            return put_entropy(m_ctx, req);
        if (resource == "serial")
            return put_serial(m_ctx, req);
        if (resource == "logger") {
            counter = "logger";
            return put_logger(m_ctx, req);
        }
        if (resource == "metrics") {
            counter = "metrics";
            return put_metrics(m_ctx, req);
        }
        if (resource == "mmds") {
            if (sub == "config")
                route = "/mmds/config";
            counter = "mmds";
            return put_mmds(m_ctx, req, tokens, false);
        }
        if (resource == "snapshot") {
            route = "/snapshot/" + sub;
            return put_snapshot(m_ctx, req, tokens);
        }
        if (resource == "cpu-config") {
            counter = "cpu_cfg";
            return unsupported(resource);
        }
        if (resource == "pmem" || (resource == "hotplug" && sub == "memory"))
            return unsupported(resource);
        return invalid_path(method, resource);
    }

    if (method == "PATCH") {
        if (!has_body)
            return HttpResponse::fault(400, "Empty PATCH request.");
        if (resource == "vm")
            return patch_vm(m_ctx, req);
        if (resource == "machine-config") {
            counter = "machine_cfg";
            return put_machine_config(m_ctx, req, true);
        }
        if (resource == "drives") {
            counter = "drive";
            route = "/drives/{drive_id}";
            return put_drive(m_ctx, req, tokens, true);
        }
        if (resource == "network-interfaces") {
            counter = "network";
            route = "/network-interfaces/{iface_id}";
            return put_net(m_ctx, req, tokens, true);
        }
        if (resource == "balloon") {
            if (!sub.empty())
                route = "/balloon/" + sub;
            return put_balloon(m_ctx, req, tokens, true);
        }
        if (resource == "mmds") {
            counter = "mmds";
            return put_mmds(m_ctx, req, tokens, true);
        }
        if (resource == "hotplug" && sub == "memory")
            return unsupported("hotplug");
        return invalid_path(method, resource);
    }

    return invalid_path(method, resource);
}

} // namespace vessel::api
