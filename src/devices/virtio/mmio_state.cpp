// Snapshot state of a virtio-mmio transport and the device behind it (see mmio.h):
//
//   { "device_type": 2, "device_features": offered bits (informational),
//     "status", "driver_features" (both 32-bit halves), "device_features_sel",
//     "driver_features_sel", "queue_sel", "interrupt_status", "config_generation",
//     "queues": [ { "size", "ready", "desc_addr", "avail_addr", "used_addr",
//                   "next_avail", "next_used", "signalled_used", "notifications_suppressed" } ...],
//     "device": { the device's own state (VirtioDevice::save_state) } }
//
// Restoring reads and checks everything before it changes anything: the device type, the driver's
// features against what this device offers, the status bits' consistency, and per queue a size
// that is a power of two within the device's maximum, indices within u16 and at most a queue's
// worth apart, and (for a ready queue) rings aligned and wholly inside guest RAM. Only then are
// the registers set and, if the driver had set DRIVER_OK, the queues and the device activated
// (paused); the device's own state goes last, so that it can take back the chains it held.
#include <string>

#include "base/log.h"
#include "devices/virtio/mmio.h"
#include "devices/virtio/state_json.h"
#include "memory/guest_memory.h"

namespace vessel::virtio {

namespace {

using state::Json;

std::string type_name(uint64_t type)
{
    switch (type) {
    case static_cast<uint32_t>(DeviceType::Net): return "net (type 1)";
    case static_cast<uint32_t>(DeviceType::Block): return "blk (type 2)";
    case static_cast<uint32_t>(DeviceType::Console): return "console (type 3)";
    case static_cast<uint32_t>(DeviceType::Rng): return "rng (type 4)";
    case static_cast<uint32_t>(DeviceType::Balloon): return "balloon (type 5)";
    case static_cast<uint32_t>(DeviceType::Vsock): return "vsock (type 19)";
    default: return fmt::format("type {}", type);
    }
}

// A queue's state, read and checked, not applied yet.
struct QueueState {
    uint16_t size { 0 };
    bool ready { false };
    uint64_t desc { 0 }, avail { 0 }, used { 0 };
    Queue::Position position;
};

Json save_queue(const Queue& q)
{
    Queue::Position p = q.position();
    return Json {
        { "size", q.size() },
        { "ready", q.ready() },
        { "desc_addr", q.desc_addr() },
        { "avail_addr", q.avail_addr() },
        { "used_addr", q.used_addr() },
        { "next_avail", p.next_avail },
        { "next_used", p.next_used },
        { "signalled_used", p.signalled_used },
        { "notifications_suppressed", p.suppressed },
    };
}

Result<QueueState> parse_queue(const Json& j, uint16_t max_size, const GuestMemory& memory, const std::string& what)
{
    QueueState s;
    s.size = static_cast<uint16_t>(TRY(state::get_uint(j, "size", what, 0xffff)));
    s.ready = TRY(state::get_bool(j, "ready", what));
    s.desc = TRY(state::get_uint(j, "desc_addr", what));
    s.avail = TRY(state::get_uint(j, "avail_addr", what));
    s.used = TRY(state::get_uint(j, "used_addr", what));
    s.position.next_avail = static_cast<uint16_t>(TRY(state::get_uint(j, "next_avail", what, 0xffff)));
    s.position.next_used = static_cast<uint16_t>(TRY(state::get_uint(j, "next_used", what, 0xffff)));
    s.position.signalled_used = static_cast<uint16_t>(TRY(state::get_uint(j, "signalled_used", what, 0xffff)));
    s.position.suppressed = TRY(state::get_bool(j, "notifications_suppressed", what));

    // A queue the driver has not made ready yet may still have size 0 (it is checked again
    // when the driver makes it ready); one in use must have a size the rings can have.
    bool pow2 = s.size != 0 && (s.size & (s.size - 1)) == 0;
    if (s.size > max_size || (!pow2 && (s.ready || s.size != 0)))
        return make_error("{}: size {} is not a power of two up to {}", what, s.size, max_size);
    if (!s.ready) {
        // Indices only move while a queue is live; a driver reset sets them back to zero.
        const Queue::Position& p = s.position;
        if (p.next_avail || p.next_used || p.signalled_used || p.suppressed)
            return make_error("{}: not ready, yet its indices are not zero", what);
        return s;
    }
    if (s.desc % 16 || s.avail % 2 || s.used % 4)
        return make_error("{}: rings misaligned (descriptors {:#x}, driver area {:#x}, device area {:#x})", what,
            s.desc, s.avail, s.used);
    // The ring sizes of a split queue (2.7): 16-byte descriptors; flags, idx, ring, used_event;
    // flags, idx, 8-byte used elements, avail_event.
    if (!memory.contains(s.desc, 16ULL * s.size) || !memory.contains(s.avail, 6 + 2ULL * s.size)
        || !memory.contains(s.used, 6 + 8ULL * s.size))
        return make_error("{}: rings outside guest RAM (descriptors {:#x}, driver area {:#x}, device area {:#x}, "
                          "size {})",
            what, s.desc, s.avail, s.used, s.size);
    // The device can have taken at most a queue's worth of chains it has not returned.
    uint16_t outstanding = static_cast<uint16_t>(s.position.next_avail - s.position.next_used);
    if (outstanding > s.size)
        return make_error("{}: next_avail {} is {} past next_used {} on a queue of {}", what, s.position.next_avail,
            outstanding, s.position.next_used, s.size);
    return s;
}

} // namespace

Json MmioTransport::save_state() const
{
    std::lock_guard lock(m_lock);
    if (m_activated && !m_paused && !m_shut_down)
        log_warn("{}: state saved while the device runs (not paused): it may not be consistent", m_name);
    Json queues = Json::array();
    for (const Queue& q : m_queues)
        queues.push_back(save_queue(q));
    return Json {
        { "device_type", static_cast<uint32_t>(m_device->type()) },
        { "device_features", m_device_features },
        { "status", m_status.load() },
        { "driver_features", m_driver_features },
        { "device_features_sel", m_device_features_sel },
        { "driver_features_sel", m_driver_features_sel },
        { "queue_sel", m_queue_sel },
        { "interrupt_status", m_isr.load() },
        { "config_generation", m_config_generation.load() },
        { "queues", std::move(queues) },
        { "device", m_device->save_state() },
    };
}

Result<void> MmioTransport::restore_state(const Json& state)
{
    std::lock_guard lock(m_lock);
    if (m_shut_down)
        return make_error("{}: cannot restore a state into a device that was shut down", m_name);
    if (m_activated || m_status.load() != 0)
        return make_error(
            "{}: a state is only restored into a freshly built device (the driver has set this one up)", m_name);
    if (auto restored = restore_locked(state); !restored.ok()) {
        reset_locked(); // back to what a fresh transport is (the device reset if it was activated)
        m_isr.store(0);
        m_config_generation.store(0);
        return restored.release_error().with_context(fmt::format("{} state", m_name));
    }
    return {};
}

Result<void> MmioTransport::restore_locked(const Json& s)
{
    constexpr std::string_view what = "transport";
    // --- read and check everything ---
    uint64_t type = TRY(state::get_uint(s, "device_type", what, UINT32_MAX));
    uint32_t own_type = static_cast<uint32_t>(m_device->type());
    if (type != own_type)
        return make_error("the state is for a {} device, this one is {}", type_name(type), type_name(own_type));
    TRY(state::get_uint(s, "device_features", what)); // informational: what matters is the driver's subset
    uint32_t status = static_cast<uint32_t>(TRY(state::get_uint(s, "status", what, UINT32_MAX)));
    uint64_t driver_features = TRY(state::get_uint(s, "driver_features", what));
    if (uint64_t extra = driver_features & ~m_device_features)
        return make_error("the driver accepted features {:#x} that this {} device does not offer (it offers {:#x})",
            extra, m_device->name(), m_device_features);
    if ((status & kStatusFeaturesOk) && !(driver_features & kFVersion1))
        return make_error(
            "status {:#x} has FEATURES_OK without VERSION_1 in the driver's features {:#x}", status, driver_features);
    bool failed = status & (kStatusNeedsReset | kStatusFailed);
    // The device was activated and working: it is activated again. One that had failed waits,
    // as it did, for the driver's reset.
    bool live = (status & kStatusDriverOk) && !failed;
    if (live && !(status & kStatusFeaturesOk))
        return make_error("status {:#x} has DRIVER_OK without FEATURES_OK", status);
    uint32_t device_sel = static_cast<uint32_t>(TRY(state::get_uint(s, "device_features_sel", what, UINT32_MAX)));
    uint32_t driver_sel = static_cast<uint32_t>(TRY(state::get_uint(s, "driver_features_sel", what, UINT32_MAX)));
    uint32_t queue_sel = static_cast<uint32_t>(TRY(state::get_uint(s, "queue_sel", what, UINT32_MAX)));
    uint32_t isr = static_cast<uint32_t>(TRY(state::get_uint(s, "interrupt_status", what, UINT32_MAX)));
    uint32_t generation = static_cast<uint32_t>(TRY(state::get_uint(s, "config_generation", what, UINT32_MAX)));
    const Json* queues = TRY(state::get_array(s, "queues", what, 0xffff));
    if (queues->size() != m_queues.size())
        return make_error(
            "the state has {} queues, the {} device has {}", queues->size(), m_device->name(), m_queues.size());
    std::vector<QueueState> parsed;
    parsed.reserve(m_queues.size());
    for (size_t i = 0; i < m_queues.size(); ++i)
        parsed.push_back(TRY(parse_queue((*queues)[i], m_queues[i].max_size(), m_memory, fmt::format("queue {}", i))));
    const Json* device = TRY(state::get_object(s, "device", what));

    // --- apply ---
    m_driver_features = driver_features;
    m_device_features_sel = device_sel;
    m_driver_features_sel = driver_sel;
    m_queue_sel = queue_sel;
    for (size_t i = 0; i < m_queues.size(); ++i) {
        Queue& q = m_queues[i];
        const QueueState& p = parsed[i];
        q.reset();
        q.set_size(p.size);
        q.set_desc_addr(p.desc);
        q.set_avail_addr(p.avail);
        q.set_used_addr(p.used);
        q.set_ready(p.ready);
        q.set_position(p.position);
    }
    m_status.store(status);
    m_isr.store(isr);
    m_config_generation.store(generation);
    if (live) {
        // As write_status() at DRIVER_OK, except that the device starts paused.
        for (size_t i = 0; i < m_queues.size(); ++i)
            if (m_queues[i].ready())
                TRY_CTX(m_queues[i].activate(m_memory, m_driver_features), fmt::format("queue {}", i));
        ActivateContext ctx;
        ctx.memory = &m_memory;
        ctx.interrupt = this;
        ctx.features = m_driver_features;
        ctx.queues = std::span<Queue>(m_queues);
        ctx.paused = true;
        TRY_CTX(m_device->activate(ctx), "activating the device");
        m_activated = true;
        m_paused = true;
    }
    TRY_CTX(m_device->restore_state(*device), fmt::format("the {} device", m_device->name()));
    return {};
}

} // namespace vessel::virtio
