#include "devices/virtio/blk.h"

#include <fcntl.h>
#include <liburing.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <poll.h>

#include <chrono>
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
#include "vmm/vm_config.h"

namespace vessel::virtio {

using namespace blk;

namespace {

// io_uring user_data of the kick eventfd's poll; requests use their slot index.
constexpr uint64_t kKickTag = ~0ULL;

void put_le32(std::span<uint8_t> config, size_t offset, uint32_t v)
{
    std::memcpy(config.data() + offset, &v, 4);
}
void put_le64(std::span<uint8_t> config, size_t offset, uint64_t v)
{
    std::memcpy(config.data() + offset, &v, 8);
}

void drain_eventfd(int fd)
{
    uint64_t count;
    while (::read(fd, &count, sizeof(count)) == sizeof(count)) { }
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

Result<std::unique_ptr<BlkDevice>> BlkDevice::open(const DiskConfig& config, IoMode mode)
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

    std::unique_ptr<BlkDevice> device(new BlkDevice(fd, config, bytes / kSectorSize, mode));
    device->m_kick_fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (device->m_kick_fd < 0)
        return Error::from_errno(fmt::format("disk image '{}': eventfd", path));
    return device;
}

BlkDevice::BlkDevice(int fd, const DiskConfig& config, uint64_t capacity, IoMode mode)
    : m_path(config.path)
    , m_fd(fd)
    , m_read_only(config.read_only)
    , m_capacity(capacity)
    , m_mode(mode)
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
    // One slot per request the driver can have outstanding; a driver that re-offers buffers
    // before they are used still cannot make the device hold more.
    m_requests.resize(ctx.queues[0].size());
    m_free.clear();
    for (size_t i = m_requests.size(); i-- > 0;)
        m_free.push_back(static_cast<uint32_t>(i));
    drain_eventfd(m_kick_fd);
    m_stop.store(false);
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
        if (m_ring) {
            io_uring_queue_exit(m_ring.get());
            m_ring.reset();
        }
        return make_error("virtio-blk '{}': cannot start the I/O thread: {}", m_path, e.what());
    }
    return {};
}

void BlkDevice::notify(uint16_t queue)
{
    if (queue != 0 || !m_ctx.interrupt)
        return;
    if (m_mode == IoMode::Inline) {
        process_queue_inline();
        return;
    }
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
}

void BlkDevice::stop_io()
{
    if (m_thread.joinable()) {
        // The thread finishes (and completes) every request already submitted before it exits:
        // nothing may write guest memory once reset() has returned.
        m_stop.store(true, std::memory_order_release);
        uint64_t one = 1;
        if (::write(m_kick_fd, &one, sizeof(one)) < 0) { }
        m_thread.join();
    }
    if (m_ring) {
        io_uring_queue_exit(m_ring.get());
        m_ring.reset();
    }
    m_uring_active.store(false, std::memory_order_relaxed);
}

void BlkDevice::process_queue_inline()
{
    if (m_mode != IoMode::Inline || !m_ctx.interrupt)
        return;
    fill([this](Request& rq) { execute_sync(rq); });
    flush_interrupt();
}

// --- the I/O threads -----------------------------------------------------------------------------

void BlkDevice::io_thread_sync()
{
    for (;;) {
        fill([this](Request& rq) { execute_sync(rq); });
        flush_interrupt();
        pollfd p { m_kick_fd, POLLIN, 0 };
        while (::poll(&p, 1, -1) < 0 && errno == EINTR) { }
        drain_eventfd(m_kick_fd);
        if (m_stop.load(std::memory_order_acquire))
            return;
    }
}

void BlkDevice::io_thread_uring()
{
    io_uring* ring = m_ring.get();
    uint32_t inflight = 0;
    bool stopping = false;
    bool want_pop = true; // buffers may have been offered before the thread started
    auto arm_kick = [&] {
        io_uring_sqe* sqe = get_sqe();
        io_uring_prep_poll_add(sqe, m_kick_fd, POLLIN);
        io_uring_sqe_set_data64(sqe, kKickTag);
    };
    arm_kick();
    for (;;) {
        if (want_pop && !stopping) {
            want_pop = false;
            fill([&](Request& rq) {
                submit_uring(rq);
                ++inflight;
            });
        }
        flush_interrupt();
        if (stopping && inflight == 0)
            return; // the kick poll is not armed while stopping: nothing is left in the ring
        if (inflight == 0 && !stopping && !m_broken && poll_available()) {
            want_pop = true; // the guest queued more while we looked: no kick round trip
            continue;
        }
        int r = io_uring_submit_and_wait(ring, 1);
        if (r < 0 && r != -EINTR && r != -EAGAIN && r != -EBUSY) {
            // The ring itself failed (not one request): nothing more can be submitted or
            // completed through it. Requests in it keep their slots; the driver must reset.
            log_error("virtio-blk '{}': io_uring wait failed: {}", m_path, std::strerror(-r));
            if (!m_broken) {
                m_broken = true;
                m_ctx.interrupt->device_error("host I/O failure (io_uring)");
            }
            // Wait for the stop request only; in-flight requests cannot be reaped any more.
            pollfd p { m_kick_fd, POLLIN, 0 };
            while (!m_stop.load(std::memory_order_acquire)) {
                ::poll(&p, 1, -1);
                drain_eventfd(m_kick_fd);
            }
            return;
        }
        unsigned head;
        unsigned seen = 0;
        io_uring_cqe* cqe;
        io_uring_for_each_cqe(ring, head, cqe)
        {
            ++seen;
            if (cqe->user_data == kKickTag) {
                drain_eventfd(m_kick_fd);
                if (m_stop.load(std::memory_order_acquire)) {
                    stopping = true;
                } else {
                    arm_kick();
                    want_pop = true;
                }
                continue;
            }
            if (cqe->user_data >= m_requests.size())
                continue; // cannot happen: only slot indices are submitted
            if (complete_uring(m_requests[cqe->user_data], cqe->res)) {
                --inflight;
                want_pop = true; // a slot is free again
            }
        }
        io_uring_cq_advance(ring, seen);
    }
}

bool BlkDevice::poll_available()
{
    // A guest doing synchronous I/O (queue depth 1) queues its next request a few microseconds
    // after it sees the last completion: looking for it briefly saves the kick's eventfd and
    // io_uring round trip (QEMU polls its virtqueues the same way).
    constexpr auto kPoll = std::chrono::microseconds(20);
    const Queue& q = m_ctx.queues[0];
    auto until = std::chrono::steady_clock::now() + kPoll;
    do {
        if (q.has_available())
            return true;
        __builtin_ia32_pause();
    } while (std::chrono::steady_clock::now() < until && !m_stop.load(std::memory_order_relaxed));
    return false;
}

io_uring_sqe* BlkDevice::get_sqe()
{
    // The ring has room for every slot plus the kick, so a full SQ only means "submit first".
    for (;;) {
        if (io_uring_sqe* sqe = io_uring_get_sqe(m_ring.get()))
            return sqe;
        io_uring_submit(m_ring.get());
    }
}

void BlkDevice::submit_uring(Request& rq)
{
    io_uring_sqe* sqe = get_sqe();
    if (rq.type == kTFlush) {
        io_uring_prep_fsync(sqe, m_fd, IORING_FSYNC_DATASYNC);
    } else {
        unsigned count = static_cast<unsigned>(rq.iov.size() - rq.iov_next);
        if (rq.type == kTIn)
            io_uring_prep_readv(sqe, m_fd, rq.iov.data() + rq.iov_next, count, rq.offset);
        else
            io_uring_prep_writev(sqe, m_fd, rq.iov.data() + rq.iov_next, count, rq.offset);
    }
    io_uring_sqe_set_data64(sqe, static_cast<uint64_t>(&rq - m_requests.data()));
}

bool BlkDevice::complete_uring(Request& rq, int res)
{
    if (res == -EINTR || res == -EAGAIN) {
        submit_uring(rq);
        return false;
    }
    if (res < 0) {
        log_io_error(rq, -res);
        finish(rq, kSIoErr);
        return true;
    }
    if (rq.type == kTFlush) {
        finish(rq, kSOk);
        return true;
    }
    if (res == 0) { // end of file: the image shrank under us
        log_io_error(rq, 0);
        finish(rq, kSIoErr);
        return true;
    }
    advance(rq, static_cast<uint64_t>(res));
    if (rq.remaining == 0) {
        finish(rq, kSOk);
        return true;
    }
    submit_uring(rq); // a short transfer: go on with the rest
    return false;
}

void BlkDevice::execute_sync(Request& rq)
{
    if (rq.type == kTFlush) {
        if (::fdatasync(m_fd) != 0) {
            log_io_error(rq, errno);
            finish(rq, kSIoErr);
        } else {
            finish(rq, kSOk);
        }
        return;
    }
    while (rq.remaining > 0) {
        int count = static_cast<int>(std::min<size_t>(rq.iov.size() - rq.iov_next, IOV_MAX));
        ssize_t r = rq.type == kTIn
            ? ::preadv(m_fd, rq.iov.data() + rq.iov_next, count, static_cast<off_t>(rq.offset))
            : ::pwritev(m_fd, rq.iov.data() + rq.iov_next, count, static_cast<off_t>(rq.offset));
        if (r < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (r <= 0) {
            log_io_error(rq, r < 0 ? errno : 0);
            finish(rq, kSIoErr);
            return;
        }
        advance(rq, static_cast<uint64_t>(r));
    }
    finish(rq, kSOk);
}

void BlkDevice::advance(Request& rq, uint64_t n)
{
    n = std::min(n, rq.remaining);
    rq.remaining -= n;
    rq.offset += n;
    while (n > 0 && rq.iov_next < rq.iov.size()) {
        iovec& v = rq.iov[rq.iov_next];
        if (n >= v.iov_len) {
            n -= v.iov_len;
            ++rq.iov_next;
        } else {
            v.iov_base = static_cast<uint8_t*>(v.iov_base) + n;
            v.iov_len -= n;
            n = 0;
        }
    }
}

// --- requests ------------------------------------------------------------------------------------

template<typename Start>
void BlkDevice::fill(Start&& start)
{
    Queue& q = m_ctx.queues[0];
    while (!m_broken && !m_free.empty()) {
        Request& rq = m_requests[m_free.back()];
        auto popped = q.pop(rq.chain);
        if (!popped.ok()) {
            m_broken = true;
            m_ctx.interrupt->device_error(popped.error().message());
            return;
        }
        if (!popped.value())
            return;
        m_free.pop_back();
        uint8_t status = kSIoErr;
        switch (prepare(rq, status)) {
        case Prepared::Done: finish(rq, status); break;
        case Prepared::Io: start(rq); break;
        case Prepared::Drop: release(rq); break;
        }
    }
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

    switch (type) {
    case kTIn:
    case kTOut: {
        bool in = type == kTIn;
        if (!in && m_read_only)
            return Prepared::Done; // IOERR, nothing written (5.2.6.1)
        // IN: every writable byte but the status is data; OUT: every readable byte after the header.
        uint64_t len = in ? c.writable_bytes - 1 : reader.remaining();
        if (len % kSectorSize || !in_range(sector, len / kSectorSize))
            return Prepared::Done;
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

void BlkDevice::finish(Request& rq, uint8_t status)
{
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

} // namespace vessel::virtio
