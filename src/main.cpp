// vessel: the command-line edge. Parses intent into a VmConfig, resolves the engine, runs the VM
// (rebuilding it when the guest reboots) and turns the way it stopped into an exit status.
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cstring>

#include <cstdio>

#include "base/log.h"

#include "cli/options.h"
#include "engine/kvm/kvm_engine.h"
#include "engine/soft/soft_engine.h"
#include "engine/probe.h"
#include "vmm/signals.h"
#include "vmm/vm.h"

using namespace vessel;

namespace {

constexpr int kExitError = 1;

void setup_logging(const std::string& level)
{
    // The CLI validated the name already; fall back to warnings if it ever does not parse.
    auto parsed = parse_log_level(level);
    set_log_level(parsed.ok() ? parsed.value() : LogLevel::Warn);
}

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

// Picks the engine: auto takes KVM only where it runs guest kernel code natively.
Result<EngineKind> resolve_engine(EngineKind requested)
{
    if (requested == EngineKind::Auto) {
        HostProbe p = probe_host();
        log_debug("--engine auto: {} ({})", engine_name(p.choice), p.reason);
        return p.choice;
    }
    if (requested == EngineKind::Soft)
        return EngineKind::Soft;
    HostProbe p = probe_host();
    if (!p.kvm_device)
        return make_error("--engine kvm: {}", p.reason);
    if (p.kvm_pvm || !p.hw_virt)
        log_warn("KVM here cannot run guest kernel code natively ({}); guest kernel mode will be slow", p.reason);
    return EngineKind::Kvm;
}

// Termination signals stay blocked from here on: each VM's event loop takes them through a
// signalfd, and between VMs (reboot) they remain pending instead of killing the process.
void block_termination_signals()
{
    sigset_t set = termination_signals();
    ::pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

int pending_termination_signal()
{
    sigset_t set = termination_signals();
    timespec zero {};
    int signo = ::sigtimedwait(&set, nullptr, &zero);
    return signo > 0 ? signo : 0;
}

int command_run(const VmConfig& config)
{
    block_termination_signals();
    // Engine-independent checks first, then the engine's own vCPU limit where KVM is usable.
    if (auto valid = validate_config(config, UINT32_MAX); !valid.ok())
        return fail(valid.error().message());
    if (config.engine != EngineKind::Soft) {
        if (uint32_t max = KvmEngine::host_max_vcpus(); max != 0) {
            if (auto valid = validate_config(config, max); !valid.ok())
                return fail(valid.error().message());
        }
    }
    // The engine is resolved after the guest is loaded, so a bad kernel is reported first.
    auto make_engine = [&]() -> Result<std::unique_ptr<Engine>> {
        EngineKind kind = TRY(resolve_engine(config.engine));
        if (kind == EngineKind::Soft) {
            auto engine = TRY_CTX(SoftEngine::create(EngineConfig { config.cpus }), "soft engine");
            return std::unique_ptr<Engine>(std::move(engine));
        }
        auto engine = TRY_CTX(KvmEngine::create(EngineConfig { config.cpus }), "KVM engine");
        return std::unique_ptr<Engine>(std::move(engine));
    };

    for (;;) {
        auto vm = Vm::create(config, make_engine);
        if (!vm.ok())
            return fail(vm.error().message());
        auto result = vm.value()->run();
        if (!result.ok())
            return fail(result.error().message());
        const VmExitInfo& exit = result.value();
        if (exit.signal != 0) {
            log_info("received signal {}; exiting", strsignal(exit.signal));
            return 128 + exit.signal;
        }
        switch (exit.stop.reason) {
        case StopReason::PowerOff:
            log_info("guest powered off");
            return 0;
        case StopReason::DebugExit:
            return exit.stop.exit_status & 0xff;
        case StopReason::Reset:
            if (config.on_reset == ResetAction::Exit) {
                log_info("guest reset; exiting (--no-reboot)");
                return 0;
            }
            // A termination signal that arrived while the old VM was torn down is still pending
            // (they stay blocked for the whole run): honour it instead of rebooting.
            if (int signo = pending_termination_signal(); signo != 0) {
                log_info("received signal {} during reboot; exiting", strsignal(signo));
                return 128 + signo;
            }
            log_info("guest reset; rebooting");
            continue;
        case StopReason::TripleFault:
            std::fprintf(stderr, "vessel: guest stopped: %s\n", exit.message.c_str());
            return 2;
        case StopReason::UserQuit:
            return 0;
        case StopReason::Signal:
            log_info("{}", exit.message);
            return exit.stop.exit_status;
        case StopReason::Error:
        case StopReason::None:
            return fail(exit.message.empty() ? "the VM stopped for an unknown reason" : exit.message);
        }
    }
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
    ensure_standard_fds();
    auto options = parse_command_line(argc, argv);
    if (!options.ok())
        return fail(options.error().message());
    setup_logging(options->log_level);
    switch (options->command) {
    case Command::Help:
        std::fputs(options->help_text.c_str(), stdout);
        return 0;
    case Command::Version:
        std::puts("vessel 0.1.0");
        return 0;
    case Command::Probe:
        return command_probe();
    case Command::Run:
        return command_run(options->vm);
    }
    return kExitError;
}
