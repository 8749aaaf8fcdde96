#include "devices/virtio/blk.h"

#include <fcntl.h>
#include <liburing.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>

#include "base/log.h"
#include "base/log_limit.h"
#include "devices/virtio/state_json.h"
#include "vmm/vm_config.h"

namespace vessel::virtio {

using namespace blk;

namespace {

void put_le32(std::span<uint8_t> config, size_t offset, uint32_t v)
{
    std::memcpy(config.data() + offset, &v, 4);
}
void put_le64(std::span<uint8_t> config, size_t offset, uint64_t v)
{
    std::memcpy(config.data() + offset, &v, 8);
}

const char* type_name(uint32_t type)
{
    switch (type) {
    case kTIn: return "read";
    case kTOut: return "write";
    case kTFlush: return "flush";
    default: return "request";
    }
}

} // namespace

Result<std::unique_ptr<BlkDevice>> BlkDevice::open(const DiskConfig& config, IoMode mode, RateLimiterClock clock)
{
    const std::string& path = config.path;
    int fd = ::open(path.c_str(), (config.read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC);
    if (fd < 0)
        return Error::from_errno(fmt::format("disk image '{}'", path));
    auto fail = [fd](Error e) {
        ::close(fd);
        return e;
    };

    struct stat st;
    if (::fstat(fd, &st) != 0)
        return fail(Error::from_errno(fmt::format("disk image '{}': fstat", path)));
    uint64_t bytes = 0;
    if (S_ISREG(st.st_mode)) {
        bytes = static_cast<uint64_t>(st.st_size);
    } else if (S_ISBLK(st.st_mode)) {
        if (::ioctl(fd, BLKGETSIZE64, &bytes) != 0)
            return fail(Error::from_errno(fmt::format("disk image '{}': block device size", path)));
    } else if (S_ISDIR(st.st_mode)) {
        return fail(make_error("disk image '{}' is a directory", path));
    } else {
        return fail(make_error("disk image '{}' is neither a regular file nor a block device", path));
    }

    // One writer or any number of readers per image, across processes: an ext4 image written by
    // two VMMs at once is destroyed within seconds. (flock locks the open file description, so a
    // second --disk of the same writable image in this VMM is refused as well.)
    if (::flock(fd, (config.read_only ? LOCK_SH : LOCK_EX) | LOCK_NB) != 0) {
        if (errno == EWOULDBLOCK)
            return fail(make_error("disk image '{}' is locked{} by another process (is another VM using it?)", path,
                config.read_only ? " for writing" : ""));
        return fail(Error::from_errno(fmt::format("disk image '{}': flock", path)));
    }
    if (bytes < kSectorSize)
        return fail(
            make_error("disk image '{}' is smaller than one {}-byte sector ({} bytes)", path, kSectorSize, bytes));
    if (bytes % kSectorSize)
        log_warn("disk image '{}': the last {} bytes (not a whole {}-byte sector) are not visible to the guest", path,
            bytes % kSectorSize, kSectorSize);

    std::unique_ptr<BlkDevice> device(new BlkDevice(fd, config, bytes / kSectorSize, mode, std::move(clock)));
    device->m_kick_fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (device->m_kick_fd < 0)
        return Error::from_errno(fmt::format("disk image '{}': eventfd", path));
    return device;
}

BlkDevice::BlkDevice(int fd, const DiskConfig& config, uint64_t capacity, IoMode mode, RateLimiterClock clock)
    : m_path(config.path)
    , m_fd(fd)
    , m_read_only(config.read_only)
    , m_capacity(capacity)
    , m_mode(mode)
    , m_limiter(config.rate_limiter, std::move(clock))
{
    // GET_ID: the configured serial, else the image's file name (both cut to 20 bytes, NUL-padded).
    std::string id = config.serial;
    if (id.empty()) {
        size_t slash = m_path.find_last_of('/');
        id = slash == std::string::npos ? m_path : m_path.substr(slash + 1);
    }
    std::memcpy(m_id.data(), id.data(), std::min(id.size(), m_id.size()));

    std::span<uint8_t> c(m_config);
    put_le64(c, cfg::kCapacity, m_capacity);
    put_le32(c, cfg::kSegMax, kSegMax);
    put_le32(c, cfg::kBlkSize, kSectorSize);
    put_le32(c, cfg::kMaxDiscardSectors, kMaxDiscardSectors);
    put_le32(c, cfg::kMaxDiscardSeg, kMaxDiscardSegments);
    put_le32(c, cfg::kDiscardSectorAlignment, kDiscardAlignmentSectors);
    put_le32(c, cfg::kMaxWriteZeroesSectors, kMaxDiscardSectors);
    put_le32(c, cfg::kMaxWriteZeroesSeg, kMaxDiscardSegments);
    c[cfg::kWriteZeroesMayUnmap] = 1;
}

BlkDevice::~BlkDevice()
{
    stop_io();
    if (m_kick_fd >= 0)
        ::close(m_kick_fd);
    ::close(m_fd); // also drops the flock
}

uint64_t BlkDevice::features() const
{
    uint64_t f = kFSegMax | kFBlkSize | kFFlush;
    if (m_read_only)
        f |= kFRo;
    else
        f |= kFDiscard | kFWriteZeroes;
    return f;
}

void BlkDevice::read_config(uint64_t offset, std::span<uint8_t> data)
{
    std::memset(data.data(), 0, data.size());
    if (offset >= m_config.size())
        return;
    size_t n = std::min<uint64_t>(data.size(), m_config.size() - offset);
    std::memcpy(data.data(), m_config.data() + offset, n);
}

Result<void> BlkDevice::activate(const ActivateContext& ctx)
{
    if (ctx.queues.empty() || !ctx.queues[0].active() || !ctx.interrupt)
        return make_error("virtio-blk: the request queue is not set up");
    stop_io();
    m_ctx = ctx;
    m_features = ctx.features;
    m_broken = false;
    m_used_pending = false;
    m_throttled = false;
    // One slot per request the driver can have outstanding; a driver that re-offers buffers
    // before they are used still cannot make the device hold more.
    m_requests.resize(ctx.queues[0].size());
    m_free.clear();
    for (size_t i = m_requests.size(); i-- > 0;)
        m_free.push_back(static_cast<uint32_t>(i));
    drain_eventfd(m_kick_fd);
    m_stop.store(false);
    m_paused = ctx.paused; // a snapshot restore: resume() starts the thread
    if (m_mode == IoMode::Inline)
        return {};

    bool uring = false;
    if (m_mode == IoMode::Auto) {
        auto ring = std::make_unique<io_uring>();
        // Room for every slot's request plus the kick poll.
        int r = io_uring_queue_init(2 * kQueueSize, ring.get(), 0);
        if (r == 0) {
            m_ring = std::move(ring);
            uring = true;
        } else if (!m_uring_failed_logged) {
            m_uring_failed_logged = true;
            log_warn("virtio-blk '{}': io_uring is unavailable ({}); doing disk I/O with synchronous "
                     "preadv/pwritev on the device's thread",
                m_path, std::strerror(-r));
        }
    }
    m_uring_active.store(uring, std::memory_order_relaxed);
    if (m_paused)
        return {};
    if (auto started = start_thread(); !started.ok()) {
        stop_io();
        return started;
    }
    return {};
}

Result<void> BlkDevice::start_thread()
{
    // The ring, when there is one, outlives the thread (a pause stops only the thread).
    bool uring = m_ring != nullptr;
    m_stop.store(false);
    try {
        m_thread = std::thread([this, uring] {
            // Signals belong to the VMM's event loop and the vCPU threads, never to this thread.
            sigset_t all;
            sigfillset(&all);
            ::pthread_sigmask(SIG_BLOCK, &all, nullptr);
            ::pthread_setname_np(::pthread_self(), "vessel-blk");
            if (uring)
                io_thread_uring();
            else
                io_thread_sync();
        });
    } catch (const std::system_error& e) {
        return make_error("virtio-blk '{}': cannot start the I/O thread: {}", m_path, e.what());
    }
    return {};
}

void BlkDevice::notify(uint16_t queue)
{
    if (queue != 0 || !m_ctx.interrupt)
        return;
    m_metrics.queue_event_count.add();
    // Firecracker counts a queue event that finds the limiter blocked as throttled (the queue
    // is then not looked at: the I/O thread waits for the limiter's deadline).
    if (m_limiter.is_blocked())
        m_metrics.rate_limiter_throttled_events.add();
    if (m_mode == IoMode::Inline) {
        process_queue_inline(); // nothing while paused: resume() looks at the queue
        return;
    }
    // While paused the kick only waits in the eventfd: the thread that resume() starts pops
    // whatever is available before it looks at kicks.
    uint64_t one = 1;
    if (::write(m_kick_fd, &one, sizeof(one)) < 0) { } // EAGAIN: the counter is pending anyway
}

void BlkDevice::reset()
{
    stop_io();
    m_ctx = {};
    m_features = 0;
    m_broken = false;
    m_used_pending = false;
    m_paused = false;
    m_throttled = false;
}

void BlkDevice::pause()
{
    m_paused = true;
    if (m_mode == IoMode::Inline)
        return; // requests only ever run inside notify(), which the transport serialises with us
    stop_thread();
}

void BlkDevice::resume()
{
    if (!m_paused)
        return;
    m_paused = false;
    if (!m_ctx.interrupt)
        return;
    if (m_mode == IoMode::Inline) {
        process_queue_inline();
        return;
    }
    if (m_broken)
        return; // nothing more is popped until the driver resets the device: no thread needed
    if (auto started = start_thread(); !started.ok()) {
        log_error("{}", started.error().message());
        m_broken = true;
        m_ctx.interrupt->device_error("virtio-blk: cannot restart the I/O thread after a pause");
    }
}

nlohmann::json BlkDevice::save_state() const
{
    return { { "capacity_sectors", m_capacity }, { "read_only", m_read_only } };
}

Result<void> BlkDevice::restore_state(const nlohmann::json& state)
{
    constexpr std::string_view what = "virtio-blk";
    uint64_t capacity = TRY(state::get_uint(state, "capacity_sectors", what));
    bool read_only = TRY(state::get_bool(state, "read_only", what));
    // A larger image is harmless (the guest keeps the capacity it read); a smaller one would fail
    // the guest's I/O at the end of the disk.
    if (m_capacity < capacity)
        return make_error("disk image '{}' has {} sectors, the guest saw {}", m_path, m_capacity, capacity);
    if (m_read_only && !read_only)
        return make_error("disk image '{}' is read-only, the guest saw a writable disk", m_path);
    return {};
}

void BlkDevice::stop_thread()
{
    if (!m_thread.joinable())
        return;
    // The thread finishes (and completes) every request already submitted before it exits:
    // nothing may write guest memory once reset() or pause() has returned.
    m_stop.store(true, std::memory_order_release);
    uint64_t one = 1;
    if (::write(m_kick_fd, &one, sizeof(one)) < 0) { }
    m_thread.join();
}

void BlkDevice::stop_io()
{
    stop_thread();
    if (m_ring) {
        io_uring_queue_exit(m_ring.get()); // cancels a limiter timeout still in it
        m_ring.reset();
    }
    m_timer_armed = false;
    m_uring_active.store(false, std::memory_order_relaxed);
}

void BlkDevice::process_queue_inline()
{
    if (m_mode != IoMode::Inline || !m_ctx.interrupt || m_paused)
        return;
    fill(Executor::Sync, true);
    flush_interrupt();
}

// --- requests ------------------------------------------------------------------------------------

void BlkDevice::fill(Executor executor, bool kicked)
{
    Queue& q = m_ctx.queues[0];
    if (m_throttled) {
        if (m_limiter.is_blocked())
            return; // the refused request waits in the ring for the limiter's deadline
        m_throttled = false;
        m_metrics.rate_limiter_event_count.add();
    }
    bool popped_any = false;
    // A stop (pause, reset) takes effect between requests: a pause then waits only for what is
    // already submitted, and what the driver queued beyond it stays in the ring for resume().
    while (!m_broken && !m_free.empty() && !m_stop.load(std::memory_order_acquire)) {
        Request& rq = m_requests[m_free.back()];
        auto popped = q.pop(rq.chain);
        if (!popped.ok()) {
            m_broken = true;
            m_ctx.interrupt->device_error(popped.error().message());
            return;
        }
        if (!popped.value()) {
            if (kicked && !popped_any)
                m_metrics.no_avail_buffer.add();
            return;
        }
        popped_any = true;
        m_free.pop_back();
        uint8_t status = kSIoErr;
        switch (prepare(rq, status)) {
        case Prepared::Done: finish(rq, status); break;
        case Prepared::Io:
            rq.started = std::chrono::steady_clock::now();
            if (executor == Executor::Sync) {
                execute_sync(rq);
            } else {
                submit_uring(rq);
                ++m_inflight;
            }
            break;
        case Prepared::Drop: release(rq); break;
        case Prepared::Throttled:
            // Back to the ring, untouched: it is popped (and charged) again once unblocked.
            q.undo_pop();
            release(rq);
            m_throttled = true;
            m_metrics.rate_limiter_throttled_events.add();
            return;
        }
    }
}

bool BlkDevice::charge(uint32_t type, uint64_t len)
{
    return m_limiter.consume_request(len, type == kTIn || type == kTOut);
}

BlkDevice::Prepared BlkDevice::prepare(Request& rq, uint8_t& status)
{
    const Chain& c = rq.chain;
    rq.iov.clear();
    rq.iov_next = 0;
    rq.type = ~0U;
    rq.offset = rq.remaining = 0;
    rq.written = 1; // the status byte
    rq.status = nullptr;
    rq.len = 0;
    rq.parsed = false;
    rq.started = {};

    // The status is the last device-writable byte (5.2.6). Without one the request cannot be
    // answered at all: a broken chain, like one pop() refuses.
    for (auto it = c.segments.rbegin(); it != c.segments.rend() && it->writable; ++it) {
        if (it->len) {
            rq.status = it->host + it->len - 1;
            break;
        }
    }
    if (!rq.status) {
        m_broken = true;
        m_ctx.interrupt->device_error("virtio-blk: request without a device-writable status byte");
        return Prepared::Drop;
    }

    status = kSIoErr;
    ChainReader reader(c);
    uint8_t header[kHeaderSize];
    if (reader.read(header) != sizeof(header))
        return Prepared::Done; // short header
    uint32_t type;
    uint64_t sector;
    std::memcpy(&type, header, 4);
    std::memcpy(&sector, header + 8, 8);
    rq.type = type;

    // Well-formed requests are charged to the limiter (Firecracker charges what parses; a
    // malformed one completes with IOERR at no cost). Nothing below has touched the image or
    // guest memory yet, so a refused request can go back to the ring as it is.
    uint64_t len = 0;
    bool in = type == kTIn;
    if (type == kTIn || type == kTOut) {
        // IN: every writable byte but the status is data; OUT: every readable byte after the header.
        len = in ? c.writable_bytes - 1 : reader.remaining();
        if (len % kSectorSize || !in_range(sector, len / kSectorSize))
            return Prepared::Done;
    }
    if (!charge(type, len))
        return Prepared::Throttled;
    rq.parsed = true;
    rq.len = len;

    switch (type) {
    case kTIn:
    case kTOut: {
        if (!in && m_read_only)
            return Prepared::Done; // IOERR, nothing written (5.2.6.1)
        auto add = [&](uint8_t* p, size_t n) { rq.iov.push_back({ p, n }); };
        if (in) {
            ChainWriter writer(c);
            writer.for_each(len, add);
        } else {
            reader.for_each(len, add);
        }
        if (rq.iov.size() > IOV_MAX) // cannot happen with kMaxIndirectEntries <= IOV_MAX
            return Prepared::Done;
        rq.offset = sector * kSectorSize;
        rq.remaining = len;
        if (in)
            rq.written = static_cast<uint32_t>(std::min<uint64_t>(len + 1, UINT32_MAX));
        if (len == 0) {
            status = kSOk;
            return Prepared::Done;
        }
        return Prepared::Io;
    }
    case kTFlush:
        if (m_read_only) {
            status = kSOk; // nothing was ever written
            return Prepared::Done;
        }
        return Prepared::Io;
    case kTGetId: {
        ChainWriter writer(c);
        size_t n = std::min<uint64_t>(m_id.size(), c.writable_bytes - 1);
        writer.write(std::span<const uint8_t>(m_id.data(), n));
        rq.written = static_cast<uint32_t>(n + 1);
        status = kSOk;
        return Prepared::Done;
    }
    case kTDiscard:
    case kTWriteZeroes: status = discard_or_zero(type, reader); return Prepared::Done;
    default: // GET_LIFETIME, SECURE_ERASE and anything unknown
        status = kSUnsupp;
        return Prepared::Done;
    }
}

uint8_t BlkDevice::discard_or_zero(uint32_t type, ChainReader& reader)
{
    bool discard = type == kTDiscard;
    if (!(m_features & (discard ? kFDiscard : kFWriteZeroes)))
        return kSUnsupp;
    if (m_read_only)
        return kSIoErr;
    uint64_t bytes = reader.remaining();
    if (bytes == 0 || bytes % kRangeSize)
        return kSIoErr;
    if (bytes / kRangeSize > kMaxDiscardSegments)
        return kSUnsupp;
    struct Range {
        uint64_t sector;
        uint32_t sectors;
        uint32_t flags;
    };
    static_assert(sizeof(Range) == kRangeSize);
    std::array<Range, kMaxDiscardSegments> ranges;
    size_t count = bytes / kRangeSize;
    // All ranges are checked before any is applied: a bad one leaves the image untouched.
    for (size_t i = 0; i < count; ++i) {
        reader.read(std::span(reinterpret_cast<uint8_t*>(&ranges[i]), kRangeSize));
        const Range& r = ranges[i];
        if (r.flags & ~kWriteZeroesFlagUnmap)
            return kSUnsupp; // unknown flag (5.2.6.2)
        if (discard && (r.flags & kWriteZeroesFlagUnmap))
            return kSUnsupp; // unmap is for WRITE_ZEROES only
        if (r.sectors > kMaxDiscardSectors || !in_range(r.sector, r.sectors))
            return kSIoErr;
    }
    for (size_t i = 0; i < count; ++i) {
        const Range& r = ranges[i];
        // A discarded range reads back as zeros too (a hole), which no driver may rely on.
        uint8_t st = zero_range(
            r.sector * kSectorSize, uint64_t(r.sectors) * kSectorSize, discard || (r.flags & kWriteZeroesFlagUnmap));
        if (st != kSOk)
            return st;
    }
    return kSOk;
}

uint8_t BlkDevice::zero_range(uint64_t offset, uint64_t len, bool unmap)
{
    if (len == 0)
        return kSOk;
    int mode = FALLOC_FL_KEEP_SIZE | (unmap ? FALLOC_FL_PUNCH_HOLE : FALLOC_FL_ZERO_RANGE);
    if (::fallocate(m_fd, mode, static_cast<off_t>(offset), static_cast<off_t>(len)) == 0)
        return kSOk;
    int err = errno;
    if (err != EOPNOTSUPP && err != ENOSYS && err != EINVAL) {
        if (log_allowed(m_error_logs))
            log_warn("virtio-blk '{}': fallocate of {} bytes at {:#x}: {}", m_path, len, offset, std::strerror(err));
        return kSIoErr;
    }
    // The file system cannot punch or zero ranges (tmpfs before 6.x cannot zero, some cannot
    // either): write zeros.
    static const std::array<uint8_t, 64 * 1024> zeros {};
    while (len > 0) {
        std::array<iovec, 16> iov;
        size_t n = 0;
        uint64_t chunk = 0;
        while (n < iov.size() && chunk < len) {
            size_t piece = std::min<uint64_t>(zeros.size(), len - chunk);
            iov[n++] = { const_cast<uint8_t*>(zeros.data()), piece };
            chunk += piece;
        }
        ssize_t r = ::pwritev(m_fd, iov.data(), static_cast<int>(n), static_cast<off_t>(offset));
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            if (log_allowed(m_error_logs))
                log_warn("virtio-blk '{}': writing {} zero bytes at {:#x}: {}", m_path, len, offset,
                    r < 0 ? std::strerror(errno) : "no progress");
            return kSIoErr;
        }
        offset += static_cast<uint64_t>(r);
        len -= static_cast<uint64_t>(r);
    }
    return kSOk;
}

void BlkDevice::count_finished(const Request& rq, uint8_t status)
{
    if (!rq.parsed) {
        m_metrics.execute_fails.add();
        return;
    }
    if (status != kSOk)
        m_metrics.invalid_reqs_count.add();
    bool ok = status == kSOk;
    bool started = rq.started != std::chrono::steady_clock::time_point {};
    // Only what reached the image or the guest (a write refused on a read-only disk moved nothing).
    uint64_t moved = started ? rq.len - rq.remaining : 0;
    auto latency = [&](LatencyCounter& agg) {
        if (started)
            agg.record(
                std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - rq.started));
    };
    switch (rq.type) {
    case kTIn:
        m_metrics.read_bytes.add(moved);
        if (ok)
            m_metrics.read_count.add();
        latency(m_metrics.read_agg);
        break;
    case kTOut:
        m_metrics.write_bytes.add(moved);
        if (ok)
            m_metrics.write_count.add();
        latency(m_metrics.write_agg);
        break;
    case kTFlush:
        if (ok)
            m_metrics.flush_count.add();
        break;
    default: break;
    }
}

void BlkDevice::finish(Request& rq, uint8_t status)
{
    count_finished(rq, status);
    *rq.status = status;
    m_ctx.queues[0].add_used(rq.chain, status == kSOk ? rq.written : 1);
    m_used_pending = true;
    m_completed.fetch_add(1, std::memory_order_relaxed);
    release(rq);
}

void BlkDevice::release(Request& rq)
{
    m_free.push_back(static_cast<uint32_t>(&rq - m_requests.data()));
}

void BlkDevice::flush_interrupt()
{
    if (!m_used_pending)
        return;
    m_used_pending = false;
    if (m_ctx.queues[0].needs_interrupt())
        m_ctx.interrupt->signal_queue(0);
}

void BlkDevice::log_io_error(const Request& rq, int err)
{
    if (log_allowed(m_error_logs))
        log_warn("virtio-blk '{}': {} of {} bytes at {:#x} failed: {}", m_path, type_name(rq.type), rq.remaining,
            rq.offset, err ? std::strerror(err) : "end of file");
}

void BlkDevice::report_metrics(MetricsReport& out) const
{
    const BlkMetrics& m = m_metrics;
    out.counter("read_bytes", m.read_bytes.get());
    out.counter("write_bytes", m.write_bytes.get());
    out.counter("read_count", m.read_count.get());
    out.counter("write_count", m.write_count.get());
    out.counter("flush_count", m.flush_count.get());
    out.counter("queue_event_count", m.queue_event_count.get());
    out.counter("invalid_reqs_count", m.invalid_reqs_count.get());
    out.counter("execute_fails", m.execute_fails.get());
    out.counter("no_avail_buffer", m.no_avail_buffer.get());
    out.counter("rate_limiter_throttled_events", m.rate_limiter_throttled_events.get());
    out.counter("rate_limiter_event_count", m.rate_limiter_event_count.get());
    out.latency("read_agg", m.read_agg);
    out.latency("write_agg", m.write_agg);
}

} // namespace vessel::virtio
