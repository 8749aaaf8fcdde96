// The CPU model the soft engine presents: CPUID advertises exactly what the engine implements.
#pragma once

#include <cstdint>

#include "arch/x86/cpuid_entry.h"
#include "engine/soft/cpu.h"

namespace vessel::soft {

// Family 6, model 0x6B (a model number Intel never shipped, so no kernel applies model
// quirks or errata lists to it), stepping 1.
constexpr uint32_t kCpuidFamily = 6, kCpuidModel = 0x6b, kCpuidStepping = 1;
constexpr uint32_t kCpuidSignature
    = (kCpuidFamily << 8) | ((kCpuidModel & 0xf) << 4) | ((kCpuidModel >> 4) << 16) | kCpuidStepping;

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
constexpr uint64_t kXcr0Supported = 0x3; // x87 | SSE
constexpr uint32_t kXsaveAreaSize = 576; // legacy region 512 + XSAVE header 64

// ---- What the integer group implements. ----
// Leaf 1 ECX: CMPXCHG16B, POPCNT. Leaf 0x80000001 ECX: LAHF/SAHF in 64-bit mode, LZCNT.
constexpr uint32_t kIntGroupLeaf1Ecx = cpuid1::kCx16 | cpuid1::kPopcnt;
constexpr uint32_t kIntGroupExt1Ecx = (1u << 0) | (1u << 5);
// Leaf 7 EBX: ERMS (REP MOVSB/STOSB run in bulk).
constexpr uint32_t kIntGroupLeaf7Ebx = 1u << 9;

// Speculation: the soft engine's CPU executes nothing speculatively, and the guest's software
// mitigations would not protect translated code anyway (a guest retpoline or return thunk becomes
// host indirect jumps through the jump cache; isolation from host-level side channels is the
// host's, as under any translator). So the CPU says what it is:
// IA32_ARCH_CAPABILITIES (leaf 7 EDX bit 29): RDCL_NO | IBRS_ALL | SKIP_L1DFL_VMENTRY | SSB_NO |
// MDS_NO | PSCHANGE_MC_NO | TAA_NO | SBDR_SSDP_NO | FBSDP_NO | PSDP_NO | BHI_NO | PBRSB_NO |
// GDS_NO | RFDS_NO | ITS_NO, and IA32_SPEC_CTRL/IA32_PRED_CMD (leaf 7 EDX bit 26) exist with
// BHI_DIS_S (leaf 7.2 EDX bit 4, BHI_CTRL): Linux reports "Not affected" for Meltdown, L1TF, MDS,
// TAA, MMIO stale data, SSB, GDS, RFDS, ITS and iTLB multihit, does not enable PTI, and
// mitigates Spectre v2 with enhanced IBRS and BHI with BHI_DIS_S (MSR writes at boot) instead of
// retpolines, ITS return thunks (both doubled the block transitions of kernel function returns
// and indirect calls) or the BHB-clearing loop on every system call (Linux assumes BHI under any
// hypervisor, BHI_NO or not).
namespace arch_cap {
constexpr uint64_t kRdclNo = 1ULL << 0, kIbrsAll = 1ULL << 1, kSkipL1dfl = 1ULL << 3, kSsbNo = 1ULL << 4,
                   kMdsNo = 1ULL << 5, kPschangeMcNo = 1ULL << 6, kTaaNo = 1ULL << 8, kSbdrSsdpNo = 1ULL << 13,
                   kFbsdpNo = 1ULL << 14, kPsdpNo = 1ULL << 15, kBhiNo = 1ULL << 20, kPbrsbNo = 1ULL << 24,
                   kGdsNo = 1ULL << 26, kRfdsNo = 1ULL << 27, kItsNo = 1ULL << 62;
} // namespace arch_cap
constexpr uint64_t kArchCapabilities = arch_cap::kRdclNo | arch_cap::kIbrsAll | arch_cap::kSkipL1dfl | arch_cap::kSsbNo
    | arch_cap::kMdsNo | arch_cap::kPschangeMcNo | arch_cap::kTaaNo | arch_cap::kSbdrSsdpNo | arch_cap::kFbsdpNo
    | arch_cap::kPsdpNo | arch_cap::kBhiNo | arch_cap::kPbrsbNo | arch_cap::kGdsNo | arch_cap::kRfdsNo
    | arch_cap::kItsNo;
// Leaf 7 EDX: IBRS/IBPB (IA32_SPEC_CTRL bit 0 and IA32_PRED_CMD), IA32_ARCH_CAPABILITIES.
constexpr uint32_t kLeaf7Edx = (1u << 26) | (1u << 29);
// Leaf 7 subleaf 2 EDX: BHI_CTRL (IA32_SPEC_CTRL.BHI_DIS_S).
constexpr uint32_t kLeaf7Sub2Edx = 1u << 4;
// The IA32_SPEC_CTRL bits offered: IBRS, BHI_DIS_S (no STIBP, SSBD or RRSBA controls).
constexpr uint64_t kSpecCtrlIbrs = 1ULL << 0, kSpecCtrlBhiDisS = 1ULL << 10;
constexpr uint64_t kSpecCtrlWritable = kSpecCtrlIbrs | kSpecCtrlBhiDisS;
constexpr uint64_t kPredCmdIbpb = 1ULL << 0;

constexpr unsigned kPhysAddrBits = 40, kVirtAddrBits = 48;

// Leaf 0x15: TSC = crystal_hz × numerator / denominator. The crystal is the LAPIC timer's input
// clock (Linux takes its timer period from it) whenever Linux's 32-bit arithmetic
// (crystal kHz × numerator) can express the TSC frequency with it; otherwise the crystal is the
// TSC clock itself (or an integer fraction of it above 4.29 GHz).
struct TscRatio {
    uint32_t denominator, numerator, crystal_hz;
};
TscRatio cpuid_tsc_ratio(uint64_t tsc_khz);

// CPUID for vCPU `c` (c.id is its APIC ID; the vCPU count comes from c.machine).
void cpuid(Cpu& c, uint32_t leaf, uint32_t subleaf, uint32_t out[4]);

// Every leaf cpuid() answers for `c`: the basic, hypervisor (0x40000000..) and extended ranges
// up to their maxima, and each subleaf of the indexed leaves (4 and 0xB up to and including the
// first invalid one, as KVM lists them; 7 up to its EAX; 0xD for the XCR0 components).
CpuidTable cpuid_entries(Cpu& c);

} // namespace vessel::soft
