// Fuzz target: the virtio-balloon device (src/devices/virtio/balloon.cpp) driven by a hostile
// driver. Every input builds fresh state: 16 MiB of guest RAM, the three queues (inflate, deflate,
// stats) at fixed addresses, a new device. The input is a program for the "driver": write
// descriptors, publish heads, write PFN arrays / statistics / ring fields, notify, write the
// configuration space, and for the host: change the target, ask for statistics; reset and
// re-activate. Inflated PFNs punch holes in the input's own memfd; the device must never touch
// anything outside guest RAM (ASan), crash or hang.
//
//   byte 0: bit 0 EVENT_IDX, bit 1 INDIRECT_DESC, bit 2 STATS_VQ, bits 3-4 queue size (2..16)
//   then opcodes (byte % 8), each followed by its operands; a truncated operand ends the run.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <span>
#include <vector>

#include "base/log.h"
#include "devices/virtio/balloon.h"
#include "memory/guest_memory.h"
#include "virtio_fuzz_support.h"

using namespace vessel;
using namespace vessel::virtio;

namespace {

constexpr uint64_t kRamSize = 16ULL << 20;
constexpr uint64_t kRingBase[3] = { 0x10000, 0x20000, 0x30000 }; // desc; avail +0x1000; used +0x2000
constexpr uint64_t kDataWindow = 0x100000;

using fuzz::Input;
using fuzz::NullInterrupt;

bool activate(BalloonDevice& dev, NullInterrupt& irq, GuestMemory& memory, std::vector<Queue>& queues, uint16_t size,
    uint64_t features)
{
    return fuzz::activate_device(dev, irq, memory, queues, kRingBase, size, features);
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size)
{
    static bool quiet = [] {
        set_log_level(LogLevel::Off);
        return true;
    }();
    (void)quiet;

    Input in(data, size);
    uint8_t config = 0;
    if (!in.get(config))
        return 0;
    auto memory = GuestMemory::create(kRamSize);
    if (!memory.ok())
        return 0;
    GuestMemory& mem = memory.value();
    uint16_t qsize = static_cast<uint16_t>(2u << ((config >> 3) & 3));
    uint64_t features = kFVersion1 | ((config & 1) ? kFRingEventIdx : 0) | ((config & 2) ? kFRingIndirectDesc : 0)
        | ((config & 4) ? BalloonDevice::kFStatsVq : 0);
    NullInterrupt irq;
    std::vector<Queue> queues;
    uint16_t avail_idx[3] {};
    BalloonDevice balloon(8ULL << 20);
    bool active = activate(balloon, irq, mem, queues, qsize, features);

    while (!in.empty()) {
        uint8_t op = 0;
        if (!in.get(op))
            break;
        uint8_t q = static_cast<uint8_t>((op >> 5) % 3); // the queue an op applies to
        switch (op % 8) {
        case 0: { // write a descriptor: index, address, len, flags, next
            uint8_t index, sel, flags, next;
            uint16_t offset;
            uint32_t len;
            if (!in.get(index) || !in.get(sel) || !in.get(offset) || !in.get(len) || !in.get(flags) || !in.get(next))
                goto done;
            uint64_t addr = kDataWindow + offset;
            if (sel >= 0xf0 && !in.get(addr))
                goto done;
            if (sel < 0xc0)
                len &= 0x1fff;
            uint64_t at = kRingBase[q] + 16ULL * (index % qsize);
            (void)mem.write_obj(at, addr);
            (void)mem.write_obj(at + 8, len);
            (void)mem.write_obj(at + 12, static_cast<uint16_t>(flags & 7));
            (void)mem.write_obj(at + 14, static_cast<uint16_t>(next));
            break;
        }
        case 1: { // publish a head
            uint8_t head;
            if (!in.get(head))
                goto done;
            uint64_t avail = kRingBase[q] + 0x1000;
            (void)mem.write_obj<uint16_t>(avail + 4 + 2ULL * (avail_idx[q] % qsize), head);
            ++avail_idx[q];
            (void)mem.write_obj<uint16_t>(avail + 2, avail_idx[q]);
            break;
        }
        case 2:
            if (active)
                balloon.notify(q);
            break;
        case 3: { // write bytes: PFN arrays, statistics, indirect tables (data window) or ring fields
            uint8_t where;
            uint16_t offset;
            uint8_t n;
            if (!in.get(where) || !in.get(offset) || !in.get(n))
                goto done;
            uint64_t base = where % 4 == 3 ? kDataWindow : kRingBase[where % 4];
            (void)mem.write(base + (where % 4 == 3 ? offset : offset % 0x3000), in.bytes(n));
            break;
        }
        case 4: { // the driver writes the configuration space
            uint8_t offset, n;
            if (!in.get(offset) || !in.get(n))
                goto done;
            balloon.write_config(offset % 16, in.bytes(n % 9));
            break;
        }
        case 5: { // the host
            uint32_t pages;
            if (!in.get(pages))
                goto done;
            if (pages & 1)
                (void)balloon.request_stats();
            else
                balloon.set_target(uint64_t(pages) * BalloonDevice::kPageSize);
            uint8_t cfg[16];
            balloon.read_config(0, cfg);
            break;
        }
        case 6: // reset, then the driver sets the device up again
            balloon.reset();
            irq.failed = false;
            for (auto& i : avail_idx)
                i = 0;
            for (uint64_t base : kRingBase)
                (void)mem.fill(base, 0, 0x3000);
            active = activate(balloon, irq, mem, queues, qsize, features);
            break;
        case 7: { // a page the guest touches (so that inflating it has host memory to punch)
            uint16_t page;
            if (!in.get(page))
                goto done;
            (void)mem.fill((uint64_t(page) * BalloonDevice::kPageSize) % kRamSize, 0xaa, 64);
            break;
        }
        }
    }
done:
    static const bool verbose = std::getenv("VESSEL_FUZZ_VERBOSE") != nullptr;
    if (verbose) {
        auto c = balloon.counters();
        std::fprintf(stderr,
            "balloon: inflated %llu, released %llu bytes, deflated %llu, bad %llu, stats %llu, error %d\n",
            static_cast<unsigned long long>(c.inflated_pages), static_cast<unsigned long long>(c.released_bytes),
            static_cast<unsigned long long>(c.deflated_pages), static_cast<unsigned long long>(c.bad_pfns),
            static_cast<unsigned long long>(balloon.stats().updates), irq.failed ? 1 : 0);
    }
    balloon.shutdown();
    return 0;
}
