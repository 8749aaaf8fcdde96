// The CPU model the soft engine presents: CPUID advertises exactly what the engine implements.
#pragma once

#include <cstdint>

#include "engine/soft/cpu.h"

namespace vessel::soft {

// Family 6, model 0x6B (a model number Intel never shipped, so no kernel applies model
// quirks or errata lists to it), stepping 1.
constexpr uint32_t kCpuidFamily = 6, kCpuidModel = 0x6b, kCpuidStepping = 1;
constexpr uint32_t kCpuidSignature = (kCpuidFamily << 8) | ((kCpuidModel & 0xf) << 4) | ((kCpuidModel >> 4) << 16)
                                     | kCpuidStepping;

// Leaf 1 ECX / EDX bits.
namespace cpuid1 {
constexpr uint32_t kSse3 = 1u << 0, kPclmulqdq = 1u << 1, kSsse3 = 1u << 9, kCx16 = 1u << 13, kSse41 = 1u << 19,
                   kSse42 = 1u << 20, kX2apic = 1u << 21, kMovbe = 1u << 22, kPopcnt = 1u << 23,
                   kTscDeadline = 1u << 24, kAes = 1u << 25, kXsave = 1u << 26, kOsxsave = 1u << 27,
                   kHypervisor = 1u << 31;
constexpr uint32_t kFpu = 1u << 0, kPse = 1u << 3, kTsc = 1u << 4, kMsr = 1u << 5, kPae = 1u << 6, kCx8 = 1u << 8,
                   kApic = 1u << 9, kSep = 1u << 11, kPge = 1u << 13, kCmov = 1u << 15, kPat = 1u << 16,
                   kClflush = 1u << 19, kMmx = 1u << 23, kFxsr = 1u << 24, kSse = 1u << 25, kSse2 = 1u << 26,
                   kHtt = 1u << 28;
} // namespace cpuid1

// ---- What the SSE/x87 group implements: edit these when it grows. ----
// Leaf 1 EDX: x87, MMX, FXSAVE/FXRSTOR, SSE, SSE2 (the x86-64 baseline).
constexpr uint32_t kSseGroupLeaf1Edx = cpuid1::kFpu | cpuid1::kMmx | cpuid1::kFxsr | cpuid1::kSse | cpuid1::kSse2;
// Leaf 1 ECX: nothing beyond SSE2 yet (add kSse3, kSsse3, kSse41, kSse42, kPclmulqdq, kAes...).
constexpr uint32_t kSseGroupLeaf1Ecx = 0;
// XSAVE/XRSTOR with XCR0 = x87|SSE, and XSAVEOPT (leaf 0xD.1 EAX bit 0; it saves what XSAVE
// saves, which is allowed). XSAVEC, XGETBV with ECX=1 and XSAVES are not offered.
constexpr bool kSseGroupXsave = true;
constexpr uint32_t kSseGroupXsaveLeafD1Eax = 1u << 0;
constexpr uint64_t kXcr0Supported = 0x3;   // x87 | SSE
constexpr uint32_t kXsaveAreaSize = 576;   // legacy region 512 + XSAVE header 64

// ---- What the integer group implements. ----
// Leaf 1 ECX: CMPXCHG16B, POPCNT. Leaf 0x80000001 ECX: LAHF/SAHF in 64-bit mode, LZCNT.
constexpr uint32_t kIntGroupLeaf1Ecx = cpuid1::kCx16 | cpuid1::kPopcnt;
constexpr uint32_t kIntGroupExt1Ecx = (1u << 0) | (1u << 5);
// Leaf 7 EBX: ERMS (REP MOVSB/STOSB run in bulk).
constexpr uint32_t kIntGroupLeaf7Ebx = 1u << 9;

// IA32_ARCH_CAPABILITIES (advertised in leaf 7 EDX bit 29): an interpreter does not speculate.
// RDCL_NO | SKIP_L1DFL_VMENTRY | SSB_NO | MDS_NO | PSCHANGE_MC_NO | TAA_NO | SBDR_SSDP_NO |
// FBSDP_NO | PSDP_NO | BHI_NO | GDS_NO | RFDS_NO: Linux reports "Not affected" for Meltdown, L1TF,
// MDS, TAA, MMIO stale data, SSB, iTLB multihit, BHI, GDS and RFDS and does not enable PTI.
// Spectre v1/v2 still get their (cheap) default mitigations: there is no architectural "not
// affected" bit for them without advertising SPEC_CTRL, which we do not implement.
constexpr uint64_t kArchCapabilities = (1ULL << 0) | (1ULL << 3) | (1ULL << 4) | (1ULL << 5) | (1ULL << 6)
                                       | (1ULL << 8) | (1ULL << 13) | (1ULL << 14) | (1ULL << 15) | (1ULL << 20)
                                       | (1ULL << 26) | (1ULL << 27);

constexpr unsigned kPhysAddrBits = 40, kVirtAddrBits = 48;

// Leaf 0x15: TSC = crystal_hz × numerator / denominator. The crystal is the LAPIC timer's input
// clock (Linux takes its timer period from it) whenever Linux's 32-bit arithmetic
// (crystal kHz × numerator) can express the TSC frequency with it; otherwise the crystal is the
// TSC clock itself (or an integer fraction of it above 4.29 GHz).
struct TscRatio {
    uint32_t denominator, numerator, crystal_hz;
};
TscRatio cpuid_tsc_ratio();

// CPUID for vCPU `c` (c.id is its APIC ID; the vCPU count comes from c.machine).
void cpuid(Cpu& c, uint32_t leaf, uint32_t subleaf, uint32_t out[4]);

} // namespace vessel::soft
