#include "engine/kvm/kvm_machine.h"

#include <sys/ioctl.h>

#include <cstdlib>
#include <ctime>

#include "engine/kvm/kvm_engine.h"
#include "engine/kvm/kvm_vcpu.h"

namespace vessel {

namespace {

// kvm_ioapic_state.id is the 4-bit IOAPIC id; the ID register holds it in bits 27:24.
constexpr unsigned kIoapicIdShift = 24;
constexpr uint32_t kIoapicIdMask = 0xf;
// KVM's PIT mode for a channel no guest has programmed.
constexpr uint8_t kPitNeverProgrammed = 0xff;
// KVM's tsc_tolerance_ppm.
constexpr uint64_t kTscTolerancePpm = 250;

} // namespace

int64_t host_monotonic_ns()
{
    timespec now {};
    ::clock_gettime(CLOCK_MONOTONIC, &now);
    return static_cast<int64_t>(now.tv_sec) * 1'000'000'000 + now.tv_nsec;
}

bool tsc_khz_compatible(uint64_t a_khz, uint64_t b_khz)
{
    uint64_t diff = a_khz > b_khz ? a_khz - b_khz : b_khz - a_khz;
    return diff * 1'000'000 <= kTscTolerancePpm * b_khz;
}

IoapicState ioapic_from_kvm(const kvm_ioapic_state& kvm)
{
    IoapicState s;
    s.id = (kvm.id & kIoapicIdMask) << kIoapicIdShift;
    s.ioregsel = kvm.ioregsel;
    s.irr = kvm.irr;
    for (unsigned pin = 0; pin < IoapicState::kPins && pin < KVM_IOAPIC_NUM_PINS; ++pin)
        s.redirection[pin] = kvm.redirtbl[pin].bits;
    return s;
}

void ioapic_to_kvm(const IoapicState& state, kvm_ioapic_state& kvm)
{
    kvm.id = (state.id >> kIoapicIdShift) & kIoapicIdMask;
    kvm.ioregsel = state.ioregsel;
    kvm.irr = state.irr;
    kvm.pad = 0;
    for (unsigned pin = 0; pin < IoapicState::kPins && pin < KVM_IOAPIC_NUM_PINS; ++pin)
        kvm.redirtbl[pin].bits = state.redirection[pin];
}

PicChipState pic_from_kvm(const kvm_pic_state& kvm)
{
    PicChipState s;
    s.last_irr = kvm.last_irr;
    s.irr = kvm.irr;
    s.imr = kvm.imr;
    s.isr = kvm.isr;
    s.priority_add = kvm.priority_add;
    s.irq_base = kvm.irq_base;
    s.read_reg_select = kvm.read_reg_select;
    s.poll = kvm.poll;
    s.special_mask = kvm.special_mask;
    s.init_state = kvm.init_state;
    s.auto_eoi = kvm.auto_eoi;
    s.rotate_on_auto_eoi = kvm.rotate_on_auto_eoi;
    s.special_fully_nested_mode = kvm.special_fully_nested_mode;
    s.init4 = kvm.init4;
    s.elcr = kvm.elcr;
    s.elcr_mask = kvm.elcr_mask;
    return s;
}

kvm_pic_state pic_to_kvm(const PicChipState& s)
{
    kvm_pic_state kvm {};
    kvm.last_irr = s.last_irr;
    kvm.irr = s.irr;
    kvm.imr = s.imr;
    kvm.isr = s.isr;
    kvm.priority_add = s.priority_add;
    kvm.irq_base = s.irq_base;
    kvm.read_reg_select = s.read_reg_select;
    kvm.poll = s.poll;
    kvm.special_mask = s.special_mask;
    kvm.init_state = s.init_state;
    kvm.auto_eoi = s.auto_eoi;
    kvm.rotate_on_auto_eoi = s.rotate_on_auto_eoi;
    kvm.special_fully_nested_mode = s.special_fully_nested_mode;
    kvm.init4 = s.init4;
    kvm.elcr = s.elcr;
    kvm.elcr_mask = s.elcr_mask;
    return kvm;
}

PitState pit_from_kvm(const kvm_pit_state2& kvm, int64_t host_now_ns, uint64_t guest_now_ns)
{
    PitState s;
    for (size_t i = 0; i < s.channels.size(); ++i) {
        const auto& k = kvm.channels[i];
        auto& c = s.channels[i];
        // A channel no guest has programmed: KVM says mode 0xff, count 0x10000; neutral: no count.
        c.count = k.mode == kPitNeverProgrammed ? 0 : k.count;
        c.latched_count = k.latched_count;
        c.count_latched = k.count_latched;
        c.status_latched = k.status_latched;
        c.status = k.status;
        c.read_state = k.read_state;
        c.write_state = k.write_state;
        c.write_latch = k.write_latch;
        c.rw_mode = k.rw_mode;
        c.mode = k.mode;
        c.bcd = k.bcd;
        c.gate = k.gate;
        // As long before the guest's "now" as it was before the host's.
        c.count_load_time_ns = static_cast<int64_t>(guest_now_ns) - (host_now_ns - k.count_load_time);
    }
    s.speaker_data_on = (kvm.flags & KVM_PIT_FLAGS_SPEAKER_DATA_ON) ? 1 : 0;
    return s;
}

kvm_pit_state2 pit_to_kvm(const PitState& s, int64_t host_now_ns, uint64_t guest_now_ns)
{
    kvm_pit_state2 kvm {};
    for (size_t i = 0; i < s.channels.size(); ++i) {
        const auto& c = s.channels[i];
        auto& k = kvm.channels[i];
        k.count = c.count;
        k.latched_count = c.latched_count;
        k.count_latched = c.count_latched;
        k.status_latched = c.status_latched;
        k.status = c.status;
        k.read_state = c.read_state;
        k.write_state = c.write_state;
        k.write_latch = c.write_latch;
        k.rw_mode = c.rw_mode;
        k.mode = c.mode;
        k.bcd = c.bcd;
        k.gate = c.gate;
        k.count_load_time = host_now_ns - (static_cast<int64_t>(guest_now_ns) - c.count_load_time_ns);
        // No count loaded: KVM's never-programmed mode, or KVM_SET_PIT2 would start counting
        // 0x10000 (and channel 0 would raise IRQ0 55 ms later).
        if (c.count == 0)
            k.mode = kPitNeverProgrammed;
    }
    kvm.flags = s.speaker_data_on ? KVM_PIT_FLAGS_SPEAKER_DATA_ON : 0;
    return kvm;
}

namespace {

Result<kvm_irqchip> get_irqchip(int vm_fd, uint32_t chip_id)
{
    kvm_irqchip chip {};
    chip.chip_id = chip_id;
    if (::ioctl(vm_fd, KVM_GET_IRQCHIP, &chip) < 0)
        return Error::from_errno(fmt::format("KVM_GET_IRQCHIP({})", chip_id));
    return chip;
}

Result<void> set_irqchip(int vm_fd, kvm_irqchip& chip)
{
    if (::ioctl(vm_fd, KVM_SET_IRQCHIP, &chip) < 0)
        return Error::from_errno(fmt::format("KVM_SET_IRQCHIP({})", chip.chip_id));
    return {};
}

} // namespace

Result<MachineState> KvmEngine::save_machine()
{
    MachineState state;
    state.pic[0] = pic_from_kvm(TRY(get_irqchip(m_vm_fd, KVM_IRQCHIP_PIC_MASTER)).chip.pic);
    state.pic[1] = pic_from_kvm(TRY(get_irqchip(m_vm_fd, KVM_IRQCHIP_PIC_SLAVE)).chip.pic);
    state.ioapic = ioapic_from_kvm(TRY(get_irqchip(m_vm_fd, KVM_IRQCHIP_IOAPIC)).chip.ioapic);

    // The guest's clock and the host's at one moment (a few µs apart), to move the PIT's load
    // times from one to the other. While paused (pause_clock), the guest's clock stands at the
    // pause: the moment is the pause's.
    kvm_clock_data clock {};
    if (::ioctl(m_vm_fd, KVM_GET_CLOCK, &clock) < 0)
        return Error::from_errno("KVM_GET_CLOCK");
    int64_t host_now = host_monotonic_ns();
    state.guest_time_ns = clock.clock;
    if (m_clock_saved) {
        state.guest_time_ns = m_saved_clock.clock;
        host_now = m_saved_clock_host_ns;
    }

    kvm_pit_state2 pit {};
    if (::ioctl(m_vm_fd, KVM_GET_PIT2, &pit) < 0)
        return Error::from_errno("KVM_GET_PIT2");
    state.pit = pit_from_kvm(pit, host_now, state.guest_time_ns);

    state.tsc_khz = m_config.tsc_khz;
    {
        std::lock_guard lock(m_vcpus_mutex);
        if (!m_vcpus.empty() && m_vcpus.front()->tsc_khz() != 0)
            state.tsc_khz = m_vcpus.front()->tsc_khz();
    }
    return state;
}

Result<void> KvmEngine::restore_machine(const MachineState& state)
{
    // The TSC frequency first: a vCPU that cannot present the snapshot's refuses the restore.
    if (state.tsc_khz != 0) {
        std::vector<KvmVcpu*> vcpus;
        {
            std::lock_guard lock(m_vcpus_mutex);
            vcpus = m_vcpus;
        }
        for (KvmVcpu* vcpu : vcpus)
            TRY_CTX(vcpu->set_tsc_khz(state.tsc_khz, KvmVcpu::KeepTsc::Yes),
                fmt::format("restoring the TSC frequency of vCPU {}", vcpu->id()));
        m_config.tsc_khz = state.tsc_khz; // vCPUs created from now on
    }

    for (uint32_t i = 0; i < 2; ++i) {
        kvm_irqchip chip {};
        chip.chip_id = i == 0 ? KVM_IRQCHIP_PIC_MASTER : KVM_IRQCHIP_PIC_SLAVE;
        chip.chip.pic = pic_to_kvm(state.pic[i]);
        TRY(set_irqchip(m_vm_fd, chip));
    }
    // KVM's IOAPIC base address is not part of the state: keep the VM's.
    kvm_irqchip ioapic = TRY(get_irqchip(m_vm_fd, KVM_IRQCHIP_IOAPIC));
    ioapic_to_kvm(state.ioapic, ioapic.chip.ioapic);
    TRY(set_irqchip(m_vm_fd, ioapic));

    // kvmclock continues from the saved moment: the guest sees no time pass while it was saved.
    kvm_clock_data clock {};
    clock.clock = state.guest_time_ns;
    if (::ioctl(m_vm_fd, KVM_SET_CLOCK, &clock) < 0)
        return Error::from_errno("KVM_SET_CLOCK");
    int64_t host_now = host_monotonic_ns();
    if (m_clock_saved) {
        // Restored into a paused VM: resuming continues from the restored clock.
        m_saved_clock.clock = state.guest_time_ns;
        m_saved_clock_host_ns = host_now;
    }

    // KVM_SET_PIT2 reloads every channel's count and stamps it "loaded now" (restarting channel
    // 0's timer for a full period), whatever load time it is given: the phase within the
    // current period is lost (< one period; as with QEMU's in-kernel PIT). The rebased times
    // are passed all the same.
    kvm_pit_state2 pit = pit_to_kvm(state.pit, host_now, state.guest_time_ns);
    if (::ioctl(m_vm_fd, KVM_SET_PIT2, &pit) < 0)
        return Error::from_errno("KVM_SET_PIT2");
    return {};
}

Result<bool> KvmEngine::present_cpuid(uint32_t vcpu, const CpuidTable& table)
{
    KvmVcpu* v = find_vcpu(vcpu);
    if (!v)
        return make_error("the kvm engine has no vCPU {}", vcpu);
    TRY(v->set_cpuid_table(table));
    return true;
}

Result<CpuidTable> KvmEngine::cpuid_table(uint32_t vcpu)
{
    KvmVcpu* v = find_vcpu(vcpu);
    if (!v)
        return make_error("the kvm engine has no vCPU {}", vcpu);
    return v->cpuid_table();
}

} // namespace vessel
