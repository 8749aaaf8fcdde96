// The engine-neutral state of what is not in any vCPU: the IOAPIC, the two 8259 PICs, the 8254
// PIT and the guest's clock. The soft engine's device models and KVM's in-kernel irqchip and PIT
// both convert to and from these structs, so a snapshot taken on one engine restores on the other.
// The fields follow the chips' architectural state (what KVM's kvm_ioapic_state, kvm_pic_state
// and kvm_pit_channel_state also carry), with times expressed on the guest's clock instead of a
// host clock.
#pragma once

#include <array>
#include <cstdint>

namespace vessel {

struct IoapicState {
    static constexpr unsigned kPins = 24;
    uint32_t id { 0 }; // the IOAPIC ID register's value (bits 27:24 hold the id)
    uint32_t ioregsel { 0 }; // the index register
    uint32_t irr { 0 }; // pins whose level is high (level-triggered: remote IRR logic follows)
    // Redirection entries, 64 bits each (vector, delivery mode, destination mode, delivery status,
    // polarity, remote IRR, trigger mode, mask, destination).
    std::array<uint64_t, kPins> redirection {};
    bool operator==(const IoapicState&) const = default;
};

// One 8259A.
struct PicChipState {
    uint8_t last_irr { 0 }; // edge detection
    uint8_t irr { 0 }; // interrupt request register
    uint8_t imr { 0 }; // interrupt mask register
    uint8_t isr { 0 }; // in-service register
    uint8_t priority_add { 0 }; // rotation
    uint8_t irq_base { 0 }; // vector of IR0 (ICW2)
    uint8_t read_reg_select { 0 }; // OCW3: read ISR (1) or IRR (0)
    uint8_t poll { 0 };
    uint8_t special_mask { 0 };
    uint8_t init_state { 0 }; // which ICW comes next (0: initialized)
    uint8_t auto_eoi { 0 };
    uint8_t rotate_on_auto_eoi { 0 };
    uint8_t special_fully_nested_mode { 0 };
    uint8_t init4 { 0 }; // ICW4 expected
    uint8_t elcr { 0 }; // edge/level control (ports 0x4d0/0x4d1)
    uint8_t elcr_mask { 0 };
    bool operator==(const PicChipState&) const = default;
};

struct PitChannelState {
    // The reload value in input clocks (a written 0 is stored as 0x10000); 0: no count loaded since
    // the control word (KVM: mode 0xff), so no timer runs.
    uint32_t count { 0 };
    uint16_t latched_count { 0 };
    uint8_t count_latched { 0 };
    uint8_t status_latched { 0 };
    uint8_t status { 0 };
    uint8_t read_state { 0 };
    uint8_t write_state { 0 };
    uint8_t write_latch { 0 };
    uint8_t rw_mode { 0 };
    uint8_t mode { 0 };
    uint8_t bcd { 0 };
    uint8_t gate { 0 };
    // When the count was loaded, on the guest's clock (MachineState::guest_time_ns's scale): the
    // current count and output follow from it.
    int64_t count_load_time_ns { 0 };
    bool operator==(const PitChannelState&) const = default;
};

struct PitState {
    std::array<PitChannelState, 3> channels {};
    uint8_t speaker_data_on { 0 }; // port 0x61 bit 1
    bool operator==(const PitState&) const = default;
};

struct MachineState {
    IoapicState ioapic;
    std::array<PicChipState, 2> pic {}; // master, slave
    PitState pit;
    // The guest's clock (what kvmclock reports as system time) at the moment of saving; restoring
    // continues from it, so the guest sees no time pass while the VM was saved.
    uint64_t guest_time_ns { 0 };
    // The TSC frequency the guest was shown (kHz); a target engine must present the same.
    uint64_t tsc_khz { 0 };
    bool operator==(const MachineState&) const = default;
};

} // namespace vessel
