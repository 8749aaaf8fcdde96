// virtio-blk against a hand-made virtqueue in guest memory and a temporary raw image: every
// request type, the validation of malformed requests, read-only disks, the image checks at open,
// and the three ways of executing I/O (io_uring thread, synchronous thread, inline).
#include <gtest/gtest.h>

#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstddef>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include "devices/virtio/blk.h"
#include "memory/guest_memory.h"
#include "virtio_blk_test_support.h"
#include "vmm/vm_config.h"

using namespace vessel;
using namespace vessel::virtio;
using namespace vessel::virtio::blk;
using namespace vessel::virtio::test;
using IoMode = BlkDevice::IoMode;

namespace {

constexpr uint64_t kRingBase = 0x10000;
constexpr uint64_t kBufBase = 0x100000;
constexpr uint64_t kImageBytes = 1 << 20; // 2048 sectors
constexpr uint64_t kImageSectors = kImageBytes / 512;

uint8_t pattern(uint64_t offset)
{
    return static_cast<uint8_t>(offset * 7 + offset / 512 + 1);
}

// A raw image in a fresh temporary directory, filled with pattern().
class TempImage {
public:
    explicit TempImage(uint64_t bytes = kImageBytes, const std::string& name = "disk.img")
    {
        std::string tmpl = (std::getenv("TMPDIR") ? std::string(std::getenv("TMPDIR")) : "/tmp") + "/vessel-blk-XXXXXX";
        m_dir = ::mkdtemp(tmpl.data()) ? tmpl : "";
        path = m_dir + "/" + name;
        std::vector<uint8_t> data(bytes);
        for (uint64_t i = 0; i < bytes; ++i)
            data[i] = pattern(i);
        std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(data.data()), bytes);
    }
    ~TempImage()
    {
        ::unlink(path.c_str());
        ::rmdir(m_dir.c_str());
    }
    std::vector<uint8_t> read(uint64_t offset, size_t n) const
    {
        std::vector<uint8_t> out(n);
        int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
        EXPECT_EQ(::pread(fd, out.data(), n, static_cast<off_t>(offset)), static_cast<ssize_t>(n));
        ::close(fd);
        return out;
    }
    const std::string& dir() const { return m_dir; }

    std::string path;

private:
    std::string m_dir;
};

struct Req {
    uint16_t head;
    uint64_t status_gpa;
    uint64_t data_gpa;
};

// A device on an image, a queue of 64 entries in 16 MiB of guest RAM, and a bump allocator for
// request buffers.
class Harness {
public:
    explicit Harness(const DiskConfig& disk, IoMode mode = IoMode::Inline, bool negotiate_all = true)
        : m_memory(GuestMemory::create(16 << 20).release_value())
        , m_ring(m_memory, kRingBase, 64)
    {
        auto dev = BlkDevice::open(disk, mode);
        if (!dev.ok()) {
            open_error = dev.error().message();
            return;
        }
        device = dev.release_value();
        features = kFVersion1 | (negotiate_all ? device->features() : 0);
        auto bound = m_ring.bind(m_queue, features);
        EXPECT_TRUE(bound.ok()) << bound.error().message();
        ActivateContext ctx;
        ctx.memory = &m_memory;
        ctx.interrupt = &irq;
        ctx.features = features;
        ctx.queues = std::span<Queue>(&m_queue, 1);
        auto activated = device->activate(ctx);
        EXPECT_TRUE(activated.ok()) << activated.error().message();
    }
    ~Harness()
    {
        if (device)
            device->reset();
    }

    uint64_t alloc(uint64_t len, uint64_t align = 16)
    {
        m_next = (m_next + align - 1) & ~(align - 1);
        uint64_t at = m_next;
        m_next += len;
        return at;
    }
    uint64_t header(uint32_t type, uint64_t sector, uint32_t len = kHeaderSize)
    {
        uint64_t gpa = alloc(len);
        uint8_t h[kHeaderSize] = {};
        std::memcpy(h, &type, 4);
        std::memcpy(h + 8, &sector, 8);
        EXPECT_TRUE(m_memory.write(gpa, std::span<const uint8_t>(h, std::min<uint32_t>(len, kHeaderSize))).ok());
        return gpa;
    }
    uint64_t status_byte()
    {
        uint64_t gpa = alloc(1, 1);
        EXPECT_TRUE(m_memory.write_obj<uint8_t>(gpa, 0xee).ok()); // neither OK, IOERR nor UNSUPP
        return gpa;
    }

    // The usual three-part request: header | data (device-writable for IN) | status.
    Req request(uint32_t type, uint64_t sector, uint32_t data_len, bool data_writable)
    {
        uint64_t hdr = header(type, sector);
        uint64_t data = data_len ? alloc(data_len, 512) : 0;
        uint64_t status = status_byte();
        std::vector<VirtioBlkBuf> bufs { { hdr, kHeaderSize, false } };
        if (data_len)
            bufs.push_back({ data, data_len, data_writable });
        bufs.push_back({ status, 1, true });
        return { m_ring.add_chain(bufs), status, data };
    }
    Req read(uint64_t sector, uint32_t len) { return request(kTIn, sector, len, true); }
    Req write(uint64_t sector, const std::vector<uint8_t>& bytes)
    {
        Req r = request(kTOut, sector, static_cast<uint32_t>(bytes.size()), false);
        EXPECT_TRUE(m_memory.write(r.data_gpa, bytes).ok());
        return r;
    }
    Req ranges(uint32_t type, const std::vector<std::array<uint64_t, 3>>& list) // sector, count, flags
    {
        uint64_t hdr = header(type, 0);
        uint64_t data = alloc(kRangeSize * list.size());
        for (size_t i = 0; i < list.size(); ++i) {
            uint8_t r[kRangeSize];
            uint64_t sector = list[i][0];
            uint32_t count = static_cast<uint32_t>(list[i][1]), flags = static_cast<uint32_t>(list[i][2]);
            std::memcpy(r, &sector, 8);
            std::memcpy(r + 8, &count, 4);
            std::memcpy(r + 12, &flags, 4);
            EXPECT_TRUE(m_memory.write(data + kRangeSize * i, r).ok());
        }
        uint64_t status = status_byte();
        return { m_ring.add_chain({ { hdr, kHeaderSize, false },
                     { data, static_cast<uint32_t>(kRangeSize * list.size()), false }, { status, 1, true } }),
            status, data };
    }

    // Notifies the device and waits until `n` more chains are used.
    bool run(uint16_t n = 1)
    {
        m_expected_used = static_cast<uint16_t>(m_expected_used + n);
        device->notify(0);
        return m_ring.wait_used(m_expected_used);
    }
    uint8_t status(const Req& r) { return m_memory.read_obj<uint8_t>(r.status_gpa).value(); }
    std::vector<uint8_t> data(const Req& r, size_t n)
    {
        std::vector<uint8_t> out(n);
        EXPECT_TRUE(m_memory.read(r.data_gpa, out).ok());
        return out;
    }
    // The used element of the request (searched among all used entries).
    std::optional<VirtioBlkRing::UsedElem> used(const Req& r)
    {
        for (uint16_t i = 0; i != m_ring.used_idx(); ++i)
            if (m_ring.used_elem(i).id == r.head)
                return m_ring.used_elem(i);
        return std::nullopt;
    }

    GuestMemory& memory() { return m_memory; }
    VirtioBlkRing& ring() { return m_ring; }
    Queue& queue() { return m_queue; }

    std::unique_ptr<BlkDevice> device;
    std::string open_error;
    uint64_t features { 0 };
    VirtioBlkCountingInterrupt irq;

private:
    GuestMemory m_memory;
    VirtioBlkRing m_ring;
    Queue m_queue { BlkDevice::kQueueSize };
    uint64_t m_next { kBufBase };
    uint16_t m_expected_used { 0 };
};

DiskConfig disk_of(const TempImage& image, bool ro = false, std::string serial = "")
{
    DiskConfig d;
    d.path = image.path;
    d.read_only = ro;
    d.serial = std::move(serial);
    return d;
}

std::vector<uint8_t> bytes(size_t n, uint8_t seed)
{
    std::vector<uint8_t> v(n);
    for (size_t i = 0; i < n; ++i)
        v[i] = static_cast<uint8_t>(seed + i * 13 + i / 256);
    return v;
}

std::vector<uint8_t> image_pattern(uint64_t offset, size_t n)
{
    std::vector<uint8_t> v(n);
    for (size_t i = 0; i < n; ++i)
        v[i] = pattern(offset + i);
    return v;
}

// Read, write, read back, across several sectors, for one execution mode.
void round_trip(IoMode mode)
{
    TempImage image;
    Harness h(disk_of(image), mode);
    ASSERT_TRUE(h.device) << h.open_error;

    Req r1 = h.read(3, 2048);
    ASSERT_TRUE(h.run());
    EXPECT_EQ(h.status(r1), kSOk);
    EXPECT_EQ(h.data(r1, 2048), image_pattern(3 * 512, 2048));
    ASSERT_TRUE(h.used(r1));
    EXPECT_EQ(h.used(r1)->len, 2048u + 1) << "data plus the status byte";

    auto payload = bytes(4096, 0x42);
    Req w = h.write(100, payload);
    ASSERT_TRUE(h.run());
    EXPECT_EQ(h.status(w), kSOk);
    EXPECT_EQ(image.read(100 * 512, 4096), payload) << "the write reached the image";

    Req r2 = h.read(100, 4096);
    ASSERT_TRUE(h.run());
    EXPECT_EQ(h.status(r2), kSOk);
    EXPECT_EQ(h.data(r2, 4096), payload);
    EXPECT_GE(h.irq.queue_signals.load(), 1u);
    EXPECT_EQ(h.irq.error_count.load(), 0u);
    EXPECT_EQ(h.device->using_io_uring(), mode == IoMode::Auto);
}

} // namespace

TEST(VirtioBlk, RoundTripInline)
{
    round_trip(IoMode::Inline);
}
TEST(VirtioBlk, RoundTripSyncThread)
{
    round_trip(IoMode::Sync);
}
TEST(VirtioBlk, RoundTripIoUring)
{
    round_trip(IoMode::Auto);
}

namespace {

// In a child process: io_uring_setup fails (ENOSYS, as under a seccomp sandbox or on an old
// kernel); the device must fall back to synchronous I/O on its thread and still work.
int fallback_child()
{
    sock_filter filter[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (ENOSYS & SECCOMP_RET_DATA)),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    sock_fprog prog { static_cast<unsigned short>(std::size(filter)), filter };
    if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 || ::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0)
        return 10;
    TempImage image;
    Harness h(disk_of(image), IoMode::Auto);
    if (!h.device)
        return 11;
    if (h.device->using_io_uring())
        return 12;
    auto payload = bytes(2048, 0x31);
    Req w = h.write(10, payload);
    Req f = h.request(kTFlush, 0, 0, false);
    Req r = h.read(10, 2048);
    if (!h.run(3))
        return 13;
    if (h.status(w) != kSOk || h.status(f) != kSOk || h.status(r) != kSOk || h.data(r, 2048) != payload)
        return 14;
    return 0;
}

} // namespace

TEST(VirtioBlk, FallsBackToSynchronousIoWithoutIoUring)
{
    GTEST_FLAG_SET(death_test_style, "threadsafe");
    EXPECT_EXIT(_exit(fallback_child()), ::testing::ExitedWithCode(0), "io_uring is unavailable");
}

TEST(VirtioBlk, FeaturesAndConfigSpace)
{
    TempImage image(kImageBytes + 100); // a partial last sector is not part of the disk
    Harness h(disk_of(image));
    ASSERT_TRUE(h.device) << h.open_error;
    uint64_t f = h.device->features();
    EXPECT_TRUE(f & kFFlush);
    EXPECT_TRUE(f & kFSegMax);
    EXPECT_TRUE(f & kFDiscard);
    EXPECT_TRUE(f & kFWriteZeroes);
    EXPECT_FALSE(f & kFRo);
    EXPECT_EQ(h.device->type(), DeviceType::Block);
    EXPECT_EQ(h.device->queue_max_sizes(), std::vector<uint16_t> { BlkDevice::kQueueSize });

    std::array<uint8_t, cfg::kSize + 8> c;
    h.device->read_config(0, c);
    uint64_t capacity;
    uint32_t seg_max, blk_size, max_discard, discard_seg, wz_seg;
    std::memcpy(&capacity, &c[cfg::kCapacity], 8);
    std::memcpy(&seg_max, &c[cfg::kSegMax], 4);
    std::memcpy(&blk_size, &c[cfg::kBlkSize], 4);
    std::memcpy(&max_discard, &c[cfg::kMaxDiscardSectors], 4);
    std::memcpy(&discard_seg, &c[cfg::kMaxDiscardSeg], 4);
    std::memcpy(&wz_seg, &c[cfg::kMaxWriteZeroesSeg], 4);
    EXPECT_EQ(capacity, kImageSectors);
    EXPECT_EQ(seg_max, BlkDevice::kQueueSize - 2u);
    EXPECT_EQ(blk_size, 512u);
    EXPECT_GT(max_discard, 0u);
    EXPECT_GT(discard_seg, 0u);
    EXPECT_GT(wz_seg, 0u);
    EXPECT_EQ(c[cfg::kWriteZeroesMayUnmap], 1);
    for (size_t i = cfg::kSize; i < c.size(); ++i)
        EXPECT_EQ(c[i], 0) << "past the end reads as zero";

    // Partial and far-out-of-range reads.
    std::array<uint8_t, 4> part;
    h.device->read_config(cfg::kCapacity + 1, part);
    EXPECT_EQ(part[0], static_cast<uint8_t>(kImageSectors >> 8));
    h.device->read_config(~0ULL - 1, part);
    EXPECT_EQ(part, (std::array<uint8_t, 4> {}));
}

TEST(VirtioBlk, FlushSucceeds)
{
    for (IoMode mode : { IoMode::Inline, IoMode::Auto }) {
        TempImage image;
        Harness h(disk_of(image), mode);
        ASSERT_TRUE(h.device) << h.open_error;
        Req w = h.write(0, bytes(512, 1));
        Req f = h.request(kTFlush, 0, 0, false);
        ASSERT_TRUE(h.run(2));
        EXPECT_EQ(h.status(w), kSOk);
        EXPECT_EQ(h.status(f), kSOk);
        EXPECT_EQ(h.used(f)->len, 1u);
    }
}

TEST(VirtioBlk, GetIdDefaultsToTheFileName)
{
    TempImage image(kImageBytes, "root-disk.img");
    Harness h(disk_of(image));
    ASSERT_TRUE(h.device) << h.open_error;
    Req r = h.request(kTGetId, 0, kIdBytes, true);
    ASSERT_TRUE(h.run());
    EXPECT_EQ(h.status(r), kSOk);
    auto id = h.data(r, kIdBytes);
    std::string want = "root-disk.img";
    EXPECT_EQ(std::string(reinterpret_cast<const char*>(id.data()), want.size()), want);
    for (size_t i = want.size(); i < kIdBytes; ++i)
        EXPECT_EQ(id[i], 0) << "NUL-padded";
    EXPECT_EQ(h.used(r)->len, kIdBytes + 1);
}

TEST(VirtioBlk, GetIdUsesTheSerialAndFitsSmallBuffers)
{
    TempImage image;
    Harness h(disk_of(image, false, "ABCDEFGHIJKLMNOPQRST")); // exactly 20: no NUL
    ASSERT_TRUE(h.device) << h.open_error;
    Req full = h.request(kTGetId, 0, kIdBytes, true);
    Req small = h.request(kTGetId, 0, 8, true);
    ASSERT_TRUE(h.run(2));
    EXPECT_EQ(h.status(full), kSOk);
    auto id = h.data(full, kIdBytes);
    EXPECT_EQ(std::string(id.begin(), id.end()), "ABCDEFGHIJKLMNOPQRST");
    EXPECT_EQ(h.status(small), kSOk);
    auto part = h.data(small, 8);
    EXPECT_EQ(std::string(part.begin(), part.end()), "ABCDEFGH");
    EXPECT_EQ(h.used(small)->len, 9u);
}

TEST(VirtioBlk, DiscardAndWriteZeroesZeroTheRanges)
{
    TempImage image;
    Harness h(disk_of(image));
    ASSERT_TRUE(h.device) << h.open_error;
    // Two discard ranges, one write-zeroes without and one with unmap.
    Req d = h.ranges(kTDiscard, { { 8, 8, 0 }, { 64, 16, 0 } });
    Req z = h.ranges(kTWriteZeroes, { { 200, 3, 0 } });
    Req zu = h.ranges(kTWriteZeroes, { { 300, 8, kWriteZeroesFlagUnmap } });
    ASSERT_TRUE(h.run(3));
    EXPECT_EQ(h.status(d), kSOk);
    EXPECT_EQ(h.status(z), kSOk);
    EXPECT_EQ(h.status(zu), kSOk);
    std::vector<uint8_t> zeros4k(4096, 0);
    EXPECT_EQ(image.read(8 * 512, 4096), zeros4k);
    EXPECT_EQ(image.read(64 * 512, 8192), std::vector<uint8_t>(8192, 0));
    EXPECT_EQ(image.read(200 * 512, 1536), std::vector<uint8_t>(1536, 0));
    EXPECT_EQ(image.read(300 * 512, 4096), zeros4k);
    // Neighbours untouched.
    EXPECT_EQ(image.read(7 * 512, 512), image_pattern(7 * 512, 512));
    EXPECT_EQ(image.read(16 * 512, 512), image_pattern(16 * 512, 512));
    EXPECT_EQ(image.read(203 * 512, 512), image_pattern(203 * 512, 512));
    EXPECT_EQ(image.read(199 * 512, 512), image_pattern(199 * 512, 512));
    struct stat st;
    ASSERT_EQ(::stat(image.path.c_str(), &st), 0);
    EXPECT_EQ(static_cast<uint64_t>(st.st_size), kImageBytes) << "the image keeps its size";
}

TEST(VirtioBlk, DiscardAndWriteZeroesAreValidated)
{
    TempImage image;
    Harness h(disk_of(image));
    ASSERT_TRUE(h.device) << h.open_error;
    Req unmap_discard = h.ranges(kTDiscard, { { 0, 8, kWriteZeroesFlagUnmap } });
    Req unknown_flag = h.ranges(kTWriteZeroes, { { 0, 8, 2 } });
    Req past_end = h.ranges(kTDiscard, { { kImageSectors - 4, 8, 0 } });
    Req huge = h.ranges(kTWriteZeroes, { { ~0ULL - 2, 8, 0 } });
    Req too_long = h.ranges(kTDiscard, { { 0, BlkDevice::kMaxDiscardSectors + 1ULL, 0 } });
    // A good range then a bad one: nothing is applied.
    Req mixed = h.ranges(kTDiscard, { { 0, 8, 0 }, { kImageSectors, 1, 0 } });
    std::vector<std::array<uint64_t, 3>> many(BlkDevice::kMaxDiscardSegments + 1, { 0, 1, 0 });
    Req too_many = h.ranges(kTDiscard, many);
    // A range list that is not a whole number of 16-byte entries.
    uint64_t hdr = h.header(kTDiscard, 0);
    uint64_t st = h.status_byte();
    Req ragged { h.ring().add_chain({ { hdr, kHeaderSize, false }, { h.alloc(24), 24, false }, { st, 1, true } }), st,
        0 };
    ASSERT_TRUE(h.run(8));
    EXPECT_EQ(h.status(unmap_discard), kSUnsupp);
    EXPECT_EQ(h.status(unknown_flag), kSUnsupp);
    EXPECT_EQ(h.status(past_end), kSIoErr);
    EXPECT_EQ(h.status(huge), kSIoErr);
    EXPECT_EQ(h.status(too_long), kSIoErr);
    EXPECT_EQ(h.status(mixed), kSIoErr);
    EXPECT_EQ(h.status(too_many), kSUnsupp);
    EXPECT_EQ(h.status(ragged), kSIoErr);
    EXPECT_EQ(image.read(0, 8192), image_pattern(0, 8192)) << "no range was applied";
}

TEST(VirtioBlk, DiscardWithoutTheFeatureIsUnsupported)
{
    TempImage image;
    Harness h(disk_of(image), IoMode::Inline, /*negotiate_all=*/false);
    ASSERT_TRUE(h.device) << h.open_error;
    Req d = h.ranges(kTDiscard, { { 0, 8, 0 } });
    Req z = h.ranges(kTWriteZeroes, { { 0, 8, 0 } });
    ASSERT_TRUE(h.run(2));
    EXPECT_EQ(h.status(d), kSUnsupp);
    EXPECT_EQ(h.status(z), kSUnsupp);
    EXPECT_EQ(image.read(0, 4096), image_pattern(0, 4096));
}

TEST(VirtioBlk, ReadOnlyDiskRejectsWrites)
{
    TempImage image;
    Harness h(disk_of(image, /*ro=*/true));
    ASSERT_TRUE(h.device) << h.open_error;
    EXPECT_TRUE(h.device->features() & kFRo);
    EXPECT_FALSE(h.device->features() & (kFDiscard | kFWriteZeroes));
    Req w = h.write(0, bytes(512, 9));
    Req d = h.ranges(kTDiscard, { { 0, 8, 0 } });
    Req z = h.ranges(kTWriteZeroes, { { 0, 8, 0 } });
    Req r = h.read(0, 512);
    Req f = h.request(kTFlush, 0, 0, false);
    ASSERT_TRUE(h.run(5));
    EXPECT_EQ(h.status(w), kSIoErr);
    EXPECT_EQ(h.status(d), kSUnsupp) << "DISCARD is not offered on a read-only disk";
    EXPECT_EQ(h.status(z), kSUnsupp);
    EXPECT_EQ(h.status(r), kSOk);
    EXPECT_EQ(h.status(f), kSOk);
    EXPECT_EQ(image.read(0, 4096), image_pattern(0, 4096)) << "the image is unchanged";
}

TEST(VirtioBlk, SectorRangesAreCheckedWithoutOverflow)
{
    TempImage image;
    Harness h(disk_of(image));
    ASSERT_TRUE(h.device) << h.open_error;
    Req last = h.read(kImageSectors - 1, 512);
    Req past = h.read(kImageSectors, 512);
    Req straddle = h.read(kImageSectors - 1, 1024);
    Req empty_at_end = h.read(kImageSectors, 0);
    Req wrap = h.read(~0ULL / 512 + 1, 512); // sector * 512 overflows
    Req wrap2 = h.write(~0ULL, bytes(512, 3)); // sector + count overflows
    Req grow = h.write(kImageSectors - 1, bytes(1024, 4)); // would extend the image
    ASSERT_TRUE(h.run(7));
    EXPECT_EQ(h.status(last), kSOk);
    EXPECT_EQ(h.status(past), kSIoErr);
    EXPECT_EQ(h.status(straddle), kSIoErr);
    EXPECT_EQ(h.status(empty_at_end), kSOk);
    EXPECT_EQ(h.status(wrap), kSIoErr);
    EXPECT_EQ(h.status(wrap2), kSIoErr);
    EXPECT_EQ(h.status(grow), kSIoErr);
    EXPECT_EQ(h.used(past)->len, 1u);
    struct stat st;
    ASSERT_EQ(::stat(image.path.c_str(), &st), 0);
    EXPECT_EQ(static_cast<uint64_t>(st.st_size), kImageBytes) << "no write past the end";
    EXPECT_EQ(image.read(kImageBytes - 512, 512), image_pattern(kImageBytes - 512, 512));
}

TEST(VirtioBlk, DataMustBeWholeSectors)
{
    TempImage image;
    Harness h(disk_of(image));
    ASSERT_TRUE(h.device) << h.open_error;
    Req r = h.read(0, 100);
    Req w = h.write(0, bytes(513, 1));
    ASSERT_TRUE(h.run(2));
    EXPECT_EQ(h.status(r), kSIoErr);
    EXPECT_EQ(h.status(w), kSIoErr);
    EXPECT_EQ(image.read(0, 1024), image_pattern(0, 1024));
}

TEST(VirtioBlk, ShortHeaderIsAnIoError)
{
    TempImage image;
    Harness h(disk_of(image));
    ASSERT_TRUE(h.device) << h.open_error;
    uint64_t hdr = h.header(kTIn, 0, 8);
    uint64_t st = h.status_byte();
    uint16_t head = h.ring().add_chain({ { hdr, 8, false }, { st, 1, true } });
    ASSERT_TRUE(h.run());
    EXPECT_EQ(h.memory().read_obj<uint8_t>(st).value(), kSIoErr);
    EXPECT_EQ(h.ring().used_elem(0).id, head);
    EXPECT_EQ(h.irq.error_count.load(), 0u);
}

TEST(VirtioBlk, UnknownTypeIsUnsupported)
{
    TempImage image;
    Harness h(disk_of(image));
    ASSERT_TRUE(h.device) << h.open_error;
    Req a = h.request(0x1234, 0, 512, true);
    Req b = h.request(kTGetLifetime, 0, 16, true);
    Req c = h.request(kTSecureErase, 0, 16, false);
    ASSERT_TRUE(h.run(3));
    EXPECT_EQ(h.status(a), kSUnsupp);
    EXPECT_EQ(h.status(b), kSUnsupp);
    EXPECT_EQ(h.status(c), kSUnsupp);
}

TEST(VirtioBlk, MissingStatusByteStopsTheDevice)
{
    TempImage image;
    Harness h(disk_of(image));
    ASSERT_TRUE(h.device) << h.open_error;
    // A write whose every buffer is device-readable: no place for a status.
    uint64_t hdr = h.header(kTOut, 0);
    uint64_t data = h.alloc(512, 512);
    ASSERT_TRUE(h.memory().fill(data, 0x5a, 512).ok());
    h.ring().add_chain({ { hdr, kHeaderSize, false }, { data, 512, false } });
    h.device->notify(0);
    EXPECT_EQ(h.irq.error_count.load(), 1u);
    EXPECT_NE(h.irq.last_error().find("status"), std::string::npos) << h.irq.last_error();
    EXPECT_EQ(h.ring().used_idx(), 0) << "nothing to complete";
    EXPECT_EQ(image.read(0, 512), image_pattern(0, 512)) << "and nothing written";
    // The device stays stopped until reset.
    Req r = h.read(0, 512);
    h.device->notify(0);
    EXPECT_EQ(h.ring().used_idx(), 0);
    EXPECT_EQ(h.status(r), 0xee);
}

TEST(VirtioBlk, ZeroLengthStatusSegmentIsNotTheStatus)
{
    TempImage image;
    Harness h(disk_of(image));
    ASSERT_TRUE(h.device) << h.open_error;
    // header | data (writable) | status | empty writable segment: the status is the last byte
    // of the last non-empty writable buffer.
    uint64_t hdr = h.header(kTIn, 1);
    uint64_t data = h.alloc(512, 512);
    uint64_t st = h.status_byte();
    h.ring().add_chain({ { hdr, kHeaderSize, false }, { data, 512, true }, { st, 1, true }, { h.alloc(8), 0, true } });
    ASSERT_TRUE(h.run());
    EXPECT_EQ(h.memory().read_obj<uint8_t>(st).value(), kSOk);
}

TEST(VirtioBlk, OddSegmentationIsHandled)
{
    TempImage image;
    Harness h(disk_of(image), IoMode::Auto);
    ASSERT_TRUE(h.device) << h.open_error;
    // The header split in two (10 + 6 bytes); 1024 bytes of data in three writable pieces, the
    // last one also holding the status byte.
    uint64_t hdr = h.header(kTIn, 5);
    uint64_t d1 = h.alloc(100), d2 = h.alloc(700), d3 = h.alloc(225);
    uint16_t head = h.ring().add_chain(
        { { hdr, 10, false }, { hdr + 10, 6, false }, { d1, 100, true }, { d2, 700, true }, { d3, 225, true } });
    ASSERT_TRUE(h.run());
    EXPECT_EQ(h.memory().read_obj<uint8_t>(d3 + 224).value(), kSOk);
    std::vector<uint8_t> got(1024);
    ASSERT_TRUE(h.memory().read(d1, std::span(got).first(100)).ok());
    ASSERT_TRUE(h.memory().read(d2, std::span(got).subspan(100, 700)).ok());
    ASSERT_TRUE(h.memory().read(d3, std::span(got).subspan(800, 224)).ok());
    EXPECT_EQ(got, image_pattern(5 * 512, 1024));
    EXPECT_EQ(h.ring().used_elem(0).id, head);
    EXPECT_EQ(h.ring().used_elem(0).len, 1025u);

    // And a write of 1024 bytes whose data shares a descriptor with the header.
    auto payload = bytes(1024, 0x77);
    uint64_t buf = h.alloc(kHeaderSize + 1024);
    uint8_t header[kHeaderSize] = {};
    uint32_t type = kTOut;
    uint64_t sector = 40;
    std::memcpy(header, &type, 4);
    std::memcpy(header + 8, &sector, 8);
    ASSERT_TRUE(h.memory().write(buf, header).ok());
    ASSERT_TRUE(h.memory().write(buf + kHeaderSize, payload).ok());
    uint64_t st = h.status_byte();
    h.ring().add_chain({ { buf, kHeaderSize + 1024, false }, { st, 1, true } });
    ASSERT_TRUE(h.run());
    EXPECT_EQ(h.memory().read_obj<uint8_t>(st).value(), kSOk);
    EXPECT_EQ(image.read(40 * 512, 1024), payload);
}

TEST(VirtioBlk, ChainOutsideRamIsADeviceError)
{
    for (IoMode mode : { IoMode::Inline, IoMode::Auto }) {
        TempImage image;
        Harness h(disk_of(image), mode);
        ASSERT_TRUE(h.device) << h.open_error;
        uint64_t hdr = h.header(kTIn, 0);
        uint64_t st = h.status_byte();
        // Data "buffer" past the end of 16 MiB of RAM.
        h.ring().add_chain({ { hdr, kHeaderSize, false }, { (16ULL << 20) - 256, 512, true }, { st, 1, true } });
        h.device->notify(0);
        for (int i = 0; i < 5000 && h.irq.error_count.load() == 0; ++i)
            usleep(1000);
        EXPECT_EQ(h.irq.error_count.load(), 1u);
        EXPECT_NE(h.irq.last_error().find("outside guest RAM"), std::string::npos) << h.irq.last_error();
        EXPECT_EQ(h.ring().used_idx(), 0);
        EXPECT_EQ(h.memory().read_obj<uint8_t>(st).value(), 0xee);
    }
}

TEST(VirtioBlk, ManyRequestsInFlightThroughIoUring)
{
    TempImage image;
    Harness h(disk_of(image), IoMode::Auto);
    ASSERT_TRUE(h.device) << h.open_error;
    ASSERT_TRUE(h.device->using_io_uring());
    // 21 chains of 3 descriptors fill the 64-entry table: writes of 8 sectors each, published
    // all at once, then read back.
    std::vector<Req> writes;
    for (uint32_t i = 0; i < 21; ++i)
        writes.push_back(h.write(i * 8, bytes(4096, static_cast<uint8_t>(i))));
    ASSERT_TRUE(h.run(21));
    for (uint32_t i = 0; i < 21; ++i) {
        EXPECT_EQ(h.status(writes[i]), kSOk) << i;
        EXPECT_EQ(image.read(i * 8 * 512ULL, 4096), bytes(4096, static_cast<uint8_t>(i))) << i;
    }
    std::vector<Req> reads;
    for (uint32_t i = 0; i < 21; ++i)
        reads.push_back(h.read(i * 8, 4096));
    ASSERT_TRUE(h.run(21));
    for (uint32_t i = 0; i < 21; ++i) {
        EXPECT_EQ(h.status(reads[i]), kSOk) << i;
        EXPECT_EQ(h.data(reads[i], 4096), bytes(4096, static_cast<uint8_t>(i))) << i;
    }
    EXPECT_EQ(h.device->completed(), 42u);
}

TEST(VirtioBlk, ResetStopsTheThreadAndCanReactivate)
{
    TempImage image;
    Harness h(disk_of(image), IoMode::Auto);
    ASSERT_TRUE(h.device) << h.open_error;
    for (uint32_t i = 0; i < 20; ++i)
        h.read(i * 8, 4096);
    h.device->notify(0);
    h.device->reset(); // joins the thread; whatever was in flight has completed
    uint64_t done = h.device->completed();
    EXPECT_LE(done, 20u);
    usleep(20000);
    EXPECT_EQ(h.device->completed(), done) << "no I/O after reset() returned";
    EXPECT_FALSE(h.device->using_io_uring());

    // Activate again on a fresh queue.
    VirtioBlkRing ring(h.memory(), 0x40000, 16);
    Queue q(BlkDevice::kQueueSize);
    ASSERT_TRUE(ring.bind(q, h.features).ok());
    ActivateContext ctx;
    ctx.memory = &h.memory();
    ctx.interrupt = &h.irq;
    ctx.features = h.features;
    ctx.queues = std::span<Queue>(&q, 1);
    ASSERT_TRUE(h.device->activate(ctx).ok());
    uint64_t hdr = h.header(kTIn, 2);
    uint64_t data = h.alloc(512, 512);
    uint64_t st = h.status_byte();
    ring.add_chain({ { hdr, kHeaderSize, false }, { data, 512, true }, { st, 1, true } });
    h.device->notify(0);
    ASSERT_TRUE(ring.wait_used(1));
    EXPECT_EQ(h.memory().read_obj<uint8_t>(st).value(), kSOk);
    std::vector<uint8_t> got(512);
    ASSERT_TRUE(h.memory().read(data, got).ok());
    EXPECT_EQ(got, image_pattern(1024, 512));
    h.device->reset();
}

TEST(VirtioBlk, OpenErrorsNameTheFile)
{
    DiskConfig missing;
    missing.path = "/nonexistent/vessel-disk.img";
    auto r = BlkDevice::open(missing);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message().find("/nonexistent/vessel-disk.img"), std::string::npos) << r.error().message();

    TempImage image;
    DiskConfig dir;
    dir.path = image.dir();
    dir.read_only = true; // O_RDONLY opens a directory: fstat must catch it
    r = BlkDevice::open(dir);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message().find("directory"), std::string::npos) << r.error().message();
    dir.read_only = false;
    r = BlkDevice::open(dir);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message().find(image.dir()), std::string::npos) << r.error().message();

    TempImage tiny(100);
    r = BlkDevice::open(disk_of(tiny));
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message().find("smaller than"), std::string::npos) << r.error().message();
}

TEST(VirtioBlk, ImagesAreLocked)
{
    TempImage image;
    auto writer = BlkDevice::open(disk_of(image));
    ASSERT_TRUE(writer.ok()) << writer.error().message();
    auto second = BlkDevice::open(disk_of(image));
    ASSERT_FALSE(second.ok()) << "two writers";
    EXPECT_NE(second.error().message().find("locked"), std::string::npos) << second.error().message();
    EXPECT_NE(second.error().message().find(image.path), std::string::npos);
    auto reader = BlkDevice::open(disk_of(image, true));
    EXPECT_FALSE(reader.ok()) << "a reader while a writer has it";
    writer.value().reset(); // closing releases the lock

    auto r1 = BlkDevice::open(disk_of(image, true));
    auto r2 = BlkDevice::open(disk_of(image, true));
    EXPECT_TRUE(r1.ok() && r2.ok()) << "readers share";
    auto w = BlkDevice::open(disk_of(image));
    EXPECT_FALSE(w.ok()) << "no writer while readers have it";
}

TEST(VirtioBlk, CapacityIsInSectors)
{
    TempImage image(3 * 1024 * 1024 + 511);
    auto dev = BlkDevice::open(disk_of(image));
    ASSERT_TRUE(dev.ok()) << dev.error().message();
    EXPECT_EQ(dev.value()->capacity_sectors(), 3u * 2048);
}

// --- the Queue itself, as the device sees it -----------------------------------------------------

TEST(VirtioBlk, QueueReportsUsedEntriesAndSuppressesInterrupts)
{
    auto mem = GuestMemory::create(16 << 20);
    ASSERT_TRUE(mem.ok());
    VirtioBlkRing ring(mem.value(), kRingBase, 8);
    Queue q(8);
    ASSERT_TRUE(ring.bind(q, kFVersion1).ok());
    uint16_t head = ring.add_chain({ { kBufBase, 16, false }, { kBufBase + 16, 32, true } });
    Chain c;
    auto popped = q.pop(c);
    ASSERT_TRUE(popped.ok() && popped.value());
    EXPECT_EQ(c.head, head);
    EXPECT_EQ(c.readable_bytes, 16u);
    EXPECT_EQ(c.writable_bytes, 32u);
    EXPECT_FALSE(q.pop(c).value());
    q.add_used(c, 7);
    EXPECT_EQ(ring.used_idx(), 1);
    EXPECT_EQ(ring.used_elem(0).id, head);
    EXPECT_EQ(ring.used_elem(0).len, 7u);
    EXPECT_TRUE(q.needs_interrupt());
    EXPECT_FALSE(q.needs_interrupt()) << "nothing new since";
    // VRING_AVAIL_F_NO_INTERRUPT suppresses the next one.
    ASSERT_TRUE(mem->write_obj<uint16_t>(ring.avail_addr(), kAvailNoInterrupt).ok());
    ring.add_chain({ { kBufBase, 16, false }, { kBufBase + 16, 32, true } });
    ASSERT_TRUE(q.pop(c).value());
    q.add_used(c, 0);
    EXPECT_FALSE(q.needs_interrupt());
}
