#include "engine/kvm/kvm_cpuid.h"

#include <bit>

namespace vessel {

std::vector<kvm_cpuid_entry2> build_guest_cpuid(
    const std::vector<kvm_cpuid_entry2>& supported, uint32_t apic_id, uint32_t vcpus)
{
    std::vector<kvm_cpuid_entry2> out = supported;
    // Bits needed to number `vcpus` cores in the x2APIC id.
    uint32_t core_bits = vcpus <= 1 ? 0 : static_cast<uint32_t>(std::bit_width(vcpus - 1));
    for (auto& e : out) {
        switch (e.function) {
        case 1:
            e.ebx = (e.ebx & 0x0000ffffu) | ((vcpus & 0xffu) << 16) | ((apic_id & 0xffu) << 24);
            e.ecx |= 1u << 31; // running under a hypervisor
            if (vcpus > 1)
                e.edx |= 1u << 28; // HTT: EBX[23:16] is valid
            break;
        case 4: {
            // Cores per package - 1 in EAX[31:26]; one thread shares each cache level.
            uint32_t cores = std::min<uint32_t>(vcpus, 64) - 1;
            e.eax = (e.eax & 0x03ffffffu) | (cores << 26);
            e.eax &= ~(0xfffu << 14);
            break;
        }
        case 0xa:
            e.eax = e.ebx = e.ecx = e.edx = 0; // no virtual PMU
            break;
        case 0x40000001:
            // KVM paravirtual features: only those whose guest state CpuState carries (kvmclock's
            // MSRs) or that have none, so a saved VM loses nothing: kvmclock (CLOCKSOURCE,
            // CLOCKSOURCE2, STABLE_BIT), NOP_IO_DELAY, PV_UNHALT, MSI_EXT_DEST_ID. Steal time,
            // PV EOI, async page faults and poll control keep state in guest-registered MSRs.
            e.eax &= (1u << 0) | (1u << 1) | (1u << 3) | (1u << 7) | (1u << 15) | (1u << 24);
            break;
        case 0x80000007:
            // No invariant-TSC bit: with it Linux prefers the raw TSC over kvm-clock, and a raw TSC
            // does not survive a restore or migration to another host; kvm-clock does (QEMU
            // leaves invtsc off by default for the same reason).
            e.edx &= ~(1u << 8);
            break;
        case 0xb:
        case 0x1f:
            e.edx = apic_id;
            if (e.index == 0) {
                e.eax = 0; // SMT level: no threads
                e.ebx = 1;
                e.ecx = (1u << 8); // level type SMT
            } else if (e.index == 1) {
                e.eax = core_bits;
                e.ebx = vcpus;
                e.ecx = (2u << 8) | 1u; // level type core
            } else {
                e.eax = e.ebx = 0;
                e.ecx = e.index;
            }
            break;
        default: break;
        }
    }
    return out;
}

CpuidTable cpuid_table_from_kvm(const kvm_cpuid_entry2* entries, size_t count)
{
    CpuidTable out;
    out.reserve(count);
    for (size_t i = 0; i < count; ++i) {
        const auto& e = entries[i];
        CpuidEntry c;
        c.function = e.function;
        c.index = e.index;
        c.significant_index = (e.flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX) != 0;
        c.eax = e.eax;
        c.ebx = e.ebx;
        c.ecx = e.ecx;
        c.edx = e.edx;
        out.push_back(c);
    }
    return out;
}

} // namespace vessel
