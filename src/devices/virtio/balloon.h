// virtio-balloon (virtio v1.2, 5.5): the host asks the guest to give back memory.
//
// Queues: inflateq (0), deflateq (1), statsq (2, with VIRTIO_BALLOON_F_STATS_VQ). Features offered:
// STATS_VQ and DEFLATE_ON_OOM (the guest may take pages back under memory pressure rather than
// fail allocations: the host's target is a wish, not a limit).
//
// Configuration: num_pages (the balloon size the host wants, in 4 KiB pages) and actual (what the
// guest has put in, written by the driver). The target is set at start (--balloon-target) and by
// set_target(); changing it at run time from outside the process comes with the API socket.
//
// Inflate: every PFN the guest gives (le32, 4 KiB pages whatever the guest's page size) is checked
// to lie in guest RAM, and its memory is released: guest RAM is a shared mapping of a memfd, so
// punching a hole in the file (fallocate PUNCH_HOLE|KEEP_SIZE) frees the page and unmaps it from
// every mapping at once (RssShmem drops, KVM's mappings are invalidated through its MMU
// notifier); the next guest access finds a fresh zero page. Runs of consecutive PFNs are released
// with one call. Bad PFNs (and any beyond kMaxPfnsPerBuffer in one buffer) are skipped and
// counted. The soft engine is told the contents changed (GuestMemory::note_written). With
// --hugepages the memfd only punches whole huge pages, so 4 KiB releases fail and are counted:
// the balloon then only lends the pages to the host on paper.
// Deflate: nothing to do (without MUST_TELL_HOST the guest may already be using the pages).
//
// Statistics: the driver keeps one buffer in statsq. The device holds it; the guest's values are
// parsed and kept when it arrives, and request_stats() hands it back so the guest refills it
// (5.5.6.3). Fresh statistics are also requested whenever the guest reports that the balloon
// reached the target.
//
// Threads: activate/notify/reset/config accesses come under the transport's lock on vCPU threads;
// set_target()/request_stats()/the getters may come from any thread. m_mutex serialises them.
//
// VM pause: all queue work is done under m_mutex by whoever calls in, so pause() takes it and marks
// the device paused. Meanwhile notifications leave the queues alone, request_stats() and the
// reached-target request only note that the statistics buffer is due back, and set_target()
// changes num_pages but holds the configuration interrupt back (a paused guest gets no events);
// resume() does all of it.
#pragma once

#include <array>
#include <cstdint>
#include <mutex>
#include <optional>

#include "base/counters.h"
#include "devices/virtio/queue.h"
#include "devices/virtio/virtio.h"

namespace vessel::virtio {

// Firecracker's balloon metrics that this device can tell (totals since construction).
struct BalloonMetrics {
    Counter inflate_count; // notifications on inflateq
    Counter deflate_count; // notifications on deflateq
    Counter stats_updates_count; // statistics buffers received
    Counter stats_update_fails; // ... with an entry that could not be taken (unknown tag, cut short)
};

class BalloonDevice final : public VirtioDevice {
public:
    static constexpr uint64_t kFMustTellHost = 1ULL << 0;
    static constexpr uint64_t kFStatsVq = 1ULL << 1;
    static constexpr uint64_t kFDeflateOnOom = 1ULL << 2;

    static constexpr uint16_t kInflateQueue = 0;
    static constexpr uint16_t kDeflateQueue = 1;
    static constexpr uint16_t kStatsQueue = 2;
    static constexpr uint16_t kQueueSize = 256;
    static constexpr uint64_t kPageSize = 4096;
    // Configuration space: num_pages, actual (le32 each); the fields after them belong to
    // features not offered and read as zero.
    static constexpr uint64_t kConfigSize = 8;

    // Statistics tags (5.5.6.3).
    enum StatTag : uint16_t {
        kStatSwapIn = 0,
        kStatSwapOut = 1,
        kStatMajorFaults = 2,
        kStatMinorFaults = 3,
        kStatFreeMemory = 4,
        kStatTotalMemory = 5,
        kStatAvailableMemory = 6,
        kStatDiskCaches = 7,
        kStatHugetlbAllocations = 8,
        kStatHugetlbFailures = 9,
        kStatTagCount = 10,
    };
    // PFNs taken from one inflate/deflate buffer (Linux sends at most 256); the rest are ignored
    // and counted. Bounds the work one notification can cause (each run is a syscall).
    static constexpr uint64_t kMaxPfnsPerBuffer = 1024;
    // Largest stats buffer parsed (the spec defines 10 tags of 10 bytes; unknown tags are
    // skipped, so leave room for a newer guest's).
    static constexpr uint64_t kMaxStatsBytes = 64 * 10;

    struct GuestStats {
        std::array<std::optional<uint64_t>, kStatTagCount> values;
        uint64_t updates { 0 }; // buffers received so far
    };

    struct Counters {
        uint64_t inflated_pages { 0 }; // PFNs accepted by inflateq
        uint64_t released_bytes { 0 }; // holes punched (pages the host never backed count too)
        uint64_t release_failures { 0 };
        uint64_t deflated_pages { 0 };
        uint64_t bad_pfns { 0 }; // outside guest RAM: ignored
        uint64_t excess_pfns { 0 }; // beyond kMaxPfnsPerBuffer in one buffer: ignored
    };

    // `target_bytes`: initial balloon size (rounded down to 4 KiB pages).
    explicit BalloonDevice(uint64_t target_bytes = 0);

    // VirtioDevice
    DeviceType type() const override { return DeviceType::Balloon; }
    std::string_view name() const override { return "balloon"; }
    uint64_t features() const override { return kFStatsVq | kFDeflateOnOom; }
    std::vector<uint16_t> queue_max_sizes() const override { return { kQueueSize, kQueueSize, kQueueSize }; }
    void read_config(uint64_t offset, std::span<uint8_t> data) override;
    void write_config(uint64_t offset, std::span<const uint8_t> data) override;
    Result<void> activate(const ActivateContext& ctx) override;
    void notify(uint16_t queue) override;
    void reset() override;
    void pause() override;
    void resume() override;
    // Snapshots: the target (num_pages, which wins over the configuration's), actual as the
    // driver wrote it, the last statistics and whether a target/statistics request waits for
    // resume. The statistics buffer the device holds is recorded by its descriptor head and
    // taken again (validated) by the restored device, which returns it when statistics are next
    // requested, as the protocol wants (5.5.6.3); the statistics queue's position is not rewound.
    // There is no polling interval here: whoever calls request_stats() keeps its own.
    nlohmann::json save_state() const override;
    Result<void> restore_state(const nlohmann::json& state) override;
    void report_metrics(MetricsReport& out) const override;
    const BalloonMetrics& metrics() const { return m_metrics; }

    // Host side (any thread).
    void set_target(uint64_t bytes);
    uint32_t target_pages() const;
    uint32_t actual_pages() const;
    // Returns the held statistics buffer to the guest so that it sends fresh values (while
    // paused: at resume). Returns false if the device holds none (no STATS_VQ, or a request is
    // already outstanding).
    bool request_stats();
    GuestStats stats() const;
    Counters counters() const;

private:
    // All with m_mutex held.
    void process_pfns(uint16_t queue);
    void process_stats();
    bool return_stats_buffer();
    void release(uint64_t gpa, uint64_t len);
    void fail(std::string_view why);
    bool active() const { return m_ctx.interrupt != nullptr && !m_failed; }
    bool running() const { return active() && !m_paused; }

    mutable std::mutex m_mutex;
    ActivateContext m_ctx;
    bool m_failed { false };
    bool m_paused { false };
    bool m_config_due { false }; // the target changed while paused: interrupt at resume
    bool m_stats_due { false }; // the statistics buffer goes back at resume
    uint32_t m_num_pages { 0 };
    uint32_t m_actual { 0 };
    bool m_target_reported { false }; // "reached the target" logged (and stats requested) for this target
    Chain m_chain;
    Chain m_stats_chain; // the guest's statistics buffer while the device holds it
    bool m_stats_held { false };
    GuestStats m_stats;
    Counters m_counters;
    BalloonMetrics m_metrics; // atomics: read without m_mutex
};

} // namespace vessel::virtio
