#include "api/config_file.h"

#include <nlohmann/json.hpp>

#include "api/json_body.h"
#include "base/file.h"
#include "base/log.h"

namespace vessel::api {

namespace {

constexpr uint64_t kMaxConfigBytes = 1 << 20;

} // namespace

Result<void> apply_config_file(Router& router, const std::string& path)
{
    constexpr const char* kPrefix = "Configuration for VMM from one single json failed: ";
    auto bytes = read_file(path, kMaxConfigBytes);
    if (!bytes.ok())
        return make_error("--config-file: {}", bytes.error().message());
    std::string text(bytes->begin(), bytes->end());
    auto doc = parse_json(text);
    if (!doc.ok())
        return make_error("{}Invalid JSON: {} ({})", kPrefix, doc.error().message(), path);
    if (!doc->is_object())
        return make_error("{}Invalid JSON: invalid type: {}, expected struct VmmConfig ({})", kPrefix,
            describe_json_value(doc.value()), path);
    static const std::initializer_list<std::string_view> kKnown
        = { "boot-source", "drives", "machine-config", "network-interfaces", "vsock", "balloon", "entropy", "logger",
              "metrics", "mmds-config", "cpu-config", "serial" };
    for (auto& [key, _] : doc->items()) {
        bool known = false;
        for (auto k : kKnown)
            known = known || k == key;
        if (!known)
            log_warn("--config-file {}: unknown key \"{}\" ignored", path, key);
    }
    if (!doc->contains("boot-source"))
        return make_error("{}Invalid JSON: missing field `boot-source` ({})", kPrefix, path);
    if (!doc->contains("drives"))
        return make_error("{}Invalid JSON: missing field `drives` ({})", kPrefix, path);

    // Each section becomes the request the API would get for it.
    auto apply = [&](const char* section, const std::string& method, const std::string& target,
                     const nlohmann::json& body) -> Result<void> {
        HttpRequest req;
        req.method = method;
        req.path = target;
        req.body = body.dump();
        HttpResponse r = router.handle(req);
        if (r.status >= 400) {
            std::string why = r.body;
            auto parsed = nlohmann::json::parse(r.body, nullptr, false);
            if (parsed.is_object() && parsed.contains("fault_message") && parsed["fault_message"].is_string())
                why = parsed["fault_message"].get<std::string>();
            return make_error("{}{}: {} ({})", kPrefix, section, why, path);
        }
        return {};
    };
    auto present = [&](const char* key) { return doc->contains(key) && !(*doc)[key].is_null(); };

    if (present("logger"))
        TRY(apply("logger", "PUT", "/logger", (*doc)["logger"]));
    if (present("metrics"))
        TRY(apply("metrics", "PUT", "/metrics", (*doc)["metrics"]));
    if (present("machine-config"))
        TRY(apply("machine-config", "PUT", "/machine-config", (*doc)["machine-config"]));
    if (present("cpu-config"))
        TRY(apply("cpu-config", "PUT", "/cpu-config", (*doc)["cpu-config"]));
    TRY(apply("boot-source", "PUT", "/boot-source", (*doc)["boot-source"]));
    const auto& drives = (*doc)["drives"];
    if (!drives.is_array())
        return make_error("{}Invalid JSON: \"drives\" must be a list ({})", kPrefix, path);
    for (auto& d : drives) {
        std::string id = d.is_object() && d.contains("drive_id") && d["drive_id"].is_string()
            ? d["drive_id"].get<std::string>()
            : std::string();
        TRY(apply("drives", "PUT", "/drives/" + id, d));
    }
    if (present("network-interfaces")) {
        const auto& nets = (*doc)["network-interfaces"];
        if (!nets.is_array())
            return make_error("{}Invalid JSON: \"network-interfaces\" must be a list ({})", kPrefix, path);
        for (auto& n : nets) {
            std::string id = n.is_object() && n.contains("iface_id") && n["iface_id"].is_string()
                ? n["iface_id"].get<std::string>()
                : std::string();
            TRY(apply("network-interfaces", "PUT", "/network-interfaces/" + id, n));
        }
    }
    if (present("vsock"))
        TRY(apply("vsock", "PUT", "/vsock", (*doc)["vsock"]));
    if (present("balloon"))
        TRY(apply("balloon", "PUT", "/balloon", (*doc)["balloon"]));
    if (present("mmds-config"))
        TRY(apply("mmds-config", "PUT", "/mmds/config", (*doc)["mmds-config"]));
    if (present("entropy"))
        TRY(apply("entropy", "PUT", "/entropy", (*doc)["entropy"]));
    if (present("serial"))
        TRY(apply("serial", "PUT", "/serial", (*doc)["serial"]));
    return {};
}

} // namespace vessel::api
