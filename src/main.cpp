// vessel: the command-line edge. Parses the command line and dispatches: the VMM process
// (Firecracker's model, or `vessel run`), the host probe, or a verb acting on running VMs.
#include <fcntl.h>
#include <unistd.h>

#include <cstdio>

#include "base/log.h"
#include "cli/options.h"
#include "cli/serve.h"
#include "cli/verbs.h"
#include "engine/probe.h"
#include "vmm/metrics.h"

using namespace vessel;

namespace {

constexpr int kExitError = 1;

int fail(const std::string& message)
{
    std::fprintf(stderr, "vessel: error: %s\n", message.c_str());
    return kExitError;
}

int command_probe()
{
    HostProbe p = probe_host();
    std::printf("engine: %s\nreason: %s\n/dev/kvm usable: %s\nhardware virtualization (VT-x/AMD-V): %s\n"
                "kvm_pvm loaded: %s\n",
        engine_name(p.choice), p.reason.c_str(), p.kvm_device ? "yes" : "no", p.hw_virt ? "yes" : "no",
        p.kvm_pvm ? "yes" : "no");
    return 0;
}

// A closed stdin/stdout/stderr would let the next open() (e.g. guest RAM's memfd) take its number
// and be mistaken for the console: point any closed one at /dev/null first.
void ensure_standard_fds()
{
    for (int fd = 0; fd <= 2; ++fd) {
        if (::fcntl(fd, F_GETFD) == -1 && errno == EBADF) {
            int null_fd = ::open("/dev/null", fd == 0 ? O_RDONLY : O_WRONLY);
            if (null_fd >= 0 && null_fd != fd) {
                ::dup2(null_fd, fd);
                ::close(null_fd);
            }
        }
    }
}

} // namespace

int main(int argc, char** argv)
{
    Metrics::note_process_start();
    ensure_standard_fds();
    auto options = parse_command_line(argc, argv);
    if (!options.ok())
        return fail(options.error().message());
    // The CLI validated the name already; fall back to warnings if it ever does not parse.
    auto level = parse_log_level(options->log_level);
    set_log_level(level.ok() ? level.value() : LogLevel::Warn);
    switch (options->command) {
    case Command::Help: std::fputs(options->help_text.c_str(), stdout); return 0;
    case Command::Version: std::puts(options->help_text.c_str()); return 0;
    case Command::Probe: return command_probe();
    case Command::Serve: return serve(options->serve);
    case Command::Run: {
        ServeOptions serve_options = options->serve;
        if (!serve_options.restore)
            serve_options.run_config = options->vm;
        return serve(serve_options);
    }
    case Command::Restore: return serve(options->serve);
    case Command::Snapshot: return command_snapshot(*options, false);
    case Command::Suspend: return command_snapshot(*options, true);
    case Command::SnapshotMerge: return command_snapshot_merge(*options);
    case Command::Ls: return command_ls(*options);
    case Command::Info: return command_info(*options);
    case Command::Pause: return command_pause_resume(*options, true);
    case Command::Resume: return command_pause_resume(*options, false);
    case Command::Stop: return command_stop(*options, false);
    case Command::Kill: return command_stop(*options, true);
    case Command::Console: return command_console(*options);
    case Command::Top: return command_top(*options);
    case Command::UffdHandler: return command_uffd_handler(*options);
    }
    return kExitError;
}
