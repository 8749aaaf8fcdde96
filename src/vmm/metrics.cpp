#include "vmm/metrics.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <cstring>
#include <initializer_list>
#include <set>

#include "base/log.h"
#include "devices/virtio/balloon.h"
#include "devices/virtio/blk.h"
#include "devices/virtio/mmio.h"
#include "devices/virtio/net.h"
#include "devices/virtio/rng.h"
#include "devices/virtio/vsock.h"
#include "vmm/vm.h"

namespace vessel {

namespace {

using ojson = nlohmann::ordered_json;

// Firecracker's field lists (its metrics.rs and device metrics files, declaration order = JSON
// order). "@" marks a latency object ({min_us, max_us, sum_us}).
const std::initializer_list<const char*> kBlockFields
    = { "activate_fails", "cfg_fails", "no_avail_buffer", "event_fails", "execute_fails", "invalid_reqs_count",
          "flush_count", "queue_event_count", "rate_limiter_event_count", "update_count", "update_fails", "read_bytes",
          "write_bytes", "read_count", "write_count", "@read_agg", "@write_agg", "rate_limiter_throttled_events",
          "io_engine_throttled_events", "remaining_reqs_count" };
const std::initializer_list<const char*> kNetFields = { "activate_fails", "cfg_fails", "mac_address_updates",
    "no_rx_avail_buffer", "no_tx_avail_buffer", "event_fails", "rx_queue_event_count", "rx_event_rate_limiter_count",
    "rx_rate_limiter_throttled", "rx_tap_event_count", "rx_bytes_count", "rx_packets_count", "rx_fails", "rx_count",
    "tap_read_fails", "tap_write_fails", "@tap_write_agg", "tx_bytes_count", "tx_malformed_frames", "tx_fails",
    "tx_count", "tx_packets_count", "tx_partial_reads", "tx_queue_event_count", "tx_rate_limiter_event_count",
    "tx_rate_limiter_throttled", "tx_spoofed_mac_count", "tx_remaining_reqs_count" };
const std::initializer_list<const char*> kBalloonFields = { "activate_fails", "cfg_fails", "inflate_count",
    "stats_updates_count", "stats_update_fails", "deflate_count", "event_fails" };
const std::initializer_list<const char*> kVsockFields = { "activate_fails", "cfg_fails", "rx_queue_event_fails",
    "tx_queue_event_fails", "ev_queue_event_fails", "muxer_event_fails", "conn_event_fails", "rx_queue_event_count",
    "tx_queue_event_count", "rx_bytes_count", "tx_bytes_count", "rx_packets_count", "tx_packets_count", "conns_added",
    "conns_killed", "conns_removed", "killq_resync", "tx_flush_fails", "tx_write_fails", "rx_read_fails" };
const std::initializer_list<const char*> kEntropyFields
    = { "activate_fails", "entropy_event_fails", "entropy_event_count", "entropy_bytes", "host_rng_fails",
          "entropy_rate_limiter_throttled", "rate_limiter_event_count" };
const std::initializer_list<const char*> kMmdsFields = { "rx_accepted", "rx_accepted_err", "rx_accepted_unusual",
    "rx_bad_eth", "rx_invalid_token", "rx_no_token", "rx_count", "tx_bytes", "tx_count", "tx_errors", "tx_frames",
    "connections_created", "connections_destroyed" };

// Values that Firecracker writes as they are instead of as a change since the last line.
const std::set<std::string> kStoreFields = { "api_server.process_startup_time_us",
    "api_server.process_startup_time_cpu_us", "latencies_us.full_create_snapshot", "latencies_us.diff_create_snapshot",
    "latencies_us.load_snapshot", "latencies_us.pause_vm", "latencies_us.resume_vm",
    "latencies_us.vmm_full_create_snapshot", "latencies_us.vmm_diff_create_snapshot", "latencies_us.vmm_load_snapshot",
    "latencies_us.vmm_pause_vm", "latencies_us.vmm_resume_vm", "seccomp.num_faults", "vmm.panic_count",
    "signals.sigbus", "signals.sigsegv", "signals.sigxfsz", "signals.sigxcpu", "signals.sighup", "signals.sigill" };

ojson latency_json(uint64_t min, uint64_t max, uint64_t sum)
{
    ojson o;
    o["min_us"] = min;
    o["max_us"] = max;
    o["sum_us"] = sum;
    return o;
}

// Collects what a device reports, then lays it out in Firecracker's field order.
class GroupReport final : public MetricsReport {
public:
    void counter(std::string_view field, uint64_t total) override { m_counters[std::string(field)] += total; }
    void latency(std::string_view field, const LatencyCounter& l) override
    {
        m_latencies[std::string(field)] = { l.min_us(), l.max_us(), l.sum_us() };
    }

    ojson group(std::initializer_list<const char*> fields) const
    {
        ojson o = ojson::object();
        for (const char* f : fields) {
            if (f[0] == '@') {
                auto it = m_latencies.find(f + 1);
                o[f + 1] = it == m_latencies.end() ? latency_json(0, 0, 0)
                                                   : latency_json(it->second[0], it->second[1], it->second[2]);
            } else {
                auto it = m_counters.find(f);
                o[f] = it == m_counters.end() ? 0 : it->second;
            }
        }
        return o;
    }

private:
    std::map<std::string, uint64_t> m_counters;
    std::map<std::string, std::array<uint64_t, 3>> m_latencies;
};

uint64_t now_us(clockid_t clock)
{
    timespec ts {};
    ::clock_gettime(clock, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1000000 + static_cast<uint64_t>(ts.tv_nsec) / 1000;
}

// When main() began (CLOCK_MONOTONIC, µs); set by the CLI edge. /proc/self/stat's start time
// would also count exec and the dynamic loader, but only in 10 ms clock ticks.
std::atomic<uint64_t> g_process_start_us { 0 };

// Prometheus metric name from a Firecracker group and field.
std::string prom_name(const std::string& group, const std::string& field)
{
    std::string name = "vessel_" + group + "_" + field;
    for (auto& c : name)
        if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_')
            c = '_';
    return name;
}

std::string prom_escape(const std::string& v)
{
    std::string out;
    for (char c : v) {
        if (c == '\\' || c == '"')
            out += '\\';
        if (c == '\n') {
            out += "\\n";
            continue;
        }
        out += c;
    }
    return out;
}

} // namespace

Metrics::Metrics() = default;

Metrics::~Metrics()
{
    if (m_fd >= 0)
        ::close(m_fd);
}

Result<void> Metrics::init_file(const std::string& path)
{
    if (m_fd >= 0)
        return make_error("Metrics error: Cannot initialize the metrics system due to bad user input: Reinitialization "
                          "of metrics not allowed.");
    // Read and write for a named pipe without a reader (write-only O_NONBLOCK fails with ENXIO);
    // neither O_APPEND nor O_TRUNC, as Firecracker.
    int fd = ::open(path.c_str(), O_RDWR | O_NONBLOCK | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
        return make_error("Metrics error: Cannot initialize the metrics system due to bad user input: {} (os error {})",
            std::strerror(errno), errno);
    m_fd = fd;
    return {};
}

Result<void> Metrics::flush()
{
    if (m_fd < 0)
        return {};
    std::string line = fc_line();
    line += '\n';
    size_t done = 0;
    while (done < line.size()) {
        ssize_t n = ::write(m_fd, line.data() + done, line.size() - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            m_missed_metrics.add();
            return make_error("Internal VMM error: Metrics error: Failed to write metrics: {} (os error {})",
                std::strerror(errno), errno);
        }
        done += static_cast<size_t>(n);
    }
    return {};
}

void Metrics::set_vm(Vm* vm)
{
    std::lock_guard lock(m_mutex);
    m_vm = vm;
}

void Metrics::vm_started()
{
    // Firecracker writes a line as soon as the VM runs (its periodic writer starts then).
    if (m_started_once)
        return;
    m_started_once = true;
    (void)flush();
}

void Metrics::record_pause(std::chrono::microseconds duration)
{
    m_pause_us = static_cast<uint64_t>(duration.count());
    m_pauses.record(duration);
}

void Metrics::record_snapshot(std::chrono::microseconds duration, bool diff)
{
    (diff ? m_diff_snapshot_us : m_full_snapshot_us) = static_cast<uint64_t>(duration.count());
}

void Metrics::record_restore(std::chrono::microseconds duration)
{
    m_load_snapshot_us = static_cast<uint64_t>(duration.count());
}

void Metrics::record_resume(std::chrono::microseconds duration)
{
    m_resume_us = static_cast<uint64_t>(duration.count());
    m_resumes.record(duration);
}

void Metrics::note_process_start()
{
    g_process_start_us.store(now_us(CLOCK_MONOTONIC));
}

void Metrics::record_startup(
    std::optional<uint64_t> start_time_us, std::optional<uint64_t> start_cpu_us, std::optional<uint64_t> parent_cpu_us)
{
    uint64_t now = now_us(CLOCK_MONOTONIC);
    uint64_t start = start_time_us.value_or(g_process_start_us.load());
    m_startup_us = start && now > start ? now - start : 0;
    // As Firecracker: the process's CPU time, less what it had used when the jailer noted the
    // start, plus the jailer's own.
    uint64_t cpu = now_us(CLOCK_PROCESS_CPUTIME_ID);
    uint64_t before = start_cpu_us.value_or(0);
    m_startup_cpu_us = (cpu > before ? cpu - before : 0) + parent_cpu_us.value_or(0);
}

void Metrics::api_request(const std::string& method, const std::string& resource, const std::string& path, int status,
    std::chrono::microseconds latency)
{
    std::string group = method == "GET" ? "get_api_requests"
        : method == "PUT"               ? "put_api_requests"
                                        : "patch_api_requests";
    if (!resource.empty()) {
        ++m_api_counts[group + "." + resource + "_count"];
        if (status >= 400)
            ++m_api_counts[group + "." + resource + "_fails"];
    }
    auto& p = m_paths[{ method, path }];
    ++p.count;
    if (status >= 400)
        ++p.errors;
    p.sum_us += static_cast<uint64_t>(latency.count());
}

void Metrics::signal_received(int signo)
{
    if (signo == SIGPIPE)
        m_sigpipe.add();
    if (signo == SIGHUP)
        m_sighup = 1;
}

void Metrics::add_devices(ojson& out)
{
    // Devices in VM order; block and net also per device (by API id) with the sum after them.
    GroupReport balloon, vsock, entropy, block_all, net_all;
    std::vector<std::pair<std::string, GroupReport>> blocks, nets;
    if (m_vm) {
        const auto& config = m_vm->config();
        size_t disk = 0, net = 0;
        for (auto& t : m_vm->virtio_transports()) {
            auto& dev = t->device();
            switch (dev.type()) {
            case virtio::DeviceType::Block: {
                std::string id = disk < config.disks.size() ? config.disks[disk].id : fmt::format("drive{}", disk);
                ++disk;
                blocks.emplace_back(id, GroupReport {});
                dev.report_metrics(blocks.back().second);
                dev.report_metrics(block_all);
                break;
            }
            case virtio::DeviceType::Net: {
                std::string id = net < config.nets.size() ? config.nets[net].id : fmt::format("net{}", net);
                ++net;
                nets.emplace_back(id, GroupReport {});
                dev.report_metrics(nets.back().second);
                dev.report_metrics(net_all);
                break;
            }
            case virtio::DeviceType::Balloon: dev.report_metrics(balloon); break;
            case virtio::DeviceType::Vsock: dev.report_metrics(vsock); break;
            case virtio::DeviceType::Rng: dev.report_metrics(entropy); break;
            default: break;
            }
        }
    }
    std::sort(blocks.begin(), blocks.end(), [](auto& a, auto& b) { return a.first < b.first; });
    std::sort(nets.begin(), nets.end(), [](auto& a, auto& b) { return a.first < b.first; });
    out["balloon"] = balloon.group(kBalloonFields);
    for (auto& [id, report] : blocks)
        out["block_" + id] = report.group(kBlockFields);
    out["block"] = block_all.group(kBlockFields);
    // The aggregate's latency objects carry only the sum, as Firecracker's.
    for (const char* f : { "read_agg", "write_agg" }) {
        out["block"][f]["min_us"] = 0;
        out["block"][f]["max_us"] = 0;
    }
    out["__net_per_device"] = ojson::array();
    for (auto& [id, report] : nets)
        out["__net_per_device"].push_back(ojson::array({ "net_" + id, report.group(kNetFields) }));
    out["__net"] = net_all.group(kNetFields);
    out["__net"]["tap_write_agg"]["min_us"] = 0;
    out["__net"]["tap_write_agg"]["max_us"] = 0;
    out["__vsock"] = vsock.group(kVsockFields);
    out["__entropy"] = entropy.group(kEntropyFields);
}

ojson Metrics::totals()
{
    std::lock_guard lock(m_mutex);
    ojson out;
    out["utc_timestamp_ms"] = now_us(CLOCK_REALTIME) / 1000;
    out["api_server"]
        = { { "process_startup_time_us", m_startup_us }, { "process_startup_time_cpu_us", m_startup_cpu_us } };
    ojson devices;
    add_devices(devices);
    out["balloon"] = devices["balloon"];
    for (auto& [key, value] : devices.items())
        if (key.rfind("block", 0) == 0)
            out[key] = value;
    out["deprecated_api"] = { { "deprecated_http_api_calls", m_deprecated.get() } };
    auto api = [&](const std::string& group, std::initializer_list<const char*> stems) {
        ojson o = ojson::object();
        for (const char* stem : stems) {
            std::string key = group + "." + stem;
            auto it = m_api_counts.find(key);
            o[stem] = it == m_api_counts.end() ? 0 : it->second;
        }
        return o;
    };
    out["get_api_requests"]
        = api("get_api_requests", { "instance_info_count", "machine_cfg_count", "mmds_count", "vmm_version_count" });
    {
        GroupReport i8042, uart;
        if (m_vm)
            m_vm->report_legacy_metrics(i8042, uart);
        out["i8042"] = i8042.group(
            { "error_count", "missed_read_count", "missed_write_count", "read_count", "reset_count", "write_count" });
        out["uart"] = uart.group(
            { "error_count", "flush_count", "missed_read_count", "missed_write_count", "read_count", "write_count" });
    }
    out["latencies_us"] = { { "full_create_snapshot", m_full_snapshot_us }, { "diff_create_snapshot", m_diff_snapshot_us },
        { "load_snapshot", m_load_snapshot_us }, { "pause_vm", m_pause_us }, { "resume_vm", m_resume_us },
        { "vmm_full_create_snapshot", m_full_snapshot_us }, { "vmm_diff_create_snapshot", m_diff_snapshot_us },
        { "vmm_load_snapshot", m_load_snapshot_us }, { "vmm_pause_vm", m_pause_us }, { "vmm_resume_vm", m_resume_us } };
    out["logger"] = { { "missed_metrics_count", m_missed_metrics.get() }, { "metrics_fails", m_metrics_fails.get() },
        { "missed_log_count", m_missed_log.get() + log_missed_count() } };
    {
        GroupReport mmds;
        if (m_vm)
            m_vm->report_mmds_metrics(mmds);
        out["mmds"] = mmds.group(kMmdsFields);
    }
    for (auto& entry : devices["__net_per_device"])
        out[entry[0].get<std::string>()] = entry[1];
    out["net"] = devices["__net"];
    out["patch_api_requests"] = api("patch_api_requests",
        { "drive_count", "drive_fails", "network_count", "network_fails", "machine_cfg_count", "machine_cfg_fails",
            "mmds_count", "mmds_fails" });
    out["put_api_requests"] = api("put_api_requests",
        { "actions_count", "actions_fails", "boot_source_count", "boot_source_fails", "drive_count", "drive_fails",
            "logger_count", "logger_fails", "machine_cfg_count", "machine_cfg_fails", "cpu_cfg_count", "cpu_cfg_fails",
            "metrics_count", "metrics_fails", "network_count", "network_fails", "mmds_count", "mmds_fails",
            "vsock_count", "vsock_fails" });
    out["seccomp"] = { { "num_faults", 0 } };
    {
        GroupReport vcpu;
        if (m_vm)
            m_vm->report_vcpu_metrics(vcpu);
        out["vcpu"] = vcpu.group({ "exit_io_in", "exit_io_out", "exit_mmio_read", "exit_mmio_write", "failures",
            "@exit_io_in_agg", "@exit_io_out_agg", "@exit_mmio_read_agg", "@exit_mmio_write_agg" });
    }
    out["vmm"] = { { "panic_count", 0 } };
    out["signals"] = { { "sigbus", 0 }, { "sigsegv", 0 }, { "sigxfsz", 0 }, { "sigxcpu", 0 },
        { "sigpipe", m_sigpipe.get() }, { "sighup", m_sighup }, { "sigill", 0 } };
    out["vsock"] = devices["__vsock"];
    out["entropy"] = devices["__entropy"];
    return out;
}

std::string Metrics::fc_line()
{
    ojson now = totals();
    ojson line = now;
    // Counters become the change since the previous line; Store fields stay; latency objects
    // keep min/max and report the change of their sum.
    for (auto& [group, fields] : line.items()) {
        if (!fields.is_object())
            continue;
        for (auto& [field, value] : fields.items()) {
            std::string key = group + "." + field;
            const ojson* prev = nullptr;
            if (m_previous.contains(group) && m_previous[group].contains(field))
                prev = &m_previous[group][field];
            if (value.is_object()) {
                uint64_t before = prev ? (*prev)["sum_us"].get<uint64_t>() : 0;
                uint64_t after = value["sum_us"].get<uint64_t>();
                value["sum_us"] = after >= before ? after - before : after;
            } else if (!kStoreFields.count(key) && value.is_number_unsigned()) {
                uint64_t before = prev ? prev->get<uint64_t>() : 0;
                uint64_t after = value.get<uint64_t>();
                value = after >= before ? after - before : after;
            }
        }
    }
    m_previous = std::move(now);
    return line.dump();
}

std::string Metrics::prometheus()
{
    ojson t = totals();
    // Prometheus wants each metric family's samples together, after one "# TYPE" line: collect
    // them by family (in the order families first appear), then write them out.
    std::vector<std::string> order;
    std::map<std::string, std::pair<const char*, std::string>> families;
    auto sample = [&](const std::string& family, const char* kind, const std::string& labels, auto value) {
        auto [it, fresh] = families.try_emplace(family, kind, std::string());
        if (fresh)
            order.push_back(family);
        it->second.second += fmt::format("{}{} {}\n", family, labels, value);
    };
    for (auto& [group, fields] : t.items()) {
        if (!fields.is_object())
            continue;
        std::string base_group = group;
        std::string device;
        if (group.rfind("block_", 0) == 0 || group.rfind("net_", 0) == 0) {
            size_t u = group.find('_');
            base_group = group.substr(0, u);
            device = group.substr(u + 1);
        }
        std::string labels = device.empty() ? "" : fmt::format("{{device=\"{}\"}}", prom_escape(device));
        // The all-devices sums get names of their own, so a family never mixes them with per-device samples.
        std::string family_group = device.empty() && (group == "block" || group == "net") ? group + "_all" : base_group;
        for (auto& [field, value] : fields.items()) {
            std::string name = prom_name(family_group, field);
            if (value.is_object()) {
                sample(name + "_sum_us", "counter", labels, value["sum_us"].get<uint64_t>());
                sample(name + "_max_us", "gauge", labels, value["max_us"].get<uint64_t>());
                sample(name + "_min_us", "gauge", labels, value["min_us"].get<uint64_t>());
            } else if (kStoreFields.count(group + "." + field)) {
                sample(name, "gauge", labels, value.dump());
            } else {
                sample(name + "_total", "counter", labels, value.dump());
            }
        }
    }
    {
        std::lock_guard lock(m_mutex);
        if (m_vm) {
            for (auto& v : m_vm->vcpus()) {
                auto s = v->stats();
                std::string vcpu = fmt::format("vcpu=\"{}\"", v->id());
                sample("vessel_vcpu_instructions_total", "counter", "{" + vcpu + "}", s.instructions);
                sample("vessel_vcpu_translations_total", "counter", "{" + vcpu + "}", s.translations);
                const std::pair<const char*, uint64_t> exits[]
                    = { { "io_in", s.exits_io_in }, { "io_out", s.exits_io_out }, { "mmio_read", s.exits_mmio_read },
                          { "mmio_write", s.exits_mmio_write }, { "other", s.exits_other } };
                for (auto& [kind, n] : exits)
                    sample("vessel_vcpu_exits_total", "counter", fmt::format("{{{},kind=\"{}\"}}", vcpu, kind), n);
            }
        }
    }
    for (auto& [key, p] : m_paths) {
        std::string labels = fmt::format("{{method=\"{}\",path=\"{}\"}}", key.first, prom_escape(key.second));
        sample("vessel_api_requests_total", "counter", labels, p.count);
        sample("vessel_api_request_errors_total", "counter", labels, p.errors);
        sample("vessel_api_request_duration_us_sum", "counter", labels, p.sum_us);
    }
    sample("vessel_vm_pauses_total", "counter", "", m_pauses.count());
    sample("vessel_vm_pause_duration_us_sum", "counter", "", m_pauses.sum_us());
    sample("vessel_vm_pause_duration_us_max", "gauge", "", m_pauses.max_us());
    sample("vessel_vm_resumes_total", "counter", "", m_resumes.count());
    sample("vessel_vm_resume_duration_us_sum", "counter", "", m_resumes.sum_us());
    sample("vessel_vm_resume_duration_us_max", "gauge", "", m_resumes.max_us());
    std::string out;
    for (auto& family : order) {
        auto& [kind, lines] = families[family];
        out += fmt::format("# TYPE {} {}\n", family, kind);
        out += lines;
    }
    return out;
}

} // namespace vessel
