#include "vmm/vmm.h"

#include "base/log.h"
#include "cli/options.h"
#include "devices/virtio/balloon.h"
#include "devices/virtio/blk.h"
#include "devices/virtio/mmio.h"
#include "devices/virtio/net.h"
#include "engine/kvm/kvm_engine.h"
#include "engine/soft/soft_engine.h"
#include "vmm/console_mux.h"
#include "vmm/metrics.h"

namespace vessel {

namespace {

constexpr const char* kNotBeforeStart = "The requested operation is not supported before starting the microVM.";

template<typename Device>
Device* find_device(Vm* vm)
{
    if (!vm)
        return nullptr;
    for (auto& t : vm->virtio_transports())
        if (auto* d = dynamic_cast<Device*>(&t->device()))
            return d;
    return nullptr;
}

} // namespace

const char* vm_state_name(VmState state)
{
    switch (state) {
    case VmState::NotStarted: return "Not started";
    case VmState::Running: return "Running";
    case VmState::Paused: return "Paused";
    }
    return "Not started";
}

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

Result<std::unique_ptr<Engine>> make_engine(const VmConfig& config, uint64_t tsc_khz)
{
    EngineKind kind = TRY(resolve_engine(config.engine));
    if (kind == EngineKind::Soft) {
        // A new VM sees the host's TSC rate (as under TCG or KVM); a restored one its snapshot's.
        uint64_t khz = tsc_khz ? tsc_khz : host_tsc_khz();
        auto engine = TRY_CTX(SoftEngine::create(EngineConfig { config.cpus, khz }), "soft engine");
        return std::unique_ptr<Engine>(std::move(engine));
    }
    auto engine = TRY_CTX(KvmEngine::create(EngineConfig { config.cpus, tsc_khz }), "KVM engine");
    return std::unique_ptr<Engine>(std::move(engine));
}

Result<void> validate_for_engine(const VmConfig& config)
{
    TRY(validate_config(config, UINT32_MAX));
    if (config.engine != EngineKind::Soft) {
        if (uint32_t max = KvmEngine::host_max_vcpus(); max != 0)
            TRY(validate_config(config, max));
    }
    return {};
}

Vmm::Vmm(EventLoop& loop, ConsoleMux& console, Metrics& metrics, Options options)
    : m_loop(loop)
    , m_console(console)
    , m_metrics(metrics)
    , m_options(std::move(options))
{
    m_resources.mutable_config().engine = m_options.engine;
}

Vmm::~Vmm()
{
    if (m_stats_timer)
        m_loop.cancel_timer(m_stats_timer);
    if (m_vm) {
        m_console.set_target(nullptr);
        m_metrics.set_vm(nullptr);
        m_vm->request_stop({ StopReason::Error, 1 }, "VMM shutting down");
        m_vm->finish();
        m_vm.reset();
    }
}

const VmConfig& Vmm::running_config() const
{
    return started() ? m_running_config : m_resources.config();
}

std::string Vmm::engine_name() const
{
    return m_engine_name;
}

double Vmm::uptime_seconds() const
{
    if (!started())
        return 0;
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - m_started_at).count();
}

Result<void> Vmm::start()
{
    if (started())
        return make_error("The requested operation is not supported after starting the microVM.");
    m_start_request = std::chrono::steady_clock::now();
    auto config = TRY(m_resources.build());
    m_api_started = true;
    return launch(config, "Start microvm error: ");
}

Result<void> Vmm::start_with(const VmConfig& config)
{
    if (started())
        return make_error("The requested operation is not supported after starting the microVM.");
    m_start_request = std::chrono::steady_clock::now();
    return launch(config, "");
}

Result<void> Vmm::launch(const VmConfig& config, const char* kPrefix)
{
    if (auto valid = validate_for_engine(config); !valid.ok())
        return make_error("{}{}", kPrefix, valid.error().message());
    auto vm = Vm::create(
        config, [&] { return make_engine(config); }, vm_services());
    if (!vm.ok())
        return make_error("{}{}", kPrefix, vm.error().message());
    return adopt(std::move(vm.value()), kPrefix);
}

Vm::Services Vmm::vm_services()
{
    Vm::Services services;
    services.console = [this](std::span<const uint8_t> bytes) { m_console.output(bytes); };
    services.mmds = m_options.mmds;
    services.mmds_tokens = m_options.mmds_tokens;
    return services;
}

Result<void> Vmm::adopt(std::unique_ptr<Vm> vm, const char* kPrefix)
{
    m_vm = std::move(vm);
    const VmConfig& config = m_vm->config();
    if (!m_resources.serial_out_path().empty()) {
        if (auto r = m_console.set_output_file(m_resources.serial_out_path()); !r.ok())
            log_warn("serial_out_path: {}", r.error().message());
    }
    m_running_config = config;
    m_engine_name = std::string(m_vm->engine().name());
    m_metrics.set_vm(m_vm.get());
    if (auto r = m_vm->start(m_loop, [this] { vm_stopped(); }); !r.ok()) {
        m_metrics.set_vm(nullptr);
        m_vm.reset();
        return make_error("{}{}", kPrefix, r.error().message());
    }
    if (m_state == VmState::NotStarted)
        m_started_at = std::chrono::steady_clock::now();
    if (m_vm->paused()) { // restored from a snapshot
        m_state = VmState::Paused;
        return {};
    }
    m_console.set_target(m_vm->console_input());
    schedule_balloon_stats();
    m_state = VmState::Running;
    m_metrics.vm_started();
    log_info("VM {} started on the {} engine ({} vCPUs, {} MiB)", m_options.id, m_engine_name, config.cpus,
        config.mem_bytes >> 20);
    return {};
}

Result<Vm::SnapshotInfo> Vmm::create_snapshot(const Vm::SnapshotOptions& options)
{
    if (!started() || !m_vm)
        return make_error("{}", kNotBeforeStart);
    if (m_state != VmState::Paused)
        return make_error("Create snapshot error: the microVM must be paused before a snapshot is taken.");
    auto info = m_vm->snapshot(options);
    if (!info.ok())
        return make_error("Create snapshot error: {}", info.error().message());
    log_info("VM {}: {} snapshot in {} us: state '{}' ({} bytes), memory '{}' ({} pages, {} KiB on disk)", m_options.id,
        options.diff ? "Diff" : "Full", info->elapsed.count(), options.state_path, info->state_bytes, options.mem_path,
        info->mem_pages, info->mem_disk_bytes >> 10);
    m_metrics.record_snapshot(info->elapsed, options.diff);
    return info;
}

Result<void> Vmm::load_snapshot(const Vm::RestoreOptions& options, bool resume_vm)
{
    if (started())
        return make_error("Load snapshot error: the microVM is already running: a snapshot loads into a fresh "
                          "Vessel process only.");
    auto t0 = std::chrono::steady_clock::now();
    m_start_request = t0;
    Vm::RestoreOptions restore = options;
    // `vessel --engine kvm|soft` (the process's flag) picks the engine a snapshot resumes on.
    if (!restore.engine && m_options.engine != EngineKind::Auto)
        restore.engine = m_options.engine;
    auto vm = Vm::restore(restore, make_engine, vm_services());
    if (!vm.ok())
        return make_error("Load snapshot error: {}", vm.error().message());
    TRY(adopt(std::move(vm.value()), "Load snapshot error: "));
    auto elapsed = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0);
    m_metrics.record_restore(elapsed);
    log_info("VM {} restored from '{}' in {} us on the {} engine", m_options.id, options.state_path, elapsed.count(),
        m_engine_name);
    if (resume_vm) {
        m_metrics.vm_started();
        TRY(resume());
    }
    return {};
}

std::chrono::microseconds Vmm::start_to_first_instruction() const
{
    if (!m_vm)
        return std::chrono::microseconds(0);
    auto first = m_vm->first_run_time();
    if (first == std::chrono::steady_clock::time_point {})
        return std::chrono::microseconds(0);
    return std::chrono::duration_cast<std::chrono::microseconds>(first - m_start_request);
}

Result<void> Vmm::require_running(bool allow_paused) const
{
    if (!started() || !m_vm)
        return make_error("{}", kNotBeforeStart);
    if (!allow_paused && m_state == VmState::Paused)
        return make_error("the VM is paused");
    return {};
}

Result<void> Vmm::pause()
{
    TRY(require_running());
    if (m_state == VmState::Paused)
        return {};
    auto t0 = std::chrono::steady_clock::now();
    if (auto r = m_vm->pause(); !r.ok())
        return make_error("Internal VMM error: {}", r.error().message());
    m_console.set_target(nullptr); // no host input reaches a paused guest
    m_last_pause = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0);
    m_state = VmState::Paused;
    m_metrics.record_pause(m_last_pause);
    log_info("VM {} paused in {} us", m_options.id, m_last_pause.count());
    return {};
}

Result<void> Vmm::resume()
{
    TRY(require_running());
    if (m_state == VmState::Running)
        return {};
    auto t0 = std::chrono::steady_clock::now();
    if (auto r = m_vm->resume(); !r.ok())
        return make_error("Internal VMM error: {}", r.error().message());
    m_console.set_target(m_vm->console_input());
    m_last_resume = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0);
    m_state = VmState::Running;
    m_metrics.record_resume(m_last_resume);
    log_info("VM {} resumed in {} us", m_options.id, m_last_resume.count());
    return {};
}

Result<void> Vmm::send_ctrl_alt_del()
{
    TRY(require_running());
    if (auto r = m_vm->send_ctrl_alt_del(); !r.ok())
        return make_error("Internal VMM error: I8042 error: {}", r.error().message());
    return {};
}

Result<void> Vmm::shut_down()
{
    TRY(require_running());
    m_running_config.on_reset = ResetAction::Exit;
    if (m_state == VmState::Paused)
        TRY(resume());
    return send_ctrl_alt_del();
}

Result<void> Vmm::update_balloon_target(uint32_t amount_mib)
{
    TRY(require_running());
    auto* balloon = find_device<virtio::BalloonDevice>(m_vm.get());
    if (!balloon)
        return make_error("Balloon update error: No balloon device found.");
    if (uint64_t(amount_mib) << 20 > m_running_config.mem_bytes)
        return make_error("Balloon update error: Amount of pages requested is too large.");
    balloon->set_target(uint64_t(amount_mib) << 20);
    m_running_config.balloon_target_bytes = uint64_t(amount_mib) << 20;
    return {};
}

Result<void> Vmm::update_balloon_stats_interval(uint32_t seconds)
{
    TRY(require_running());
    auto* balloon = find_device<virtio::BalloonDevice>(m_vm.get());
    if (!balloon)
        return make_error("Balloon update error: No balloon device found.");
    if ((seconds == 0) != (m_running_config.balloon_stats_interval_s == 0))
        return make_error("Balloon update error: Statistics cannot be enabled/disabled after activation.");
    m_running_config.balloon_stats_interval_s = seconds;
    schedule_balloon_stats();
    return {};
}

Result<BalloonStatsView> Vmm::balloon_stats() const
{
    if (!started() || !m_vm)
        return make_error("{}", kNotBeforeStart);
    auto* balloon = find_device<virtio::BalloonDevice>(m_vm.get());
    if (!balloon)
        return make_error("Balloon config error: No balloon device found.");
    if (m_running_config.balloon_stats_interval_s == 0)
        return make_error("Balloon config error: Statistics for the balloon device are not enabled");
    BalloonStatsView view;
    view.target_pages = balloon->target_pages();
    view.actual_pages = balloon->actual_pages();
    auto stats = balloon->stats();
    for (size_t i = 0; i < view.values.size() && i < stats.values.size(); ++i)
        view.values[i] = stats.values[i];
    return view;
}

Result<void> Vmm::update_drive(
    const std::string& id, const std::optional<std::string>& path, const std::optional<RateLimiterConfig>& limiter)
{
    TRY(require_running());
    size_t index = 0;
    virtio::BlkDevice* blk = nullptr;
    for (auto& t : m_vm->virtio_transports()) {
        if (auto* d = dynamic_cast<virtio::BlkDevice*>(&t->device())) {
            if (index < m_running_config.disks.size() && m_running_config.disks[index].id == id) {
                blk = d;
                break;
            }
            ++index;
        }
    }
    if (!blk)
        return make_error("Drive config error: Unable to patch the block device: Invalid block device ID. Please "
                          "verify the request arguments.");
    if (path && *path != m_running_config.disks[index].path)
        return make_error("Drive config error: Unable to patch the block device: Vessel cannot swap a running "
                          "drive's backing file (path_on_host). Please verify the request arguments.");
    if (limiter) {
        blk->set_rate_limiter(*limiter);
        // Firecracker's update rules: a bucket left out stays as it was.
        auto& current = m_running_config.disks[index].rate_limiter;
        if (!current)
            current = RateLimiterConfig {};
        if (limiter->bandwidth)
            current->bandwidth = limiter->bandwidth;
        if (limiter->ops)
            current->ops = limiter->ops;
    }
    return {};
}

Result<void> Vmm::update_net(
    const std::string& id, const std::optional<RateLimiterConfig>& rx, const std::optional<RateLimiterConfig>& tx)
{
    TRY(require_running());
    size_t index = 0;
    virtio::NetDevice* net = nullptr;
    for (auto& t : m_vm->virtio_transports()) {
        if (auto* d = dynamic_cast<virtio::NetDevice*>(&t->device())) {
            if (index < m_running_config.nets.size() && m_running_config.nets[index].id == id) {
                net = d;
                break;
            }
            ++index;
        }
    }
    if (!net)
        return make_error("Network config error: Unable to update the net device: Invalid network interface ID.");
    net->set_rate_limiters(rx, tx);
    auto merge = [](std::optional<RateLimiterConfig>& current, const std::optional<RateLimiterConfig>& update) {
        if (!update)
            return;
        if (!current)
            current = RateLimiterConfig {};
        if (update->bandwidth)
            current->bandwidth = update->bandwidth;
        if (update->ops)
            current->ops = update->ops;
    };
    merge(m_running_config.nets[index].rx_rate_limiter, rx);
    merge(m_running_config.nets[index].tx_rate_limiter, tx);
    return {};
}

void Vmm::note_signal(int signo)
{
    if (m_vm) {
        m_vm->note_signal(signo);
        return;
    }
    log_info("received signal {}; exiting", strsignal(signo));
    exit_process(128 + signo);
}

void Vmm::kill(int status, std::string why)
{
    if (m_vm) {
        m_vm->request_stop({ StopReason::UserQuit, status }, std::move(why));
        return;
    }
    exit_process(status);
}

void Vmm::schedule_balloon_stats()
{
    if (m_stats_timer)
        m_loop.cancel_timer(m_stats_timer);
    m_stats_timer = 0;
    uint32_t interval = m_running_config.balloon_stats_interval_s;
    if (!m_vm || interval == 0)
        return;
    // The first request goes out at once, as Firecracker's statistics update does.
    m_stats_timer = m_loop.add_timer(std::chrono::milliseconds(0), [this] {
        m_stats_timer = 0;
        if (auto* balloon = find_device<virtio::BalloonDevice>(m_vm.get()); balloon && m_state == VmState::Running)
            balloon->request_stats();
        if (m_vm && m_running_config.balloon_stats_interval_s) {
            m_stats_timer = m_loop.add_timer(std::chrono::seconds(m_running_config.balloon_stats_interval_s), [this] {
                m_stats_timer = 0;
                schedule_balloon_stats();
            });
        }
    });
}

void Vmm::vm_stopped()
{
    if (!m_vm)
        return;
    if (m_stats_timer)
        m_loop.cancel_timer(m_stats_timer);
    m_stats_timer = 0;
    m_console.set_target(nullptr);
    m_metrics.set_vm(nullptr);
    VmExitInfo exit = m_vm->finish();
    m_vm.reset();
    if (exit.signal == 0 && exit.stop.reason == StopReason::Reset && m_running_config.on_reset == ResetAction::Reboot) {
        log_info("guest reset; rebooting");
        if (auto r = launch(m_running_config, ""); !r.ok()) {
            std::fprintf(stderr, "vessel: error: reboot failed: %s\n", r.error().message().c_str());
            exit_process(1);
        }
        return;
    }
    exit_process(exit_status(exit));
}

int Vmm::exit_status(const VmExitInfo& exit)
{
    if (exit.signal != 0) {
        log_info("received signal {}; exiting", strsignal(exit.signal));
        return 128 + exit.signal;
    }
    switch (exit.stop.reason) {
    case StopReason::PowerOff: log_info("guest powered off"); return 0;
    case StopReason::DebugExit: return exit.stop.exit_status & 0xff;
    case StopReason::Reset:
        // `vessel run --no-reboot` (an API-started VM always exits on a reset, as Firecracker).
        log_info("guest reset; exiting{}", m_api_started ? "" : " (--no-reboot)");
        return 0;
    case StopReason::TripleFault: std::fprintf(stderr, "vessel: guest stopped: %s\n", exit.message.c_str()); return 2;
    case StopReason::UserQuit:
        if (!exit.message.empty())
            log_info("{}", exit.message);
        return exit.stop.exit_status;
    case StopReason::Signal: log_info("{}", exit.message); return exit.stop.exit_status;
    case StopReason::Error:
    case StopReason::None:
        std::fprintf(stderr, "vessel: error: %s\n",
            exit.message.empty() ? "the VM stopped for an unknown reason" : exit.message.c_str());
        return 1;
    }
    return 1;
}

void Vmm::exit_process(int status)
{
    if (m_exited)
        return;
    m_exited = true;
    m_state = started() ? m_state : VmState::NotStarted;
    if (on_exit)
        on_exit(status);
}

} // namespace vessel
