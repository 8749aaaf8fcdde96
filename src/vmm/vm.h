// One virtual machine: guest RAM, the buses and devices on them, the boot set-up, an engine and
// its vCPU threads. Built from a VmConfig. start() runs it on the VMM's event loop (the loop
// serves its virtio fast paths) and calls back on the loop when it stops; finish() then joins its
// threads and says why it stopped. run() does all of that on a loop of its own (tests).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "arch/x86/acpi.h"
#include "base/counters.h"
#include "bus/bus.h"
#include "devices/vm_control.h"
#include "engine/engine.h"
#include "memory/guest_memory.h"
#include "vmm/event_loop.h"
#include "vmm/vm_config.h"

namespace vessel {

class Serial;
class ConsoleInput;
class DirtyBitmap;
class I8042;
class Rtc;
class AcpiPm;
class PostPort;
class VmGenId;
namespace mmds {
class DataStore;
class TokenAuthority;
} // namespace mmds
namespace virtio {
class MmioTransport;
}

struct VmExitInfo {
    StopRequest stop;
    std::string message; // for errors and triple faults
    int signal { 0 }; // a termination signal received while running (wins over any stop reason)
};

class Vm final : private IoHandler {
public:
    using EngineFactory = std::function<Result<std::unique_ptr<Engine>>()>;
    // Where the guest's console output goes (vCPU threads). Empty: stdout.
    using ConsoleSink = std::function<void(std::span<const uint8_t>)>;
    // What the VMM process lends the VM: its console, and the MMDS store and tokens (shared with
    // the API, which may change them while the VM runs).
    struct Services {
        ConsoleSink console;
        std::shared_ptr<mmds::DataStore> mmds;
        std::shared_ptr<mmds::TokenAuthority> mmds_tokens;
    };

    // Builds the machine and loads the guest, then creates the engine with `make_engine` (so a
    // bad kernel is reported before any engine is touched); nothing runs yet.
    static Result<std::unique_ptr<Vm>> create(
        const VmConfig& config, const EngineFactory& make_engine, Services services = {});

    // --- Snapshots (vm_snapshot.cpp) ------------------------------------------------------------
    struct SnapshotOptions {
        std::string state_path;
        std::string mem_path;
        bool diff { false }; // only the pages written since the previous snapshot (or the start)
        std::function<void(uint64_t done, uint64_t total)> progress;
    };
    struct SnapshotInfo {
        uint64_t mem_pages { 0 };      // pages in the memory file
        uint64_t mem_disk_bytes { 0 }; // its allocated size
        uint64_t state_bytes { 0 };
        std::chrono::microseconds elapsed { 0 };
    };
    // Writes the paused VM's state and memory files.
    Result<SnapshotInfo> snapshot(const SnapshotOptions& options);

    // The engine for a restored VM: its kind and vCPU count come from the (overridden) config,
    // `tsc_khz` from the snapshot.
    using RestoreEngineFactory = std::function<Result<std::unique_ptr<Engine>>(const VmConfig&, uint64_t tsc_khz)>;
    // Where a restored guest's RAM comes from: the memory file mapped MAP_PRIVATE, or anonymous
    // memory filled by a page-fault handler over a userfaultfd (Firecracker's protocol).
    enum class MemBackend { File, Uffd };
    struct RestoreOptions {
        std::string state_path;
        std::string mem_path; // File: the memory file; Uffd: the page-fault handler's socket
        MemBackend mem_backend { MemBackend::File };
        bool track_dirty_pages { false };
        std::vector<std::pair<std::string, std::string>> net_overrides; // iface id → tap name
        std::optional<std::string> vsock_uds_path;
        std::optional<EngineKind> engine; // default: the snapshot's
    };
    // Builds a VM from a snapshot, paused: start() parks its vCPUs until resume().
    static Result<std::unique_ptr<Vm>> restore(
        const RestoreOptions& options, const RestoreEngineFactory& make_engine, Services services = {});
    // The snapshot's config after overrides (what restore() built), for a quick look before it.
    static Result<VmConfig> snapshot_config(const std::string& state_path);
    ~Vm() override;

    // Starts the vCPU threads; the virtio fast paths (ioeventfds) are served by `loop`.
    // `on_stop` runs on the loop's thread once, after the first stop request.
    Result<void> start(EventLoop& loop, std::function<void()> on_stop);
    // After on_stop: stops and joins the vCPUs, unregisters from the loop, says why it stopped.
    VmExitInfo finish();

    // start() + a loop of its own with the console on stdin/stdout and termination signals
    // taken as stop requests + finish(). Blocks until the VM stops.
    Result<VmExitInfo> run();

    // Asks the VM to stop (first request wins); thread-safe, callable from devices and signals.
    void request_stop(StopRequest request, std::string message = {});
    // Records a termination signal; it decides the exit status even if another stop came first.
    void note_signal(int signo);
    bool stopping() const { return m_stopping.load(); }

    // Stops every vCPU at an instruction boundary and quiesces the devices (in-flight requests
    // completed, no new ones taken), then stops guest time; resume() undoes it. Returns the
    // time taken. Pausing a paused VM (or resuming a running one) does nothing.
    Result<void> pause();
    Result<void> resume();
    bool paused() const { return m_paused_vm; }

    // When the first vCPU first entered the guest (epoch if not yet).
    std::chrono::steady_clock::time_point first_run_time() const
    {
        return std::chrono::steady_clock::time_point(std::chrono::steady_clock::duration(m_first_run.load()));
    }

    // The console device that takes host input (COM1, or the virtio console).
    ConsoleInput* console_input() const { return m_console_input; }
    // SendCtrlAltDel: the keyboard reports Ctrl+Alt+Del.
    Result<void> send_ctrl_alt_del();

    // Counters of the legacy devices (Firecracker's i8042 and uart groups) and of MMDS.
    void report_legacy_metrics(MetricsReport& i8042, MetricsReport& uart) const;
    void report_mmds_metrics(MetricsReport& out) const;
    // Firecracker's vcpu group: port and MMIO accesses that reached the VMM's devices (KVM exits,
    // or the soft engine's emulated accesses), and their handling time.
    void report_vcpu_metrics(MetricsReport& out) const;

    GuestMemory& memory() { return m_memory; }
    Engine& engine() { return *m_engine; }
    Bus& pio_bus() { return m_pio_bus; }
    Bus& mmio_bus() { return m_mmio_bus; }
    const VmConfig& config() const { return m_config; }
    std::vector<std::unique_ptr<Vcpu>>& vcpus() { return m_vcpus; }
    const std::vector<std::shared_ptr<virtio::MmioTransport>>& virtio_transports() const { return m_virtio; }

private:
    Vm(const VmConfig& config, GuestMemory memory, Services services);
    Result<void> build_devices();
    Result<void> build_virtio_devices(); // vm_virtio.cpp
    Result<void> wire_virtio_fast_paths(); // vm_virtio.cpp: ioeventfd/irqfd where the engine has them
    Result<void> load_guest();
    // A new VM generation ID in guest memory, then the GED interrupt that tells the guest (a
    // restored snapshot or clone). Call once the guest's interrupt controllers are in place.
    Result<void> new_generation();
    Result<void> attach_engine(std::unique_ptr<Engine> engine); // buses, RAM, fast paths, vCPUs
    Result<void> restore_state(const nlohmann::json& state); // vm_snapshot.cpp
    void vcpu_thread(uint32_t index);
    void stop_vcpus();

    void pio_read(uint16_t port, std::span<uint8_t> data) override;
    void pio_write(uint16_t port, std::span<const uint8_t> data) override;
    void mmio_read(uint64_t gpa, std::span<uint8_t> data) override;
    void mmio_write(uint64_t gpa, std::span<const uint8_t> data) override;
    void log_unclaimed(const char* kind, uint64_t addr, size_t len, bool write);
    void set_irq(uint32_t gsi, bool level);

    VmConfig m_config;
    GuestMemory m_memory;
    ConsoleSink m_console_sink;
    Services m_services;
    Bus m_pio_bus { "port I/O" };
    Bus m_mmio_bus { "MMIO" };
    std::unique_ptr<Engine> m_engine;
    std::vector<std::unique_ptr<Vcpu>> m_vcpus;
    std::vector<std::thread> m_threads;
    std::shared_ptr<Serial> m_serial;
    std::shared_ptr<I8042> m_i8042;
    std::shared_ptr<Rtc> m_rtc;
    std::shared_ptr<AcpiPm> m_acpi_pm;
    std::shared_ptr<PostPort> m_post;
    std::shared_ptr<VmGenId> m_vmgenid; // ACPI VM Generation ID, notified through the GED
    std::unique_ptr<DirtyBitmap> m_dirty; // track_dirty_pages
    ConsoleInput* m_console_input { nullptr }; // where host console input goes
    std::vector<std::shared_ptr<virtio::MmioTransport>> m_virtio;
    std::vector<AcpiDevice> m_virtio_acpi;
    struct QueueNotifier {
        int fd;
        virtio::MmioTransport* transport;
        uint16_t queue;
        EventLoop::Token token;
    };
    std::vector<QueueNotifier> m_queue_notifiers; // served by the event loop
    std::vector<std::pair<uint32_t, int>> m_irq_notifiers; // GSI → irqfd
    CpuState m_boot_state;

    EventLoop* m_loop { nullptr };
    std::function<void()> m_on_stop;
    std::mutex m_stop_mutex;
    std::atomic<bool> m_stopping { false };
    VmExitInfo m_exit;

    std::mutex m_pause_mutex;
    std::condition_variable m_pause_cv;
    bool m_paused { false }; // vCPUs are asked to park (m_pause_mutex)
    uint32_t m_parked { 0 };
    bool m_paused_vm { false }; // pause() completed (event loop thread)

    std::atomic<uint64_t> m_unclaimed_logged { 0 };
    LatencyCounter m_io_in, m_io_out, m_mmio_read, m_mmio_write;
    std::atomic<std::chrono::steady_clock::duration::rep> m_first_run { 0 };
};

} // namespace vessel
