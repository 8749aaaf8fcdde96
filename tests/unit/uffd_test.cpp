// The Uffd restore backend: Firecracker's handshake (the region list's JSON, the userfaultfd passed
// with SCM_RIGHTS) and `vessel uffd-handler`'s page server, run in a thread against guest memory
// of this process registered with a real userfaultfd (skipped, with the reason, where the kernel
// refuses one).
#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <thread>

#include "arch/x86/layout.h"
#include "memory/guest_memory.h"
#include "memory/uffd_memory.h"
#include "snapshot/memory_file.h"
#include "snapshot/uffd_handler.h"

using namespace vessel;
using namespace vessel::layout;

namespace {

constexpr uint64_t kPage = 4096;

// --- the handshake message -------------------------------------------------------------------

TEST(UffdProtocol, EncodesFirecrackersFieldsInItsOrder)
{
    std::vector<uffd::RegionMapping> regions { { 0x7f0000000000, 0xc0000000, 0, 4096 },
        { 0x7f00c0000000, 0x40000000, 0xc0000000, 4096 } };
    std::string json = uffd::encode_regions(regions);
    EXPECT_EQ(json,
        "[{\"base_host_virt_addr\":139637976727552,\"size\":3221225472,\"offset\":0,\"page_size\":4096,"
        "\"page_size_kib\":4096},{\"base_host_virt_addr\":139641197953024,\"size\":1073741824,\"offset\":"
        "3221225472,\"page_size\":4096,\"page_size_kib\":4096}]");
    auto back = uffd::decode_regions(json);
    ASSERT_TRUE(back.ok()) << back.error().message();
    EXPECT_EQ(back.value(), regions);
}

TEST(UffdProtocol, DecodesOlderAndLargerMessages)
{
    // Firecracker before 1.5: no page size at all; 1.5-1.9: page_size_kib (in bytes, despite its
    // name); unknown fields are ignored, as serde does.
    auto none = uffd::decode_regions(R"([{"base_host_virt_addr":4096,"size":8192,"offset":0}])");
    ASSERT_TRUE(none.ok()) << none.error().message();
    EXPECT_EQ(none->at(0).page_size, 4096u);
    auto kib_bytes = uffd::decode_regions(
        R"([{"base_host_virt_addr":2097152,"size":2097152,"offset":0,"page_size_kib":2097152,"extra":[1,{"a":2}]}])");
    ASSERT_TRUE(kib_bytes.ok()) << kib_bytes.error().message();
    EXPECT_EQ(kib_bytes->at(0).page_size, 2u << 20);
    auto kib = uffd::decode_regions(R"([{"base_host_virt_addr":4096,"size":4096,"offset":8192,"page_size_kib":4}])");
    ASSERT_TRUE(kib.ok()) << kib.error().message();
    EXPECT_EQ(kib->at(0).page_size, 4096u);
    EXPECT_EQ(kib->at(0).offset, 8192u);
}

TEST(UffdProtocol, RefusesBadMessages)
{
    const char* bad[] = {
        "",
        "{",
        R"({"base_host_virt_addr":4096,"size":4096,"offset":0})",
        "[]",
        "[1]",
        R"([{"size":4096,"offset":0}])",
        R"([{"base_host_virt_addr":-4096,"size":4096,"offset":0}])",
        R"([{"base_host_virt_addr":"4096","size":4096,"offset":0}])",
        R"([{"base_host_virt_addr":4096,"size":0,"offset":0}])",
        R"([{"base_host_virt_addr":4097,"size":4096,"offset":0}])",
        R"([{"base_host_virt_addr":4096,"size":4096,"offset":100}])",
        R"([{"base_host_virt_addr":4096,"size":4096,"offset":0,"page_size":12288}])",
        R"([{"base_host_virt_addr":4096,"size":4096,"offset":0,"page_size":1024}])",
        R"([{"base_host_virt_addr":4096,"size":8192,"offset":0},{"base_host_virt_addr":8192,"size":4096,"offset":8192}])",
        R"([{"base_host_virt_addr":4096,"size":8192,"offset":0},{"base_host_virt_addr":65536,"size":4096,"offset":4096}])",
        R"([{"base_host_virt_addr":18446744073709547520,"size":8192,"offset":0}])",
    };
    for (const char* text : bad)
        EXPECT_FALSE(uffd::decode_regions(text).ok()) << text;
}

TEST(UffdProtocol, PassesTheFdWithTheMessage)
{
    int sv[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    int efd = ::eventfd(0, EFD_CLOEXEC);
    ASSERT_GE(efd, 0);
    std::string message = uffd::encode_regions({ { 0x10000, 0x20000, 0, 4096 } });
    ASSERT_TRUE(uffd::send_with_fd(sv[0], message, efd).ok());
    auto got = uffd::receive_with_fds(sv[1], uffd::kMaxMessageBytes, 1000);
    ASSERT_TRUE(got.ok()) << got.error().message();
    EXPECT_EQ(got->message, message);
    ASSERT_EQ(got->fds.size(), 1u);
    // The same eventfd: what is written through one fd is read through the other.
    uint64_t v = 5;
    ASSERT_EQ(::write(efd, &v, sizeof(v)), 8);
    v = 0;
    ASSERT_EQ(::read(got->fds[0], &v, sizeof(v)), 8);
    EXPECT_EQ(v, 5u);
    EXPECT_NE(::fcntl(got->fds[0], F_GETFD) & FD_CLOEXEC, 0); // received close-on-exec
    ::close(got->fds[0]);
    // Nothing more: the receive times out; then the peer closes: an empty message.
    EXPECT_FALSE(uffd::receive_with_fds(sv[1], 64, 20).ok());
    ::close(sv[0]);
    auto closed = uffd::receive_with_fds(sv[1], 64, 1000);
    ASSERT_TRUE(closed.ok());
    EXPECT_TRUE(closed->message.empty());
    EXPECT_TRUE(closed->fds.empty());
    ::close(sv[1]);
    ::close(efd);
}

TEST(UffdProtocol, TraceFilesRoundTrip)
{
    auto path = (std::filesystem::temp_directory_path() / fmt::format("vessel-uffd-trace-{}", ::getpid())).string();
    std::vector<uint64_t> offsets { 0x5000, 0x1000, 0xc0001000, 0 };
    ASSERT_TRUE(snapshot::write_trace(path, offsets, 4096).ok());
    uint64_t ps = 0;
    auto back = snapshot::read_trace(path, &ps);
    ASSERT_TRUE(back.ok()) << back.error().message();
    EXPECT_EQ(back.value(), offsets);
    EXPECT_EQ(ps, 4096u);
    {
        FILE* f = std::fopen(path.c_str(), "a");
        std::fputs("not-an-offset\n", f);
        std::fclose(f);
    }
    auto bad = snapshot::read_trace(path);
    ASSERT_FALSE(bad.ok());
    EXPECT_NE(bad.error().message().find("line 7"), std::string::npos) << bad.error().message();
    std::filesystem::remove(path);
}

// --- the handler against a real userfaultfd ---------------------------------------------------

// A memory file: page p holds the byte (p * 7 + 1) & 0xff in every byte when p is in `data`,
// and is a hole otherwise.
struct MemFile {
    std::string path;
    uint64_t size;
    std::vector<uint64_t> data; // page numbers (file offset / 4096)

    static uint8_t pattern(uint64_t page) { return static_cast<uint8_t>(page * 7 + 1) | 1; }

    MemFile(uint64_t bytes, std::vector<uint64_t> pages)
        : path((std::filesystem::temp_directory_path() / fmt::format("vessel-uffd-mem-{}-{}", ::getpid(), counter()++))
                   .string())
        , size(bytes)
        , data(std::move(pages))
    {
        int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        EXPECT_GE(fd, 0);
        EXPECT_EQ(::ftruncate(fd, static_cast<off_t>(size)), 0);
        std::vector<uint8_t> buf(kPage);
        for (uint64_t p : data) {
            std::memset(buf.data(), pattern(p), kPage);
            EXPECT_EQ(::pwrite(fd, buf.data(), kPage, static_cast<off_t>(p * kPage)), static_cast<ssize_t>(kPage));
        }
        ::close(fd);
    }
    ~MemFile() { std::filesystem::remove(path); }
    bool has(uint64_t page) const { return std::find(data.begin(), data.end(), page) != data.end(); }
    static std::atomic<int>& counter()
    {
        static std::atomic<int> c { 0 };
        return c;
    }
};

// The first byte of file page `page` as the guest sees it.
uint8_t guest_byte(const GuestMemory& mem, uint64_t page)
{
    uint64_t gpa = mem.gpa_of_offset(page * kPage);
    const volatile uint8_t* p = mem.host_ptr(gpa, kPage);
    return p[kPage / 2];
}

bool resident(const GuestMemory& mem, uint64_t page)
{
    uint64_t gpa = mem.gpa_of_offset(page * kPage);
    unsigned char v = 0;
    ::mincore(mem.host_ptr(gpa, kPage), kPage, &v);
    return v & 1;
}

// A handler serving guest memory of this process from a thread, as `vessel uffd-handler` serves
// a VMM process.
class Served {
public:
    static constexpr int kWatchdogSeconds = 60;

    Served(const MemFile& file, snapshot::UffdHandlerOptions options)
    {
        options.mem_file = file.path;
        auto h = snapshot::UffdHandler::create(options);
        if (!h.ok()) {
            m_error = h.error().message();
            return;
        }
        m_handler = std::move(h.value());
        int sv[2];
        if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
            m_error = "socketpair";
            return;
        }
        m_thread = std::thread([this, fd = sv[1]] {
            m_stats = std::make_unique<Result<snapshot::UffdHandlerStats>>(m_handler->serve(fd));
        });
        auto mem = GuestMemory::create_anonymous(file.size);
        if (!mem.ok()) {
            m_error = mem.error().message();
            ::close(sv[0]);
            return;
        }
        m_memory = std::make_unique<GuestMemory>(std::move(mem.value()));
        auto attached = uffd::attach_handler(*m_memory, sv[0]);
        if (!attached.ok()) {
            m_error = attached.error().message();
            ::close(sv[0]);
            m_memory.reset();
            return;
        }
        // Should the handler fail, a touch of guest memory would wait forever: end the test
        // binary instead.
        ::alarm(kWatchdogSeconds);
    }
    ~Served() { (void)finish(); }

    // Why the handler could not start (empty: it runs).
    const std::string& error() const { return m_error; }
    GuestMemory& memory() { return *m_memory; }

    // Drops the guest memory (the "VMM" exits: its end of the connection closes) and returns what
    // the handler served.
    Result<snapshot::UffdHandlerStats> finish()
    {
        m_memory.reset();
        if (m_thread.joinable())
            m_thread.join();
        ::alarm(0);
        if (!m_stats)
            return make_error("the handler did not run: {}", m_error);
        return *m_stats;
    }

private:
    std::string m_error;
    std::unique_ptr<snapshot::UffdHandler> m_handler;
    std::unique_ptr<GuestMemory> m_memory;
    std::thread m_thread;
    std::unique_ptr<Result<snapshot::UffdHandlerStats>> m_stats;
};

// userfaultfd() may be refused (an unprivileged user, a seccomp filter, an old kernel).
#define SKIP_WITHOUT_USERFAULTFD()                                                                                     \
    do {                                                                                                               \
        auto probe = uffd::create_userfaultfd();                                                                       \
        if (!probe.ok())                                                                                               \
            GTEST_SKIP() << "no userfaultfd on this host: " << probe.error().message();                                \
        ::close(probe.value());                                                                                        \
    } while (0)

TEST(UffdHandler, ServesFilePagesLazilyAndHolesAsZeroPages)
{
    SKIP_WITHOUT_USERFAULTFD();
    MemFile file(kMinRam, { 0, 1, 2, 100, 4095 });
    Served s(file, {});
    ASSERT_EQ(s.error(), "");
    for (uint64_t p : { 2, 0, 100, 4095 })
        EXPECT_EQ(guest_byte(s.memory(), p), MemFile::pattern(p)) << "page " << p;
    for (uint64_t p : { 3, 50, 4094 })
        EXPECT_EQ(guest_byte(s.memory(), p), 0) << "page " << p;
    EXPECT_FALSE(resident(s.memory(), 1)); // untouched: never served
    // A write to a served page stays (private memory, the file unchanged).
    *s.memory().host_ptr(100 * kPage, 1) = 0xee;
    EXPECT_EQ(*s.memory().host_ptr(100 * kPage, 1), 0xee);
    auto stats = s.finish();
    ASSERT_TRUE(stats.ok()) << stats.error().message();
    EXPECT_EQ(stats->lazy_pages, 4u);
    EXPECT_EQ(stats->zero_pages, 3u);
    EXPECT_EQ(stats->faults, 7u);
    EXPECT_EQ(stats->prefetched_pages + stats->eager_pages, 0u);
}

TEST(UffdHandler, ServesTheRegionAboveTheMmioHoleFromItsFileOffset)
{
    SKIP_WITHOUT_USERFAULTFD();
    uint64_t low_pages = kMmioHoleStart / kPage;
    MemFile file(kMmioHoleStart + kMinRam, { 7, low_pages, low_pages + 9 });
    Served s(file, {});
    ASSERT_EQ(s.error(), "");
    ASSERT_EQ(s.memory().regions().size(), 2u);
    for (uint64_t p : { uint64_t(7), low_pages, low_pages + 9 })
        EXPECT_EQ(guest_byte(s.memory(), p), MemFile::pattern(p)) << "page " << p;
    EXPECT_EQ(*s.memory().host_ptr(k4GiB + 9 * kPage, 1), MemFile::pattern(low_pages + 9));
    EXPECT_EQ(guest_byte(s.memory(), low_pages + 8), 0);
}

TEST(UffdHandler, ServesManyThreadsFaultingAtOnce)
{
    SKIP_WITHOUT_USERFAULTFD();
    std::vector<uint64_t> pages;
    for (uint64_t p = 0; p < 2048; p += 2)
        pages.push_back(p);
    MemFile file(kMinRam, pages);
    Served s(file, {});
    ASSERT_EQ(s.error(), "");
    std::atomic<int> wrong { 0 };
    std::vector<std::thread> threads;
    for (int t = 0; t < 8; ++t) {
        threads.emplace_back([&, t] {
            // Every thread walks the same pages from a different start: many faults on one page.
            for (uint64_t k = 0; k < 2048; ++k) {
                uint64_t p = (k + static_cast<uint64_t>(t) * 97) % 2048;
                uint8_t want = p % 2 ? 0 : MemFile::pattern(p);
                if (guest_byte(s.memory(), p) != want)
                    ++wrong;
            }
        });
    }
    for (auto& t : threads)
        t.join();
    EXPECT_EQ(wrong.load(), 0);
    auto stats = s.finish();
    ASSERT_TRUE(stats.ok()) << stats.error().message();
    EXPECT_EQ(stats->lazy_pages, 1024u);
    EXPECT_EQ(stats->zero_pages, 1024u);
    EXPECT_GE(stats->faults, 2048u);
}

TEST(UffdHandler, BalloonedPagesComeBackAsZeros)
{
    SKIP_WITHOUT_USERFAULTFD();
    MemFile file(kMinRam, { 10, 11, 12 });
    Served s(file, {});
    ASSERT_EQ(s.error(), "");
    EXPECT_EQ(guest_byte(s.memory(), 11), MemFile::pattern(11));
    // The balloon: MADV_DONTNEED, reported to the handler as UFFD_EVENT_REMOVE.
    ASSERT_TRUE(s.memory().discard(10 * kPage, 2 * kPage).ok());
    EXPECT_EQ(guest_byte(s.memory(), 11), 0);
    EXPECT_EQ(guest_byte(s.memory(), 10), 0);
    EXPECT_EQ(guest_byte(s.memory(), 12), MemFile::pattern(12)); // not given back
    auto stats = s.finish();
    ASSERT_TRUE(stats.ok()) << stats.error().message();
    EXPECT_EQ(stats->removed_pages, 2u);
    EXPECT_EQ(stats->zero_pages, 2u);
    EXPECT_EQ(stats->lazy_pages, 2u);
}

TEST(UffdHandler, RecordsTheFaultOrderAndPrefetchesItNextTime)
{
    SKIP_WITHOUT_USERFAULTFD();
    MemFile file(kMinRam, { 1, 2, 3, 40, 41, 900 });
    auto trace = file.path + ".trace";
    std::vector<uint64_t> order { 900, 2, 3, 55, 40, 1 };
    {
        snapshot::UffdHandlerOptions o;
        o.record_path = trace;
        Served s(file, o);
        ASSERT_EQ(s.error(), "");
        for (uint64_t p : order)
            (void)guest_byte(s.memory(), p);
        (void)guest_byte(s.memory(), 2); // no second entry
        auto stats = s.finish();
        ASSERT_TRUE(stats.ok()) << stats.error().message();
        EXPECT_EQ(stats->recorded_pages, order.size());
    }
    auto recorded = snapshot::read_trace(trace);
    ASSERT_TRUE(recorded.ok()) << recorded.error().message();
    std::vector<uint64_t> want;
    for (uint64_t p : order)
        want.push_back(p * kPage);
    EXPECT_EQ(recorded.value(), want);

    snapshot::UffdHandlerOptions o;
    o.prefetch_path = trace;
    Served s(file, o);
    ASSERT_EQ(s.error(), "");
    // The trace's pages arrive without being touched.
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    auto all_in = [&] {
        for (uint64_t p : order)
            if (!resident(s.memory(), p))
                return false;
        return true;
    };
    while (!all_in() && std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
    EXPECT_TRUE(all_in());
    EXPECT_FALSE(resident(s.memory(), 41));
    for (uint64_t p : { 900, 2, 3, 55, 40, 1, 41 })
        EXPECT_EQ(guest_byte(s.memory(), p), file.has(p) ? MemFile::pattern(p) : 0) << "page " << p;
    auto stats = s.finish();
    ASSERT_TRUE(stats.ok()) << stats.error().message();
    EXPECT_EQ(stats->prefetched_pages, order.size());
    EXPECT_EQ(stats->lazy_pages, 1u); // page 41
    std::filesystem::remove(trace);
}

TEST(UffdHandler, RecordsOnlyTheFirstSecondsWhenAsked)
{
    SKIP_WITHOUT_USERFAULTFD();
    MemFile file(kMinRam, { 1, 2 });
    auto trace = file.path + ".trace";
    snapshot::UffdHandlerOptions o;
    o.record_path = trace;
    o.record_seconds = 1e-9; // over before the first fault
    Served s(file, o);
    ASSERT_EQ(s.error(), "");
    EXPECT_EQ(guest_byte(s.memory(), 1), MemFile::pattern(1));
    auto stats = s.finish();
    ASSERT_TRUE(stats.ok()) << stats.error().message();
    EXPECT_EQ(stats->lazy_pages, 1u);
    EXPECT_EQ(stats->recorded_pages, 0u);
    auto recorded = snapshot::read_trace(trace);
    ASSERT_TRUE(recorded.ok()) << recorded.error().message();
    EXPECT_TRUE(recorded->empty());
    std::filesystem::remove(trace);
}

TEST(UffdHandler, EagerModeCopiesEveryDataPageAndLeavesHolesToFault)
{
    SKIP_WITHOUT_USERFAULTFD();
    std::vector<uint64_t> pages;
    for (uint64_t p = 100; p < 700; ++p)
        pages.push_back(p);
    pages.push_back(4000);
    MemFile file(kMinRam, pages);
    snapshot::UffdHandlerOptions o;
    o.eager = true;
    Served s(file, o);
    ASSERT_EQ(s.error(), "");
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!resident(s.memory(), 4000) && std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
    EXPECT_TRUE(resident(s.memory(), 4000));
    EXPECT_TRUE(resident(s.memory(), 100));
    EXPECT_FALSE(resident(s.memory(), 99)); // a hole: not copied
    for (uint64_t p : { 100, 350, 699, 4000 })
        EXPECT_EQ(guest_byte(s.memory(), p), MemFile::pattern(p)) << "page " << p;
    EXPECT_EQ(guest_byte(s.memory(), 99), 0);
    auto stats = s.finish();
    ASSERT_TRUE(stats.ok()) << stats.error().message();
    EXPECT_EQ(stats->eager_pages + stats->raced, 601u);
    EXPECT_EQ(stats->zero_pages, 1u);
}

TEST(UffdHandler, ASnapshotOfServedMemoryHoldsThePagesNotServedYet)
{
    SKIP_WITHOUT_USERFAULTFD();
    MemFile file(kMinRam, { 0, 5, 6, 3000 });
    Served s(file, {});
    ASSERT_EQ(s.error(), "");
    EXPECT_EQ(guest_byte(s.memory(), 5), MemFile::pattern(5));
    *s.memory().host_ptr(5 * kPage, 1) = 0x42; // a write after the restore
    auto out = file.path + ".snap";
    // Pages 0, 6 and 3000 were never touched: the snapshot reads them through the handler.
    auto written = snapshot::write_full_memory(s.memory(), out);
    ASSERT_TRUE(written.ok()) << written.error().message();
    EXPECT_EQ(written->pages_written, 4u);
    int fd = ::open(out.c_str(), O_RDONLY | O_CLOEXEC);
    ASSERT_GE(fd, 0);
    for (uint64_t p : { 0, 5, 6, 3000, 7 }) {
        uint8_t b[2] = {};
        ASSERT_EQ(::pread(fd, b, 2, static_cast<off_t>(p * kPage)), 2);
        uint8_t want = p == 5 ? 0x42 : file.has(p) ? MemFile::pattern(p) : 0;
        EXPECT_EQ(b[0], want) << "page " << p;
    }
    ::close(fd);
    std::filesystem::remove(out);
}

TEST(UffdHandler, RefusesAMemoryFileOfAnotherSize)
{
    SKIP_WITHOUT_USERFAULTFD();
    MemFile file(kMinRam, { 1 });
    snapshot::UffdHandlerOptions options;
    options.mem_file = file.path;
    auto h = snapshot::UffdHandler::create(options);
    ASSERT_TRUE(h.ok()) << h.error().message();
    int sv[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    auto mem = GuestMemory::create_anonymous(2 * kMinRam);
    ASSERT_TRUE(mem.ok());
    ASSERT_TRUE(uffd::attach_handler(*mem, sv[0]).ok());
    auto served = (*h)->serve(sv[1]);
    ASSERT_FALSE(served.ok());
    EXPECT_NE(served.error().message().find("not this VM's memory file"), std::string::npos)
        << served.error().message();
}

TEST(UffdHandler, RefusesAVmmThatSendsNoUserfaultfd)
{
    MemFile file(kMinRam, { 1 });
    snapshot::UffdHandlerOptions options;
    options.mem_file = file.path;
    auto h = snapshot::UffdHandler::create(options);
    ASSERT_TRUE(h.ok()) << h.error().message();
    int sv[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    std::string msg = uffd::encode_regions({ { 0x100000, kMinRam, 0, 4096 } });
    ASSERT_EQ(::send(sv[0], msg.data(), msg.size(), 0), static_cast<ssize_t>(msg.size()));
    auto served = (*h)->serve(sv[1]);
    ASSERT_FALSE(served.ok());
    EXPECT_NE(served.error().message().find("without a userfaultfd"), std::string::npos) << served.error().message();
    ::close(sv[0]);
}

} // namespace
