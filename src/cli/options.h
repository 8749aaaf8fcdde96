// Command-line and JSON-config parsing into a VmConfig. Flags override the config file; every
// error names the flag (or the config key and file) that caused it.
#pragma once

#include <string>
#include <vector>

#include "base/result.h"
#include "cli/serve.h"
#include "vmm/vm_config.h"

namespace vessel {

enum class Command {
    Serve, // no verb: Firecracker's process model (--api-sock, --config-file, ...)
    Run, // boot a VM from flags
    Probe,
    Version,
    Help,
    Ls,
    Snapshot, // vessel snapshot ID DIR [--diff]
    Suspend, // vessel suspend ID DIR
    Restore, // vessel restore DIR (a detached run --restore)
    SnapshotMerge, // vessel snapshot-merge BASE DIFF...
    Info,
    Pause,
    Resume,
    Stop,
    Kill,
    Console,
    Top,
    UffdHandler, // vessel uffd-handler --socket SOCK --mem-file FILE [...]
};

struct CliOptions {
    Command command { Command::Help };
    VmConfig vm; // Command::Run
    ServeOptions serve; // Command::Serve and Command::Run
    std::string log_level { "warn" };
    std::string help_text; // filled for Command::Help
    // The verbs that act on a running VM.
    std::string target; // an id or an API socket path
    bool json { false }; // ls, info: print JSON
    double timeout_s { 30 }; // stop: how long to wait for the guest to shut down
    uint64_t history { 0 }; // console: bytes of past output to show first
    int iterations { 0 }; // top: refreshes before exiting (0: until Ctrl-C / q)
    double interval_s { 1 }; // top: seconds between refreshes
    // snapshot, suspend: the directory to write; snapshot-merge: the base and its diffs.
    std::string snapshot_dir;
    bool diff { false };
    std::vector<std::string> merge_inputs;
    // uffd-handler: the page-fault handler for the Uffd restore backend.
    struct {
        std::string socket, mem_file, record, prefetch;
        double record_seconds { 0 };
        bool eager { false };
    } uffd;
};

// Parses argv (without running anything). `--help` yields Command::Help with the text.
Result<CliOptions> parse_command_line(int argc, const char* const* argv);

// Applies a JSON config document to `config`. `origin` names the file in errors; relative
// paths in the document are resolved against `base_dir` (empty: left as they are).
Result<void> apply_json_config(
    VmConfig& config, const std::string& json_text, const std::string& origin, const std::string& base_dir);

// Range checks that need no engine: --mem against the minimum and the host's RAM, --cpus
// against the VM model's and the chosen engine's limit.
Result<void> validate_config(const VmConfig& config, uint32_t engine_max_vcpus);

// Host RAM in bytes (what --mem may not exceed).
uint64_t host_memory_bytes();

Result<EngineKind> parse_engine(const std::string& text);

// Device specs, as given to --disk/--net/--vsock/--console (the JSON config accepts the same
// strings, or objects with the same keys). Errors say what is wrong, not which flag.
Result<DiskConfig> parse_disk_spec(const std::string& text);
Result<NetConfig> parse_net_spec(const std::string& text);
Result<VsockConfig> parse_vsock_spec(const std::string& text);
Result<ConsoleKind> parse_console(const std::string& text);
Result<std::array<uint8_t, 6>> parse_mac(const std::string& text);
Result<BootPath> parse_boot_path(const std::string& text);

} // namespace vessel
