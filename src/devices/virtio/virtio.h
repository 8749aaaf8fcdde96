// virtio 1.x (OASIS virtio v1.2) shared definitions and the device-side interface every virtio
// device implements. A device sees only: its negotiated features, its queues (already validated
// against guest RAM), guest memory, and a VirtioInterrupt to signal the driver. It never sees
// the transport (virtio-mmio here) nor any CPU engine.
//
// Threads: the transport calls a device from vCPU threads (config space, notify, activate,
// reset; serialised by the transport's lock). A device may move queue work to its own thread
// (blk, net, vsock); then reset() and shutdown() must not return before that thread has stopped
// touching the queues and guest memory.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "base/counters.h"
#include "base/result.h"

namespace vessel {

class GuestMemory;
class MetricsReport;

namespace virtio {

class Queue;

// Device types (virtio v1.2, 5 "Device Types").
enum class DeviceType : uint32_t {
    Net = 1,
    Block = 2,
    Console = 3,
    Rng = 4,
    Balloon = 5,
    Vsock = 19,
};

// Feature bits common to all devices (6 "Reserved Feature Bits").
constexpr uint64_t kFRingIndirectDesc = 1ULL << 28;
constexpr uint64_t kFRingEventIdx = 1ULL << 29;
constexpr uint64_t kFVersion1 = 1ULL << 32;

// Device status bits (2.1).
constexpr uint32_t kStatusAcknowledge = 1;
constexpr uint32_t kStatusDriver = 2;
constexpr uint32_t kStatusDriverOk = 4;
constexpr uint32_t kStatusFeaturesOk = 8;
constexpr uint32_t kStatusNeedsReset = 64;
constexpr uint32_t kStatusFailed = 128;

// How a device tells the driver something happened. Implemented by the transport.
class VirtioInterrupt {
public:
    virtual ~VirtioInterrupt() = default;
    // Used buffers were added to a queue (only call it when Queue::needs_interrupt() said so).
    virtual void signal_queue(uint16_t queue) = 0;
    // The device's configuration space changed.
    virtual void signal_config() = 0;
    // The device hit an unrecoverable driver error (e.g. a malformed descriptor chain): it
    // stops processing until the driver resets it; the driver sees DEVICE_NEEDS_RESET.
    virtual void device_error(std::string_view why) = 0;
};

// What a device gets when the driver sets DRIVER_OK.
struct ActivateContext {
    GuestMemory* memory { nullptr };
    VirtioInterrupt* interrupt { nullptr };
    uint64_t features { 0 }; // negotiated (driver-accepted) feature bits
    std::span<Queue> queues; // one per queue of the device; !ready() ones are unused
    // A snapshot restore activates the device paused, as the VM it belongs to: it takes nothing
    // from the queues and touches no guest memory (no thread runs) until resume().
    bool paused { false };
};

class VirtioDevice {
public:
    virtual ~VirtioDevice() = default;
    virtual DeviceType type() const = 0;
    virtual std::string_view name() const = 0;
    // Feature bits the device offers, device-specific ones included. The transport adds
    // VERSION_1, INDIRECT_DESC and EVENT_IDX (handled by the shared queue code).
    virtual uint64_t features() const = 0;
    // Largest size of each queue; the vector's length is the number of queues.
    virtual std::vector<uint16_t> queue_max_sizes() const = 0;
    // Device-specific configuration space (offset 0 = the transport's config window).
    // Out-of-range reads return zeros; writes to read-only fields are ignored.
    virtual void read_config(uint64_t offset, std::span<uint8_t> data) = 0;
    virtual void write_config(uint64_t /*offset*/, std::span<const uint8_t> /*data*/) { }
    // The driver set DRIVER_OK. `ctx` (and the queues it spans) stay valid until reset().
    // An error makes the transport report DEVICE_NEEDS_RESET.
    virtual Result<void> activate(const ActivateContext& ctx) = 0;
    // The driver notified queue `queue` (only called while activated).
    virtual void notify(uint16_t queue) = 0;
    // The driver reset the device (status 0): forget all queue state; the device may be
    // activated again later.
    virtual void reset() = 0;
    // The VM is going away: stop any threads; no more guest-memory access after it returns.
    virtual void shutdown() { reset(); }
    // The VM pauses (only called while activated): stop taking requests from the queues, finish
    // the ones in flight (completions and their interrupts included) and return only when the
    // device will touch neither its queues nor guest memory until resume(). Notifications that
    // arrive meanwhile are remembered and acted on by resume(). Host-side input (a tap's frames,
    // vsock connections) waits in the host (socket buffers), bounded as it is while running.
    // Devices that only work on the notifying vCPU's thread have nothing to do.
    virtual void pause() { }
    virtual void resume() { }
    // Snapshots (the transport's part is MmioTransport::save_state/restore_state). save_state():
    // what the device keeps beyond its queues' positions and guest RAM (host-side input not yet
    // delivered, chains it holds, values the driver wrote), as JSON with every field named; only
    // called while paused (or never activated). restore_state(): on a device freshly built from
    // the same configuration, after activate() (ActivateContext::paused) if the driver had
    // activated it, before anything else; the state is untrusted: unknown fields are ignored,
    // a missing or malformed one is an error naming it, and nothing it says may make the device
    // touch host memory outside guest RAM. Stateless devices keep the defaults.
    virtual nlohmann::json save_state() const { return nlohmann::json::object(); }
    virtual Result<void> restore_state(const nlohmann::json& /*state*/) { return {}; }
    // Counters under Firecracker's field names for this kind of device (any thread).
    virtual void report_metrics(MetricsReport& /*out*/) const { }
};

} // namespace virtio
} // namespace vessel
