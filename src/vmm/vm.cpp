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
#include "arch/x86/mptable.h"
#include "arch/x86/reset_stub.h"
#include "devices/acpi_pm.h"
#include "devices/debug_exit.h"
#include "devices/i8042.h"
#include "devices/post_port.h"
#include "devices/rtc.h"
#include "devices/serial.h"
#include "devices/virtio/mmio.h"
#include "arch/x86/layout.h"
#include "loader/boot.h"
#include "vmm/console.h"
#include "vmm/signals.h"

namespace vessel {

Vm::Vm(const VmConfig& config, GuestMemory memory)
    : m_config(config)
    , m_memory(std::move(memory))
{
}

Vm::~Vm()
{
    if (!m_threads.empty()) {
        request_stop({ StopReason::Error, 1 }, "VM destroyed while running");
        for (auto& v : m_vcpus)
            v->kick();
        for (auto& t : m_threads)
            if (t.joinable())
                t.join();
    }
    // Device threads stop before the engine they report guest-memory writes to goes away.
    for (auto& transport : m_virtio)
        transport->shutdown();
    m_memory.set_write_observer(nullptr);
    if (m_wake_event >= 0)
        ::close(m_wake_event);
    for (auto& n : m_queue_notifiers)
        ::close(n.fd);
    for (auto& [gsi, fd] : m_irq_notifiers)
        ::close(fd);
}

Result<std::unique_ptr<Vm>> Vm::create(const VmConfig& config, const EngineFactory& make_engine)
{
    auto memory = TRY(GuestMemory::create(config.mem_bytes, config.hugepages ? HugePages::Yes : HugePages::No));
    std::unique_ptr<Vm> vm(new Vm(config, std::move(memory)));
    vm->m_wake_event = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (vm->m_wake_event < 0)
        return Error::from_errno("eventfd");

    TRY(vm->build_devices());
    TRY(vm->load_guest());
    vm->m_engine = TRY(make_engine());
    TRY_CTX(vm->m_engine->register_devices(vm->m_pio_bus, vm->m_mmio_bus), "engine devices");
    // Map RAM only after every boot structure is written: some KVM implementations (PVM) do not
    // see page-table writes made from outside the guest after the slot is registered.
    TRY(vm->m_engine->map_memory(vm->m_memory));
    vm->m_memory.set_write_observer([engine = vm->m_engine.get()](uint64_t gpa, uint64_t len) {
        engine->memory_written(gpa, len);
    });
    TRY_CTX(vm->wire_virtio_fast_paths(), "virtio fast paths");

    for (uint32_t i = 0; i < config.cpus; ++i) {
        auto vcpu = TRY(vm->m_engine->create_vcpu(i, *vm));
        vm->m_vcpus.push_back(std::move(vcpu));
    }
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

Result<void> Vm::load_guest()
{
    auto e820 = build_e820(m_memory);

    AcpiConfig acpi;
    acpi.vcpus = m_config.cpus;
    acpi.devices = legacy_acpi_devices();
    acpi.devices.insert(acpi.devices.end(), m_virtio_acpi.begin(), m_virtio_acpi.end());
    uint64_t rsdp = TRY_CTX(build_acpi_tables(m_memory, acpi), "building ACPI tables");
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
    wake_event_loop();
    for (auto& v : m_vcpus)
        v->kick();
}

void Vm::wake_event_loop()
{
    uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(m_wake_event, &one, sizeof(one));
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

    m_serial = std::make_shared<Serial>(irq(layout::kCom1Irq), [](std::span<const uint8_t> bytes) {
        Console::write_output(bytes);
    });
    TRY(m_pio_bus.insert(m_serial, layout::kCom1Port, 8));
    m_console_input = m_serial.get();
    // The i8042 answers at 0x60 and 0x64 only: 0x61 (PIT channel 2 gate, NMI status) belongs to
    // the PIT model (in-kernel with KVM), and a 5-port range would shadow it.
    auto i8042 = std::make_shared<I8042>(irq(1), stop);
    TRY(m_pio_bus.insert(i8042, layout::kI8042Port, 1));
    TRY(m_pio_bus.insert(std::make_shared<I8042CommandPort>(i8042), layout::kI8042Port + 4, 1));
    TRY(m_pio_bus.insert(std::make_shared<Rtc>(m_config.mem_bytes), layout::kRtcPort, 2));
    TRY(m_pio_bus.insert(std::make_shared<DebugExit>(stop), layout::kDebugExitPort, 4));
    TRY(m_pio_bus.insert(std::make_shared<AcpiPm>(stop), layout::kAcpiSleepControlPort, 3));
    TRY(m_pio_bus.insert(std::make_shared<PostPort>(), 0x80, 1));
    TRY_CTX(build_virtio_devices(), "virtio devices");
    // stdin goes to the virtio console if there is one (build_virtio_devices() chose).
    m_console_input->set_input_space_notifier([this] { wake_event_loop(); });
    return {};
}

void Vm::pause()
{
    std::unique_lock lock(m_pause_mutex);
    m_paused = true;
    for (auto& v : m_vcpus)
        v->kick();
    m_pause_cv.wait(lock, [&] { return m_parked == m_threads.size() || m_stopping.load(); });
    m_engine->pause_clock(true);
}

void Vm::resume()
{
    std::lock_guard lock(m_pause_mutex);
    m_engine->pause_clock(false);
    m_paused = false;
    m_pause_cv.notify_all();
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
        auto result = vcpu.run();
        if (!result.ok()) {
            request_stop({ StopReason::Error, 1 }, result.error().message());
            break;
        }
        const VcpuExit& exit = result.value();
        switch (exit.kind) {
        case VcpuExitKind::Kicked:
            break;
        case VcpuExitKind::Shutdown:
            request_stop({ StopReason::TripleFault, 2 }, exit.message);
            break;
        case VcpuExitKind::Reset:
            request_stop({ StopReason::Reset, 0 });
            break;
        case VcpuExitKind::PowerOff:
            request_stop({ StopReason::PowerOff, 0 });
            break;
        case VcpuExitKind::Halted:
            request_stop({ StopReason::Error, 1 },
                          fmt::format("vCPU {} halted with nothing to wake it", index));
            break;
        case VcpuExitKind::InternalError:
            request_stop({ StopReason::Error, 1 }, exit.message);
            break;
        }
    }
    std::lock_guard lock(m_pause_mutex);
    m_pause_cv.notify_all();
}

Result<VmExitInfo> Vm::run()
{
    // Termination signals are taken by the event loop through a signalfd; block them before
    // the vCPU threads start so those threads inherit the mask.
    sigset_t signals = termination_signals();
    sigset_t old_mask;
    ::pthread_sigmask(SIG_BLOCK, &signals, &old_mask);
    ::signal(SIGPIPE, SIG_IGN);

    for (uint32_t i = 0; i < m_vcpus.size(); ++i)
        m_threads.emplace_back([this, i] { vcpu_thread(i); });

    auto loop = event_loop();
    if (!loop.ok())
        request_stop({ StopReason::Error, 1 }, loop.error().message());

    for (auto& v : m_vcpus)
        v->kick();
    for (auto& t : m_threads)
        t.join();
    m_threads.clear();
    ::pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);
    return m_exit;
}

Result<void> Vm::event_loop()
{
    Console console;
    int epoll = ::epoll_create1(EPOLL_CLOEXEC);
    if (epoll < 0)
        return Error::from_errno("epoll_create1");
    struct FdCloser {
        int fd;
        ~FdCloser() { ::close(fd); }
    } epoll_closer { epoll };

    sigset_t signals = termination_signals();
    int sfd = ::signalfd(-1, &signals, SFD_CLOEXEC | SFD_NONBLOCK);
    if (sfd < 0)
        return Error::from_errno("signalfd");
    FdCloser sfd_closer { sfd };

    enum : uint64_t { kStop, kSignal, kStdin, kQueueNotifierBase };
    auto add = [&](int fd, uint64_t tag) -> Result<void> {
        epoll_event ev {};
        ev.events = EPOLLIN;
        ev.data.u64 = tag;
        if (::epoll_ctl(epoll, EPOLL_CTL_ADD, fd, &ev) < 0)
            return Error::from_errno("epoll_ctl");
        return {};
    };
    TRY(add(m_wake_event, kStop));
    TRY(add(sfd, kSignal));
    for (size_t i = 0; i < m_queue_notifiers.size(); ++i)
        TRY(add(m_queue_notifiers[i].fd, kQueueNotifierBase + i));

    // stdin feeds the serial port. Pipes and terminals are polled; a regular file (which epoll
    // refuses) is read whenever the UART has room.
    bool stdin_open = true;
    bool stdin_polled = false;
    bool stdin_armed = false;
    {
        epoll_event ev {};
        ev.events = EPOLLIN;
        ev.data.u64 = kStdin;
        if (::epoll_ctl(epoll, EPOLL_CTL_ADD, STDIN_FILENO, &ev) == 0) {
            stdin_polled = true;
            stdin_armed = true;
        } else if (errno != EPERM) {
            stdin_open = false; // closed or otherwise unusable: no console input
        }
    }

    auto read_stdin = [&]() {
        uint8_t buf[256];
        size_t space = m_console_input ? std::min(sizeof(buf), m_console_input->input_space()) : sizeof(buf);
        if (space == 0)
            return;
        ssize_t n = ::read(STDIN_FILENO, buf, space);
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
            return;
        if (n <= 0) {
            stdin_open = false;
            if (stdin_polled && stdin_armed)
                ::epoll_ctl(epoll, EPOLL_CTL_DEL, STDIN_FILENO, nullptr);
            stdin_armed = false;
            return;
        }
        bool quit = false;
        auto bytes = console.filter_input(std::span<const uint8_t>(buf, static_cast<size_t>(n)), quit);
        if (m_console_input && !bytes.empty())
            m_console_input->enqueue_input(bytes);
        if (quit)
            request_stop({ StopReason::UserQuit, 0 });
    };

    while (!m_stopping.load()) {
        bool room = m_console_input && m_console_input->wants_input();
        if (stdin_open && stdin_polled && room != stdin_armed) {
            // Back-pressure: stop polling stdin while the UART's receive buffer is full. The fd
            // leaves the epoll set (events=0 would still report EPOLLHUP of a closed pipe).
            epoll_event ev {};
            ev.events = EPOLLIN;
            ev.data.u64 = kStdin;
            ::epoll_ctl(epoll, room ? EPOLL_CTL_ADD : EPOLL_CTL_DEL, STDIN_FILENO, &ev);
            stdin_armed = room;
        }
        // A regular file on stdin cannot be polled: read it whenever the UART has room.
        int timeout = (stdin_open && !stdin_polled && room) ? 0 : -1;
        epoll_event events[8];
        int n = ::epoll_wait(epoll, events, 8, timeout);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return Error::from_errno("epoll_wait");
        }
        if (stdin_open && !stdin_polled && room)
            read_stdin();
        if (timeout == 0 && n == 0)
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        for (int i = 0; i < n; ++i) {
            switch (events[i].data.u64) {
            case kStop: {
                uint64_t value;
                [[maybe_unused]] auto r = ::read(m_wake_event, &value, sizeof(value));
                break;
            }
            case kSignal: {
                signalfd_siginfo info {};
                if (::read(sfd, &info, sizeof(info)) == sizeof(info)) {
                    int signo = static_cast<int>(info.ssi_signo);
                    // Recorded even when another stop (e.g. a guest reset) is already under way:
                    // the user's request to terminate must not be lost to a reboot.
                    {
                        std::lock_guard lock(m_stop_mutex);
                        m_exit.signal = signo;
                    }
                    request_stop({ StopReason::Signal, 128 + signo }, fmt::format("received signal {}", strsignal(signo)));
                }
                break;
            }
            case kStdin:
                read_stdin();
                break;
            default: {
                // A guest's QueueNotify write caught by the engine (ioeventfd).
                auto& n = m_queue_notifiers[events[i].data.u64 - kQueueNotifierBase];
                uint64_t count;
                if (::read(n.fd, &count, sizeof(count)) == sizeof(count))
                    n.transport->notify_queue(n.queue);
                break;
            }
            }
        }
    }
    return {};
}

void Vm::log_unclaimed(const char* kind, uint64_t addr, size_t len, bool write)
{
    // A guest can hammer unclaimed addresses; log the first few and then every 100000th.
    uint64_t count = m_unclaimed_logged.fetch_add(1, std::memory_order_relaxed);
    if (count < 16 || count % 100000 == 0)
        log_debug("unclaimed {} {} of {} bytes at {:#x}", kind, write ? "write" : "read", len, addr);
}

void Vm::pio_read(uint16_t port, std::span<uint8_t> data)
{
    if (!m_pio_bus.read(port, data))
        log_unclaimed("port", port, data.size(), false);
}

void Vm::pio_write(uint16_t port, std::span<const uint8_t> data)
{
    if (!m_pio_bus.write(port, data))
        log_unclaimed("port", port, data.size(), true);
}

void Vm::mmio_read(uint64_t gpa, std::span<uint8_t> data)
{
    if (!m_mmio_bus.read(gpa, data))
        log_unclaimed("MMIO", gpa, data.size(), false);
}

void Vm::mmio_write(uint64_t gpa, std::span<const uint8_t> data)
{
    if (!m_mmio_bus.write(gpa, data))
        log_unclaimed("MMIO", gpa, data.size(), true);
}

} // namespace vessel
