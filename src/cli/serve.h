// The VMM process itself (Firecracker's process model): an event loop with the API socket, the
// console, signals and metrics, a Vmm that starts the VM when told to (InstanceStart, or at once
// for --config-file and `vessel run`), until the VM stops or the process is told to exit.
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "base/log.h"
#include "vmm/vm_config.h"

namespace vessel {

// vessel run --restore DIR / vessel restore DIR: what to load instead of booting.
struct RestoreSpec {
    std::string dir; // holds vm.state and vm.mem
    bool resume { true };
    bool track_dirty_pages { false };
    std::vector<std::pair<std::string, std::string>> net_overrides; // iface id → tap
    std::optional<std::string> vsock_uds_path;
    std::optional<EngineKind> engine; // default: the snapshot's
    std::string uffd_socket; // non-empty: guest memory from this page-fault handler (Uffd backend)
};

struct ServeOptions {
    std::string id; // empty: vm-<pid>
    std::string api_sock; // empty: <run dir>/<id>.sock
    bool no_api { false }; // no API socket at all (needs config_file or run_config)
    std::string config_file; // Firecracker's JSON config: boot at once
    std::optional<VmConfig> run_config; // `vessel run`: boot at once with this
    std::optional<RestoreSpec> restore; // `vessel run --restore`: load a snapshot at once
    EngineKind engine { EngineKind::Auto };
    std::string metrics_path;
    std::string log_path;
    bool show_level { false };
    bool show_log_origin { false };
    size_t max_payload { 51200 };
    size_t mmds_size_limit { 0 }; // 0: max_payload
    bool detach { false }; // fork into the background once the API socket accepts
    std::string metadata; // --metadata: a JSON file put into the MMDS store at start
    // The jailer's (Firecracker's) start time and CPU time, for api_server.process_startup_time_us.
    std::optional<uint64_t> start_time_us;
    std::optional<uint64_t> start_time_cpu_us;
    std::optional<uint64_t> parent_cpu_time_us;
};

// Runs the VMM; returns the process's exit status.
int serve(ServeOptions options);

} // namespace vessel
