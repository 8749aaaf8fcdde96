// virtio-blk (virtio v1.2, 5.2): a disk backed by a raw image file (or a host block device).
//
// One request queue. The vCPU that notifies only kicks an eventfd; the device's own I/O thread
// pops requests, validates them and hands reads, writes and flushes to io_uring, which moves the
// data straight between the image and the guest's buffers (readv/writev on the segments' host
// pointers) and syncs with IORING_FSYNC_DATASYNC. Requests complete in the order the host
// finishes them. Where io_uring cannot be set up (an old kernel, a seccomp filter) the same thread
// does the I/O with synchronous preadv/pwritev/fdatasync instead, and says so in the log.
// DISCARD and WRITE_ZEROES punch or zero ranges with fallocate() on the I/O thread, falling back
// to writing zeros where the file system cannot.
//
// Every request is validated before any host I/O: the 16-byte header must be there, data lengths
// must be whole 512-byte sectors, sector ranges must lie inside the disk (overflow-safe), the
// status byte is the last device-writable byte. A malformed request completes with IOERR (or
// UNSUPP for an unknown type); a chain without any device-writable byte cannot carry a status,
// so it is treated like a broken chain: DEVICE_NEEDS_RESET.
//
// VM pause stops the I/O thread the way reset() does (everything it submitted completes, with its
// interrupt) but keeps the slots, the queue's indices and the io_uring instance; resume() starts a
// thread again, which first pops whatever the driver queued meanwhile.
//
// Rate limiting (Firecracker's, devices/rate_limiter.h): every request that parses costs one op,
// reads and writes also their data bytes. A request the limiter refuses goes back to the ring
// (undo_pop) and the queue is not looked at again until the limiter unblocks: the I/O thread then
// waits for a kick or the limiter's deadline (poll's timeout, an io_uring timeout), never spins.
// set_rate_limiter() changes the buckets from any thread.
//
// Counters (report_metrics) use Firecracker's block field names; they count from open().
//
// The image is locked with flock() (exclusive, shared for a read-only disk), so two VMMs cannot
// write one image. Durability: FLUSH returns only after fdatasync(), so a write the guest
// flushed survives the VMM being killed (and the host crashing).
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <linux/time_types.h>
#include <sys/uio.h>

#include "base/counters.h"
#include "devices/rate_limiter.h"
#include "devices/virtio/queue.h"
#include "devices/virtio/virtio.h"

struct io_uring;
struct io_uring_sqe;

namespace vessel {

struct DiskConfig;

namespace virtio {

namespace blk {
// Feature bits (5.2.3).
constexpr uint64_t kFSizeMax = 1ULL << 1;
constexpr uint64_t kFSegMax = 1ULL << 2;
constexpr uint64_t kFRo = 1ULL << 5;
constexpr uint64_t kFBlkSize = 1ULL << 6;
constexpr uint64_t kFFlush = 1ULL << 9;
constexpr uint64_t kFDiscard = 1ULL << 13;
constexpr uint64_t kFWriteZeroes = 1ULL << 14;

// Request types (5.2.6).
constexpr uint32_t kTIn = 0;
constexpr uint32_t kTOut = 1;
constexpr uint32_t kTFlush = 4;
constexpr uint32_t kTGetId = 8;
constexpr uint32_t kTGetLifetime = 10;
constexpr uint32_t kTDiscard = 11;
constexpr uint32_t kTWriteZeroes = 13;
constexpr uint32_t kTSecureErase = 14;

// Status byte values.
constexpr uint8_t kSOk = 0;
constexpr uint8_t kSIoErr = 1;
constexpr uint8_t kSUnsupp = 2;

// DISCARD / WRITE_ZEROES segment flags.
constexpr uint32_t kWriteZeroesFlagUnmap = 1;

constexpr uint64_t kSectorSize = 512;
constexpr size_t kHeaderSize = 16; // le32 type, le32 reserved, le64 sector
constexpr size_t kRangeSize = 16; // le64 sector, le32 num_sectors, le32 flags
constexpr size_t kIdBytes = 20; // GET_ID

// Configuration space layout (5.2.4), byte offsets.
namespace cfg {
constexpr size_t kCapacity = 0; // le64, in 512-byte sectors
constexpr size_t kSizeMax = 8; // le32
constexpr size_t kSegMax = 12; // le32
constexpr size_t kBlkSize = 20; // le32
constexpr size_t kMaxDiscardSectors = 36;
constexpr size_t kMaxDiscardSeg = 40;
constexpr size_t kDiscardSectorAlignment = 44;
constexpr size_t kMaxWriteZeroesSectors = 48;
constexpr size_t kMaxWriteZeroesSeg = 52;
constexpr size_t kWriteZeroesMayUnmap = 56; // u8
constexpr size_t kSize = 72; // up to the secure-erase fields (unused)
} // namespace cfg
} // namespace blk

// Firecracker's block metrics that this device can tell (totals since open()).
struct BlkMetrics {
    Counter read_bytes, write_bytes; // data moved (a failed request counts what moved before it failed)
    Counter read_count, write_count, flush_count; // requests that completed OK
    Counter queue_event_count; // notifications from the driver
    Counter invalid_reqs_count; // parsed requests that completed with IOERR or UNSUPP
    Counter execute_fails; // malformed requests (short header, bad length or sector range): IOERR, not charged
    Counter no_avail_buffer; // a notification found no request in the ring
    Counter rate_limiter_throttled_events; // a request deferred, or a notification while the limiter blocks
    Counter rate_limiter_event_count; // the limiter unblocked and the queue was looked at again
    LatencyCounter read_agg, write_agg; // submission to completion, µs
};

class BlkDevice final : public VirtioDevice {
public:
    // Where requests are executed once the device is activated.
    enum class IoMode {
        Auto, // the I/O thread with io_uring; synchronous calls on that thread if io_uring fails
        Sync, // the I/O thread with synchronous preadv/pwritev/fdatasync (the fallback, forced)
        Inline, // no thread: notify() runs requests synchronously on the caller (tests, fuzzing)
    };

    static constexpr uint16_t kQueueSize = 256;
    // Data segments per request: a direct chain is at most the queue size, minus header and status.
    static constexpr uint32_t kSegMax = kQueueSize - 2;
    // DISCARD / WRITE_ZEROES limits: one range is at most 32 MiB, so even the write-zeros
    // fallback keeps the I/O thread busy for a bounded time.
    static constexpr uint32_t kMaxDiscardSectors = 65536;
    static constexpr uint32_t kMaxDiscardSegments = 32;
    static constexpr uint32_t kDiscardAlignmentSectors = 8; // 4 KiB, the usual file-system block

    // Opens and locks the image. Errors name the file: missing, unreadable, a directory, locked
    // by another process, or smaller than one sector. config.rate_limiter limits the requests;
    // `clock` is the limiter's time source (tests; default: the monotonic clock).
    static Result<std::unique_ptr<BlkDevice>> open(
        const DiskConfig& config, IoMode mode = IoMode::Auto, RateLimiterClock clock = {});
    ~BlkDevice() override;
    BlkDevice(const BlkDevice&) = delete;
    BlkDevice& operator=(const BlkDevice&) = delete;

    DeviceType type() const override { return DeviceType::Block; }
    std::string_view name() const override { return "blk"; }
    uint64_t features() const override;
    std::vector<uint16_t> queue_max_sizes() const override { return { kQueueSize }; }
    void read_config(uint64_t offset, std::span<uint8_t> data) override;
    Result<void> activate(const ActivateContext& ctx) override;
    void notify(uint16_t queue) override;
    void reset() override;
    void pause() override;
    void resume() override;
    // Snapshots: nothing is in flight once paused (pause() waits for every submitted request;
    // what was not popped stays in the ring) and the configuration space comes from the image,
    // so the state only records what the guest saw of the disk: a restore onto an image that is
    // now smaller, or read-only where the guest saw it writable, is refused.
    nlohmann::json save_state() const override;
    Result<void> restore_state(const nlohmann::json& state) override;
    void report_metrics(MetricsReport& out) const override;

    // PATCH /drives: Firecracker's update rules (RateLimiter::update); any thread.
    void set_rate_limiter(const RateLimiterConfig& config) { m_limiter.update(config); }
    const RateLimiter& rate_limiter() const { return m_limiter; }
    const BlkMetrics& metrics() const { return m_metrics; }

    const std::string& path() const { return m_path; }
    uint64_t capacity_sectors() const { return m_capacity; }
    bool read_only() const { return m_read_only; }
    // The 20-byte GET_ID answer (NUL-padded).
    const std::array<uint8_t, blk::kIdBytes>& id() const { return m_id; }
    // True while activated with io_uring doing the I/O (false: synchronous calls).
    bool using_io_uring() const { return m_uring_active.load(std::memory_order_relaxed); }
    // Requests completed since open (any status).
    uint64_t completed() const { return m_completed.load(std::memory_order_relaxed); }

    // Test and fuzzing hook: pops and executes every available request synchronously on the
    // calling thread. Only for IoMode::Inline (with an I/O thread it would race it). Nothing
    // retries a rate-limited request by itself in this mode: call it again once unblocked.
    void process_queue_inline();

private:
    struct Request {
        Chain chain;
        std::vector<iovec> iov; // data buffers in guest RAM, advanced as bytes transfer
        size_t iov_next { 0 }; // first iovec with bytes left
        uint32_t type { 0 };
        uint64_t offset { 0 }; // image offset of the next byte to transfer
        uint64_t remaining { 0 }; // bytes left to transfer
        uint32_t written { 0 }; // the used length reported to the driver
        uint8_t* status { nullptr };
        uint64_t len { 0 }; // data bytes of a read or write
        bool parsed { false }; // well-formed (and charged to the limiter); else an execute_fail
        std::chrono::steady_clock::time_point started {}; // submitted to the host (reads, writes)
    };
    enum class Prepared { Done, Io, Drop, Throttled };
    // How fill() starts the I/O of a request.
    enum class Executor { Sync, Uring };

    BlkDevice(int fd, const DiskConfig& config, uint64_t capacity, IoMode mode, RateLimiterClock clock);

    Result<void> start_thread();
    // Stops the I/O thread once what it submitted has completed; requests it has not popped yet
    // stay in the ring.
    void stop_thread();
    // stop_thread() and the io_uring instance released (reset, shutdown).
    void stop_io();
    static void drain_eventfd(int fd);
    void io_thread_sync();
    void io_thread_uring();
    // Pops requests while a slot is free and the limiter lets them through, and starts their
    // I/O. `kicked`: the driver notified (an empty ring then counts as no_avail_buffer).
    void fill(Executor executor, bool kicked);
    Prepared prepare(Request& rq, uint8_t& status);
    // Firecracker's Request::rate_limit: one op, plus the data bytes of a read or write.
    bool charge(uint32_t type, uint64_t len);
    // The limiter's deadline as an io_uring timeout, unless one is already armed.
    void arm_limiter_timer();
    void count_finished(const Request& rq, uint8_t status);
    uint8_t discard_or_zero(uint32_t type, ChainReader& reader);
    uint8_t zero_range(uint64_t offset, uint64_t len, bool unmap);
    void execute_sync(Request& rq);
    // Moves a request on by `n` transferred bytes (short reads and writes are resumed).
    static void advance(Request& rq, uint64_t n);
    bool in_range(uint64_t sector, uint64_t sectors) const
    {
        return sector <= m_capacity && sectors <= m_capacity - sector;
    }
    void finish(Request& rq, uint8_t status);
    void release(Request& rq);
    void flush_interrupt();
    io_uring_sqe* get_sqe();
    bool poll_available();
    void submit_uring(Request& rq);
    // Handles one io_uring completion; returns true when the request finished.
    bool complete_uring(Request& rq, int res);
    void log_io_error(const Request& rq, int err);

    const std::string m_path;
    const int m_fd;
    const bool m_read_only;
    const uint64_t m_capacity; // sectors
    const IoMode m_mode;
    std::array<uint8_t, blk::kIdBytes> m_id {};
    std::array<uint8_t, blk::cfg::kSize> m_config {};
    int m_kick_fd { -1 };

    ActivateContext m_ctx;
    uint64_t m_features { 0 };
    std::vector<Request> m_requests;
    std::vector<uint32_t> m_free; // indices of free request slots
    bool m_broken { false }; // the queue failed (device_error): no more pops until reset
    bool m_used_pending { false };
    bool m_paused { false }; // between pause() and resume() (transport lock)

    std::unique_ptr<io_uring> m_ring;
    bool m_uring_failed_logged { false };
    std::atomic<bool> m_uring_active { false };
    std::thread m_thread;
    std::atomic<bool> m_stop { false };
    std::atomic<uint64_t> m_completed { 0 };
    uint64_t m_error_logs { 0 };

    RateLimiter m_limiter;
    // The limiter refused a request (it is back in the ring): the queue waits until the limiter
    // unblocks. I/O thread (or Inline caller) only, like the slots.
    bool m_throttled { false };
    bool m_timer_armed { false }; // an io_uring timeout for the limiter is in the ring
    __kernel_timespec m_timer_ts {}; // read by the kernel when the timeout is submitted
    uint32_t m_inflight { 0 }; // io_uring requests submitted and not completed
    BlkMetrics m_metrics;
};

} // namespace virtio
} // namespace vessel
