// Conversion between the engine-neutral CpuState and KVM's vCPU ioctls.
#pragma once

#include <linux/kvm.h>

#include "arch/x86/cpu_state.h"
#include "base/result.h"

namespace vessel {

struct KvmStateIo {
    int vcpu_fd;
    uint32_t xsave_size;
};

// MSR indices carried in MsrState.
namespace msr {
constexpr uint32_t kTsc = 0x10;
constexpr uint32_t kApicBase = 0x1b;
constexpr uint32_t kSpecCtrl = 0x48;
constexpr uint32_t kSysenterCs = 0x174;
constexpr uint32_t kSysenterEsp = 0x175;
constexpr uint32_t kSysenterEip = 0x176;
constexpr uint32_t kMiscEnable = 0x1a0;
constexpr uint32_t kPat = 0x277;
constexpr uint32_t kTscDeadline = 0x6e0;
constexpr uint32_t kEfer = 0xc0000080;
constexpr uint32_t kStar = 0xc0000081;
constexpr uint32_t kLstar = 0xc0000082;
constexpr uint32_t kCstar = 0xc0000083;
constexpr uint32_t kSfmask = 0xc0000084;
constexpr uint32_t kKernelGsBase = 0xc0000102;
constexpr uint32_t kTscAux = 0xc0000103;
constexpr uint32_t kKvmWallClockNew = 0x4b564d00;
constexpr uint32_t kKvmSystemTimeNew = 0x4b564d01;
} // namespace msr

// Reads the full state through ioctls, the MP state first (see the definition). The
// KVM_CAP_SYNC_REGS copy in the run area is not used here: it is a snapshot from the last exit,
// and an INIT/SIPI accepted since then changes the registers behind it.
Result<CpuState> read_kvm_state(const KvmStateIo& io);
// Writes the full state in the order KVM needs (mp state, regs, sregs, xsave, xcrs, debug
// registers, LAPIC, MSRs, events).
Result<void> write_kvm_state(const KvmStateIo& io, const CpuState& state);

// Segment conversions (exposed for tests).
SegmentReg from_kvm_segment(const kvm_segment& s);
kvm_segment to_kvm_segment(const SegmentReg& s);

} // namespace vessel
