#include "devices/virtio/mmio.h"

#include <cstring>

#include "base/log.h"
#include "memory/guest_memory.h"

namespace vessel::virtio {

MmioTransport::MmioTransport(std::shared_ptr<VirtioDevice> device, GuestMemory& memory, IrqLine irq)
    : m_device(std::move(device))
    , m_memory(memory)
    , m_irq(std::move(irq))
    , m_name(fmt::format("virtio-mmio ({})", m_device->name()))
    , m_device_features(m_device->features() | kFVersion1 | kFRingIndirectDesc | kFRingEventIdx)
{
    for (uint16_t max : m_device->queue_max_sizes())
        m_queues.emplace_back(std::min<uint16_t>(max, kMaxQueueSize));
    for (auto& q : m_queues)
        q.reset();
}

MmioTransport::~MmioTransport()
{
    shutdown();
}

void MmioTransport::shutdown()
{
    std::lock_guard lock(m_lock);
    if (m_shut_down)
        return;
    m_shut_down = true;
    m_device->shutdown();
    m_activated = false;
    m_paused = false;
}

void MmioTransport::pause()
{
    // The lock is held across the device's pause: no register access (there is none from paused
    // vCPUs) or fast-path notification can activate or reset the device meanwhile. Completions
    // the device finishes while pausing only touch the atomics of signal_queue().
    std::lock_guard lock(m_lock);
    if (!m_activated || m_shut_down || m_paused)
        return;
    m_device->pause();
    m_paused = true;
}

void MmioTransport::resume()
{
    std::lock_guard lock(m_lock);
    if (!m_paused)
        return;
    m_paused = false;
    if (m_activated && !m_shut_down)
        m_device->resume();
}

Queue* MmioTransport::selected_queue()
{
    return m_queue_sel < m_queues.size() ? &m_queues[m_queue_sel] : nullptr;
}

void MmioTransport::read(uint64_t offset, std::span<uint8_t> data)
{
    std::lock_guard lock(m_lock);
    if (offset >= mmio_reg::kConfig) {
        m_device->read_config(offset - mmio_reg::kConfig, data);
        return;
    }
    if (data.size() != 4 || offset % 4) { // registers are 32-bit (4.2.2)
        std::memset(data.data(), 0, data.size());
        return;
    }
    uint32_t v = read_register(offset);
    std::memcpy(data.data(), &v, 4);
}

void MmioTransport::write(uint64_t offset, std::span<const uint8_t> data)
{
    std::lock_guard lock(m_lock);
    if (m_shut_down)
        return;
    if (offset >= mmio_reg::kConfig) {
        m_device->write_config(offset - mmio_reg::kConfig, data);
        return;
    }
    if (data.size() != 4 || offset % 4)
        return;
    uint32_t v;
    std::memcpy(&v, data.data(), 4);
    write_register(offset, v);
}

uint32_t MmioTransport::read_register(uint64_t offset)
{
    using namespace mmio_reg;
    Queue* q = selected_queue();
    switch (offset) {
    case kMagic: return kMmioMagic;
    case kVersion: return 2;
    case kDeviceId: return static_cast<uint32_t>(m_device->type());
    case kVendorId: return kMmioVendor;
    case kDeviceFeatures:
        return m_device_features_sel < 2 ? static_cast<uint32_t>(m_device_features >> (32 * m_device_features_sel)) : 0;
    case kQueueNumMax: return q ? q->max_size() : 0;
    case kQueueReady: return q && q->ready() ? 1 : 0;
    case kInterruptStatus: return m_isr.load();
    case kStatus: return m_status.load();
    case kQueueDescLow: return q ? static_cast<uint32_t>(q->desc_addr()) : 0;
    case kQueueDescHigh: return q ? static_cast<uint32_t>(q->desc_addr() >> 32) : 0;
    case kQueueDriverLow: return q ? static_cast<uint32_t>(q->avail_addr()) : 0;
    case kQueueDriverHigh: return q ? static_cast<uint32_t>(q->avail_addr() >> 32) : 0;
    case kQueueDeviceLow: return q ? static_cast<uint32_t>(q->used_addr()) : 0;
    case kQueueDeviceHigh: return q ? static_cast<uint32_t>(q->used_addr() >> 32) : 0;
    case kShmLenLow:
    case kShmLenHigh:
    case kShmBaseLow:
    case kShmBaseHigh: return 0xffffffff; // no shared memory regions
    case kConfigGeneration: return m_config_generation.load();
    default: return 0;
    }
}

void MmioTransport::write_register(uint64_t offset, uint32_t value)
{
    using namespace mmio_reg;
    Queue* q = selected_queue();
    // Queue set-up is only allowed while the driver configures the device and the queue is not
    // live yet (4.2.3.2); later writes are ignored.
    bool configurable = !(m_status.load() & kStatusDriverOk) && q && !q->ready();
    auto set_low = [](uint64_t old, uint32_t v) { return (old & ~0xffffffffULL) | v; };
    auto set_high = [](uint64_t old, uint32_t v) { return (old & 0xffffffffULL) | (uint64_t(v) << 32); };
    switch (offset) {
    case kDeviceFeaturesSel: m_device_features_sel = value; break;
    case kDriverFeatures:
        if (!(m_status.load() & kStatusFeaturesOk) && m_driver_features_sel < 2) {
            uint64_t shift = 32ULL * m_driver_features_sel;
            m_driver_features = (m_driver_features & ~(0xffffffffULL << shift)) | (uint64_t(value) << shift);
        }
        break;
    case kDriverFeaturesSel: m_driver_features_sel = value; break;
    case kQueueSel: m_queue_sel = value; break;
    case kQueueNum:
        if (configurable)
            q->set_size(static_cast<uint16_t>(std::min<uint32_t>(value, 0xffff)));
        break;
    case kQueueReady:
        if (q && !(m_status.load() & kStatusDriverOk))
            q->set_ready(value == 1);
        break;
    case kQueueNotify: notify_locked(value); break;
    case kInterruptAck: m_isr.fetch_and(~value); break;
    case kStatus: write_status(value); break;
    case kQueueDescLow:
        if (configurable)
            q->set_desc_addr(set_low(q->desc_addr(), value));
        break;
    case kQueueDescHigh:
        if (configurable)
            q->set_desc_addr(set_high(q->desc_addr(), value));
        break;
    case kQueueDriverLow:
        if (configurable)
            q->set_avail_addr(set_low(q->avail_addr(), value));
        break;
    case kQueueDriverHigh:
        if (configurable)
            q->set_avail_addr(set_high(q->avail_addr(), value));
        break;
    case kQueueDeviceLow:
        if (configurable)
            q->set_used_addr(set_low(q->used_addr(), value));
        break;
    case kQueueDeviceHigh:
        if (configurable)
            q->set_used_addr(set_high(q->used_addr(), value));
        break;
    default: break; // read-only or unknown: ignored
    }
}

void MmioTransport::notify_locked(uint32_t queue)
{
    if (m_activated && queue < m_queues.size() && m_queues[queue].active() && !(m_status.load() & kStatusNeedsReset))
        m_device->notify(static_cast<uint16_t>(queue));
}

void MmioTransport::notify_queue(uint16_t queue)
{
    std::lock_guard lock(m_lock);
    if (!m_shut_down)
        notify_locked(queue);
}

void MmioTransport::reset_locked()
{
    if (m_activated)
        m_device->reset();
    m_activated = false;
    m_paused = false;
    for (auto& q : m_queues)
        q.reset();
    m_driver_features = 0;
    m_device_features_sel = m_driver_features_sel = m_queue_sel = 0;
    m_isr.store(0);
    m_status.store(0);
}

void MmioTransport::write_status(uint32_t value)
{
    if (value == 0) {
        reset_locked();
        return;
    }
    uint32_t old = m_status.load();
    // FEATURES_OK only sticks if the driver accepted a subset of what we offer, VERSION_1 included.
    if ((value & kStatusFeaturesOk) && !(old & kStatusFeaturesOk)) {
        if ((m_driver_features & ~m_device_features) || !(m_driver_features & kFVersion1)) {
            log_warn("{}: driver accepted features {:#x} not offered ({:#x}) or without VERSION_1", m_name,
                m_driver_features, m_device_features);
            value &= ~kStatusFeaturesOk;
        }
    }
    // The driver can only add bits (2.1); NEEDS_RESET is the device's.
    uint32_t status = old | (value & ~kStatusNeedsReset);
    m_status.store(status);
    if ((status & kStatusDriverOk) && !(old & kStatusDriverOk) && !m_activated && !m_shut_down) {
        if (!(status & kStatusFeaturesOk)) {
            device_error("DRIVER_OK without FEATURES_OK");
            return;
        }
        for (auto& q : m_queues) {
            if (!q.ready())
                continue;
            if (auto r = q.activate(m_memory, m_driver_features); !r.ok()) {
                device_error(r.error().message());
                return;
            }
        }
        ActivateContext ctx;
        ctx.memory = &m_memory;
        ctx.interrupt = this;
        ctx.features = m_driver_features;
        ctx.queues = std::span<Queue>(m_queues);
        if (auto r = m_device->activate(ctx); !r.ok()) {
            device_error(r.error().message());
            return;
        }
        m_activated = true;
    }
}

void MmioTransport::signal_queue(uint16_t)
{
    m_isr.fetch_or(kInterruptUsedBuffer);
    m_irq.pulse();
}

void MmioTransport::signal_config()
{
    m_config_generation.fetch_add(1);
    m_isr.fetch_or(kInterruptConfigChange);
    m_irq.pulse();
}

void MmioTransport::device_error(std::string_view why)
{
    uint32_t old = m_status.fetch_or(kStatusNeedsReset);
    if (!(old & kStatusNeedsReset)) {
        log_warn("{}: guest driver error, device stopped until reset: {}", m_name, why);
        m_isr.fetch_or(kInterruptConfigChange);
        m_irq.pulse();
    }
}

} // namespace vessel::virtio
