// The virtio-mmio transport (virtio v1.2, 4.2; "modern", version 2 register layout), one 4 KiB
// window per device on the MMIO bus, described to the guest by the ACPI DSDT (LNRO0005).
//
// Why virtio-mmio and not virtio-pci: it needs no PCI host bridge, config-space emulation or MSI-X,
// so the guest-visible surface (and the attack surface) is a few dozen registers; Debian's stock
// kernel binds it from ACPI; every notification is one MMIO write, which the soft engine takes as
// a plain function call and the KVM engine can turn into an ioeventfd. Its interrupt is a pulse on
// one IOAPIC pin per device (edge-triggered, as the DSDT says): the guest reads InterruptStatus,
// so a pulse that arrives while the previous one is being handled is never lost.
#pragma once

#include <nlohmann/json.hpp>

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "bus/bus.h"
#include "devices/irq.h"
#include "devices/virtio/queue.h"
#include "devices/virtio/virtio.h"

namespace vessel::virtio {

// Register offsets (4.2.2).
namespace mmio_reg {
constexpr uint64_t kMagic = 0x000;
constexpr uint64_t kVersion = 0x004;
constexpr uint64_t kDeviceId = 0x008;
constexpr uint64_t kVendorId = 0x00c;
constexpr uint64_t kDeviceFeatures = 0x010;
constexpr uint64_t kDeviceFeaturesSel = 0x014;
constexpr uint64_t kDriverFeatures = 0x020;
constexpr uint64_t kDriverFeaturesSel = 0x024;
constexpr uint64_t kQueueSel = 0x030;
constexpr uint64_t kQueueNumMax = 0x034;
constexpr uint64_t kQueueNum = 0x038;
constexpr uint64_t kQueueReady = 0x044;
constexpr uint64_t kQueueNotify = 0x050;
constexpr uint64_t kInterruptStatus = 0x060;
constexpr uint64_t kInterruptAck = 0x064;
constexpr uint64_t kStatus = 0x070;
constexpr uint64_t kQueueDescLow = 0x080;
constexpr uint64_t kQueueDescHigh = 0x084;
constexpr uint64_t kQueueDriverLow = 0x090;
constexpr uint64_t kQueueDriverHigh = 0x094;
constexpr uint64_t kQueueDeviceLow = 0x0a0;
constexpr uint64_t kQueueDeviceHigh = 0x0a4;
constexpr uint64_t kShmSel = 0x0ac;
constexpr uint64_t kShmLenLow = 0x0b0;
constexpr uint64_t kShmLenHigh = 0x0b4;
constexpr uint64_t kShmBaseLow = 0x0b8;
constexpr uint64_t kShmBaseHigh = 0x0bc;
constexpr uint64_t kConfigGeneration = 0x0fc;
constexpr uint64_t kConfig = 0x100;
} // namespace mmio_reg

constexpr uint32_t kMmioMagic = 0x74726976; // "virt"
constexpr uint32_t kMmioVendor = 0x4c535356; // "VSSL"
constexpr uint32_t kInterruptUsedBuffer = 1;
constexpr uint32_t kInterruptConfigChange = 2;

class MmioTransport final : public BusDevice, private VirtioInterrupt {
public:
    MmioTransport(std::shared_ptr<VirtioDevice> device, GuestMemory& memory, IrqLine irq);
    ~MmioTransport() override;

    std::string_view name() const override { return m_name; }
    void read(uint64_t offset, std::span<uint8_t> data) override;
    void write(uint64_t offset, std::span<const uint8_t> data) override;

    VirtioDevice& device() { return *m_device; }
    uint32_t status() const { return m_status.load(); }
    uint32_t interrupt_status() const { return m_isr.load(); }
    // Stops the device for good (VM teardown).
    void shutdown();
    // The driver notified `queue` through a fast path that bypassed the register (an ioeventfd
    // on QueueNotify): same effect as the register write. Any thread.
    void notify_queue(uint16_t queue);
    uint16_t queue_count() const { return static_cast<uint16_t>(m_queues.size()); }
    // VM pause/resume: passed to an activated device (VirtioDevice::pause()); a device the driver
    // has not activated has no queues to stop. Called with the vCPUs stopped.
    void pause();
    void resume();

    // Snapshots (mmio_state.cpp). save_state(): the transport's registers, every queue (addresses,
    // size, ready, indices, event-idx state) and the device's own state (VirtioDevice::save_state)
    // as JSON; call it while paused (or before the driver activated the device). pause() has
    // completed the requests in flight; chains a device still holds by design (net's receive
    // buffers, balloon's statistics buffer) are in its state by descriptor head and the restored
    // device holds them again, so nothing is taken twice or lost. Saving changes nothing: the VM
    // may resume afterwards.
    // restore_state(): into a transport freshly built for the same device and configuration
    // (guest RAM already restored), before any vCPU runs. A device the driver had activated is
    // activated again on the restored queues, as at DRIVER_OK, but paused, as the VM that was
    // saved: the transport is left paused and resume() starts the device (which then serves what
    // the rings hold). Errors say what in the state is wrong (a hostile snapshot gets an error,
    // never a host access outside guest RAM) and leave the transport as after a driver reset.
    nlohmann::json save_state() const;
    Result<void> restore_state(const nlohmann::json& state);

private:
    void signal_queue(uint16_t queue) override;
    void signal_config() override;
    void device_error(std::string_view why) override;

    uint32_t read_register(uint64_t offset);
    void write_register(uint64_t offset, uint32_t value);
    void write_status(uint32_t value);
    void notify_locked(uint32_t queue);
    void reset_locked();
    Result<void> restore_locked(const nlohmann::json& state);
    Queue* selected_queue();

    std::shared_ptr<VirtioDevice> m_device;
    GuestMemory& m_memory;
    IrqLine m_irq;
    std::string m_name;
    uint64_t m_device_features { 0 };

    mutable std::mutex m_lock; // register accesses (vCPU threads); held across device calls
    std::vector<Queue> m_queues;
    uint64_t m_driver_features { 0 };
    uint32_t m_device_features_sel { 0 };
    uint32_t m_driver_features_sel { 0 };
    uint32_t m_queue_sel { 0 };
    bool m_activated { false };
    bool m_shut_down { false };
    bool m_paused { false }; // the device was paused by pause() (it was activated then)
    std::atomic<uint32_t> m_status { 0 };
    std::atomic<uint32_t> m_isr { 0 };
    std::atomic<uint32_t> m_config_generation { 0 };
};

} // namespace vessel::virtio
