// Helpers for the VM pause/resume tests of the virtio devices (virtio_pause_*_test.cpp): a driver's
// split ring that device threads may use concurrently, an interrupt and an IRQ line that count from
// any thread, a copy of guest RAM to prove a paused device wrote nothing, and a FaultGate, a guest
// page that holds the first access to it (userfaultfd) so that a test can keep a device's request
// in flight for as long as it likes: "pause() waits for it" then means something.
#pragma once

#include <gtest/gtest.h>

#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <functional>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "devices/irq.h"
#include "devices/virtio/mmio.h"
#include "devices/virtio/queue.h"
#include "devices/virtio/virtio.h"
#include "memory/guest_memory.h"

namespace vessel::pause_test {

using namespace std::chrono_literals;

constexpr uint64_t kPage = 4096;
// How long a paused device is watched for work it must not do.
constexpr auto kQuiet = 50ms;

// Waits until `done()` or the timeout; true if done.
inline bool wait_until(const std::function<bool()>& done, std::chrono::milliseconds timeout = 10s)
{
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!done()) {
        if (std::chrono::steady_clock::now() > deadline)
            return false;
        std::this_thread::sleep_for(100us);
    }
    return true;
}

// Milliseconds `fn` takes.
template<typename Fn>
double millis(Fn&& fn)
{
    auto start = std::chrono::steady_clock::now();
    fn();
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
}

// Pauses and resumes `rounds` times and returns the median time pause() took, in milliseconds.
template<typename Pause, typename Resume>
double median_pause_ms(Pause&& pause, Resume&& resume, int rounds = 21)
{
    std::vector<double> times;
    for (int i = 0; i < rounds; ++i) {
        times.push_back(millis(pause));
        resume();
    }
    std::sort(times.begin(), times.end());
    return times[times.size() / 2];
}

// Counts what a device signals, from whichever thread.
class CountingInterrupt final : public virtio::VirtioInterrupt {
public:
    void signal_queue(uint16_t queue) override { ++queues[std::min<uint16_t>(queue, 3)]; }
    void signal_config() override { ++config; }
    void device_error(std::string_view why) override
    {
        std::lock_guard lock(m_lock);
        m_errors.emplace_back(why);
        ++errors;
    }
    std::string last_error()
    {
        std::lock_guard lock(m_lock);
        return m_errors.empty() ? std::string() : m_errors.back();
    }

    std::atomic<int> queues[4] {};
    std::atomic<int> config { 0 };
    std::atomic<int> errors { 0 };

private:
    std::mutex m_lock;
    std::vector<std::string> m_errors;
};

// An IRQ line (for an MmioTransport) whose edges are counted from any thread.
struct CountingIrq {
    std::atomic<int> edges { 0 };
    IrqLine line()
    {
        return IrqLine(16, [this](uint32_t, bool level) {
            if (level)
                ++edges;
        });
    }
};

struct Buf {
    uint64_t gpa;
    uint32_t len;
    bool writable;
};

struct UsedElem {
    uint16_t head;
    uint32_t len;
};

// The driver's side of a split ring at `base` (descriptors, then the available ring, then the
// used ring, 4-aligned). Descriptors come from a free list and go back when next_used() returns
// their chain, so any number of chains can pass as long as few are outstanding. The indices the
// device writes are read with acquire, as a driver on another CPU would.
class Ring {
public:
    Ring(GuestMemory& memory, uint64_t base, uint16_t size)
        : m_memory(memory)
        , m_size(size)
        , m_desc(base)
        , m_avail(base + 16ULL * size)
        , m_used((base + 16ULL * size + 6 + 2ULL * size + 3) & ~3ULL)
        , m_chains(size)
    {
        EXPECT_TRUE(m_memory.fill(base, 0, m_used + 6 + 8ULL * size - base).ok());
        for (uint16_t i = size; i-- > 0;)
            m_free.push_back(i);
    }

    uint16_t size() const { return m_size; }
    uint64_t desc_gpa() const { return m_desc; }
    uint64_t avail_gpa() const { return m_avail; }
    uint64_t used_gpa() const { return m_used; }

    // Points a Queue at the ring (what the transport does from the driver's registers).
    void configure(virtio::Queue& q) const
    {
        q.reset();
        q.set_size(m_size);
        q.set_desc_addr(m_desc);
        q.set_avail_addr(m_avail);
        q.set_used_addr(m_used);
        q.set_ready(true);
    }
    // The same through virtio-mmio registers.
    void configure(virtio::MmioTransport& t, uint32_t index) const
    {
        using namespace virtio::mmio_reg;
        auto reg
            = [&](uint64_t offset, uint32_t v) { t.write(offset, std::span(reinterpret_cast<const uint8_t*>(&v), 4)); };
        reg(kQueueSel, index);
        reg(kQueueNum, m_size);
        reg(kQueueDescLow, static_cast<uint32_t>(m_desc));
        reg(kQueueDescHigh, static_cast<uint32_t>(m_desc >> 32));
        reg(kQueueDriverLow, static_cast<uint32_t>(m_avail));
        reg(kQueueDriverHigh, static_cast<uint32_t>(m_avail >> 32));
        reg(kQueueDeviceLow, static_cast<uint32_t>(m_used));
        reg(kQueueDeviceHigh, static_cast<uint32_t>(m_used >> 32));
        reg(kQueueReady, 1);
    }

    size_t free_descriptors() const { return m_free.size(); }

    // Writes a chain and (unless told not to) publishes it; returns its head.
    uint16_t add(std::span<const Buf> bufs, bool publish_it = true)
    {
        if (bufs.empty() || bufs.size() > m_free.size()) {
            ADD_FAILURE() << "a chain of " << bufs.size() << " with " << m_free.size() << " descriptors free";
            return 0;
        }
        std::vector<uint16_t> ids;
        for (size_t i = 0; i < bufs.size(); ++i) {
            ids.push_back(m_free.back());
            m_free.pop_back();
        }
        for (size_t i = 0; i < bufs.size(); ++i) {
            bool last = i + 1 == bufs.size();
            uint16_t flags = (bufs[i].writable ? virtio::kDescWrite : 0) | (last ? 0 : virtio::kDescNext);
            uint8_t d[16];
            uint16_t next = last ? 0 : ids[i + 1];
            std::memcpy(d, &bufs[i].gpa, 8);
            std::memcpy(d + 8, &bufs[i].len, 4);
            std::memcpy(d + 12, &flags, 2);
            std::memcpy(d + 14, &next, 2);
            EXPECT_TRUE(m_memory.write(m_desc + 16ULL * ids[i], d).ok());
        }
        m_chains[ids[0]] = ids;
        if (publish_it)
            publish(ids[0]);
        return ids[0];
    }
    uint16_t add(std::initializer_list<Buf> bufs, bool publish_it = true)
    {
        return add(std::span(bufs.begin(), bufs.size()), publish_it);
    }

    void publish(uint16_t head)
    {
        EXPECT_TRUE(m_memory.write_obj<uint16_t>(m_avail + 4 + 2ULL * (m_avail_idx % m_size), head).ok());
        ++m_avail_idx;
        index_ref(m_avail + 2).store(m_avail_idx, std::memory_order_release);
    }

    uint16_t avail_idx() const { return m_avail_idx; }
    uint16_t used_idx() const { return index_ref(m_used + 2).load(std::memory_order_acquire); }
    // Chains published and not returned by next_used() yet.
    uint16_t outstanding() const { return static_cast<uint16_t>(m_avail_idx - m_last_used); }

    // The next used element, if the device returned one; its descriptors are free again.
    std::optional<UsedElem> next_used()
    {
        if (used_idx() == m_last_used)
            return std::nullopt;
        uint8_t raw[8];
        EXPECT_TRUE(m_memory.read(m_used + 4 + 8ULL * (m_last_used % m_size), raw).ok());
        ++m_last_used;
        uint32_t id, len;
        std::memcpy(&id, raw, 4);
        std::memcpy(&len, raw + 4, 4);
        if (id >= m_size || m_chains[id].empty()) {
            ADD_FAILURE() << "the device used descriptor " << id << ", which heads no outstanding chain";
            return UsedElem { static_cast<uint16_t>(id), len };
        }
        for (uint16_t d : m_chains[id])
            m_free.push_back(d);
        m_chains[id].clear();
        return UsedElem { static_cast<uint16_t>(id), len };
    }

    bool wait_used(uint16_t count, std::chrono::milliseconds timeout = 10s) const
    {
        return wait_until([&] { return used_idx() == count; }, timeout);
    }

private:
    std::atomic_ref<uint16_t> index_ref(uint64_t gpa) const
    {
        return std::atomic_ref<uint16_t>(*reinterpret_cast<uint16_t*>(m_memory.host_ptr(gpa, 2)));
    }

    GuestMemory& m_memory;
    uint16_t m_size;
    uint64_t m_desc, m_avail, m_used;
    std::vector<std::vector<uint16_t>> m_chains; // by head: the chain's descriptors
    std::vector<uint16_t> m_free;
    uint16_t m_avail_idx { 0 };
    uint16_t m_last_used { 0 };
};

// A copy of all of guest RAM: unchanged() tells whether any byte changed since.
class RamCopy {
public:
    explicit RamCopy(const GuestMemory& memory)
        : m_memory(memory)
    {
        for (const MemoryRegion& r : memory.regions())
            m_copies.emplace_back(r.host, r.host + r.size);
    }
    // The first changed guest-physical address, if any.
    std::optional<uint64_t> first_change() const
    {
        const auto& regions = m_memory.regions();
        for (size_t i = 0; i < regions.size(); ++i) {
            auto [mine, theirs] = std::mismatch(m_copies[i].begin(), m_copies[i].end(), regions[i].host);
            if (mine != m_copies[i].end())
                return regions[i].guest_base + static_cast<uint64_t>(mine - m_copies[i].begin());
        }
        return std::nullopt;
    }
    bool unchanged() const { return !first_change(); }

private:
    const GuestMemory& m_memory;
    std::vector<std::vector<uint8_t>> m_copies;
};

// One page of guest RAM that was never touched, registered with userfaultfd (missing pages):
// the first thread that reads or writes it, device thread or syscall on its behalf alike, waits
// in the kernel until release() supplies the page. Tests that need it skip (with the reason) where
// userfaultfd is not allowed. Destroying the gate (or closing it) wakes whoever waits, so declare
// it after the device and after any thread that waits for the device: it goes first.
class FaultGate {
public:
    FaultGate(GuestMemory& memory, uint64_t gpa)
        : m_host(memory.host_ptr(gpa, kPage))
    {
        if (!m_host || reinterpret_cast<uintptr_t>(m_host) % kPage) {
            m_error = "the gate must be one aligned page of guest RAM";
            return;
        }
        m_fd = static_cast<int>(::syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK));
        if (m_fd < 0) {
            m_error = std::string("userfaultfd: ") + std::strerror(errno);
            return;
        }
        uffdio_api api {};
        api.api = UFFD_API;
        uffdio_register reg {};
        reg.range.start = reinterpret_cast<uintptr_t>(m_host);
        reg.range.len = kPage;
        reg.mode = UFFDIO_REGISTER_MODE_MISSING;
        if (::ioctl(m_fd, UFFDIO_API, &api) != 0 || ::ioctl(m_fd, UFFDIO_REGISTER, &reg) != 0) {
            m_error = std::string("userfaultfd registration: ") + std::strerror(errno);
            close();
        }
    }
    ~FaultGate() { close(); }
    FaultGate(const FaultGate&) = delete;
    FaultGate& operator=(const FaultGate&) = delete;

    // Empty when the gate works, else why not.
    const std::string& error() const { return m_error; }

    // Waits until some thread is held at the page.
    bool wait_held(std::chrono::milliseconds timeout = 10s)
    {
        pollfd p { m_fd, POLLIN, 0 };
        if (m_fd < 0 || ::poll(&p, 1, static_cast<int>(timeout.count())) != 1)
            return false;
        uffd_msg msg;
        return ::read(m_fd, &msg, sizeof(msg)) == sizeof(msg) && msg.event == UFFD_EVENT_PAGEFAULT;
    }

    // Supplies the page with `contents` (the rest zero); the held thread goes on.
    void release(std::span<const uint8_t> contents = {})
    {
        if (m_fd < 0)
            return;
        alignas(4096) static thread_local uint8_t page[kPage];
        std::memset(page, 0, sizeof(page));
        if (!contents.empty()) // memcpy from an empty span's null data() is undefined (UBSan)
            std::memcpy(page, contents.data(), std::min<size_t>(contents.size(), kPage));
        uffdio_copy copy {};
        copy.dst = reinterpret_cast<uintptr_t>(m_host);
        copy.src = reinterpret_cast<uintptr_t>(page);
        copy.len = kPage;
        EXPECT_EQ(::ioctl(m_fd, UFFDIO_COPY, &copy), 0) << std::strerror(errno);
        close();
    }

private:
    void close()
    {
        if (m_fd >= 0)
            ::close(m_fd); // unregisters the page and wakes anyone held there
        m_fd = -1;
    }

    uint8_t* m_host;
    int m_fd { -1 };
    std::string m_error;
};

// Runs `fn` (a pause()) on its own thread; done() tells whether it has returned.
class Background {
public:
    explicit Background(std::function<void()> fn)
        : m_thread([this, fn = std::move(fn)] {
            fn();
            m_done.store(true);
        })
    {
    }
    ~Background() { join(); }
    bool done() const { return m_done.load(); }
    void join()
    {
        if (m_thread.joinable())
            m_thread.join();
    }

private:
    std::atomic<bool> m_done { false };
    std::thread m_thread;
};

// Pauses and resumes a device over and over on a thread of its own, with random gaps of up to
// 300 us paused and 500 us running, and checks while paused that `snapshot()` (the used rings'
// indices) stays put. `busy()` tells whether traffic is in flight (counted by busy_pauses()).
class Toggler {
public:
    Toggler(std::function<void()> pause, std::function<void()> resume, std::function<uint64_t()> snapshot,
        std::function<bool()> busy)
        : m_pause(std::move(pause))
        , m_resume(std::move(resume))
        , m_snapshot(std::move(snapshot))
        , m_busy(std::move(busy))
        , m_thread([this](std::stop_token stop) { run(stop); })
    {
    }
    ~Toggler() { stop(); }

    void stop()
    {
        m_thread.request_stop();
        if (m_thread.joinable())
            m_thread.join();
    }
    int pauses() const { return m_pauses.load(); }
    int busy_pauses() const { return m_busy_pauses.load(); }
    int moved_while_paused() const { return m_moved.load(); }

    // Waits until the device was paused (and resumed) once more since the last call. A producer
    // calls it every few requests, so that however the threads are scheduled, pauses fall among
    // its traffic and not only after it.
    bool wait_next(std::chrono::milliseconds timeout = 10s)
    {
        int target = m_waited + 1;
        bool ok = wait_until([&] { return m_pauses.load() >= target; }, timeout);
        m_waited = m_pauses.load();
        return ok;
    }

private:
    void run(std::stop_token stop)
    {
        uint32_t seed = 12345;
        auto next = [&](uint32_t bound) {
            seed = seed * 1103515245 + 12345;
            return std::chrono::microseconds((seed >> 8) % bound);
        };
        while (!stop.stop_requested()) {
            m_pause();
            bool busy = m_busy();
            uint64_t before = m_snapshot();
            std::this_thread::sleep_for(next(300));
            if (m_snapshot() != before)
                ++m_moved;
            if (busy)
                ++m_busy_pauses;
            ++m_pauses;
            m_resume();
            std::this_thread::sleep_for(next(500));
        }
    }

    std::function<void()> m_pause, m_resume;
    std::function<uint64_t()> m_snapshot;
    std::function<bool()> m_busy;
    std::atomic<int> m_pauses { 0 }, m_busy_pauses { 0 }, m_moved { 0 };
    int m_waited { 0 };
    std::jthread m_thread; // last: it runs with everything above constructed
};

} // namespace vessel::pause_test
