// Fuzz target: the virtio-console device (src/devices/virtio/console.cpp) driven by a hostile
// driver. Every input builds fresh state: 16 MiB of guest RAM, both queues laid out at fixed
// addresses, a new device (with its writer thread). The input is a program for the "driver":
// write descriptors (mostly into a data window, sometimes anywhere), publish heads, scribble over
// the rings, notify either queue, feed host input, reset and re-activate. The device must never
// touch memory outside guest RAM (ASan), crash, hang, or lose its invariants.
//
//   byte 0: bit 0 EVENT_IDX, bit 1 INDIRECT_DESC, bits 2-3 queue size (2, 4, 8 or 16)
//   then opcodes (byte % 7), each followed by its operands; a truncated operand ends the run.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <span>
#include <vector>

#include "base/log.h"
#include "devices/virtio/console.h"
#include "memory/guest_memory.h"
#include "virtio_fuzz_support.h"

using namespace vessel;
using namespace vessel::virtio;

namespace {

constexpr uint64_t kRamSize = 16ULL << 20;
constexpr uint64_t kRingBase[2] = { 0x10000, 0x20000 }; // desc; avail at +0x1000; used at +0x2000
constexpr uint64_t kDataWindow = 0x100000;

using fuzz::Input;
using fuzz::NullInterrupt;

struct Driver {
    GuestMemory& memory;
    uint16_t size;
    uint64_t features;
    std::vector<Queue> queues;
    uint16_t avail_idx[2] {};

    bool activate(ConsoleDevice& dev, NullInterrupt& irq)
    {
        return fuzz::activate_device(dev, irq, memory, queues, kRingBase, size, features);
    }
};

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
    Driver driver { mem, static_cast<uint16_t>(2u << ((config >> 2) & 3)),
        kFVersion1 | ((config & 1) ? kFRingEventIdx : 0) | ((config & 2) ? kFRingIndirectDesc : 0), {}, {} };
    NullInterrupt irq;
    uint64_t sunk = 0;
    ConsoleDevice console([&](std::span<const uint8_t> bytes) { sunk += bytes.size(); });
    bool active = driver.activate(console, irq);

    while (!in.empty()) {
        uint8_t op = 0;
        if (!in.get(op))
            break;
        uint8_t q = op >> 7; // the queue an op applies to
        switch (op % 7) {
        case 0: { // write a descriptor: index, address, len, flags, next
            uint8_t index, sel, flags, next;
            uint16_t offset;
            uint32_t len;
            if (!in.get(index) || !in.get(sel) || !in.get(offset) || !in.get(len) || !in.get(flags) || !in.get(next))
                goto done;
            uint64_t addr = kDataWindow + offset;
            if (sel >= 0xf0 && !in.get(addr)) // sometimes anywhere at all
                goto done;
            if (sel < 0xc0)
                len &= 0x1fff; // mostly buffers of sane size
            uint64_t at = kRingBase[q] + 16ULL * (index % driver.size);
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
            (void)mem.write_obj<uint16_t>(avail + 4 + 2ULL * (driver.avail_idx[q] % driver.size), head);
            ++driver.avail_idx[q];
            (void)mem.write_obj<uint16_t>(avail + 2, driver.avail_idx[q]);
            break;
        }
        case 2: // notify
            if (active)
                console.notify(q);
            break;
        case 3: { // host input
            uint8_t n;
            if (!in.get(n))
                goto done;
            console.enqueue_input(in.bytes(n));
            break;
        }
        case 4: { // scribble over the rings or the data window (indirect tables, avail idx jumps, used_event)
            uint8_t where;
            uint16_t offset;
            uint8_t n;
            if (!in.get(where) || !in.get(offset) || !in.get(n))
                goto done;
            uint64_t base = where % 3 == 2 ? kDataWindow : kRingBase[where % 2];
            auto bytes = in.bytes(n % 64);
            (void)mem.write(base + (offset % 0x3000), bytes);
            break;
        }
        case 5: // reset, then the driver sets the device up again
            console.reset();
            irq.failed = false;
            driver.avail_idx[0] = driver.avail_idx[1] = 0;
            (void)mem.fill(kRingBase[0], 0, 0x3000);
            (void)mem.fill(kRingBase[1], 0, 0x3000);
            active = driver.activate(console, irq);
            break;
        case 6: // the event loop's view
            (void)console.wants_input();
            (void)console.input_space();
            break;
        }
    }
done:
    console.flush_output();
    console.shutdown();
    // VESSEL_FUZZ_VERBOSE=1 with a single input: what the run reached (for checking seeds).
    static const bool verbose = std::getenv("VESSEL_FUZZ_VERBOSE") != nullptr;
    if (verbose) {
        auto c = console.counters();
        std::fprintf(stderr, "console: sunk %llu, tx %llu, rx %llu, dropped %llu, device error %d\n",
            static_cast<unsigned long long>(sunk), static_cast<unsigned long long>(c.tx_bytes),
            static_cast<unsigned long long>(c.rx_bytes), static_cast<unsigned long long>(c.input_dropped),
            irq.failed ? 1 : 0);
    }
    return 0;
}
