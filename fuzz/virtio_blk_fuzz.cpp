// Fuzz target: virtio-blk requests from a hostile driver.
//
// Input layout:
//   byte 0     queue size = 2^(1 + b % 8)            (2..256)
//   byte 1     negotiated features: bit 0 EVENT_IDX, bit 1 INDIRECT_DESC, bit 2 read-only disk,
//              bit 3 DISCARD + WRITE_ZEROES, bit 4 FLUSH
//   byte 2     notify rounds (1..4): the queue is processed that many times
//   byte 3     disk size in sectors - 1 (1..256 sectors)
//   byte 4-5   an offset into the config space, read back (le16)
//   rest       copied to guest RAM at 0x1000, where the queue is laid out back to back: the
//              descriptor table (16 bytes per entry) at 0x1000, the available ring (flags, idx,
//              ring[size], used_event) right after it, the used ring after that (4-aligned);
//              buffers go anywhere (descriptor addresses are guest-physical), naturally after the
//              rings, e.g. from 0x1000 + 0x400 with a queue of 8.
// Per input: fresh 16 MiB guest RAM, a fresh image (a memfd opened through /proc/self/fd, which
// also exercises the write-zeros fallback: tmpfs cannot FALLOC_FL_ZERO_RANGE), a fresh device in
// IoMode::Inline (the requests run on this thread through BlkDevice's synchronous path).
// Checked beyond "no crash, no sanitizer report": the image keeps its size, and a read-only
// image is never written.
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "../tests/unit/virtio_blk_test_support.h"
#include "base/log.h"
#include "devices/virtio/blk.h"
#include "memory/guest_memory.h"
#include "vmm/vm_config.h"

using namespace vessel;
using namespace vessel::virtio;

namespace {

constexpr uint64_t kLoadBase = 0x1000;

uint64_t image_digest(int fd, uint64_t size)
{
    uint64_t h = 1469598103934665603ULL;
    uint8_t buf[4096];
    for (uint64_t off = 0; off < size;) {
        ssize_t n = ::pread(fd, buf, sizeof(buf), static_cast<off_t>(off));
        if (n <= 0)
            break;
        for (ssize_t i = 0; i < n; ++i)
            h = (h ^ buf[i]) * 1099511628211ULL;
        off += static_cast<uint64_t>(n);
    }
    return h;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size)
{
    static bool quiet = [] {
        set_log_level(LogLevel::Off);
        return true;
    }();
    (void)quiet;
    if (size < 6)
        return 0;
    uint16_t qsize = static_cast<uint16_t>(1u << (1 + data[0] % 8));
    uint8_t flags = data[1];
    int rounds = 1 + data[2] % 4;
    uint64_t sectors = 1 + uint64_t(data[3]);
    uint16_t config_offset = static_cast<uint16_t>(data[4] | data[5] << 8);
    data += 6;
    size -= 6;

    auto mem = GuestMemory::create(16 << 20);
    if (!mem.ok())
        abort();
    size_t load = std::min<size_t>(size, (16 << 20) - kLoadBase);
    if (load && !mem->write(kLoadBase, std::span<const uint8_t>(data, load)).ok())
        abort();

    int img = ::memfd_create("vessel-blk-fuzz", MFD_CLOEXEC);
    if (img < 0 || ::ftruncate(img, static_cast<off_t>(sectors * 512)) != 0)
        abort();
    for (uint64_t s = 0; s < sectors; ++s) { // recognisable contents
        uint8_t sector[512];
        std::memset(sector, static_cast<int>(s + 1), sizeof(sector));
        if (::pwrite(img, sector, sizeof(sector), static_cast<off_t>(s * 512)) != 512)
            abort();
    }
    uint64_t before = image_digest(img, sectors * 512);

    DiskConfig disk;
    disk.path = "/proc/self/fd/" + std::to_string(img);
    disk.read_only = flags & 4;
    {
        auto dev = BlkDevice::open(disk, BlkDevice::IoMode::Inline);
        if (!dev.ok())
            abort();
        BlkDevice& blk = *dev.value();

        uint8_t cfg[8];
        blk.read_config(config_offset, cfg);

        uint64_t features = kFVersion1;
        if (flags & 1)
            features |= kFRingEventIdx;
        if (flags & 2)
            features |= kFRingIndirectDesc;
        if (flags & 8)
            features |= blk.features() & (blk::kFDiscard | blk::kFWriteZeroes);
        if (flags & 16)
            features |= blk::kFFlush;

        Queue queue(BlkDevice::kQueueSize);
        queue.reset();
        queue.set_size(qsize);
        uint64_t desc = kLoadBase;
        uint64_t avail = desc + 16ULL * qsize;
        uint64_t used = (avail + 6 + 2ULL * qsize + 3) & ~3ULL;
        queue.set_desc_addr(desc);
        queue.set_avail_addr(avail);
        queue.set_used_addr(used);
        queue.set_ready(true);
        if (!queue.activate(mem.value(), features).ok())
            abort(); // the fixed layout always fits
        test::VirtioBlkCountingInterrupt irq;
        ActivateContext ctx;
        ctx.memory = &mem.value();
        ctx.interrupt = &irq;
        ctx.features = features;
        ctx.queues = std::span<Queue>(&queue, 1);
        if (!blk.activate(ctx).ok())
            abort();
        for (int i = 0; i < rounds; ++i)
            blk.notify(0);
        if (std::getenv("VIRTIO_BLK_FUZZ_TRACE")) { // for writing seeds: what the device did
            uint16_t used_idx = mem->read_obj<uint16_t>(used + 2).value();
            std::fprintf(stderr, "queue %u: %u used, %u errors%s%s\n", qsize, used_idx, irq.error_count.load(),
                irq.errors.empty() ? "" : ": ", irq.last_error().c_str());
            for (uint16_t i = 0; i < std::min<uint16_t>(used_idx, qsize); ++i)
                std::fprintf(stderr, "  used id %u len %u\n", mem->read_obj<uint32_t>(used + 4 + 8 * i).value(),
                    mem->read_obj<uint32_t>(used + 8 + 8 * i).value());
        }
        blk.reset();
    }

    struct stat st;
    if (::fstat(img, &st) != 0 || static_cast<uint64_t>(st.st_size) != sectors * 512)
        abort(); // the image must keep its size
    if ((flags & 4) && image_digest(img, sectors * 512) != before)
        abort(); // a read-only disk was written
    ::close(img);
    return 0;
}
