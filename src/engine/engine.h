// The CPU-engine interface. An engine runs vCPUs over guest RAM and answers every port-I/O and
// MMIO access through the IoHandler it is given (the VM's buses) — engines know nothing about
// devices. run() returns only for events the VMM must act on; everything else is handled inside.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "arch/x86/cpu_state.h"
#include "arch/x86/cpuid_entry.h"
#include "arch/x86/machine_state.h"
#include "base/result.h"

namespace vessel {

class Bus;
class DirtyBitmap;
class GuestMemory;

// The VM side of the engine contract (Cloud Hypervisor's VmOps): called on vCPU threads.
class IoHandler {
public:
    virtual ~IoHandler() = default;
    virtual void pio_read(uint16_t port, std::span<uint8_t> data) = 0;
    virtual void pio_write(uint16_t port, std::span<const uint8_t> data) = 0;
    virtual void mmio_read(uint64_t gpa, std::span<uint8_t> data) = 0;
    virtual void mmio_write(uint64_t gpa, std::span<const uint8_t> data) = 0;
};

enum class VcpuExitKind {
    Kicked, // kick() was called (or a signal interrupted the run): the VMM checks its flags
    Shutdown, // triple fault / shutdown
    Reset, // the guest asked for a reset through the CPU (e.g. KVM system event)
    PowerOff, // the guest powered off through the CPU (e.g. KVM system event)
    Halted, // HLT with interrupts disabled and nothing to wake it (engine has no irqchip)
    InternalError, // the engine cannot continue; `message` says why
};

// What a vCPU has done so far (monotonic; read from any thread for metrics). Each engine fills
// what it has: the soft engine counts guest instructions and translations, KVM counts exits.
struct VcpuStats {
    uint64_t instructions { 0 };
    uint64_t translations { 0 };
    uint64_t exits_io_in { 0 };
    uint64_t exits_io_out { 0 };
    uint64_t exits_mmio_read { 0 };
    uint64_t exits_mmio_write { 0 };
    uint64_t exits_other { 0 }; // HLT, interrupts, system events...
};

struct VcpuExit {
    VcpuExitKind kind { VcpuExitKind::Kicked };
    std::string message;
};

class Vcpu {
public:
    virtual ~Vcpu() = default;
    virtual uint32_t id() const = 0;
    // Runs guest code on the calling thread until an exit the VMM must see.
    virtual Result<VcpuExit> run() = 0;
    // Makes run() return promptly (Kicked), from any thread; sticky until run() returns.
    virtual void kick() = 0;
    virtual Result<CpuState> get_state() = 0;
    virtual Result<void> set_state(const CpuState& state) = 0;
    // Queues an external interrupt vector for delivery (used without an interrupt controller).
    virtual Result<void> inject_interrupt(uint8_t vector) = 0;
    // Counters for metrics (any thread).
    virtual VcpuStats stats() const { return {}; }
};

struct EngineConfig {
    uint32_t vcpus { 1 };
    // The TSC frequency shown to the guest; 0: the engine's default (soft: 1 GHz; KVM: the
    // host's). A restore passes the snapshot's, so the guest's clocks keep their calibration.
    uint64_t tsc_khz { 0 };
};

class Engine {
public:
    virtual ~Engine() = default;
    virtual std::string_view name() const = 0;
    // Makes guest RAM visible to the engine (called once per region before vCPUs run).
    virtual Result<void> map_memory(const GuestMemory& memory) = 0;
    // Engines whose interrupt controllers and timers are user-space device models (the soft
    // engine) put them on the VM's buses here; called once while the VM is built.
    virtual Result<void> register_devices(Bus& /*pio*/, Bus& /*mmio*/) { return {}; }
    // Creates vCPU `id`; `io` must outlive it. Call from the thread that will run it.
    virtual Result<std::unique_ptr<Vcpu>> create_vcpu(uint32_t id, IoHandler& io) = 0;
    // Drives a GSI of the interrupt controller (IOAPIC pin / PIC line).
    virtual Result<void> set_irq_line(uint32_t gsi, bool level) = 0;
    // Largest number of vCPUs this engine supports on this host.
    virtual uint32_t max_vcpus() const = 0;
    // Stops/restarts guest time while the VM is paused (engines that keep their own clock).
    virtual void pause_clock(bool /*paused*/) { }
    // The VMM wrote [gpa, gpa+len) of guest RAM from outside the guest (device DMA, restore):
    // engines that cache anything derived from guest memory (decoded code) drop it. Any thread.
    virtual void memory_written(uint64_t /*gpa*/, uint64_t /*len*/) { }

    // Fast paths for paravirtual devices; an engine without them returns false and the VMM uses
    // the plain paths (the MMIO write reaches the bus; set_irq_line).
    // A guest write of `len` bytes to MMIO `gpa` (equal to `value`, if given) signals eventfd
    // `fd` inside the engine instead of exiting to the VMM (KVM ioeventfd).
    virtual Result<bool> add_mmio_notifier(
        uint64_t /*gpa*/, uint32_t /*len*/, std::optional<uint64_t> /*value*/, int /*fd*/)
    {
        return false;
    }
    // A write to eventfd `fd` raises an edge on GSI `gsi` inside the engine (KVM irqfd).
    virtual Result<bool> add_irq_notifier(uint32_t /*gsi*/, int /*fd*/) { return false; }

    // --- Snapshots, clones, migration (call with every vCPU stopped) -----------------------------
    // The interrupt controllers, timers and guest clock in engine-neutral form (vCPU state is
    // each Vcpu's get_state()). A state saved on one engine restores on the other.
    virtual Result<MachineState> save_machine() { return make_error("the {} engine cannot save its state", name()); }
    virtual Result<void> restore_machine(const MachineState& /*state*/)
    {
        return make_error("the {} engine cannot restore a saved state", name());
    }
    // Where restore_machine() goes in a restore: the soft engine's clock must be set before its
    // vCPUs take their TSCs (first); KVM's interrupt controllers must not deliver into local APICs
    // that set_state() then overwrites (after the vCPUs).
    virtual bool restore_machine_after_vcpus() const { return false; }
    // Makes vCPU `vcpu` (created, not yet run) present `table` — the CPU a restored guest saw —
    // instead of the engine's own model. false: this engine presents only its own model (a
    // restore then checks it offers every feature the table has).
    virtual Result<bool> present_cpuid(uint32_t /*vcpu*/, const CpuidTable& /*table*/) { return false; }
    // The CPUID leaves vCPU `vcpu` presents to the guest.
    virtual Result<CpuidTable> cpuid_table(uint32_t /*vcpu*/)
    {
        return make_error("the {} engine cannot report its CPUID", name());
    }
    // Pages the guest writes are recorded in `bitmap` (one bit per 4 KiB guest-physical page) from
    // now on, until stop_dirty_tracking(); collect_dirty() adds what the engine saw since the last
    // call to `bitmap` (KVM: its dirty log; the soft engine marks directly). Writes the VMM makes
    // through GuestMemory are recorded by the VMM itself.
    virtual Result<void> start_dirty_tracking(DirtyBitmap& /*bitmap*/)
    {
        return make_error("the {} engine cannot track dirty pages", name());
    }
    virtual Result<void> collect_dirty(DirtyBitmap& /*bitmap*/) { return {}; }
    virtual void stop_dirty_tracking() { }
};

} // namespace vessel
