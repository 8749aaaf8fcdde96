// One virtual machine: guest RAM, the buses and devices on them, the boot set-up, an engine and
// its vCPU threads. Built from a VmConfig; run() blocks until the VM stops and says why.
#pragma once

#include <atomic>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "arch/x86/acpi.h"
#include "bus/bus.h"
#include "devices/vm_control.h"
#include "engine/engine.h"
#include "memory/guest_memory.h"
#include "vmm/vm_config.h"

namespace vessel {

class Serial;
class ConsoleInput;
namespace virtio {
class MmioTransport;
}

struct VmExitInfo {
    StopRequest stop;
    std::string message; // for errors and triple faults
    int signal { 0 };    // a termination signal received while running (wins over any stop reason)
};

class Vm final : private IoHandler {
public:
    using EngineFactory = std::function<Result<std::unique_ptr<Engine>>()>;

    // Builds the machine and loads the guest, then creates the engine with `make_engine` (so a
    // bad kernel is reported before any engine is touched); nothing runs yet.
    static Result<std::unique_ptr<Vm>> create(const VmConfig& config, const EngineFactory& make_engine);
    ~Vm() override;

    // Runs vCPU threads and the event loop on the calling thread until the VM stops.
    Result<VmExitInfo> run();

    // Asks the VM to stop (first request wins); thread-safe, callable from devices and signals.
    void request_stop(StopRequest request, std::string message = {});

    GuestMemory& memory() { return m_memory; }
    Engine& engine() { return *m_engine; }
    Bus& pio_bus() { return m_pio_bus; }
    Bus& mmio_bus() { return m_mmio_bus; }
    const VmConfig& config() const { return m_config; }
    std::vector<std::unique_ptr<Vcpu>>& vcpus() { return m_vcpus; }

    // Test hooks: pause all vCPUs (kick and park them between runs) and resume them.
    void pause();
    void resume();

private:
    Vm(const VmConfig& config, GuestMemory memory);
    Result<void> build_devices();
    Result<void> build_virtio_devices(); // vm_virtio.cpp
    Result<void> wire_virtio_fast_paths(); // vm_virtio.cpp: ioeventfd/irqfd where the engine has them
    Result<void> load_guest();
    void vcpu_thread(uint32_t index);
    Result<void> event_loop();

    void pio_read(uint16_t port, std::span<uint8_t> data) override;
    void pio_write(uint16_t port, std::span<const uint8_t> data) override;
    void mmio_read(uint64_t gpa, std::span<uint8_t> data) override;
    void mmio_write(uint64_t gpa, std::span<const uint8_t> data) override;
    void log_unclaimed(const char* kind, uint64_t addr, size_t len, bool write);
    void set_irq(uint32_t gsi, bool level);
    void wake_event_loop();

    VmConfig m_config;
    GuestMemory m_memory;
    Bus m_pio_bus { "port I/O" };
    Bus m_mmio_bus { "MMIO" };
    std::unique_ptr<Engine> m_engine;
    std::vector<std::unique_ptr<Vcpu>> m_vcpus;
    std::vector<std::thread> m_threads;
    std::shared_ptr<Serial> m_serial;
    ConsoleInput* m_console_input { nullptr }; // where stdin goes
    std::vector<std::shared_ptr<virtio::MmioTransport>> m_virtio;
    std::vector<AcpiDevice> m_virtio_acpi;
    struct QueueNotifier {
        int fd;
        virtio::MmioTransport* transport;
        uint16_t queue;
    };
    std::vector<QueueNotifier> m_queue_notifiers; // served by the event loop
    std::vector<std::pair<uint32_t, int>> m_irq_notifiers; // GSI → irqfd
    CpuState m_boot_state;

    std::mutex m_stop_mutex;
    std::atomic<bool> m_stopping { false };
    VmExitInfo m_exit;
    int m_wake_event { -1 }; // eventfd: wakes the event loop (stop requests, UART input space)

    std::mutex m_pause_mutex;
    std::condition_variable m_pause_cv;
    bool m_paused { false };
    uint32_t m_parked { 0 };

    std::atomic<uint64_t> m_unclaimed_logged { 0 };
};

} // namespace vessel
