#pragma once

#include <linux/kvm.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "arch/x86/cpuid_entry.h"

namespace vessel {

// The CPUID table a vCPU sees: KVM's supported set with this vCPU's APIC id and the VM's
// topology (vcpus cores in one package, one thread each), the hypervisor bit, the KVM
// paravirtual leaves (kvmclock) as KVM offers them, and no virtual PMU.
std::vector<kvm_cpuid_entry2> build_guest_cpuid(
    const std::vector<kvm_cpuid_entry2>& supported, uint32_t apic_id, uint32_t vcpus);

// KVM's CPUID entries in engine-neutral form (what a snapshot records).
CpuidTable cpuid_table_from_kvm(const kvm_cpuid_entry2* entries, size_t count);

} // namespace vessel
