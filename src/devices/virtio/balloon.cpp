#include "devices/virtio/balloon.h"

#include <fcntl.h>
#include <linux/falloc.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "base/log.h"
#include "devices/virtio/state_json.h"
#include "memory/guest_memory.h"

namespace vessel::virtio {

namespace {

constexpr uint64_t kStatEntryBytes = 10; // le16 tag, le64 value, packed
constexpr uint64_t kLoggedBadPfns = 8; // a guest can send millions; log the first few

uint64_t mib(uint64_t pages)
{
    return pages * BalloonDevice::kPageSize >> 20;
}

} // namespace

BalloonDevice::BalloonDevice(uint64_t target_bytes)
    : m_num_pages(static_cast<uint32_t>(std::min<uint64_t>(target_bytes / kPageSize, UINT32_MAX)))
{
}

void BalloonDevice::read_config(uint64_t offset, std::span<uint8_t> data)
{
    std::memset(data.data(), 0, data.size());
    uint8_t config[kConfigSize];
    {
        std::lock_guard lock(m_mutex);
        std::memcpy(config, &m_num_pages, 4); // little-endian host: the layout is the spec's
        std::memcpy(config + 4, &m_actual, 4);
    }
    if (offset >= kConfigSize)
        return;
    size_t n = std::min<uint64_t>(data.size(), kConfigSize - offset);
    std::memcpy(data.data(), config + offset, n);
}

void BalloonDevice::write_config(uint64_t offset, std::span<const uint8_t> data)
{
    std::lock_guard lock(m_mutex);
    // Only `actual` (bytes 4..7) is the driver's to write; bytes are merged so that any access
    // width works.
    uint32_t actual = m_actual;
    for (size_t i = 0; i < data.size(); ++i) {
        uint64_t at = offset + i;
        if (at < 4 || at >= 8)
            continue;
        unsigned shift = static_cast<unsigned>(at - 4) * 8;
        actual = (actual & ~(0xffu << shift)) | (uint32_t(data[i]) << shift);
    }
    if (actual == m_actual)
        return;
    m_actual = actual;
    log_debug("virtio-balloon: the guest's balloon holds {} MiB (target {} MiB)", mib(m_actual), mib(m_num_pages));
    if (m_actual == m_num_pages && !m_target_reported) {
        m_target_reported = true;
        log_info(
            "virtio-balloon: the guest's balloon reached the target of {} MiB ({} MiB handed back to the host so far)",
            mib(m_num_pages), m_counters.released_bytes >> 20);
        return_stats_buffer(); // fresh statistics for the new state
    }
}

Result<void> BalloonDevice::activate(const ActivateContext& ctx)
{
    if (ctx.queues.size() < 3 || !ctx.queues[kInflateQueue].active() || !ctx.queues[kDeflateQueue].active())
        return make_error("virtio-balloon: inflateq and deflateq must both be set up");
    std::lock_guard lock(m_mutex);
    m_ctx = ctx;
    m_failed = false;
    m_config_due = m_stats_due = false;
    m_paused = ctx.paused; // a snapshot restore: resume() does what follows
    // Buffers posted before DRIVER_OK (Linux primes statsq during probe) were not notified.
    process_pfns(kInflateQueue);
    process_pfns(kDeflateQueue);
    process_stats();
    return {};
}

void BalloonDevice::reset()
{
    std::lock_guard lock(m_mutex);
    m_ctx = {};
    m_failed = false;
    m_paused = m_config_due = m_stats_due = false;
    m_stats_held = false;
    m_stats_chain.clear();
    m_actual = 0; // a new driver starts with an empty balloon
    m_target_reported = false;
}

void BalloonDevice::pause()
{
    std::lock_guard lock(m_mutex);
    m_paused = true;
}

void BalloonDevice::resume()
{
    std::lock_guard lock(m_mutex);
    m_paused = false;
    // What the host asked for while paused, then the buffers the driver added (and notified).
    if (std::exchange(m_stats_due, false))
        return_stats_buffer();
    if (std::exchange(m_config_due, false) && running())
        m_ctx.interrupt->signal_config();
    process_pfns(kInflateQueue);
    process_pfns(kDeflateQueue);
    process_stats();
}

nlohmann::json BalloonDevice::save_state() const
{
    std::lock_guard lock(m_mutex);
    nlohmann::json values = nlohmann::json::array();
    for (const auto& v : m_stats.values)
        values.push_back(v ? nlohmann::json(*v) : nlohmann::json(nullptr));
    return {
        { "num_pages", m_num_pages },
        { "actual", m_actual },
        { "target_reported", m_target_reported },
        { "config_due", m_config_due },
        { "stats_due", m_stats_due },
        { "stats", { { "updates", m_stats.updates }, { "values", std::move(values) } } },
        { "stats_buffer", m_stats_held ? nlohmann::json(m_stats_chain.head) : nlohmann::json(nullptr) },
    };
}

Result<void> BalloonDevice::restore_state(const nlohmann::json& state)
{
    constexpr std::string_view what = "virtio-balloon";
    uint32_t num_pages = static_cast<uint32_t>(TRY(state::get_uint(state, "num_pages", what, UINT32_MAX)));
    uint32_t actual = static_cast<uint32_t>(TRY(state::get_uint(state, "actual", what, UINT32_MAX)));
    bool target_reported = TRY(state::get_bool(state, "target_reported", what));
    bool config_due = TRY(state::get_bool(state, "config_due", what));
    bool stats_due = TRY(state::get_bool(state, "stats_due", what));
    const nlohmann::json* stats = TRY(state::get_object(state, "stats", what));
    GuestStats restored;
    restored.updates = TRY(state::get_uint(*stats, "updates", "virtio-balloon stats"));
    // A newer device may know more tags: those are ignored.
    const nlohmann::json* values = TRY(state::get_array(*stats, "values", "virtio-balloon stats", 0xffff));
    for (size_t i = 0; i < values->size() && i < kStatTagCount; ++i) {
        const nlohmann::json& v = (*values)[i];
        if (v.is_null())
            continue;
        restored.values[i] = state::as_uint(v);
        if (!restored.values[i])
            return make_error("virtio-balloon stats: value {} is neither null nor an unsigned integer", i);
    }
    // The held statistics buffer's descriptor head, or null.
    std::optional<uint16_t> held;
    if (!TRY(state::field(state, "stats_buffer", what))->is_null())
        held = static_cast<uint16_t>(TRY(state::get_uint(state, "stats_buffer", what, 0xffff)));

    std::lock_guard lock(m_mutex);
    m_num_pages = num_pages;
    m_actual = actual;
    m_target_reported = target_reported;
    m_stats = restored;
    if (!active())
        return {}; // not activated (or failed): no queue, nothing held, nothing due
    m_config_due = config_due;
    if (held) {
        if (!(m_ctx.features & kFStatsVq) || m_ctx.queues.size() <= kStatsQueue || !m_ctx.queues[kStatsQueue].active())
            return make_error("{}: a statistics buffer is held without a statistics queue", what);
        TRY_CTX(m_ctx.queues[kStatsQueue].take(*held, m_stats_chain), fmt::format("{}: the statistics buffer", what));
        m_stats_held = true;
        m_stats_due = stats_due;
    }
    return {};
}

void BalloonDevice::notify(uint16_t queue)
{
    std::lock_guard lock(m_mutex);
    // Firecracker counts the queue events (a notification, whatever it brings).
    if (active() && queue == kInflateQueue)
        m_metrics.inflate_count.add();
    else if (active() && queue == kDeflateQueue)
        m_metrics.deflate_count.add();
    if (queue == kInflateQueue || queue == kDeflateQueue)
        process_pfns(queue);
    else if (queue == kStatsQueue)
        process_stats();
}

void BalloonDevice::fail(std::string_view why)
{
    m_failed = true;
    m_ctx.interrupt->device_error(why);
}

void BalloonDevice::release(uint64_t gpa, uint64_t len)
{
    // The caller checked [gpa, gpa+len) lies in one RAM region; discard() checks again.
    if (auto r = m_ctx.memory->discard(gpa, len); r.ok()) {
        m_counters.released_bytes += len;
        return;
    } else if (m_counters.release_failures++ == 0) {
        log_warn("virtio-balloon: cannot release guest memory to the host ({}); inflated pages stay allocated",
            r.error().message());
    }
}

void BalloonDevice::process_pfns(uint16_t queue)
{
    if (!running())
        return;
    Queue& q = m_ctx.queues[queue];
    if (!q.active())
        return;
    GuestMemory& memory = *m_ctx.memory;
    bool used = false;
    for (;;) {
        auto popped = q.pop(m_chain);
        if (!popped.ok()) {
            fail(popped.error().message());
            return;
        }
        if (!popped.value())
            break;
        ChainReader reader(m_chain);
        uint64_t count = m_chain.readable_bytes / 4;
        if (count > kMaxPfnsPerBuffer) {
            m_counters.excess_pfns += count - kMaxPfnsPerBuffer;
            count = kMaxPfnsPerBuffer;
        }
        if (queue == kDeflateQueue) {
            // The pages come back zero-filled on their next touch: nothing to do.
            m_counters.deflated_pages += count;
        } else {
            uint64_t run_gpa = 0, run_len = 0;
            for (uint64_t i = 0; i < count; ++i) {
                uint32_t pfn = 0;
                reader.read(std::span(reinterpret_cast<uint8_t*>(&pfn), 4));
                uint64_t gpa = uint64_t(pfn) * kPageSize;
                if (!memory.contains(gpa, kPageSize)) {
                    if (m_counters.bad_pfns++ < kLoggedBadPfns)
                        log_warn("virtio-balloon: the guest inflated PFN {:#x}, outside guest RAM: ignored", pfn);
                    continue;
                }
                ++m_counters.inflated_pages;
                // Consecutive pages within one RAM region are released with one call.
                if (run_len && gpa == run_gpa + run_len && memory.contains(run_gpa, run_len + kPageSize)) {
                    run_len += kPageSize;
                    continue;
                }
                if (run_len)
                    release(run_gpa, run_len);
                run_gpa = gpa;
                run_len = kPageSize;
            }
            if (run_len)
                release(run_gpa, run_len);
        }
        q.add_used(m_chain, 0);
        used = true;
    }
    if (used && q.needs_interrupt())
        m_ctx.interrupt->signal_queue(queue);
}

void BalloonDevice::process_stats()
{
    if (!running() || !(m_ctx.features & kFStatsVq) || m_ctx.queues.size() <= kStatsQueue)
        return;
    Queue& q = m_ctx.queues[kStatsQueue];
    if (!q.active())
        return;
    for (;;) {
        auto popped = q.pop(m_chain);
        if (!popped.ok()) {
            fail(popped.error().message());
            return;
        }
        if (!popped.value())
            break;
        // The driver keeps one buffer here; if it sends another while the device holds one,
        // the older goes back (empty) and the newer is kept.
        if (m_stats_held)
            return_stats_buffer();
        GuestStats fresh;
        fresh.updates = m_stats.updates + 1;
        ChainReader reader(m_chain);
        uint64_t entries = std::min(m_chain.readable_bytes, kMaxStatsBytes) / kStatEntryBytes;
        // Firecracker refuses a buffer with a tag it does not know (or cut short); here the
        // entries that are understood are kept and the buffer counts as a failed update.
        bool failed = m_chain.readable_bytes % kStatEntryBytes != 0;
        for (uint64_t i = 0; i < entries; ++i) {
            uint8_t entry[kStatEntryBytes];
            reader.read(entry);
            uint16_t tag;
            uint64_t value;
            std::memcpy(&tag, entry, 2);
            std::memcpy(&value, entry + 2, 8);
            if (tag < kStatTagCount)
                fresh.values[tag] = value;
            else
                failed = true;
        }
        m_metrics.stats_updates_count.add();
        if (failed)
            m_metrics.stats_update_fails.add();
        m_stats = fresh;
        std::swap(m_stats_chain, m_chain);
        m_stats_held = true;
        auto show = [&](StatTag tag) {
            return m_stats.values[tag] ? fmt::format("{} MiB", *m_stats.values[tag] >> 20) : std::string("-");
        };
        log_at(m_target_reported ? LogLevel::Info : LogLevel::Debug,
            "virtio-balloon: guest statistics #{}: total {}, free {}, available {}, caches {}", m_stats.updates,
            show(kStatTotalMemory), show(kStatFreeMemory), show(kStatAvailableMemory), show(kStatDiskCaches));
    }
}

bool BalloonDevice::return_stats_buffer()
{
    if (m_paused && active() && m_stats_held) {
        bool first = !m_stats_due;
        m_stats_due = true;
        return first;
    }
    if (!running() || !m_stats_held)
        return false;
    Queue& q = m_ctx.queues[kStatsQueue];
    q.add_used(m_stats_chain, 0);
    m_stats_held = false;
    if (q.needs_interrupt())
        m_ctx.interrupt->signal_queue(kStatsQueue);
    return true;
}

void BalloonDevice::set_target(uint64_t bytes)
{
    std::lock_guard lock(m_mutex);
    uint32_t pages = static_cast<uint32_t>(std::min<uint64_t>(bytes / kPageSize, UINT32_MAX));
    if (pages == m_num_pages)
        return;
    m_num_pages = pages;
    m_target_reported = false;
    if (running())
        m_ctx.interrupt->signal_config();
    else if (m_paused && active())
        m_config_due = true;
}

uint32_t BalloonDevice::target_pages() const
{
    std::lock_guard lock(m_mutex);
    return m_num_pages;
}

uint32_t BalloonDevice::actual_pages() const
{
    std::lock_guard lock(m_mutex);
    return m_actual;
}

bool BalloonDevice::request_stats()
{
    std::lock_guard lock(m_mutex);
    return return_stats_buffer();
}

BalloonDevice::GuestStats BalloonDevice::stats() const
{
    std::lock_guard lock(m_mutex);
    return m_stats;
}

BalloonDevice::Counters BalloonDevice::counters() const
{
    std::lock_guard lock(m_mutex);
    return m_counters;
}

void BalloonDevice::report_metrics(MetricsReport& out) const
{
    out.counter("inflate_count", m_metrics.inflate_count.get());
    out.counter("deflate_count", m_metrics.deflate_count.get());
    out.counter("stats_updates_count", m_metrics.stats_updates_count.get());
    out.counter("stats_update_fails", m_metrics.stats_update_fails.get());
}

} // namespace vessel::virtio
