#include "vmm/vm.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/log.h"

#include "arch/x86/acpi.h"
#include "arch/x86/boot_cpu.h"
#include "arch/x86/e820.h"
#include "arch/x86/layout.h"
#include "arch/x86/mptable.h"
#include "arch/x86/reset_stub.h"
#include "devices/acpi_pm.h"
#include "devices/debug_exit.h"
#include "devices/i8042.h"
#include "devices/post_port.h"
#include "devices/rtc.h"
#include "devices/serial.h"
#include "devices/vmgenid.h"
#include "devices/virtio/mmio.h"
#include "devices/virtio/net.h"
#include "loader/boot.h"
#include "memory/dirty_bitmap.h"
#include "vmm/console.h"
#include "vmm/console_mux.h"
#include "vmm/signals.h"

namespace vessel {

Vm::Vm(const VmConfig& config, GuestMemory memory, Services services)
    : m_config(config)
    , m_memory(std::move(memory))
    , m_console_sink(services.console ? services.console
                                      : ConsoleSink([](std::span<const uint8_t> bytes) { Console::write_output(bytes); }))
    , m_services(std::move(services))
{
}

Vm::~Vm()
{
    if (!m_threads.empty()) {
        request_stop({ StopReason::Error, 1 }, "VM destroyed while running");
        stop_vcpus();
    }
    for (auto& n : m_queue_notifiers)
        if (n.token && m_loop)
            m_loop->remove_fd(n.token);
    // Device threads stop before the engine they report guest-memory writes to goes away.
    for (auto& transport : m_virtio)
        transport->shutdown();
    m_memory.set_write_observer(nullptr);
    if (m_engine && m_dirty)
        m_engine->stop_dirty_tracking();
    for (auto& n : m_queue_notifiers)
        ::close(n.fd);
    for (auto& [gsi, fd] : m_irq_notifiers)
        ::close(fd);
}

Result<std::unique_ptr<Vm>> Vm::create(const VmConfig& config, const EngineFactory& make_engine, Services services)
{
    auto memory = TRY(GuestMemory::create(config.mem_bytes, config.hugepages ? HugePages::Yes : HugePages::No));
    std::unique_ptr<Vm> vm(new Vm(config, std::move(memory), std::move(services)));

    TRY(vm->build_devices());
    if (config.track_dirty_pages) {
        // From the start: what the loaders write is in the first diff too.
        vm->m_dirty = std::make_unique<DirtyBitmap>(vm->m_memory.end_address());
        vm->m_memory.set_write_observer([dirty = vm->m_dirty.get()](uint64_t gpa, uint64_t len) { dirty->mark(gpa, len); });
    }
    TRY(vm->load_guest());
    TRY(vm->attach_engine(TRY(make_engine())));
    // The BSP starts at the loader's entry point; APs wait for INIT/SIPI from the guest. The boot
    // state sets registers only: the vCPU keeps its own reset-state local APIC.
    CpuState boot = vm->m_boot_state;
    {
        auto current = TRY_CTX(vm->m_vcpus[0]->get_state(), "reading the boot vCPU state");
        boot.lapic = current.lapic;
        boot.apic_base = current.apic_base;
    }
    TRY_CTX(vm->m_vcpus[0]->set_state(boot), "setting the boot vCPU state");
    return vm;
}

Result<void> Vm::attach_engine(std::unique_ptr<Engine> engine)
{
    m_engine = std::move(engine);
    TRY_CTX(m_engine->register_devices(m_pio_bus, m_mmio_bus), "engine devices");
    // Map RAM only after every boot structure is written: some KVM implementations (PVM) do not
    // see page-table writes made from outside the guest after the slot is registered.
    TRY(m_engine->map_memory(m_memory));
    m_memory.set_write_observer([this](uint64_t gpa, uint64_t len) {
        m_engine->memory_written(gpa, len);
        if (m_dirty)
            m_dirty->mark(gpa, len);
    });
    TRY_CTX(wire_virtio_fast_paths(), "virtio fast paths");
    if (m_dirty)
        TRY_CTX(m_engine->start_dirty_tracking(*m_dirty), "dirty page tracking");
    for (uint32_t i = 0; i < m_config.cpus; ++i) {
        auto vcpu = TRY(m_engine->create_vcpu(i, *this));
        m_vcpus.push_back(std::move(vcpu));
    }
    return {};
}

Result<void> Vm::load_guest()
{
    auto e820 = build_e820(m_memory);

    AcpiConfig acpi;
    acpi.vcpus = m_config.cpus;
    acpi.devices = legacy_acpi_devices();
    acpi.devices.insert(acpi.devices.end(), m_virtio_acpi.begin(), m_virtio_acpi.end());
    acpi.vmgenid = AcpiVmGenId { m_vmgenid->address(), m_vmgenid->gsi() };
    uint64_t rsdp = TRY_CTX(build_acpi_tables(m_memory, acpi), "building ACPI tables");
    TRY(m_vmgenid->write_new_id(m_memory));
    // Linux's default reboot on this machine ends in a jump to F000:FFF0 (see reset_stub.h).
    TRY(write_reset_stub(m_memory));

    // The MP table is only for kernels without ACPI; a VM too big for it still boots with ACPI.
    if (auto mp = build_mp_table(m_memory, m_config.cpus); !mp.ok())
        log_warn("no MP table: {}", mp.error().message());

    LoadRequest request;
    request.kernel_path = m_config.kernel;
    request.initrd_path = m_config.initrd;
    request.cmdline = m_config.cmdline;
    request.path = m_config.boot;
    request.rsdp_addr = rsdp;
    BootEntry entry = TRY(load_kernel(m_memory, e820, request));
    log_debug("kernel '{}' loaded as {}: entry {:#x}", m_config.kernel, entry.kind, entry.rip);
    m_boot_state = TRY(make_boot_cpu_state(m_memory, entry));
    return {};
}

void Vm::request_stop(StopRequest request, std::string message)
{
    {
        std::lock_guard lock(m_stop_mutex);
        if (m_stopping.load())
            return;
        m_exit.stop = request;
        m_exit.message = std::move(message);
        m_stopping.store(true);
    }
    // Parked vCPUs wake up to leave; running ones are kicked out of the guest.
    {
        std::lock_guard lock(m_pause_mutex);
        m_pause_cv.notify_all();
    }
    for (auto& v : m_vcpus)
        v->kick();
    if (m_loop && m_on_stop) {
        // The loop outlives the VM's run: finish() is only called after on_stop ran.
        m_loop->post(m_on_stop);
    }
}

void Vm::note_signal(int signo)
{
    {
        std::lock_guard lock(m_stop_mutex);
        m_exit.signal = signo;
    }
    request_stop({ StopReason::Signal, 128 + signo }, fmt::format("received signal {}", strsignal(signo)));
}

void Vm::set_irq(uint32_t gsi, bool level)
{
    // Devices are built before the engine; they do not raise interrupts before the guest runs.
    if (!m_engine)
        return;
    for (auto& [irqfd_gsi, fd] : m_irq_notifiers) {
        if (irqfd_gsi == gsi) {
            // An irqfd raises an edge by itself: signal on the rising half of a pulse only.
            if (level) {
                uint64_t one = 1;
                [[maybe_unused]] auto n = ::write(fd, &one, sizeof(one));
            }
            return;
        }
    }
    if (auto r = m_engine->set_irq_line(gsi, level); !r.ok())
        log_warn("interrupt line {}: {}", gsi, r.error().message());
}

Result<void> Vm::build_devices()
{
    auto irq = [this](uint32_t gsi) { return IrqLine(gsi, [this](uint32_t g, bool level) { set_irq(g, level); }); };
    StopFn stop = [this](StopRequest request) { request_stop(request); };

    m_serial = std::make_shared<Serial>(
        irq(layout::kCom1Irq), [this](std::span<const uint8_t> bytes) { m_console_sink(bytes); });
    TRY(m_pio_bus.insert(m_serial, layout::kCom1Port, 8));
    m_console_input = m_serial.get();
    // The i8042 answers at 0x60 and 0x64 only: 0x61 (PIT channel 2 gate, NMI status) belongs to
    // the PIT model (in-kernel with KVM), and a 5-port range would shadow it.
    m_i8042 = std::make_shared<I8042>(irq(1), stop);
    TRY(m_pio_bus.insert(m_i8042, layout::kI8042Port, 1));
    TRY(m_pio_bus.insert(std::make_shared<I8042CommandPort>(m_i8042), layout::kI8042Port + 4, 1));
    m_rtc = std::make_shared<Rtc>(m_config.mem_bytes);
    TRY(m_pio_bus.insert(m_rtc, layout::kRtcPort, 2));
    TRY(m_pio_bus.insert(std::make_shared<DebugExit>(stop), layout::kDebugExitPort, 4));
    m_acpi_pm = std::make_shared<AcpiPm>(stop);
    TRY(m_pio_bus.insert(m_acpi_pm, layout::kAcpiSleepControlPort, 3));
    m_post = std::make_shared<PostPort>();
    TRY(m_pio_bus.insert(m_post, 0x80, 1));
    m_vmgenid = std::make_shared<VmGenId>(irq(layout::kGedGsi));
    TRY_CTX(build_virtio_devices(), "virtio devices");
    return {};
}

Result<void> Vm::new_generation()
{
    TRY(m_vmgenid->write_new_id(m_memory));
    m_vmgenid->notify();
    return {};
}

Result<void> Vm::pause()
{
    if (m_paused_vm)
        return {};
    {
        std::unique_lock lock(m_pause_mutex);
        m_paused = true;
        for (auto& v : m_vcpus)
            v->kick();
        m_pause_cv.wait(lock, [&] { return m_parked == m_threads.size() || m_stopping.load(); });
    }
    if (m_stopping.load()) {
        std::lock_guard lock(m_pause_mutex);
        m_paused = false;
        return make_error("the VM is stopping");
    }
    // vCPUs first (no new requests), then the devices finish what is in flight, then time stops.
    for (auto& transport : m_virtio)
        transport->pause();
    m_engine->pause_clock(true);
    m_paused_vm = true;
    return {};
}

Result<void> Vm::resume()
{
    if (!m_paused_vm)
        return {};
    m_engine->pause_clock(false);
    for (auto& transport : m_virtio)
        transport->resume();
    {
        std::lock_guard lock(m_pause_mutex);
        m_paused = false;
        m_pause_cv.notify_all();
    }
    m_paused_vm = false;
    return {};
}

void Vm::report_legacy_metrics(MetricsReport& i8042, MetricsReport& uart) const
{
    m_i8042->report_metrics(i8042);
    m_serial->report_metrics(uart);
}

void Vm::report_mmds_metrics(MetricsReport& out) const
{
    // Firecracker keeps one `mmds` group for the VM: every interface's stack adds to it (a report
    // sums what is reported under one name).
    for (const auto& transport : m_virtio) {
        if (transport->device().type() == virtio::DeviceType::Net)
            static_cast<const virtio::NetDevice&>(transport->device()).report_mmds_metrics(out);
    }
}

Result<void> Vm::send_ctrl_alt_del()
{
    if (!m_i8042->press_ctrl_alt_del())
        return make_error("the guest's keyboard is not taking key presses (disabled or busy)");
    return {};
}

void Vm::vcpu_thread(uint32_t index)
{
    Vcpu& vcpu = *m_vcpus[index];
    while (!m_stopping.load()) {
        {
            std::unique_lock lock(m_pause_mutex);
            if (m_paused) {
                ++m_parked;
                m_pause_cv.notify_all();
                m_pause_cv.wait(lock, [&] { return !m_paused || m_stopping.load(); });
                --m_parked;
                continue;
            }
        }
        if (index == 0 && m_first_run.load(std::memory_order_relaxed) == 0)
            m_first_run.store(std::chrono::steady_clock::now().time_since_epoch().count(), std::memory_order_relaxed);
        auto result = vcpu.run();
        if (!result.ok()) {
            request_stop({ StopReason::Error, 1 }, result.error().message());
            break;
        }
        const VcpuExit& exit = result.value();
        switch (exit.kind) {
        case VcpuExitKind::Kicked: break;
        case VcpuExitKind::Shutdown: request_stop({ StopReason::TripleFault, 2 }, exit.message); break;
        case VcpuExitKind::Reset: request_stop({ StopReason::Reset, 0 }); break;
        case VcpuExitKind::PowerOff: request_stop({ StopReason::PowerOff, 0 }); break;
        case VcpuExitKind::Halted:
            request_stop({ StopReason::Error, 1 }, fmt::format("vCPU {} halted with nothing to wake it", index));
            break;
        case VcpuExitKind::InternalError: request_stop({ StopReason::Error, 1 }, exit.message); break;
        }
    }
    std::lock_guard lock(m_pause_mutex);
    m_pause_cv.notify_all();
}

Result<void> Vm::start(EventLoop& loop, std::function<void()> on_stop)
{
    m_loop = &loop;
    m_on_stop = std::move(on_stop);
    for (auto& n : m_queue_notifiers) {
        // A guest's QueueNotify write caught by the engine (ioeventfd).
        n.token = TRY(loop.add_fd(n.fd, EPOLLIN, [&n](uint32_t) {
            uint64_t count;
            if (::read(n.fd, &count, sizeof(count)) == sizeof(count))
                n.transport->notify_queue(n.queue);
        }));
    }
    // vCPU threads never take the termination signals: the event loop does (signalfd).
    sigset_t signals = termination_signals();
    sigset_t old_mask;
    ::pthread_sigmask(SIG_BLOCK, &signals, &old_mask);
    for (uint32_t i = 0; i < m_vcpus.size(); ++i)
        m_threads.emplace_back([this, i] { vcpu_thread(i); });
    ::pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);
    return {};
}

void Vm::stop_vcpus()
{
    {
        std::lock_guard lock(m_pause_mutex);
        m_pause_cv.notify_all();
    }
    for (auto& v : m_vcpus)
        v->kick();
    for (auto& t : m_threads)
        if (t.joinable())
            t.join();
    m_threads.clear();
}

VmExitInfo Vm::finish()
{
    if (!m_stopping.load())
        request_stop({ StopReason::Error, 1 }, "VM finished while running");
    stop_vcpus();
    // Devices may be paused with the VM: let them finish (and stop) normally.
    if (m_paused_vm) {
        for (auto& transport : m_virtio)
            transport->resume();
        m_paused_vm = false;
    }
    for (auto& n : m_queue_notifiers) {
        if (n.token && m_loop)
            m_loop->remove_fd(n.token);
        n.token = 0;
    }
    std::lock_guard lock(m_stop_mutex);
    return m_exit;
}

Result<VmExitInfo> Vm::run()
{
    ::signal(SIGPIPE, SIG_IGN);
    auto loop = TRY(EventLoop::create());
    // Termination signals are taken by the loop through a signalfd: block them first.
    sigset_t signals = termination_signals();
    sigset_t old_mask;
    ::pthread_sigmask(SIG_BLOCK, &signals, &old_mask);
    struct MaskRestorer {
        sigset_t mask;
        ~MaskRestorer() { ::pthread_sigmask(SIG_SETMASK, &mask, nullptr); }
    } restore_mask { old_mask };
    int sfd = ::signalfd(-1, &signals, SFD_CLOEXEC | SFD_NONBLOCK);
    if (sfd < 0)
        return Error::from_errno("signalfd");
    struct FdCloser {
        int fd;
        ~FdCloser() { ::close(fd); }
    } sfd_closer { sfd };
    TRY(loop->add_fd(sfd, EPOLLIN, [&](uint32_t) {
        signalfd_siginfo info {};
        if (::read(sfd, &info, sizeof(info)) == sizeof(info))
            note_signal(static_cast<int>(info.ssi_signo));
    }));

    ConsoleMux console(*loop, ConsoleMux::Stdio::Use);
    console.on_quit = [this] { request_stop({ StopReason::UserQuit, 0 }); };
    TRY(console.start());
    console.set_target(m_console_input);
    TRY(start(*loop, [&] { loop->stop(); }));
    auto looped = loop->run();
    if (!looped.ok())
        request_stop({ StopReason::Error, 1 }, looped.error().message());
    console.set_target(nullptr);
    return finish();
}

void Vm::log_unclaimed(const char* kind, uint64_t addr, size_t len, bool write)
{
    // A guest can hammer unclaimed addresses; log the first few and then every 100000th.
    uint64_t count = m_unclaimed_logged.fetch_add(1, std::memory_order_relaxed);
    if (count < 16 || count % 100000 == 0)
        log_debug("unclaimed {} {} of {} bytes at {:#x}", kind, write ? "write" : "read", len, addr);
}

namespace {

// Times one device access for the vcpu metrics (Firecracker's exit_*_agg).
class AccessTimer {
public:
    explicit AccessTimer(LatencyCounter& counter)
        : m_counter(counter)
        , m_start(std::chrono::steady_clock::now())
    {
    }
    ~AccessTimer()
    {
        m_counter.record(
            std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - m_start));
    }

private:
    LatencyCounter& m_counter;
    std::chrono::steady_clock::time_point m_start;
};

} // namespace

void Vm::report_vcpu_metrics(MetricsReport& out) const
{
    out.counter("exit_io_in", m_io_in.count());
    out.counter("exit_io_out", m_io_out.count());
    out.counter("exit_mmio_read", m_mmio_read.count());
    out.counter("exit_mmio_write", m_mmio_write.count());
    out.latency("exit_io_in_agg", m_io_in);
    out.latency("exit_io_out_agg", m_io_out);
    out.latency("exit_mmio_read_agg", m_mmio_read);
    out.latency("exit_mmio_write_agg", m_mmio_write);
}

void Vm::pio_read(uint16_t port, std::span<uint8_t> data)
{
    AccessTimer timer(m_io_in);
    if (!m_pio_bus.read(port, data))
        log_unclaimed("port", port, data.size(), false);
}

void Vm::pio_write(uint16_t port, std::span<const uint8_t> data)
{
    AccessTimer timer(m_io_out);
    if (!m_pio_bus.write(port, data))
        log_unclaimed("port", port, data.size(), true);
}

void Vm::mmio_read(uint64_t gpa, std::span<uint8_t> data)
{
    AccessTimer timer(m_mmio_read);
    if (!m_mmio_bus.read(gpa, data))
        log_unclaimed("MMIO", gpa, data.size(), false);
}

void Vm::mmio_write(uint64_t gpa, std::span<const uint8_t> data)
{
    AccessTimer timer(m_mmio_write);
    if (!m_mmio_bus.write(gpa, data))
        log_unclaimed("MMIO", gpa, data.size(), true);
}

} // namespace vessel
