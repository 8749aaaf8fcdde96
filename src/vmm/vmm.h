// The VMM process's controller: the VM lifecycle state machine (Not started → Running ⇄ Paused,
// and the reboot of `vessel run`), the configuration before boot, and every operation the API
// and the CLI perform on a VM. All methods run on the event loop's thread; the VM calls back
// there when it stops. Operations answer with Firecracker's messages where Firecracker has the
// operation ("The requested operation is not supported before starting the microVM.").
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "base/result.h"
#include "engine/probe.h"
#include "vmm/event_loop.h"
#include "vmm/vm.h"
#include "vmm/vm_resources.h"

namespace vessel {

class ConsoleMux;
class Metrics;
namespace mmds {
class DataStore;
class TokenAuthority;
} // namespace mmds

enum class VmState { NotStarted, Running, Paused };

// Firecracker's names: "Not started", "Running", "Paused".
const char* vm_state_name(VmState state);

struct BalloonStatsView {
    uint32_t target_pages { 0 };
    uint32_t actual_pages { 0 };
    std::array<std::optional<uint64_t>, 10> values; // virtio-balloon tags 0..9
};

class Vmm {
public:
    struct Options {
        std::string id;
        // The engine the user asked for (auto resolves at start).
        EngineKind engine { EngineKind::Auto };
        // The metadata service's store and V2 tokens (shared with the API).
        std::shared_ptr<mmds::DataStore> mmds;
        std::shared_ptr<mmds::TokenAuthority> mmds_tokens;
    };

    Vmm(EventLoop& loop, ConsoleMux& console, Metrics& metrics, Options options);
    ~Vmm();

    const std::string& id() const { return m_options.id; }
    VmState state() const { return m_state; }
    bool started() const { return m_state != VmState::NotStarted; }
    VmResources& resources() { return m_resources; }
    const VmResources& resources() const { return m_resources; }
    // The configuration the VM runs with (after start), else the pending one.
    const VmConfig& running_config() const;
    // Engine of the running VM ("soft" / "kvm"), empty before start.
    std::string engine_name() const;
    // Seconds since the VM started (0 before).
    double uptime_seconds() const;
    Vm* vm() { return m_vm.get(); }

    // InstanceStart: builds the VM from the resources and runs it.
    Result<void> start();
    // Starts with a ready VmConfig (vessel run, --config-file).
    Result<void> start_with(const VmConfig& config);
    Result<void> pause();
    Result<void> resume();
    // PUT /snapshot/create: the paused VM's state and memory files.
    Result<Vm::SnapshotInfo> create_snapshot(const Vm::SnapshotOptions& options);
    // PUT /snapshot/load: only into a VMM that has not started a VM; the VM stays paused unless
    // `resume_vm`.
    Result<void> load_snapshot(const Vm::RestoreOptions& options, bool resume_vm);
    // The last pause/resume, for metrics and `vessel info`.
    std::chrono::microseconds last_pause_duration() const { return m_last_pause; }
    std::chrono::microseconds last_resume_duration() const { return m_last_resume; }
    Result<void> send_ctrl_alt_del();
    // A graceful stop (vessel stop): the next guest reset ends the VMM instead of rebooting, and
    // the guest is asked to shut down with Ctrl+Alt+Del.
    Result<void> shut_down();

    // Post-boot changes.
    Result<void> update_balloon_target(uint32_t amount_mib);
    Result<void> update_balloon_stats_interval(uint32_t seconds);
    Result<BalloonStatsView> balloon_stats() const;
    Result<void> update_drive(
        const std::string& id, const std::optional<std::string>& path, const std::optional<RateLimiterConfig>& limiter);
    Result<void> update_net(
        const std::string& id, const std::optional<RateLimiterConfig>& rx, const std::optional<RateLimiterConfig>& tx);

    // A termination signal: stops the VM (or the process, before boot) with 128 + signo.
    void note_signal(int signo);
    // Stops the VM at once (vessel kill, Ctrl-A x): exit status `status`.
    void kill(int status, std::string why);

    // Called once when the process should exit, with its exit status.
    std::function<void(int status)> on_exit;

    // The time from InstanceStart to the first guest instruction (0 until known).
    std::chrono::microseconds start_to_first_instruction() const;

private:
    Result<void> launch(const VmConfig& config, const char* error_prefix);
    // Runs a built VM (created or restored) as this VMM's.
    Result<void> adopt(std::unique_ptr<Vm> vm, const char* error_prefix);
    Vm::Services vm_services();
    void vm_stopped();
    int exit_status(const VmExitInfo& exit);
    void exit_process(int status);
    Result<void> require_running(bool allow_paused = true) const;
    // Asks the balloon for fresh statistics every stats_polling_interval_s (Firecracker's polling).
    void schedule_balloon_stats();

    EventLoop& m_loop;
    ConsoleMux& m_console;
    Metrics& m_metrics;
    Options m_options;
    VmResources m_resources;
    VmConfig m_running_config;
    std::unique_ptr<Vm> m_vm;
    VmState m_state { VmState::NotStarted };
    std::string m_engine_name;
    std::chrono::steady_clock::time_point m_started_at {};
    std::chrono::steady_clock::time_point m_start_request {};
    std::chrono::microseconds m_last_pause { 0 };
    std::chrono::microseconds m_last_resume { 0 };
    bool m_exited { false };
    bool m_api_started { false }; // InstanceStart (not vessel run / --config-file)
    EventLoop::Token m_stats_timer { 0 };
};

// Picks the engine: auto takes KVM only where it runs guest kernel code natively.
Result<EngineKind> resolve_engine(EngineKind requested);
// Creates the engine for `config` (its vCPU count) after resolving `config.engine`; `tsc_khz`
// (0: the engine's default) is the TSC rate a restored guest was calibrated against.
Result<std::unique_ptr<Engine>> make_engine(const VmConfig& config, uint64_t tsc_khz = 0);
// Range checks that need the engine (KVM's vCPU limit) on top of validate_config().
Result<void> validate_for_engine(const VmConfig& config);

} // namespace vessel
