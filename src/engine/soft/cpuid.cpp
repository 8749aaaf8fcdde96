// CPUID: a GenuineIntel family-6 CPU with exactly the features the soft engine implements.
//
// Timing: Linux 6.1 takes the TSC frequency from leaf 0x15 (crystal clock × ratio; it then
// marks the frequency as known and skips PIT calibration and refinement) and the CPU frequency
// from leaf 0x16; the TSC deadline timer needs no LAPIC timer calibration. The LAPIC timer runs
// at Lapic::kBusFrequencyHz: leaf 0x15's crystal is that clock.
//
// Hypervisor leaves: KVM's signature "KVMKVMKVM" and, in 0x40000001, only the kvmclock features
// (pvclock.h) — the same clock interface the KVM engine's guests get, so Linux's clocksource is
// kvm-clock on both engines. Linux on KVM then also skips the IO-APIC timer check and the
// hard-lockup detector; every other KVM paravirtual path is behind a feature bit we do not set,
// except the ptp_kvm module's clock-pairing hypercall (VMCALL is #UD here; nothing loads it).
// Plus the VMware-style timing leaf 0x40000010 (EAX = TSC kHz, EBX = LAPIC timer kHz) that QEMU
// also puts in KVM's range, for guests that read it; Linux does not.
//
// No invariant TSC (0x80000007 EDX bit 8): the TSC is the VM's clock, which stops while the VM is
// paused and is re-based when a snapshot is restored, so the guest should not take it as a
// clocksource of its own (Linux 6.1 prefers an invariant TSC and drops kvm-clock's rating below
// it); the kvm-clock tells it how the TSC relates to time. QEMU/KVM do the same by default
// (invtsc only on request, and it blocks migration).
#include "engine/soft/cpuid.h"

#include <algorithm>
#include <cstring>
#include <numeric>

#include "devices/irqchip/lapic.h"

#include "engine/soft/mmu.h"
#include "engine/soft/platform.h"
#include "engine/soft/pvclock.h"

namespace vessel::soft {

namespace {

constexpr uint32_t kMaxBasicLeaf = 0x16;
constexpr uint32_t kMaxExtLeaf = 0x80000008;
constexpr uint32_t kMaxHvLeaf = 0x40000010;

constexpr uint32_t fourcc(const char* s)
{
    return static_cast<uint32_t>(static_cast<uint8_t>(s[0])) | (static_cast<uint32_t>(static_cast<uint8_t>(s[1])) << 8)
        | (static_cast<uint32_t>(static_cast<uint8_t>(s[2])) << 16)
        | (static_cast<uint32_t>(static_cast<uint8_t>(s[3])) << 24);
}

uint32_t vcpu_count(const Cpu& c)
{
    return c.machine ? c.machine->vcpu_count() : 1;
}

// Bits needed for IDs 0..n-1.
uint32_t id_bits(uint32_t n)
{
    uint32_t bits = 0;
    while ((1u << bits) < n)
        ++bits;
    return bits;
}

// Leaf 4: deterministic cache parameters. One package of N cores, one thread per core;
// L1/L2 per core, L3 shared by the package.
void cache_leaf(uint32_t subleaf, uint32_t cores, uint32_t out[4])
{
    struct Cache {
        uint32_t type, level, ways, sets;
        bool shared;
    };
    static constexpr Cache caches[] = {
        { 1, 1, 8, 64, false }, // L1d 32 KiB
        { 2, 1, 8, 64, false }, // L1i 32 KiB
        { 3, 2, 16, 1024, false }, // L2 1 MiB
        { 3, 3, 16, 8192, true }, // L3 8 MiB
    };
    uint32_t core_field = ((1u << id_bits(cores)) - 1) << 26;
    if (subleaf >= std::size(caches)) {
        out[0] = out[1] = out[2] = out[3] = 0;
        return;
    }
    const Cache& k = caches[subleaf];
    uint32_t sharing = k.shared ? (1u << id_bits(cores)) - 1 : 0;
    out[0] = k.type | (k.level << 5) | (1u << 8) | (sharing << 14) | core_field;
    out[1] = 63 | (0u << 12) | ((k.ways - 1) << 22); // 64-byte lines, 1 partition
    out[2] = k.sets - 1;
    out[3] = k.level == 3 ? 2 : 0; // L3 inclusive
}

} // namespace

TscRatio cpuid_tsc_ratio(uint64_t tsc_khz)
{
    uint64_t bus_khz = Lapic::kBusFrequencyHz / 1000;
    uint64_t g = std::gcd(tsc_khz, bus_khz);
    if (g) {
        uint64_t num = tsc_khz / g, den = bus_khz / g;
        if (bus_khz * num <= 0xffffffffULL && Lapic::kBusFrequencyHz <= 0xffffffffULL)
            return { static_cast<uint32_t>(den), static_cast<uint32_t>(num),
                static_cast<uint32_t>(Lapic::kBusFrequencyHz) };
    }
    // The crystal is the TSC clock divided by the smallest integer that fits 32 bits.
    uint64_t hz = tsc_khz * 1000;
    uint64_t div = hz / 0x100000000ULL + 1;
    return { 1, static_cast<uint32_t>(div), static_cast<uint32_t>(hz / div) };
}

void cpuid(Cpu& c, uint32_t leaf, uint32_t subleaf, uint32_t out[4])
{
    out[0] = out[1] = out[2] = out[3] = 0;
    uint32_t cores = vcpu_count(c);
    uint64_t tsc_khz = guest_tsc_khz(c);

    // Leaves past the maximum return the highest basic leaf (Intel behaviour); the hypervisor
    // range reads as zeros past its maximum.
    bool hv = leaf >= 0x40000000 && leaf < 0x50000000;
    if (hv && leaf > kMaxHvLeaf)
        return;
    if (!hv && (leaf > kMaxExtLeaf || (leaf > kMaxBasicLeaf && leaf < 0x80000000)))
        leaf = kMaxBasicLeaf;

    switch (leaf) {
    case 0:
        out[0] = kMaxBasicLeaf;
        out[1] = fourcc("Genu");
        out[3] = fourcc("ineI");
        out[2] = fourcc("ntel");
        break;
    case 1: {
        out[0] = kCpuidSignature;
        uint32_t logical = cores > 1 ? (1u << id_bits(cores)) : 1;
        out[1] = (8u << 8) | (std::min<uint32_t>(logical, 255) << 16) | ((c.id & 0xff) << 24);
        uint32_t ecx = kSseGroupLeaf1Ecx | kIntGroupLeaf1Ecx | cpuid1::kTscDeadline | cpuid1::kHypervisor;
        if (kSseGroupXsave) {
            ecx |= cpuid1::kXsave;
            if (c.cr4 & (1ULL << 18))
                ecx |= cpuid1::kOsxsave;
        }
        out[2] = ecx;
        uint32_t edx = kSseGroupLeaf1Edx | cpuid1::kPse | cpuid1::kTsc | cpuid1::kMsr | cpuid1::kPae | cpuid1::kCx8
            | cpuid1::kApic | cpuid1::kSep | cpuid1::kPge | cpuid1::kCmov | cpuid1::kPat | cpuid1::kClflush;
        if (cores > 1)
            edx |= cpuid1::kHtt;
        // The APIC feature bit follows IA32_APIC_BASE.EN, as on hardware.
        if (!(c.apic_base & (1ULL << 11)))
            edx &= ~cpuid1::kApic;
        out[3] = edx;
        break;
    }
    case 2:
        out[0] = 0x0000ff01; // one round; descriptor FF: use leaf 4
        break;
    case 4: cache_leaf(subleaf, cores, out); break;
    case 6:
        out[0] = 1u << 2; // ARAT: the LAPIC timer keeps running in idle states
        break;
    case 7:
        if (subleaf == 0) {
            out[0] = 2; // subleaves 0..2
            out[1] = kIntGroupLeaf7Ebx;
            out[3] = kLeaf7Edx;
        } else if (subleaf == 2) {
            out[3] = kLeaf7Sub2Edx;
        }
        break;
    case 0xb: {
        // x2APIC topology: level 0 = SMT (1 thread per core), level 1 = core (all vCPUs).
        out[3] = c.id;
        out[2] = subleaf & 0xff;
        if (subleaf == 0) {
            out[0] = 0;
            out[1] = 1;
            out[2] |= 1u << 8;
        } else if (subleaf == 1) {
            out[0] = id_bits(cores);
            out[1] = cores;
            out[2] |= 2u << 8;
        }
        break;
    }
    case 0xd:
        if (!kSseGroupXsave)
            break;
        if (subleaf == 0) {
            out[0] = static_cast<uint32_t>(kXcr0Supported);
            out[1] = kXsaveAreaSize; // for the features enabled in XCR0 (x87/SSE live in the legacy area)
            out[2] = kXsaveAreaSize;
        } else if (subleaf == 1) {
            out[0] = kSseGroupXsaveLeafD1Eax;
        }
        break;
    case 0x15: {
        TscRatio r = cpuid_tsc_ratio(tsc_khz);
        out[0] = r.denominator;
        out[1] = r.numerator;
        out[2] = r.crystal_hz;
        break;
    }
    case 0x16: {
        uint32_t mhz = static_cast<uint32_t>(std::min<uint64_t>(tsc_khz / 1000, 0xffff));
        out[0] = mhz; // base
        out[1] = mhz; // maximum
        out[2] = 100; // bus (reference) clock
        break;
    }
    case 0x40000000:
        out[0] = kMaxHvLeaf;
        out[1] = fourcc("KVMK");
        out[2] = fourcc("VMKV");
        out[3] = fourcc("M\0\0\0");
        break;
    case 0x40000001:
        out[0] = kKvmFeatures; // EDX (hints): none
        break;
    case 0x40000010:
        out[0] = static_cast<uint32_t>(tsc_khz);
        out[1] = static_cast<uint32_t>(Lapic::kBusFrequencyHz / 1000);
        break;
    case 0x80000000: out[0] = kMaxExtLeaf; break;
    case 0x80000001:
        out[2] = kIntGroupExt1Ecx;
        // SYSCALL, NX, 1 GiB pages, RDTSCP, long mode.
        out[3] = (1u << 11) | (1u << 20) | (1u << 26) | (1u << 27) | (1u << 29);
        break;
    case 0x80000002:
    case 0x80000003:
    case 0x80000004: {
        char brand[48] = "Vessel soft CPU";
        std::memcpy(out, brand + (leaf - 0x80000002) * 16, 16);
        break;
    }
    case 0x80000006:
        out[2] = 64 | (8u << 12) | (1024u << 16); // L2: 64-byte lines, 16-way, 1024 KiB
        break;
    case 0x80000007: break; // no invariant TSC (see the file comment)
    case 0x80000008: out[0] = kPhysAddrBits | (kVirtAddrBits << 8); break;
    default: break;
    }
}

CpuidTable cpuid_entries(Cpu& c)
{
    CpuidTable table;
    auto add = [&](uint32_t leaf, uint32_t subleaf, bool indexed) -> const CpuidEntry& {
        uint32_t r[4];
        cpuid(c, leaf, subleaf, r);
        table.push_back(CpuidEntry { leaf, indexed ? subleaf : 0, indexed, r[0], r[1], r[2], r[3] });
        return table.back();
    };
    auto range = [&](uint32_t first) {
        uint32_t r[4];
        cpuid(c, first, 0, r);
        const uint32_t last = r[0];
        for (uint32_t leaf = first; leaf <= last && leaf - first < 0x100; ++leaf) {
            switch (leaf) {
            case 4:
                // Subleaves until the first with cache type 0, which is listed too.
                for (uint32_t sub = 0; sub < 64 && (add(leaf, sub, true).eax & 0x1f); ++sub) { }
                break;
            case 7: {
                const uint32_t max_sub = add(leaf, 0, true).eax;
                for (uint32_t sub = 1; sub <= max_sub && sub < 64; ++sub)
                    add(leaf, sub, true);
                break;
            }
            case 0xb:
                // Levels until the first invalid one (level type 0), which is listed too.
                for (uint32_t sub = 0; sub < 64 && (add(leaf, sub, true).ecx & 0xff00); ++sub) { }
                break;
            case 0xd: {
                const CpuidEntry& e0 = add(leaf, 0, true);
                const uint64_t components = e0.eax | (static_cast<uint64_t>(e0.edx) << 32);
                add(leaf, 1, true);
                for (uint32_t sub = 2; sub < 64; ++sub)
                    if (components & (1ULL << sub))
                        add(leaf, sub, true);
                break;
            }
            default: add(leaf, 0, false); break;
            }
        }
    };
    range(0);
    range(0x40000000);
    range(0x80000000);
    return table;
}

} // namespace vessel::soft
