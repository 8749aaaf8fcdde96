#include "engine/soft/platform.h"

#include <chrono>

#include "devices/irqchip/clock.h"
#include "devices/irqchip/lapic.h"
#include "engine/soft/pvclock.h"

namespace vessel::soft {

namespace {

constexpr uint32_t kMsrApicBase = Lapic::kMsrApicBase;
constexpr uint32_t kMsrTscDeadline = Lapic::kMsrTscDeadline;

// Guest nanoseconds and the clock TSC (before the vCPU's offset) at that instant.
GuestTime clock_time(const Cpu& c)
{
    if (c.clock) {
        uint64_t ns = c.clock->now_ns();
        return { ns, c.clock->tsc(ns) };
    }
    // Unit tests without a VM: host monotonic nanoseconds at the default 1 GHz.
    uint64_t ns = static_cast<uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
            .count());
    return { ns, ns };
}

} // namespace

uint64_t guest_tsc_khz()
{
    return VirtualClock::kDefaultTscKhz;
}

uint64_t guest_tsc_khz(const Cpu& c)
{
    return c.clock ? c.clock->tsc_khz() : guest_tsc_khz();
}

uint64_t guest_tsc(Cpu& c)
{
    return clock_time(c).tsc + static_cast<uint64_t>(c.tsc_offset);
}

GuestTime guest_time(Cpu& c)
{
    GuestTime t = clock_time(c);
    t.tsc += static_cast<uint64_t>(c.tsc_offset);
    return t;
}

void set_guest_tsc(Cpu& c, uint64_t value)
{
    c.tsc_offset = static_cast<int64_t>(value - clock_time(c).tsc);
    if (c.lapic)
        c.lapic->set_tsc_offset(c.tsc_offset);
    // The kvm-clock's (tsc_timestamp, system_time) pair assumed the old offset.
    pvclock_update(c);
}

bool lapic_read_msr(Cpu& c, uint32_t msr, uint64_t& value)
{
    if (c.lapic)
        return c.lapic->read_msr(msr, value);
    if (msr == kMsrApicBase) {
        value = c.apic_base;
        return true;
    }
    if (msr == kMsrTscDeadline) {
        value = c.msrs.tsc_deadline;
        return true;
    }
    return false;
}

bool lapic_write_msr(Cpu& c, uint32_t msr, uint64_t value)
{
    if (c.lapic) {
        if (!c.lapic->write_msr(msr, value))
            return false;
        c.apic_base = c.lapic->apic_base_msr();
        if (msr == kMsrTscDeadline)
            c.msrs.tsc_deadline = value;
        c.stop_block = true;
        interrupt_window_opened(c); // x2APIC EOI or TPR
        return true;
    }
    if (msr == kMsrApicBase) {
        c.apic_base = value;
        return true;
    }
    if (msr == kMsrTscDeadline) {
        c.msrs.tsc_deadline = value;
        return true;
    }
    return false;
}

uint8_t get_cr8(Cpu& c)
{
    return c.lapic ? c.lapic->get_tpr() : c.cr8_no_lapic;
}

void set_cr8(Cpu& c, uint8_t value)
{
    if (c.lapic) {
        c.lapic->set_tpr(value);
        c.stop_block = true; // a lower TPR can make an interrupt deliverable
        interrupt_window_opened(c);
    } else {
        c.cr8_no_lapic = value & 0xf;
    }
}

void interrupt_window_opened(Cpu& c)
{
    if (c.lapic && c.lapic->has_pending_event())
        c.attention.store(true, std::memory_order_relaxed);
}

void cpu_halt(Cpu& c)
{
    c.halted = true;
    c.stop_block = true;
}

} // namespace vessel::soft
