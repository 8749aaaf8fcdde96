// Routes API requests to the handler of their resource, as Firecracker's parsed_request.rs:
// the first path segment picks the resource; a body is required for PUT/PATCH and refused for
// GET; anything unknown is "Invalid request method and/or path: METHOD resource.". Every
// answer is counted (Firecracker's per-resource counters, Prometheus' per-path latency).
#pragma once

#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "api/http.h"
#include "base/result.h"

namespace vessel {
class ConsoleMux;
class Metrics;
class Vmm;
namespace mmds {
class DataStore;
}
} // namespace vessel

namespace vessel::api {

// What request handlers work with.
struct ApiContext {
    Vmm& vmm;
    Metrics& metrics;
    ConsoleMux& console;
    mmds::DataStore* mmds { nullptr };
    std::string api_socket;
    std::string version;
    // A request that ends the process (InstanceKill) schedules it through this after answering.
    std::function<void(int status)> exit_after_reply;
};

using PathTokens = std::vector<std::string>;

// "An error occurred when deserializing the json body of a request: <why>."
HttpResponse body_error(const Error& error);
// 400 with `error`'s message as the fault message.
HttpResponse bad_request(const Error& error);
// A handler's outcome: 204 when it succeeded, the error as 400 otherwise.
HttpResponse outcome(const Result<void>& result);
// A request that used a deprecated field: Firecracker's "Deprecation: true" header, counted.
HttpResponse deprecated(ApiContext& ctx, HttpResponse response);
// "Invalid request method and/or path: PUT foo."
HttpResponse invalid_path(const std::string& method, std::string_view resource);

class Router {
public:
    explicit Router(ApiContext context);
    HttpResponse handle(const HttpRequest& request);
    ApiContext& context() { return m_ctx; }

private:
    HttpResponse dispatch(
        const HttpRequest& request, const PathTokens& tokens, std::string& counter, std::string& route);
    ApiContext m_ctx;
};

// Handlers, one file per resource (request/*.cpp). `tokens` are the path's segments.
HttpResponse get_instance_info(ApiContext& ctx);
HttpResponse get_version(ApiContext& ctx);
HttpResponse get_vm_config(ApiContext& ctx);
HttpResponse get_vm_info(ApiContext& ctx);
HttpResponse patch_vm(ApiContext& ctx, const HttpRequest& req);
HttpResponse put_actions(ApiContext& ctx, const HttpRequest& req);
HttpResponse get_machine_config(ApiContext& ctx);
HttpResponse put_machine_config(ApiContext& ctx, const HttpRequest& req, bool patch);
HttpResponse put_boot_source(ApiContext& ctx, const HttpRequest& req);
HttpResponse put_drive(ApiContext& ctx, const HttpRequest& req, const PathTokens& tokens, bool patch);
HttpResponse put_net(ApiContext& ctx, const HttpRequest& req, const PathTokens& tokens, bool patch);
HttpResponse put_vsock(ApiContext& ctx, const HttpRequest& req);
HttpResponse get_balloon(ApiContext& ctx, const PathTokens& tokens);
HttpResponse put_balloon(ApiContext& ctx, const HttpRequest& req, const PathTokens& tokens, bool patch);
HttpResponse put_entropy(ApiContext& ctx, const HttpRequest& req);
HttpResponse put_serial(ApiContext& ctx, const HttpRequest& req);
HttpResponse put_logger(ApiContext& ctx, const HttpRequest& req);
HttpResponse put_metrics(ApiContext& ctx, const HttpRequest& req);
HttpResponse get_metrics(ApiContext& ctx);
HttpResponse get_mmds(ApiContext& ctx, const PathTokens& tokens);
HttpResponse put_mmds(ApiContext& ctx, const HttpRequest& req, const PathTokens& tokens, bool patch);
HttpResponse put_snapshot(ApiContext& ctx, const HttpRequest& req, const PathTokens& tokens);
HttpResponse get_console(ApiContext& ctx, const HttpRequest& req);
// Firecracker resources Vessel does not model: 400 with the reason.
HttpResponse unsupported(std::string_view resource);

} // namespace vessel::api
