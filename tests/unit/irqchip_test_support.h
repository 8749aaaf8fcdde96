// A whole soft irqchip on a manual clock with its devices on real buses, for the irqchip tests.
#pragma once

#include <gtest/gtest.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <deque>
#include <span>
#include <vector>

#include "arch/x86/layout.h"
#include "bus/bus.h"
#include "devices/irqchip/irqchip.h"

namespace vessel::irqchip_test {

// The only stand-in: records what the LAPIC tells its vCPU.
class RecordingClient final : public LapicClient {
public:
    void lapic_kick() override { kicks.fetch_add(1); }
    void lapic_init() override { ++inits; }
    void lapic_sipi(uint8_t vector) override { sipis.push_back(vector); }

    std::atomic<int> kicks { 0 };
    int inits { 0 };
    std::vector<uint8_t> sipis;
};

inline Irqchip::Options manual_options()
{
    Irqchip::Options options;
    options.clock_source = VirtualClock::Source::Manual;
    return options;
}

// Not movable: the chip holds references to the clients.
class ChipHarness {
public:
    explicit ChipHarness(unsigned vcpus = 2, Irqchip::Options options = manual_options())
        : chip(options)
    {
        for (unsigned i = 0; i < vcpus; ++i) {
            clients.emplace_back();
            auto lapic = chip.add_lapic(i, clients.back());
            EXPECT_TRUE(lapic.ok());
        }
        EXPECT_TRUE(chip.register_devices(pio, mmio).ok());
    }
    ChipHarness(const ChipHarness&) = delete;
    ChipHarness& operator=(const ChipHarness&) = delete;

    void set_now(uint64_t ns) { chip.clock().set_now(ns); }

    void outb(uint16_t port, uint8_t value) { EXPECT_TRUE(pio.write(port, std::span(&value, 1))) << port; }
    uint8_t inb(uint16_t port)
    {
        uint8_t value = 0;
        EXPECT_TRUE(pio.read(port, std::span(&value, 1))) << port;
        return value;
    }

    uint32_t mmio_read32(uint64_t gpa)
    {
        uint32_t value = 0;
        EXPECT_TRUE(mmio.read(gpa, std::span(reinterpret_cast<uint8_t*>(&value), 4)));
        return value;
    }
    void mmio_write32(uint64_t gpa, uint32_t value)
    {
        EXPECT_TRUE(mmio.write(gpa, std::span(reinterpret_cast<const uint8_t*>(&value), 4)));
    }
    uint32_t ioapic_read(uint8_t index)
    {
        mmio_write32(layout::kIoapicBase + IoApic::kRegSel, index);
        return mmio_read32(layout::kIoapicBase + IoApic::kWindow);
    }
    void ioapic_write(uint8_t index, uint32_t value)
    {
        mmio_write32(layout::kIoapicBase + IoApic::kRegSel, index);
        mmio_write32(layout::kIoapicBase + IoApic::kWindow, value);
    }
    // Redirection entry for `pin` (low dword, then destination byte).
    void route_pin(unsigned pin, uint32_t low, uint8_t dest)
    {
        ioapic_write(static_cast<uint8_t>(IoApic::kRegRedirection + 2 * pin + 1), static_cast<uint32_t>(dest) << 24);
        ioapic_write(static_cast<uint8_t>(IoApic::kRegRedirection + 2 * pin), low);
    }

    Lapic& lapic(size_t i) { return chip.lapic(i); }
    // Software-enables every LAPIC with spurious vector 0xff.
    void enable_lapics()
    {
        for (size_t i = 0; i < chip.lapic_count(); ++i)
            lapic(i).write_register(Lapic::kRegSvr, 0x1ff);
    }
    // IRR / ISR / TMR bit of `vector` on LAPIC i.
    bool irr(size_t i, uint8_t vector) { return bit(i, Lapic::kRegIrr, vector); }
    bool isr(size_t i, uint8_t vector) { return bit(i, Lapic::kRegIsr, vector); }
    bool tmr(size_t i, uint8_t vector) { return bit(i, Lapic::kRegTmr, vector); }

    // The 8259A initialisation Linux's init_8259A() performs (vectors 0x30 / 0x38, cascade on
    // IR2, 8086 mode, normal EOI), leaving every line masked.
    void init_pic_like_linux()
    {
        outb(0x21, 0xff);
        outb(0xa1, 0xff);
        outb(0x20, 0x11);
        outb(0x21, 0x30);
        outb(0x21, 0x04);
        outb(0x21, 0x01);
        outb(0xa0, 0x11);
        outb(0xa1, 0x38);
        outb(0xa1, 0x02);
        outb(0xa1, 0x01);
        outb(0x21, 0xff);
        outb(0xa1, 0xff);
    }

    std::deque<RecordingClient> clients; // declared first: outlives the chip
    Bus pio { "pio" };
    Bus mmio { "mmio" };
    Irqchip chip;

private:
    bool bit(size_t i, uint32_t base, uint8_t vector)
    {
        return lapic(i).read_register(base + 16 * (vector / 32)) >> (vector % 32) & 1;
    }
};

} // namespace vessel::irqchip_test
