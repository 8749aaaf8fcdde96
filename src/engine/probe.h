// Chooses a CPU engine for this host (`--engine auto`) in well under 10 ms, without running
// guest code: /dev/kvm must exist and be usable, and the host CPU must offer VT-x or AMD-V.
// A KVM that is itself a paravirtual nested hypervisor (kvm_pvm, no vmx/svm in CPUID) emulates
// guest kernel mode ~1000x slower; such a host gets the software engine.
#pragma once

#include <string>

namespace vessel {

enum class EngineKind { Auto, Kvm, Soft };

struct HostProbe {
    bool kvm_device { false };   // /dev/kvm opens and answers KVM_GET_API_VERSION
    bool hw_virt { false };      // CPUID reports VMX or SVM
    bool kvm_pvm { false };      // the kvm_pvm module is loaded
    EngineKind choice { EngineKind::Soft };
    std::string reason;          // one sentence a user can read
};

HostProbe probe_host();

// The host's TSC rate in kHz as Linux calibrated it (x86 /proc/cpuinfo "bogomips" is tsc_khz /
// 500), or 0 if it cannot be read. The soft engine shows guests this rate, so that a snapshot
// taken on it resumes under KVM on the same kind of host (KVM can rarely present another rate).
uint64_t host_tsc_khz();

const char* engine_name(EngineKind kind);

} // namespace vessel
