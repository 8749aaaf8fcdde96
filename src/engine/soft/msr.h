// Model-specific registers of the soft engine's CPU model (cpuid.h advertises the matching
// features). Everything not listed is #GP(0) on RDMSR and WRMSR, like an MSR the CPU lacks.
#pragma once

#include <cstdint>

#include "engine/soft/cpu.h"

namespace vessel::soft {

namespace msr {
constexpr uint32_t kTsc = 0x10, kPlatformId = 0x17, kApicBase = 0x1b, kFeatureControl = 0x3a, kSpecCtrl = 0x48,
                   kPredCmd = 0x49, kBiosSignId = 0x8b, kPlatformInfo = 0xce, kMtrrCap = 0xfe,
                   kArchCapabilities = 0x10a, kSysenterCs = 0x174, kSysenterEsp = 0x175, kSysenterEip = 0x176,
                   kMcgCap = 0x179, kMcgStatus = 0x17a, kMiscEnable = 0x1a0, kDebugCtl = 0x1d9, kPat = 0x277,
                   kMtrrDefType = 0x2ff, kTscDeadline = 0x6e0, kEfer = 0xc0000080, kStar = 0xc0000081,
                   kLstar = 0xc0000082, kCstar = 0xc0000083, kSfmask = 0xc0000084, kFsBase = 0xc0000100,
                   kGsBase = 0xc0000101, kKernelGsBase = 0xc0000102, kTscAux = 0xc0000103;
} // namespace msr

// RDMSR / WRMSR semantics, without the CPL check (the instruction handlers do it). Throw
// #GP(0) for unknown MSRs and invalid values. Writes that change the mode or paging update
// the derived state and flush the TLB as needed.
uint64_t read_msr(Cpu& c, uint32_t index);
void write_msr(Cpu& c, uint32_t index, uint64_t value);

} // namespace vessel::soft
