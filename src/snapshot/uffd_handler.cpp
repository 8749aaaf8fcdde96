#include "snapshot/uffd_handler.h"

#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>

#include "base/log.h"
#include "memory/uffd_memory.h"

namespace vessel::snapshot {

namespace {

using Clock = std::chrono::steady_clock;

constexpr uint64_t kMaxTraceBytes = 256ULL << 20;
constexpr uint64_t kMaxRunPages = 256; // one bulk UFFDIO_COPY: 1 MiB of 4 KiB pages
constexpr int kHandshakeTimeoutMs = 10000;

double ms_since(Clock::time_point t0)
{
    return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

// One bit per page, set and tested from the fault loop and the bulk-copy thread at once. The bits
// are hints (skip what is known to be in place): the kernel decides, a second copy of a page
// fails with EEXIST.
class AtomicBits {
public:
    explicit AtomicBits(uint64_t n)
        : m_words(std::make_unique<std::atomic<uint64_t>[]>((n + 63) / 64))
    {
        for (uint64_t i = 0; i < (n + 63) / 64; ++i)
            m_words[i].store(0, std::memory_order_relaxed);
    }
    bool test(uint64_t i) const { return m_words[i / 64].load(std::memory_order_relaxed) >> (i % 64) & 1; }
    void set(uint64_t i) { m_words[i / 64].fetch_or(1ULL << (i % 64), std::memory_order_relaxed); }
    void clear(uint64_t i) { m_words[i / 64].fetch_and(~(1ULL << (i % 64)), std::memory_order_relaxed); }

private:
    std::unique_ptr<std::atomic<uint64_t>[]> m_words;
};

// Bytes a userfaultfd ioctl installed, and the error that stopped it (0: all of them).
struct Filled {
    uint64_t bytes { 0 };
    int err { 0 };
};

std::vector<std::pair<uint64_t, uint64_t>> data_extents(int fd, uint64_t size)
{
    std::vector<std::pair<uint64_t, uint64_t>> out;
    uint64_t pos = 0;
    while (pos < size) {
        off_t data = ::lseek(fd, static_cast<off_t>(pos), SEEK_DATA);
        if (data < 0)
            break; // ENXIO: only a hole after pos
        off_t hole = ::lseek(fd, data, SEEK_HOLE);
        uint64_t end = hole < 0 ? size : std::min<uint64_t>(size, static_cast<uint64_t>(hole));
        if (end <= static_cast<uint64_t>(data))
            break;
        out.emplace_back(static_cast<uint64_t>(data), end);
        pos = end;
    }
    return out;
}

void close_fd(int& fd)
{
    if (fd >= 0)
        ::close(fd);
    fd = -1;
}

} // namespace

std::string UffdHandlerStats::summary() const
{
    return fmt::format("served VMM {} for {:.2f} s: faults={} lazy={} zero={} prefetched={} eager={} raced={} "
                       "removed={} recorded={} (page size {}; prefetch {:.1f} ms, eager {:.1f} ms, first fault "
                       "after {:.2f} ms)",
        vmm_pid, elapsed_ms / 1000, faults, lazy_pages, zero_pages, prefetched_pages, eager_pages, raced, removed_pages,
        recorded_pages, page_size, prefetch_ms, eager_ms, first_fault_ms);
}

Result<std::vector<uint64_t>> read_trace(const std::string& path, uint64_t* page_size)
{
    std::error_code ec;
    auto size = std::filesystem::file_size(path, ec);
    if (ec)
        return make_error("trace '{}': {}", path, ec.message());
    if (size > kMaxTraceBytes)
        return make_error("trace '{}' is {} bytes long (at most {})", path, size, kMaxTraceBytes);
    std::ifstream in(path);
    if (!in)
        return make_error("trace '{}': cannot open", path);
    std::vector<uint64_t> out;
    std::string line;
    uint64_t ps = 4096;
    for (size_t n = 1; std::getline(in, line); ++n) {
        if (line.empty() || line[0] == '#')
            continue;
        try {
            if (line.starts_with("page_size ")) {
                ps = std::stoull(line.substr(10), nullptr, 0);
                if (ps < 4096 || (ps & (ps - 1)))
                    return make_error(
                        "trace '{}' line {}: page size {} is not a power of two of at least 4096", path, n, ps);
                continue;
            }
            size_t used = 0;
            uint64_t offset = std::stoull(line, &used, 0);
            if (used != line.size())
                throw std::invalid_argument(line);
            out.push_back(offset);
        } catch (const std::exception&) {
            return make_error("trace '{}' line {}: expected a memory-file offset, got \"{}\"", path, n, line);
        }
    }
    if (page_size)
        *page_size = ps;
    return out;
}

Result<void> write_trace(const std::string& path, const std::vector<uint64_t>& offsets, uint64_t page_size)
{
    std::string text = fmt::format("# vessel uffd-handler trace: the memory-file offsets of the pages a restore "
                                   "faulted, in order\npage_size {}\n",
        page_size);
    for (uint64_t o : offsets)
        text += fmt::format("{:#x}\n", o);
    std::string tmp = path + ".tmp";
    int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return Error::from_errno(fmt::format("trace '{}': cannot create '{}'", path, tmp));
    const char* p = text.data();
    size_t left = text.size();
    while (left > 0) {
        ssize_t n = ::write(fd, p, left);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            auto err = Error::from_errno(fmt::format("trace '{}': writing", path));
            ::close(fd);
            ::unlink(tmp.c_str());
            return err;
        }
        p += n;
        left -= static_cast<size_t>(n);
    }
    ::close(fd);
    if (::rename(tmp.c_str(), path.c_str()) != 0) {
        auto err = Error::from_errno(fmt::format("trace '{}': rename", path));
        ::unlink(tmp.c_str());
        return err;
    }
    return {};
}

// One VMM's restore: its regions, its userfaultfd, what is in place.
struct UffdHandler::Session {
    enum class Outcome { Done, Retry, Gone };
    enum class Kind { Prefetch, Eager };

    UffdHandler& h;
    std::vector<uffd::RegionMapping> regions;
    uint64_t ps { 4096 };
    uint64_t pages { 0 }; // of the memory file
    int uffd { -1 };
    int conn { -1 };
    int pidfd { -1 };
    int peer_pid { 0 };
    std::vector<bool> has_data;
    std::unique_ptr<AtomicBits> served, removed;
    std::vector<uint8_t> zeros; // a zero page, for page sizes UFFDIO_ZEROPAGE does not serve
    Clock::time_point t0;

    std::atomic<bool> worker_stop { false };
    std::atomic<uint64_t> lazy { 0 }, zero { 0 }, prefetched { 0 }, eager { 0 }, raced { 0 }, removed_pages { 0 },
        faults { 0 };
    double prefetch_ms { 0 }, eager_ms { 0 }, first_fault_ms { -1 }; // worker's, read after join

    // Recording (the fault loop's thread only).
    std::vector<uint64_t> trace;
    std::vector<bool> recorded;

    explicit Session(UffdHandler& handler)
        : h(handler)
    {
    }
    ~Session()
    {
        close_fd(uffd);
        close_fd(conn);
        close_fd(pidfd);
    }

    const uffd::RegionMapping* region_of_addr(uint64_t addr) const
    {
        for (const auto& r : regions)
            if (addr >= r.base_host_virt_addr && addr - r.base_host_virt_addr < r.size)
                return &r;
        return nullptr;
    }
    const uffd::RegionMapping* region_of_offset(uint64_t offset) const
    {
        for (const auto& r : regions)
            if (offset >= r.offset && offset - r.offset < r.size)
                return &r;
        return nullptr;
    }

    Filled copy(uint64_t dst, const uint8_t* src, uint64_t len) const
    {
        uffdio_copy c {};
        c.dst = dst;
        c.src = reinterpret_cast<uint64_t>(src);
        c.len = len;
        // SAFETY: dst lies in a region the VMM registered (the kernel checks it against its VMAs);
        // src in our read-only mapping of the memory file, inside its size (checked at handshake).
        if (::ioctl(uffd, UFFDIO_COPY, &c) == 0)
            return { len, 0 };
        int err = errno;
        return { c.copy > 0 ? static_cast<uint64_t>(c.copy) : 0, err };
    }

    Filled zero_fill(uint64_t dst, uint64_t len) const
    {
        if (ps == 4096) {
            uffdio_zeropage z {};
            z.range.start = dst;
            z.range.len = len;
            if (::ioctl(uffd, UFFDIO_ZEROPAGE, &z) == 0)
                return { len, 0 };
            int err = errno;
            return { z.zeropage > 0 ? static_cast<uint64_t>(z.zeropage) : 0, err };
        }
        // Huge pages (hugetlbfs): no UFFDIO_ZEROPAGE there; copy zeros, a page at a time.
        Filled total;
        for (uint64_t done = 0; done < len; done += ps) {
            Filled f = copy(dst + done, zeros.data(), ps);
            total.bytes += f.bytes;
            if (f.err)
                return { total.bytes, f.err };
        }
        return total;
    }

    void wake(uint64_t addr) const
    {
        uffdio_range r { addr, ps };
        ::ioctl(uffd, UFFDIO_WAKE, &r);
    }

    // The page holding `addr`, faulted by the VMM.
    Result<Outcome> serve_fault(uint64_t addr)
    {
        const auto* r = region_of_addr(addr);
        if (!r)
            return make_error("a page fault at {:#x}, outside every region the VMM sent", addr);
        uint64_t page = addr & ~(ps - 1);
        uint64_t offset = r->offset + (page - r->base_host_virt_addr);
        uint64_t idx = offset / ps;
        bool as_zero = removed->test(idx) || !has_data[idx];
        Filled f = as_zero ? zero_fill(page, ps) : copy(page, h.m_file + offset, ps);
        switch (f.err) {
        case 0:
            served->set(idx);
            (as_zero ? zero : lazy).fetch_add(1, std::memory_order_relaxed);
            if (!recorded.empty() && !recorded[idx]
                && (h.m_options.record_seconds <= 0 || ms_since(t0) < h.m_options.record_seconds * 1000)) {
                recorded[idx] = true;
                trace.push_back(offset);
            }
            return Outcome::Done;
        case EEXIST:
            // Another copy (the bulk thread, or a fault on the same page by another vCPU) won:
            // the page is there; make sure its waiter runs.
            served->set(idx);
            raced.fetch_add(1, std::memory_order_relaxed);
            wake(page);
            return Outcome::Done;
        case EAGAIN:
            // The VMM's memory map is changing (a UFFD_EVENT_REMOVE is pending): read it, retry.
            return Outcome::Retry;
        case ESRCH: return Outcome::Gone; // the VMM's address space is gone: it exited
        case ENOENT: return Outcome::Done; // its mapping is gone (unmapped on the way out)
        default:
            return Error::from_errno(fmt::format("serving the page at {:#x} (file offset {:#x})", page, offset), f.err);
        }
    }

    // The balloon gave [start, end) back (MADV_DONTNEED): those pages fault again later and are
    // zero pages then. (Should a bulk copy land on such a page between this event and the VMM's
    // zap, the guest finds old contents in a page it gave away and made no assumption about.)
    void remove(uint64_t start, uint64_t end)
    {
        for (const auto& r : regions) {
            uint64_t lo = std::max(start, r.base_host_virt_addr), hi = std::min(end, r.base_host_virt_addr + r.size);
            for (uint64_t a = lo & ~(ps - 1); a < hi; a += ps) {
                uint64_t idx = (r.offset + (a - r.base_host_virt_addr)) / ps;
                removed->set(idx);
                served->clear(idx);
                removed_pages.fetch_add(1, std::memory_order_relaxed);
            }
        }
    }

    // Copies pages [first, first + count) of the memory file (all inside one region) that are
    // not in place yet: file data, or zero pages for holes.
    void fill_run(uint64_t first, uint64_t count, Kind kind)
    {
        const auto* r = region_of_offset(first * ps);
        if (!r)
            return;
        auto& counter = kind == Kind::Prefetch ? prefetched : eager;
        uint64_t i = first, end = first + count;
        int again = 0;
        while (i < end && !worker_stop.load(std::memory_order_relaxed)) {
            if (served->test(i) || removed->test(i)) {
                ++i;
                continue;
            }
            bool data = has_data[i];
            uint64_t j = i + 1;
            while (j < end && j - i < kMaxRunPages && !served->test(j) && !removed->test(j) && has_data[j] == data)
                ++j;
            uint64_t dst = r->base_host_virt_addr + (i * ps - r->offset);
            Filled f = data ? copy(dst, h.m_file + i * ps, (j - i) * ps) : zero_fill(dst, (j - i) * ps);
            uint64_t done = f.bytes / ps;
            for (uint64_t k = i; k < i + done; ++k)
                served->set(k);
            counter.fetch_add(done, std::memory_order_relaxed);
            i += done;
            if (f.err == 0 || (f.err == EAGAIN && done > 0)) {
                again = 0;
                continue;
            }
            if (f.err == EEXIST) { // the page at i is in place already
                served->set(i);
                raced.fetch_add(1, std::memory_order_relaxed);
                ++i;
            } else if (f.err == EAGAIN) { // a REMOVE event is being handled: wait a little
                if (++again > 2000) {
                    ++i; // leave this page to its fault
                    again = 0;
                } else {
                    std::this_thread::sleep_for(std::chrono::microseconds(50));
                }
            } else { // ESRCH, ENOENT: the VMM is going away
                log_debug("uffd-handler: bulk copy stopped at file offset {:#x}: {}", i * ps, std::strerror(f.err));
                worker_stop = true;
            }
        }
    }

    // The bulk-copy thread: the trace's pages in its order, then (eager) every data page.
    void bulk()
    {
        if (!h.m_prefetch.empty()) {
            std::vector<bool> seen(pages, false);
            uint64_t run_first = 0, run_count = 0;
            auto flush = [&] {
                if (run_count)
                    fill_run(run_first, run_count, Kind::Prefetch);
                run_count = 0;
            };
            for (uint64_t offset : h.m_prefetch) {
                uint64_t idx = offset / ps;
                if (idx >= pages || seen[idx] || !region_of_offset(idx * ps))
                    continue;
                seen[idx] = true;
                // Consecutive trace entries that are neighbours in one region make one copy.
                if (run_count && idx == run_first + run_count && run_count < kMaxRunPages
                    && region_of_offset(idx * ps) == region_of_offset(run_first * ps)) {
                    ++run_count;
                    continue;
                }
                flush();
                run_first = idx;
                run_count = 1;
            }
            flush();
            prefetch_ms = ms_since(t0);
        }
        if (h.m_options.eager) {
            for (auto [start, end] : h.m_extents) {
                for (const auto& r : regions) {
                    uint64_t lo = std::max(start, r.offset), hi = std::min(end, r.offset + r.size);
                    if (lo >= hi)
                        continue;
                    uint64_t first = lo / ps, last = (hi + ps - 1) / ps;
                    for (uint64_t p = first; p < last && !worker_stop; p += kMaxRunPages)
                        fill_run(p, std::min(kMaxRunPages, last - p), Kind::Eager);
                }
            }
            eager_ms = ms_since(t0);
        }
    }

    Result<void> handshake()
    {
        ucred cred {};
        socklen_t len = sizeof(cred);
        if (::getsockopt(conn, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0)
            peer_pid = cred.pid;
        auto got = TRY(uffd::receive_with_fds(conn, uffd::kMaxMessageBytes, kHandshakeTimeoutMs));
        if (!got.fds.empty())
            uffd = got.fds[0];
        for (size_t i = 1; i < got.fds.size(); ++i)
            ::close(got.fds[i]);
        if (got.message.empty() && got.fds.empty())
            return make_error("the VMM closed the connection without sending its memory regions");
        // A stream socket: the rest of a long message may follow the part the fd came with.
        while (!json_complete(got.message) && got.message.size() < uffd::kMaxMessageBytes) {
            auto more = uffd::receive_with_fds(conn, uffd::kMaxMessageBytes - got.message.size(), 1000);
            if (!more.ok() || more->message.empty())
                break;
            for (int fd : more->fds)
                ::close(fd);
            got.message += more->message;
        }
        if (uffd < 0)
            return make_error("the VMM sent its regions without a userfaultfd");
        if (got.fds.size() > 1)
            return make_error("the VMM sent {} file descriptors: only Firecracker's plain Uffd backend (one "
                              "userfaultfd) is supported, not its guest_memfd variant",
                got.fds.size());
        regions = TRY_CTX(uffd::decode_regions(got.message), "the VMM's region list");
        ps = regions[0].page_size;
        uint64_t total = 0;
        for (const auto& r : regions)
            total += r.size;
        // As Firecracker's handlers check: the regions cover the file exactly.
        if (total != h.m_file_size)
            return make_error("the VMM's guest RAM is {} bytes, the memory file '{}' holds {}: not this VM's memory "
                              "file",
                total, h.m_options.mem_file, h.m_file_size);
        for (const auto& r : regions) {
            if (r.page_size != ps)
                return make_error("the regions have different page sizes ({} and {})", ps, r.page_size);
            if (r.offset + r.size > h.m_file_size)
                return make_error("region at {:#x} ({} bytes at file offset {:#x}) lies past the end of the memory "
                                  "file ({} bytes)",
                    r.base_host_virt_addr, r.size, r.offset, h.m_file_size);
        }
        // poll() on a blocking userfaultfd reports POLLERR: the fd is shared with the VMM, which
        // created it non-blocking as Firecracker does, but make sure.
        int flags = ::fcntl(uffd, F_GETFL);
        if (flags >= 0 && !(flags & O_NONBLOCK))
            ::fcntl(uffd, F_SETFL, flags | O_NONBLOCK);
        pages = (h.m_file_size + ps - 1) / ps;
        has_data.assign(pages, false);
        for (auto [start, end] : h.m_extents)
            for (uint64_t p = start / ps; p < (end + ps - 1) / ps && p < pages; ++p)
                has_data[p] = true;
        served = std::make_unique<AtomicBits>(pages);
        removed = std::make_unique<AtomicBits>(pages);
        if (ps != 4096)
            zeros.assign(ps, 0);
        if (!h.m_options.record_path.empty())
            recorded.assign(pages, false);
        if (peer_pid > 0 && peer_pid != ::getpid())
            pidfd = static_cast<int>(::syscall(SYS_pidfd_open, peer_pid, 0));
        t0 = Clock::now();
        return {};
    }

    // Whether the VMM still maps `addr` (true when its maps cannot be read: the pidfd decides).
    bool peer_maps(uint64_t addr) const
    {
        std::ifstream maps(fmt::format("/proc/{}/maps", peer_pid));
        if (!maps)
            return true;
        std::string line;
        bool any = false;
        while (std::getline(maps, line)) {
            any = true;
            uint64_t start = 0, end = 0;
            if (std::sscanf(line.c_str(), "%" SCNx64 "-%" SCNx64, &start, &end) == 2 && addr >= start && addr < end)
                return true;
        }
        return !any;
    }

    static bool json_complete(const std::string& text)
    {
        // The region list is one JSON array: complete once its brackets balance.
        int depth = 0;
        bool in_string = false, escaped = false, started = false;
        for (char c : text) {
            if (in_string) {
                if (escaped)
                    escaped = false;
                else if (c == '\\')
                    escaped = true;
                else if (c == '"')
                    in_string = false;
                continue;
            }
            if (c == '"')
                in_string = true;
            else if (c == '[' || c == '{') {
                ++depth;
                started = true;
            } else if (c == ']' || c == '}')
                --depth;
        }
        return started && depth <= 0;
    }

    // The fault loop, until the VMM exits or stop().
    Result<void> run()
    {
        std::vector<uint64_t> deferred;
        bool watch_conn = true;
        uffd_msg msgs[64];
        for (;;) {
            pollfd fds[4];
            nfds_t n = 0;
            fds[n++] = { uffd, POLLIN, 0 };
            fds[n++] = { h.m_stop_fd, POLLIN, 0 };
            nfds_t pid_at = n, conn_at = n;
            if (pidfd >= 0)
                fds[pid_at = n++] = { pidfd, POLLIN, 0 };
            if (watch_conn)
                fds[conn_at = n++] = { conn, POLLIN | POLLRDHUP, 0 };
            int ready = ::poll(fds, n, deferred.empty() ? -1 : 1);
            if (ready < 0 && errno != EINTR)
                return Error::from_errno("poll");
            if (ready <= 0 && deferred.empty())
                continue;
            if (fds[1].revents)
                return {}; // stop()
            if (pidfd >= 0 && fds[pid_at].revents)
                return {}; // the VMM exited
            if (watch_conn && fds[conn_at].revents) {
                char buf[4096];
                ssize_t got = ::recv(conn, buf, sizeof(buf), MSG_DONTWAIT);
                if (got == 0 || (got < 0 && errno != EAGAIN && errno != EINTR)
                    || (fds[conn_at].revents & (POLLHUP | POLLRDHUP | POLLERR))) {
                    // The connection closed. A Vessel VMM keeps it as long as guest RAM is mapped
                    // (a current Firecracker until it exits); without a pidfd that is the only
                    // sign. An older Firecracker closed it at once: its guest RAM is still there.
                    if (pidfd < 0 || !peer_maps(regions[0].base_host_virt_addr))
                        return {};
                    watch_conn = false;
                }
                // Anything sent after the handshake is not part of the protocol: dropped.
            }
            if (fds[0].revents & POLLERR)
                return make_error("the userfaultfd reports an error");
            if (fds[0].revents & POLLIN) {
                ssize_t got = ::read(uffd, msgs, sizeof(msgs));
                if (got < 0 && errno != EAGAIN && errno != EINTR)
                    return Error::from_errno("reading userfaultfd events");
                for (ssize_t k = 0; got > 0 && k < got / static_cast<ssize_t>(sizeof(uffd_msg)); ++k) {
                    const uffd_msg& m = msgs[k];
                    if (m.event == UFFD_EVENT_PAGEFAULT) {
                        if (faults.fetch_add(1, std::memory_order_relaxed) == 0)
                            first_fault_ms = ms_since(t0);
                        auto outcome = TRY(serve_fault(m.arg.pagefault.address));
                        if (outcome == Outcome::Retry)
                            deferred.push_back(m.arg.pagefault.address);
                        else if (outcome == Outcome::Gone)
                            return {};
                    } else if (m.event == UFFD_EVENT_REMOVE) {
                        remove(m.arg.remove.start, m.arg.remove.end);
                    } else {
                        log_debug("uffd-handler: ignoring userfaultfd event {}", m.event);
                    }
                }
            }
            // Faults that met a changing memory map: again, now that its events are read.
            std::vector<uint64_t> retry;
            retry.swap(deferred);
            for (uint64_t addr : retry) {
                auto outcome = TRY(serve_fault(addr));
                if (outcome == Outcome::Retry)
                    deferred.push_back(addr);
                else if (outcome == Outcome::Gone)
                    return {};
            }
        }
    }

    UffdHandlerStats stats() const
    {
        UffdHandlerStats s;
        s.vmm_pid = peer_pid;
        s.faults = faults;
        s.lazy_pages = lazy;
        s.zero_pages = zero;
        s.prefetched_pages = prefetched;
        s.eager_pages = eager;
        s.raced = raced;
        s.removed_pages = removed_pages;
        s.recorded_pages = trace.size();
        s.page_size = ps;
        s.first_fault_ms = first_fault_ms;
        s.prefetch_ms = prefetch_ms;
        s.eager_ms = eager_ms;
        s.elapsed_ms = ms_since(t0);
        return s;
    }
};

Result<std::unique_ptr<UffdHandler>> UffdHandler::create(const UffdHandlerOptions& options)
{
    std::unique_ptr<UffdHandler> h(new UffdHandler());
    h->m_options = options;
    h->m_stop_fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (h->m_stop_fd < 0)
        return Error::from_errno("eventfd");
    h->m_file_fd = ::open(options.mem_file.c_str(), O_RDONLY | O_CLOEXEC);
    if (h->m_file_fd < 0)
        return Error::from_errno(fmt::format("memory file '{}': cannot open", options.mem_file));
    struct stat st { };
    if (::fstat(h->m_file_fd, &st) != 0)
        return Error::from_errno(fmt::format("memory file '{}': fstat", options.mem_file));
    if (!S_ISREG(st.st_mode) || st.st_size <= 0 || st.st_size % 4096)
        return make_error("memory file '{}': not a regular file of whole 4 KiB pages", options.mem_file);
    h->m_file_size = static_cast<uint64_t>(st.st_size);
    void* map = ::mmap(nullptr, h->m_file_size, PROT_READ, MAP_PRIVATE | MAP_NORESERVE, h->m_file_fd, 0);
    if (map == MAP_FAILED)
        return Error::from_errno(fmt::format("memory file '{}': cannot map it", options.mem_file));
    h->m_file = static_cast<const uint8_t*>(map);
    h->m_extents = data_extents(h->m_file_fd, h->m_file_size);
    if (options.eager)
        for (auto [start, end] : h->m_extents)
            ::madvise(const_cast<uint8_t*>(h->m_file) + start, end - start, MADV_WILLNEED);
    if (!options.prefetch_path.empty())
        h->m_prefetch = TRY(read_trace(options.prefetch_path, &h->m_prefetch_page_size));
    if (!options.record_path.empty()) {
        auto dir = std::filesystem::path(options.record_path).parent_path();
        if (::access(dir.empty() ? "." : dir.c_str(), W_OK) != 0)
            return Error::from_errno(fmt::format("trace '{}': cannot write into its directory", options.record_path));
    }
    return h;
}

UffdHandler::~UffdHandler()
{
    if (m_file)
        ::munmap(const_cast<uint8_t*>(m_file), m_file_size);
    close_fd(m_file_fd);
    close_fd(m_stop_fd);
}

uint64_t UffdHandler::data_bytes() const
{
    uint64_t total = 0;
    for (auto [start, end] : m_extents)
        total += end - start;
    return total;
}

void UffdHandler::stop()
{
    uint64_t one = 1;
    // Async-signal-safe: a write to the eventfd the loops poll.
    [[maybe_unused]] ssize_t n = ::write(m_stop_fd, &one, sizeof(one));
}

Result<UffdHandlerStats> UffdHandler::serve(int connection)
{
    Session s(*this);
    s.conn = connection;
    auto kill_vmm = [&](const Error& e) -> Error {
        // The VMM cannot run on without its handler: its next fault would wait forever.
        if (s.peer_pid > 0 && s.peer_pid != ::getpid() && s.uffd >= 0) {
            ::kill(s.peer_pid, SIGKILL);
            return e.with_context(fmt::format("VMM {} killed", s.peer_pid));
        }
        return e;
    };
    if (auto r = s.handshake(); !r.ok())
        return kill_vmm(r.error());
    std::thread worker;
    if (!m_prefetch.empty() || m_options.eager)
        worker = std::thread([&] { s.bulk(); });
    auto result = s.run();
    s.worker_stop = true;
    if (worker.joinable())
        worker.join();
    if (!result.ok())
        return kill_vmm(result.error());
    auto stats = s.stats();
    if (!m_options.record_path.empty())
        TRY(write_trace(m_options.record_path, s.trace, s.ps));
    return stats;
}

Result<UffdHandlerStats> UffdHandler::listen_and_serve(
    const std::string& socket_path, const std::function<void()>& on_listening)
{
    sockaddr_un addr {};
    addr.sun_family = AF_UNIX;
    if (socket_path.empty() || socket_path.size() >= sizeof(addr.sun_path))
        return make_error(
            "socket '{}': the path is empty or longer than {} bytes", socket_path, sizeof(addr.sun_path) - 1);
    std::memcpy(addr.sun_path, socket_path.c_str(), socket_path.size());
    int listener = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (listener < 0)
        return Error::from_errno("socket");
    if (::bind(listener, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
        auto err = Error::from_errno(fmt::format("socket '{}': cannot bind (remove a stale one first)", socket_path));
        ::close(listener);
        return err;
    }
    struct Cleanup {
        int& fd;
        const std::string& path;
        ~Cleanup()
        {
            close_fd(fd);
            ::unlink(path.c_str());
        }
    } cleanup { listener, socket_path };
    if (::listen(listener, 1) != 0)
        return Error::from_errno(fmt::format("socket '{}': listen", socket_path));
    if (on_listening)
        on_listening();
    for (;;) {
        pollfd fds[2] = { { listener, POLLIN, 0 }, { m_stop_fd, POLLIN, 0 } };
        int ready = ::poll(fds, 2, -1);
        if (ready < 0 && errno == EINTR)
            continue;
        if (ready < 0)
            return Error::from_errno("poll");
        if (fds[1].revents)
            return make_error("stopped before a VMM connected");
        int conn = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
        if (conn < 0) {
            if (errno == EINTR || errno == EAGAIN || errno == ECONNABORTED)
                continue;
            return Error::from_errno(fmt::format("socket '{}': accept", socket_path));
        }
        // One VMM: nobody else may connect from now on.
        close_fd(listener);
        ::unlink(socket_path.c_str());
        return serve(conn);
    }
}

} // namespace vessel::snapshot
