// Conversions between KVM's in-kernel interrupt controllers and PIT (KVM_GET/SET_IRQCHIP,
// KVM_GET/SET_PIT2) and the engine-neutral MachineState the soft engine's models also fill.
// KVM's structs follow the same chips field for field; what differs is spelled out here:
//  - the IOAPIC ID: KVM keeps the 4-bit id, MachineState the ID register (id in bits 27:24);
//  - PIT load times: KVM stamps them with the host's CLOCK_MONOTONIC, MachineState with the
//    guest's clock (guest_time_ns), so a saved PIT means the same on any host and engine;
//  - the speaker's data bit (port 0x61 bit 1) travels as KVM_PIT_FLAGS_SPEAKER_DATA_ON;
//  - a PIT channel with no count loaded: KVM reports mode 0xff and count 0x10000 for a channel
//    no guest has programmed, MachineState (as the soft engine's PIT) count 0; a restore gives
//    KVM mode 0xff for count 0, so that KVM_SET_PIT2 starts no timer (the mode of a channel
//    whose control word was written but no count yet is lost on KVM, which has no such state);
//  - KVM_PIT_FLAGS_HPET_LEGACY is never set: Vessel has no HPET.
// The IOAPIC base address is KVM's own (not in MachineState): a restore keeps the VM's.
#pragma once

#include <linux/kvm.h>

#include <cstdint>

#include "arch/x86/machine_state.h"

namespace vessel {

IoapicState ioapic_from_kvm(const kvm_ioapic_state& kvm);
// Fills everything but base_address, which `kvm` keeps.
void ioapic_to_kvm(const IoapicState& state, kvm_ioapic_state& kvm);

PicChipState pic_from_kvm(const kvm_pic_state& kvm);
kvm_pic_state pic_to_kvm(const PicChipState& state);

// `host_now_ns` (CLOCK_MONOTONIC) and `guest_now_ns` (the guest's clock) are the same moment.
PitState pit_from_kvm(const kvm_pit_state2& kvm, int64_t host_now_ns, uint64_t guest_now_ns);
kvm_pit_state2 pit_to_kvm(const PitState& state, int64_t host_now_ns, uint64_t guest_now_ns);

// Two TSC frequencies KVM treats as one (its tsc_tolerance_ppm, 250 ppm): it neither scales nor
// refuses between them.
bool tsc_khz_compatible(uint64_t a_khz, uint64_t b_khz);

// CLOCK_MONOTONIC in ns: the clock KVM's PIT stamps its load times with (ktime_get()).
int64_t host_monotonic_ns();

} // namespace vessel
