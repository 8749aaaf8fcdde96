// virtio-blk's I/O thread: the io_uring loop, the synchronous loop, and how each executes a
// request (see blk.h). Requests are popped and parsed in blk.cpp (fill, prepare).
#include <liburing.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>

#include "base/log.h"
#include "devices/virtio/blk.h"

namespace vessel::virtio {

using namespace blk;

namespace {

// io_uring user_data of the kick eventfd's poll and of the limiter's timeout; requests use their
// slot index.
constexpr uint64_t kKickTag = ~0ULL;
constexpr uint64_t kTimerTag = ~0ULL - 1;

} // namespace

void BlkDevice::drain_eventfd(int fd)
{
    uint64_t count;
    while (::read(fd, &count, sizeof(count)) == sizeof(count)) { }
}

void BlkDevice::io_thread_sync()
{
    bool kicked = false; // buffers may have been offered before the thread started (not a kick)
    for (;;) {
        fill(Executor::Sync, kicked);
        flush_interrupt();
        // Throttled: wake up when the limiter's block ends (or a stop's kick comes first).
        int timeout = m_throttled ? std::max(m_limiter.poll_timeout_ms(), 0) : -1;
        pollfd p { m_kick_fd, POLLIN, 0 };
        int r;
        while ((r = ::poll(&p, 1, timeout)) < 0 && errno == EINTR) { }
        kicked = r > 0;
        drain_eventfd(m_kick_fd);
        if (m_stop.load(std::memory_order_acquire))
            return;
    }
}

void BlkDevice::io_thread_uring()
{
    io_uring* ring = m_ring.get();
    m_inflight = 0;
    bool stopping = false;
    bool want_pop = true; // buffers may have been offered before the thread started
    bool kicked = false;
    auto arm_kick = [&] {
        io_uring_sqe* sqe = get_sqe();
        io_uring_prep_poll_add(sqe, m_kick_fd, POLLIN);
        io_uring_sqe_set_data64(sqe, kKickTag);
    };
    arm_kick();
    for (;;) {
        if (want_pop && !stopping) {
            want_pop = false;
            fill(Executor::Uring, kicked);
            kicked = false;
            if (m_throttled)
                arm_limiter_timer();
        }
        flush_interrupt();
        if (stopping && m_inflight == 0)
            return; // the kick poll is not armed while stopping; a limiter timeout may be (harmless)
        // Not once a stop is asked for: fill() takes nothing then, and available buffers would
        // keep this loop from ever reaping the kick that says so. Nor while throttled: the
        // available request is the one the limiter refused.
        if (m_inflight == 0 && !stopping && !m_throttled && !m_broken && !m_stop.load(std::memory_order_acquire)
            && poll_available()) {
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
                    kicked = true;
                }
                continue;
            }
            if (cqe->user_data == kTimerTag) {
                m_timer_armed = false;
                want_pop = true; // fill() looks at the limiter again (and re-arms if still blocked)
                continue;
            }
            if (cqe->user_data >= m_requests.size())
                continue; // cannot happen: only slot indices are submitted
            if (complete_uring(m_requests[cqe->user_data], cqe->res)) {
                --m_inflight;
                want_pop = true; // a slot is free again
            }
        }
        io_uring_cq_advance(ring, seen);
    }
}

void BlkDevice::arm_limiter_timer()
{
    if (m_timer_armed)
        return; // the one in the ring fires first; fill() re-arms if the block goes on
    auto ns = m_limiter.time_until_unblocked().count();
    m_timer_ts.tv_sec = ns / 1'000'000'000;
    m_timer_ts.tv_nsec = ns % 1'000'000'000;
    if (ns == 0)
        m_timer_ts.tv_nsec = 1; // already unblocked: come back at once (a zero timeout is valid too)
    io_uring_sqe* sqe = get_sqe();
    // count 0: a pure timer, completing with -ETIME. The kernel copies the timespec at submission.
    io_uring_prep_timeout(sqe, &m_timer_ts, 0, 0);
    io_uring_sqe_set_data64(sqe, kTimerTag);
    m_timer_armed = true;
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
    // The ring has room for every slot plus the kick and the timer, so a full SQ only means
    // "submit first".
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

} // namespace vessel::virtio
