// GET /, GET /version, GET /vm/info (Vessel), PATCH /vm, PUT /actions, GET /metrics (Vessel),
// GET /console (Vessel: an HTTP upgrade to the serial console).
#include <time.h>
#include <unistd.h>

#include <map>

#include "api/request/common.h"
#include "api/router.h"
#include "base/log.h"
#include "devices/virtio/mmio.h"
#include "vmm/console_mux.h"
#include "vmm/metrics.h"
#include "vmm/vm.h"
#include "vmm/vmm.h"

namespace vessel::api {

namespace {

// The Firecracker API release whose behaviour Vessel follows; GET /version reports it, since
// clients read that field to decide what the API offers.
constexpr const char* kFirecrackerApiVersion = "1.10.0";

double process_cpu_seconds()
{
    timespec ts {};
    ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

uint64_t query_number(const std::string& query, std::string_view key, uint64_t fallback)
{
    size_t pos = 0;
    while (pos < query.size()) {
        size_t amp = query.find('&', pos);
        std::string item = query.substr(pos, amp == std::string::npos ? std::string::npos : amp - pos);
        if (item.rfind(std::string(key) + "=", 0) == 0) {
            char* end = nullptr;
            unsigned long long v = std::strtoull(item.c_str() + key.size() + 1, &end, 10);
            if (end && *end == 0)
                return v;
        }
        if (amp == std::string::npos)
            break;
        pos = amp + 1;
    }
    return fallback;
}

// Vessel's counters of one device, read through the metrics interface.
class FieldReport final : public MetricsReport {
public:
    void counter(std::string_view field, uint64_t total) override { values[std::string(field)] = total; }
    void latency(std::string_view, const LatencyCounter&) override { }
    uint64_t get(const char* field) const
    {
        auto it = values.find(field);
        return it == values.end() ? 0 : it->second;
    }
    std::map<std::string, uint64_t> values;
};

} // namespace

HttpResponse get_instance_info(ApiContext& ctx)
{
    nlohmann::ordered_json o;
    o["id"] = ctx.vmm.id();
    o["state"] = vm_state_name(ctx.vmm.state());
    o["vmm_version"] = ctx.version;
    o["app_name"] = "Vessel";
    return HttpResponse::json(200, o.dump());
}

HttpResponse get_version(ApiContext&)
{
    nlohmann::ordered_json o;
    o["firecracker_version"] = kFirecrackerApiVersion;
    return HttpResponse::json(200, o.dump());
}

HttpResponse get_vm_info(ApiContext& ctx)
{
    const auto& config = ctx.vmm.running_config();
    nlohmann::ordered_json o;
    o["id"] = ctx.vmm.id();
    o["state"] = vm_state_name(ctx.vmm.state());
    o["engine"] = ctx.vmm.started() ? ctx.vmm.engine_name() : engine_name(config.engine);
    o["vcpu_count"] = config.cpus;
    o["mem_size_mib"] = config.mem_bytes >> 20;
    o["uptime_s"] = ctx.vmm.uptime_seconds();
    o["pid"] = ::getpid();
    o["api_socket"] = ctx.api_socket;
    o["vmm_version"] = ctx.version;
    o["cpu_time_s"] = process_cpu_seconds();
    o["console_output_bytes"] = ctx.console.output_bytes();
    o["instance_start_to_first_instruction_us"] = ctx.vmm.start_to_first_instruction().count();
    o["last_pause_us"] = ctx.vmm.last_pause_duration().count();
    o["last_resume_us"] = ctx.vmm.last_resume_duration().count();
    o["vcpus"] = nlohmann::ordered_json::array();
    o["drives"] = nlohmann::ordered_json::array();
    o["network_interfaces"] = nlohmann::ordered_json::array();
    if (Vm* vm = ctx.vmm.vm()) {
        for (auto& v : vm->vcpus()) {
            auto s = v->stats();
            nlohmann::ordered_json j;
            j["id"] = v->id();
            j["instructions"] = s.instructions;
            j["translations"] = s.translations;
            j["exits"] = s.exits_io_in + s.exits_io_out + s.exits_mmio_read + s.exits_mmio_write + s.exits_other;
            o["vcpus"].push_back(j);
        }
        size_t disk = 0, net = 0;
        for (auto& t : vm->virtio_transports()) {
            auto& dev = t->device();
            FieldReport r;
            dev.report_metrics(r);
            if (dev.type() == virtio::DeviceType::Block) {
                nlohmann::ordered_json j;
                j["id"] = disk < config.disks.size() ? config.disks[disk].id : "";
                ++disk;
                j["read_bytes"] = r.get("read_bytes");
                j["write_bytes"] = r.get("write_bytes");
                j["read_count"] = r.get("read_count");
                j["write_count"] = r.get("write_count");
                o["drives"].push_back(j);
            } else if (dev.type() == virtio::DeviceType::Net) {
                nlohmann::ordered_json j;
                j["id"] = net < config.nets.size() ? config.nets[net].id : "";
                ++net;
                j["rx_bytes"] = r.get("rx_bytes_count");
                j["tx_bytes"] = r.get("tx_bytes_count");
                j["rx_packets"] = r.get("rx_packets_count");
                j["tx_packets"] = r.get("tx_packets_count");
                o["network_interfaces"].push_back(j);
            }
        }
    }
    return HttpResponse::json(200, o.dump());
}

HttpResponse patch_vm(ApiContext& ctx, const HttpRequest& req)
{
    auto body = JsonObject::parse(req.body, "Vm", { "state" });
    if (!body.ok())
        return body_error(body.error());
    auto state = body->variant("state", { "Paused", "Resumed" });
    if (!state.ok())
        return body_error(state.error());
    if (state.value() == "Paused")
        return outcome(ctx.vmm.pause());
    return outcome(ctx.vmm.resume());
}

HttpResponse put_actions(ApiContext& ctx, const HttpRequest& req)
{
    auto body = JsonObject::parse(req.body, "ActionBody", { "action_type" });
    if (!body.ok())
        return body_error(body.error());
    // FlushMetrics, InstanceStart and SendCtrlAltDel are Firecracker's; InstanceStop (shut the
    // guest down: Ctrl+Alt+Del, and exit when it resets or powers off) and InstanceKill (stop at
    // once) are Vessel's, for `vessel stop` and `vessel kill`.
    auto action = body->variant(
        "action_type", { "FlushMetrics", "InstanceStart", "SendCtrlAltDel", "InstanceStop", "InstanceKill" });
    if (!action.ok())
        return body_error(action.error());
    const std::string& a = action.value();
    if (a == "InstanceStart") {
        return outcome(ctx.vmm.start());
    }
    if (a == "SendCtrlAltDel")
        return outcome(ctx.vmm.send_ctrl_alt_del());
    if (a == "FlushMetrics") {
        if (auto r = require_started(ctx.vmm); !r.ok())
            return bad_request(r.error());
        return outcome(ctx.metrics.flush());
    }
    if (a == "InstanceStop")
        return outcome(ctx.vmm.shut_down());
    // InstanceKill: answer first, then stop (the reply must reach the client).
    if (ctx.exit_after_reply)
        ctx.exit_after_reply(0);
    return HttpResponse::no_content();
}

HttpResponse get_metrics(ApiContext& ctx)
{
    HttpResponse r = HttpResponse::json(200, ctx.metrics.prometheus());
    r.content_type = "text/plain; version=0.0.4";
    return r;
}

HttpResponse get_console(ApiContext& ctx, const HttpRequest& req)
{
    const std::string* upgrade = req.header("upgrade");
    std::string proto = upgrade ? *upgrade : std::string();
    for (auto& c : proto)
        c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (!req.upgrade || proto != "vessel-console")
        return HttpResponse::fault(400,
            "GET /console attaches to the serial console: it needs \"Connection: Upgrade\" "
            "and \"Upgrade: vessel-console\" (use `vessel console ID`).");
    if (ctx.console.attached())
        return HttpResponse::fault(400, "Another client is attached to the console; detach it first (Ctrl-A d).");
    size_t history = query_number(req.query, "history", 0);
    HttpResponse r;
    r.status = 101;
    r.headers = { { "Connection", "Upgrade" }, { "Upgrade", "vessel-console" } };
    r.take_over = [&console = ctx.console, history](int fd, std::string early) {
        if (auto attached = console.attach(fd, std::move(early), history); !attached.ok()) {
            log_warn("console: {}", attached.error().message());
            ::close(fd);
        }
    };
    return r;
}

} // namespace vessel::api
