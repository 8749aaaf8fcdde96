// Metrics in two forms from one set of counters:
//  - Firecracker's metrics file: one JSON line per flush (every 60 s once the VM runs, on
//    FlushMetrics and at exit) with Firecracker's groups and field names; counters are the
//    change since the previous line, "Store" values (latencies_us, startup times) as they are.
//    Fields for things Vessel does not have (or does not count) are present and 0, as
//    Firecracker writes them for absent devices.
//  - GET /metrics (Vessel extension): Prometheus text with running totals of the same counters
//    (vessel_<group>_<field>[_total]), per-device labels, and what Firecracker has no field for:
//    guest instructions and translations per vCPU (soft), exits by kind per vCPU (KVM), API
//    requests and their latency by path, pause/resume durations.
// Counters live where they are counted (devices, vCPUs, the API router); this class reads them.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "base/counters.h"
#include "base/result.h"

namespace vessel {

class Vm;
namespace mmds {
class DataStore;
}

class Metrics {
public:
    Metrics();
    ~Metrics();

    // PUT /metrics, --metrics-path: where the JSON lines go (file or named pipe, opened
    // non-blocking). Only once per process, as Firecracker.
    Result<void> init_file(const std::string& path);
    bool file_configured() const { return m_fd >= 0; }
    // Writes one line now. Without a file it does nothing.
    Result<void> flush();

    // The running VM whose devices and vCPUs are read (nullptr: none).
    void set_vm(Vm* vm);
    void vm_started();
    void record_pause(std::chrono::microseconds duration);
    void record_resume(std::chrono::microseconds duration);
    void record_snapshot(std::chrono::microseconds duration, bool diff);
    void record_restore(std::chrono::microseconds duration);
    // main() began (call first thing): the start of api_server.process_startup_time_us.
    static void note_process_start();
    // The API socket accepts connections: process start-up time (wall and CPU). With the jailer's
    // --start-time-us / --start-time-cpu-us / --parent-cpu-time-us, counted from those.
    void record_startup(std::optional<uint64_t> start_time_us = {}, std::optional<uint64_t> start_cpu_us = {},
        std::optional<uint64_t> parent_cpu_us = {});
    void set_mmds(const mmds::DataStore* store) { m_mmds = store; }

    // One API request: `group` is get|put|patch, `resource` Firecracker's counter stem
    // (machine_cfg, drive, ...; empty: none), `path` the route template for Prometheus.
    void api_request(const std::string& method, const std::string& resource, const std::string& path, int status,
        std::chrono::microseconds latency);
    void deprecated_api_call() { m_deprecated.add(); }
    void signal_received(int signo);
    void log_write_failed() { m_missed_log.add(); }

    // The Firecracker-shaped totals: {group: {field: total | {min_us, max_us, sum_us}}}.
    nlohmann::ordered_json totals();
    // Firecracker's line (deltas against the previous flush).
    std::string fc_line();
    std::string prometheus();

private:
    void add_devices(nlohmann::ordered_json& out);

    int m_fd { -1 };
    bool m_started_once { false };
    std::mutex m_mutex; // the VM pointer and the previous line's totals
    Vm* m_vm { nullptr };
    const mmds::DataStore* m_mmds { nullptr };
    nlohmann::ordered_json m_previous; // totals at the last flush (for deltas)

    // api_server
    uint64_t m_startup_us { 0 };
    uint64_t m_startup_cpu_us { 0 };
    // {group, field} → count; API counters by resource.
    std::map<std::string, uint64_t> m_api_counts;
    struct PathStats {
        uint64_t count { 0 };
        uint64_t errors { 0 };
        uint64_t sum_us { 0 };
    };
    std::map<std::pair<std::string, std::string>, PathStats> m_paths; // (method, path)
    Counter m_deprecated;
    Counter m_missed_metrics;
    Counter m_metrics_fails;
    Counter m_missed_log;
    Counter m_sigpipe;
    uint64_t m_sighup { 0 };
    uint64_t m_pause_us { 0 };
    uint64_t m_resume_us { 0 };
    uint64_t m_full_snapshot_us { 0 };
    uint64_t m_diff_snapshot_us { 0 };
    uint64_t m_load_snapshot_us { 0 };
    LatencyCounter m_pauses;
    LatencyCounter m_resumes;
};

} // namespace vessel
