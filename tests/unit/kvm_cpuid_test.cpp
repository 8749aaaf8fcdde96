// The KVM engine's guest CPUID, built from KVM_GET_SUPPORTED_CPUID (no /dev/kvm needed here).
#include <gtest/gtest.h>

#include "engine/kvm/kvm_cpuid.h"

using namespace vessel;

namespace {

kvm_cpuid_entry2 leaf(uint32_t function, uint32_t eax, uint32_t ebx, uint32_t ecx, uint32_t edx)
{
    kvm_cpuid_entry2 e {};
    e.function = function;
    e.eax = eax;
    e.ebx = ebx;
    e.ecx = ecx;
    e.edx = edx;
    return e;
}

const kvm_cpuid_entry2* find(const std::vector<kvm_cpuid_entry2>& v, uint32_t function)
{
    for (auto& e : v)
        if (e.function == function)
            return &e;
    return nullptr;
}

} // namespace

TEST(KvmCpuid, ParavirtualFeaturesAreOnlyThoseWhoseStateIsSaved)
{
    // What this host's kvm_pvm reported: kvmclock, steal time, PV EOI, async PF, ... and the stable bit.
    std::vector<kvm_cpuid_entry2> supported { leaf(0x40000001, 0x01007efb, 0, 0, 0) };
    auto out = build_guest_cpuid(supported, 0, 1);
    const auto* pv = find(out, 0x40000001);
    ASSERT_NE(pv, nullptr);
    EXPECT_TRUE(pv->eax & (1u << 0)) << "CLOCKSOURCE";
    EXPECT_TRUE(pv->eax & (1u << 3)) << "CLOCKSOURCE2";
    EXPECT_TRUE(pv->eax & (1u << 24)) << "CLOCKSOURCE_STABLE_BIT";
    EXPECT_FALSE(pv->eax & (1u << 4)) << "ASYNC_PF keeps state in an MSR a snapshot does not carry";
    EXPECT_FALSE(pv->eax & (1u << 5)) << "STEAL_TIME";
    EXPECT_FALSE(pv->eax & (1u << 6)) << "PV_EOI";
}

TEST(KvmCpuid, NoInvariantTscSoTheGuestRunsOnKvmClock)
{
    std::vector<kvm_cpuid_entry2> supported { leaf(0x80000007, 0, 0, 0, (1u << 8) | 1u) };
    auto out = build_guest_cpuid(supported, 0, 1);
    const auto* e = find(out, 0x80000007);
    ASSERT_NE(e, nullptr);
    EXPECT_FALSE(e->edx & (1u << 8));
    EXPECT_TRUE(e->edx & 1u) << "other bits pass through";
}
