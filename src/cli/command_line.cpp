// The command line: `vessel [process flags]` (Firecracker's process model), `vessel run ...`
// (a VM from flags), and the verbs that act on running VMs through their API sockets.
#include <filesystem>

#include <CLI/CLI.hpp>

#include "base/file.h"
#include "cli/options.h"
#include "cli/run_dir.h"

namespace vessel {

namespace {

constexpr uint64_t kMaxConfigFileBytes = 1 << 20;
const char* const kVersionText = "vessel 0.1.0 (Firecracker API 1.10.0)";

// `vessel run`'s flags, as given.
struct RunFlags {
    std::string kernel, initrd, cmdline, mem, engine, boot, config_path;
    uint32_t cpus = 0;
    bool no_reboot = false, hugepages = false, rng = false, balloon = false;
    std::vector<std::string> disks, nets;
    std::string vsock, console, balloon_target;
    std::string api_sock, id;
    bool no_api = false, detach = false;
    // --restore DIR and what goes with it.
    std::string restore;
    std::vector<std::string> net_overrides;
    std::string vsock_override;
    std::string uffd_socket;
    bool paused = false, track_dirty_pages = false;
};

void add_run_flags(CLI::App* run, RunFlags& f)
{
    run->add_option(
        "--kernel", f.kernel, "Guest kernel: Linux bzImage, ELF vmlinux with a PVH note, or Multiboot 1 ELF");
    run->add_option("--initrd", f.initrd, "Initial ramdisk loaded next to the kernel");
    run->add_option("--cmdline", f.cmdline, "Kernel command line (default: console=ttyS0)");
    run->add_option("--mem", f.mem, "Guest RAM, e.g. 256M or 2G (default 256M, minimum 16M)");
    run->add_option("--cpus", f.cpus, "Number of vCPUs (default 1)");
    run->add_option("--engine", f.engine,
        "CPU engine: kvm (hardware-assisted), soft (software), auto (kvm where it runs guest "
        "kernels natively, else soft; default)");
    run->add_option("--boot", f.boot,
        "bzImage boot path: auto (host-side decompression + PVH when possible), pvh, "
        "decompressor (the kernel's own; default auto)");
    run->add_option("--config", f.config_path, "JSON file with the same settings (flags override it)");
    run->add_flag("--no-reboot", f.no_reboot, "Exit (status 0) when the guest resets instead of rebooting it");
    run->add_flag("--hugepages", f.hugepages, "Back guest RAM with 2 MiB huge pages");
    run->add_option("--disk", f.disks,
        "virtio-blk disk from a raw image: path[,ro][,serial=ID] (repeat for more disks; the "
        "guest sees /dev/vda, /dev/vdb, ...)");
    run->add_option("--net", f.nets,
        "virtio-net on a host tap device: tap=NAME[,mac=52:54:00:..] (without tap=, Vessel "
        "creates one); repeatable");
    run->add_option("--vsock", f.vsock,
        "virtio-vsock: cid=N,socket=PATH (host side: a Unix socket; connect and send "
        "\"CONNECT <port>\\n\" to reach a guest port; guest connections to CID 2 port P arrive "
        "on PATH_P)");
    run->add_flag("--rng", f.rng, "virtio-rng fed by the host's getrandom()");
    run->add_flag("--balloon", f.balloon, "virtio-balloon (inflate/deflate through the API, guest statistics)");
    run->add_option("--balloon-target", f.balloon_target,
        "Memory the balloon takes from the guest once its driver is up, e.g. 64M (implies --balloon; "
        "PATCH /balloon changes it at run time)");
    run->add_option("--console", f.console,
        "Where stdin/stdout go: serial (COM1, default) or virtio (virtio-console, the guest's hvc0)");
    run->add_option(
        "--api-sock", f.api_sock, "The VM's API socket (default: <run dir>/<id>.sock, where `vessel ls` finds it)");
    run->add_option("--id", f.id, "The VM's name (default vm-<pid>): `vessel info ID`, `vessel console ID`, ...");
    run->add_flag("--no-api", f.no_api, "Serve no API socket (the VM cannot be found or steered)");
    run->add_flag("--detach,-d", f.detach,
        "Run in the background (its console on the API socket: `vessel console ID`); print the id");
    run->add_option("--restore", f.restore,
        "Resume the VM saved in this snapshot directory (vm.state, vm.mem; see `vessel snapshot`) instead of "
        "booting: its configuration comes from the snapshot");
    run->add_option("--net-override", f.net_overrides,
        "With --restore: give interface IFACE a new tap: IFACE=TAP (repeatable; a clone's own network)");
    run->add_option("--vsock-override", f.vsock_override, "With --restore: the vsock device's new host socket path");
    run->add_flag("--paused", f.paused, "With --restore: leave the VM paused (`vessel resume ID` starts it)");
    run->add_option("--uffd-socket", f.uffd_socket,
        "With --restore: take guest memory from the page-fault handler listening here (`vessel uffd-handler`, or "
        "Firecracker's) instead of mapping vm.mem");
    run->add_flag("--track-dirty-pages", f.track_dirty_pages,
        "Record the pages the guest writes, for diff snapshots (`vessel snapshot --diff`)");
    run->footer("Exit status: 0 after a clean power-off, (v << 1) | 1 after the guest writes v to the debug-exit "
                "port 0xf4, 2 after a triple fault, 1 on any error, 128+N on signal N.\n"
                "Console: the guest's COM1 is on stdin/stdout; with a terminal, Ctrl-A x quits.");
}

// --restore: the snapshot decides the VM; only the clone's identity and the engine may change.
Result<RestoreSpec> restore_spec(const RunFlags& f, CLI::App* run)
{
    for (const char* flag : { "--kernel", "--initrd", "--cmdline", "--mem", "--cpus", "--boot", "--config", "--disk",
             "--net", "--vsock", "--rng", "--balloon", "--balloon-target", "--console", "--hugepages" }) {
        if (const CLI::Option* opt = run->get_option_no_throw(flag); opt && opt->count())
            return make_error("{} cannot go with --restore: the snapshot holds the VM's configuration", flag);
    }
    RestoreSpec spec;
    spec.dir = std::filesystem::absolute(f.restore).string();
    spec.resume = !f.paused;
    spec.track_dirty_pages = f.track_dirty_pages;
    for (const auto& o : f.net_overrides) {
        auto eq = o.find('=');
        if (eq == std::string::npos || eq == 0 || eq + 1 == o.size())
            return make_error("--net-override {}: expected IFACE=TAP", o);
        spec.net_overrides.emplace_back(o.substr(0, eq), o.substr(eq + 1));
    }
    if (!f.vsock_override.empty())
        spec.vsock_uds_path = std::filesystem::absolute(f.vsock_override).string();
    if (!f.uffd_socket.empty())
        spec.uffd_socket = std::filesystem::absolute(f.uffd_socket).string();
    if (run->count("--engine"))
        spec.engine = TRY(parse_engine(f.engine));
    return spec;
}

Result<void> apply_run_flags(const RunFlags& f, CLI::App* run, VmConfig& vm)
{
    if (!f.config_path.empty()) {
        auto text = read_file(f.config_path, kMaxConfigFileBytes);
        if (!text.ok())
            return make_error("--config: {}", text.error().message());
        std::string json(text.value().begin(), text.value().end());
        auto base = std::filesystem::path(f.config_path).parent_path().string();
        TRY(apply_json_config(vm, json, f.config_path, base));
    }
    if (run->count("--kernel"))
        vm.kernel = f.kernel;
    if (run->count("--initrd"))
        vm.initrd = f.initrd;
    if (run->count("--cmdline"))
        vm.cmdline = f.cmdline;
    if (run->count("--mem")) {
        auto size = parse_size(f.mem);
        if (!size.ok())
            return make_error("--mem: {}", size.error().message());
        vm.mem_bytes = size.value();
    }
    if (run->count("--cpus"))
        vm.cpus = f.cpus;
    if (run->count("--engine")) {
        auto kind = parse_engine(f.engine);
        if (!kind.ok())
            return make_error("--engine: {}", kind.error().message());
        vm.engine = kind.value();
    }
    if (run->count("--boot")) {
        auto path = parse_boot_path(f.boot);
        if (!path.ok())
            return make_error("--boot: {}", path.error().message());
        vm.boot = path.value();
    }
    if (run->count("--disk")) {
        vm.disks.clear();
        for (auto& spec : f.disks) {
            auto disk = parse_disk_spec(spec);
            if (!disk.ok())
                return make_error("--disk {}: {}", spec, disk.error().message());
            vm.disks.push_back(disk.value());
        }
    }
    if (run->count("--net")) {
        vm.nets.clear();
        for (auto& spec : f.nets) {
            auto net = parse_net_spec(spec);
            if (!net.ok())
                return make_error("--net {}: {}", spec, net.error().message());
            vm.nets.push_back(net.value());
        }
    }
    if (run->count("--vsock")) {
        auto v = parse_vsock_spec(f.vsock);
        if (!v.ok())
            return make_error("--vsock {}: {}", f.vsock, v.error().message());
        vm.vsock = v.value();
    }
    if (run->count("--console")) {
        auto c = parse_console(f.console);
        if (!c.ok())
            return make_error("--console: {}", c.error().message());
        vm.console = c.value();
    }
    if (f.rng)
        vm.rng = true;
    if (f.balloon)
        vm.balloon = true;
    if (run->count("--balloon-target")) {
        auto size = parse_size(f.balloon_target);
        if (!size.ok())
            return make_error("--balloon-target: {}", size.error().message());
        vm.balloon_target_bytes = size.value();
        vm.balloon = true;
    }
    if (f.no_reboot)
        vm.on_reset = ResetAction::Exit;
    if (f.track_dirty_pages)
        vm.track_dirty_pages = true;
    if (f.hugepages)
        vm.hugepages = true;
    // API ids for the devices (GET /vm/config, PATCH, metrics): drive0.., net0..
    for (size_t i = 0; i < vm.disks.size(); ++i)
        if (vm.disks[i].id.empty())
            vm.disks[i].id = fmt::format("drive{}", i);
    for (size_t i = 0; i < vm.nets.size(); ++i)
        if (vm.nets[i].id.empty())
            vm.nets[i].id = fmt::format("net{}", i);
    return {};
}

} // namespace

Result<CliOptions> parse_command_line(int argc, const char* const* argv)
{
    CliOptions out;
    CLI::App app { "Vessel: a virtual machine monitor for x86-64 guests.\n\nWithout a command, Vessel is a VMM "
                   "process driven through its API socket, as Firecracker (same flags, same API).",
        "vessel" };
    app.require_subcommand(0, 1);
    app.set_version_flag("--version", kVersionText);

    std::string log_level = "warn";
    app.add_option("--log-level", log_level, "Log verbosity: error, warn, info, debug, trace")
        ->check(CLI::IsMember({ "error", "warn", "info", "debug", "trace" }));

    // Firecracker's process flags.
    ServeOptions& s = out.serve;
    std::string engine = "auto", fc_level;
    app.add_option("--api-sock", s.api_sock, "The API socket (default: <run dir>/<id>.sock)");
    app.add_option("--id", s.id, "The VM's name, 1-64 letters, digits or '-' (default vm-<pid>)");
    app.add_option("--config-file", s.config_file,
        "Firecracker JSON configuration (boot-source, drives, machine-config, network-interfaces, ...): "
        "boot at once");
    app.add_flag("--no-api", s.no_api, "Serve no API socket (needs --config-file)");
    app.add_option("--engine", engine, "CPU engine: auto (default), kvm, soft");
    app.add_option("--metrics-path", s.metrics_path, "Write Firecracker's metrics lines to this file or named pipe");
    app.add_option("--log-path", s.log_path, "Write the log to this file or named pipe (Firecracker's format)");
    app.add_option("--level", fc_level, "Log level: Error, Warning, Info, Debug, Trace, Off (case-insensitive)");
    app.add_flag("--show-level", s.show_level, "Put the level in each line of --log-path");
    app.add_flag("--show-log-origin", s.show_log_origin, "Put the source file and line in each line of --log-path");
    app.add_option("--http-api-max-payload-size", s.max_payload, "Largest API request body in bytes (default 51200)");
    app.add_option(
        "--mmds-size-limit", s.mmds_size_limit, "Largest MMDS data store in bytes (default: the payload limit)");
    app.add_option("--metadata", s.metadata, "A JSON file put into the MMDS data store at start");
    // What Firecracker's jailer passes on: when the process was started and its CPU time so far.
    app.add_option("--start-time-us", s.start_time_us, "Process start time (CLOCK_MONOTONIC, us), from the jailer");
    app.add_option("--start-time-cpu-us", s.start_time_cpu_us, "Process CPU time at start (us), from the jailer");
    app.add_option("--parent-cpu-time-us", s.parent_cpu_time_us, "The jailer's own CPU time (us)");
    bool no_seccomp = false;
    std::string seccomp_filter;
    app.add_flag("--no-seccomp", no_seccomp, "Install no seccomp filters (Vessel installs none yet)");
    app.add_option("--seccomp-filter", seccomp_filter, "Not supported yet: Vessel has no seccomp filters");

    CLI::App* run = app.add_subcommand("run", "Boot a VM from flags and run it until the guest powers off");
    run->fallthrough(); // --log-level may follow the subcommand
    RunFlags flags;
    add_run_flags(run, flags);

    app.add_subcommand("probe", "Print which CPU engine --engine auto chooses on this host, and why");

    auto verb = [&](const char* name, const char* help, bool takes_id) {
        CLI::App* v = app.add_subcommand(name, help);
        v->fallthrough();
        if (takes_id)
            v->add_option("ID", out.target, "The VM's id (see `vessel ls`) or its API socket path")->required();
        return v;
    };
    CLI::App* ls = verb("ls", "List the running VMs: id, state, engine, vCPUs, memory, uptime", false);
    ls->add_flag("--json", out.json, "Print JSON (one object per VM, in a list)");
    CLI::App* info = verb("info", "Show a VM's state, configuration and counters", true);
    info->add_flag("--json", out.json, "Print GET /vm/info's JSON");
    verb("pause", "Pause a VM (every vCPU stops; devices finish what is in flight)", true);
    verb("resume", "Resume a paused VM", true);
    CLI::App* stop = verb("stop", "Shut a VM down gracefully (Ctrl+Alt+Del) and wait until it exits", true);
    stop->add_option("--timeout", out.timeout_s, "Seconds to wait for the VM to exit (default 30)");
    verb("kill", "Stop a VM at once (like pulling the plug)", true);
    CLI::App* console = verb("console", "Attach to a VM's serial console (detach with Ctrl-A d)", true);
    console->add_option("--history", out.history, "Show this many bytes of past output first (at most 65536)");
    CLI::App* snap = verb("snapshot",
        "Save a VM to a directory (vm.state, vm.mem); a running VM is paused for it and resumed after", true);
    snap->add_option("DIR", out.snapshot_dir, "The snapshot directory (created if needed)")->required();
    snap->add_flag("--diff", out.diff,
        "Only the pages written since the previous snapshot (the VM must track dirty pages); "
        "`vessel snapshot-merge` folds diffs into their base");
    CLI::App* suspend
        = verb("suspend", "Save a VM to a directory, then stop it (`vessel restore DIR` resumes it)", true);
    suspend->add_option("DIR", out.snapshot_dir, "The snapshot directory (created if needed)")->required();
    CLI::App* restore = app.add_subcommand(
        "restore", "Resume a saved VM in the background (as `vessel run --restore DIR --detach`); prints its id");
    restore->fallthrough();
    RunFlags restore_flags;
    restore->add_option("DIR", restore_flags.restore, "The snapshot directory")->required();
    restore->add_option("--id", restore_flags.id, "The restored VM's name (default vm-<pid>)");
    restore->add_option("--api-sock", restore_flags.api_sock, "Its API socket (default: <run dir>/<id>.sock)");
    restore->add_option(
        "--engine", restore_flags.engine, "CPU engine to resume on: kvm, soft (default: the snapshot's)");
    restore->add_option("--net-override", restore_flags.net_overrides, "IFACE=TAP: a new tap for an interface");
    restore->add_option("--vsock-override", restore_flags.vsock_override, "The vsock device's new host socket");
    restore->add_flag("--paused", restore_flags.paused, "Leave the VM paused");
    restore->add_option(
        "--uffd-socket", restore_flags.uffd_socket, "Guest memory from this page-fault handler's socket");
    restore->add_flag("--track-dirty-pages", restore_flags.track_dirty_pages, "Record written pages (diff snapshots)");
    CLI::App* merge = app.add_subcommand("snapshot-merge",
        "Fold diff snapshots into their base, oldest first: BASE then each DIFF (directories or vm.mem files); "
        "BASE becomes the latest state");
    merge->add_option("BASE DIFF", out.merge_inputs, "The base snapshot, then its diffs in order")
        ->required()
        ->expected(2, -1);
    CLI::App* uffd = app.add_subcommand("uffd-handler",
        "Serve the guest memory of ONE VMM restoring a snapshot with the Uffd backend (Firecracker's "
        "page-fault-handler protocol), then exit when it does");
    uffd->fallthrough();
    uffd->add_option("--socket", out.uffd.socket, "The Unix socket to listen on: the load's mem_backend.backend_path")
        ->required();
    uffd->add_option("--mem-file", out.uffd.mem_file, "The snapshot's memory file (vm.mem)")->required();
    uffd->add_option("--record", out.uffd.record,
        "Write the memory-file offsets of the pages faulted, in order, to this trace file at exit");
    uffd->add_option("--record-seconds", out.uffd.record_seconds,
        "With --record: only the faults of the first N seconds after the VMM connected (default: all)");
    uffd->add_option("--prefetch", out.uffd.prefetch,
        "Copy the pages of this trace (from --record) first, in its order, while serving faults");
    uffd->add_flag("--eager", out.uffd.eager,
        "Copy every page of the memory file that holds data at once (holes fault as zero pages)");
    CLI::App* top = verb("top",
        "A live table of every running VM (CPU, guest instructions or exits, disk and "
        "network rates); q quits",
        false);
    top->add_option("-n,--iterations", out.iterations, "Refresh this many times, then exit");
    top->add_option("-d,--delay", out.interval_s, "Seconds between refreshes (default 1)");

    try {
        app.parse(argc, argv);
    } catch (const CLI::CallForHelp&) {
        out.command = Command::Help;
        out.help_text = app.help();
        for (auto* sub : app.get_subcommands())
            out.help_text = sub->help();
        if (run->parsed())
            out.help_text = run->help();
        return out;
    } catch (const CLI::CallForVersion&) {
        out.command = Command::Version;
        out.help_text = kVersionText;
        return out;
    } catch (const CLI::ParseError& e) {
        return make_error("{}", e.what());
    }
    out.log_level = log_level;
    if (!fc_level.empty()) {
        auto level = parse_log_level(fc_level);
        if (!level.ok())
            return make_error("--level: {}", level.error().message());
        static const char* names[] = { "trace", "debug", "info", "warn", "error", "off" };
        out.log_level = names[static_cast<int>(level.value())];
    }
    if (!seccomp_filter.empty())
        return make_error("--seccomp-filter: Vessel does not install seccomp filters yet (its sandbox comes later); "
                          "refusing rather than running unfiltered");
    auto engine_kind = parse_engine(engine);
    if (!engine_kind.ok())
        return make_error("--engine: {}", engine_kind.error().message());
    s.engine = engine_kind.value();

    static const std::pair<const char*, Command> kVerbs[] = { { "probe", Command::Probe }, { "ls", Command::Ls },
        { "info", Command::Info }, { "pause", Command::Pause }, { "resume", Command::Resume },
        { "stop", Command::Stop }, { "kill", Command::Kill }, { "console", Command::Console }, { "top", Command::Top },
        { "snapshot", Command::Snapshot }, { "suspend", Command::Suspend },
        { "snapshot-merge", Command::SnapshotMerge }, { "uffd-handler", Command::UffdHandler } };
    for (auto& [name, command] : kVerbs) {
        if (app.got_subcommand(name)) {
            out.command = command;
            return out;
        }
    }
    if (restore->parsed()) {
        out.command = Command::Restore;
        s.restore = TRY(restore_spec(restore_flags, restore));
        s.api_sock = restore_flags.api_sock;
        s.id = restore_flags.id;
        s.detach = true;
        return out;
    }
    if (!run->parsed()) {
        // No verb: the VMM process (Firecracker's model) — or help, when nothing at all was given.
        if (argc <= 1) {
            out.command = Command::Help;
            out.help_text = app.help();
            return out;
        }
        out.command = Command::Serve;
        if (s.no_api && s.config_file.empty())
            return make_error("--no-api requires --config-file");
        return out;
    }
    out.command = Command::Run;
    if (!flags.restore.empty())
        s.restore = TRY(restore_spec(flags, run));
    else
        TRY(apply_run_flags(flags, run, out.vm));
    s.api_sock = flags.api_sock;
    s.id = flags.id;
    s.no_api = flags.no_api;
    s.detach = flags.detach;
    s.engine = s.restore ? s.restore->engine.value_or(EngineKind::Auto) : out.vm.engine;
    if (flags.detach && flags.no_api)
        return make_error("--detach needs the API socket (its console is reached through it): drop --no-api");
    return out;
}

} // namespace vessel
