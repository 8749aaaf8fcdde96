// ACPI tables for Vessel's hardware-reduced microvm: RSDP, XSDT, FADT (rev 6), MADT and a DSDT
// describing the platform devices, all written into the reserved BIOS area [0xe0000, 1 MiB).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "arch/x86/aml.h"
#include "base/result.h"
#include "memory/guest_memory.h"

namespace vessel {

using AcpiIrqTrigger = aml::InterruptTrigger;
using AcpiIrqPolarity = aml::InterruptPolarity;

// IO(Decode16, base, base, 1, length): a fixed (non-relocatable) I/O port range.
struct AcpiIoRange {
    uint16_t base { 0 };
    uint8_t length { 0 };
};

// Memory32Fixed(ReadWrite, base, length): must lie below 4 GiB.
struct AcpiMemoryRange {
    uint64_t base { 0 };
    uint64_t length { 0 };
};

// One Extended Interrupt descriptor (ResourceConsumer) carrying one GSI.
struct AcpiInterrupt {
    uint32_t gsi { 0 };
    AcpiIrqTrigger trigger { AcpiIrqTrigger::Edge };
    AcpiIrqPolarity polarity { AcpiIrqPolarity::ActiveHigh };
    bool shared { false };
};

// A device in the DSDT's \_SB scope:
//   Device(NAME) { Name(_HID, ...) Name(_UID, uid) Name(_CRS, ResourceTemplate() { ... }) }
struct AcpiDevice {
    std::string name; // NameSeg, 1-4 chars [A-Z_][A-Z0-9_]* (padded with '_')
    // "PNP0501"-style ids (3 letters + 4 hex digits) become EisaId() integers; any other
    // 8-character ACPI id ("LNRO0005") is emitted as a string.
    std::string hid;
    uint32_t uid { 0 };
    std::vector<AcpiIoRange> io;
    std::vector<AcpiMemoryRange> memory;
    std::vector<AcpiInterrupt> interrupts;
};

// The VM Generation ID device and the Generic Event Device that announces a new ID:
//   Device(VGEN) { _HID "VMGENCTR", _CID "VM_GEN_COUNTER", _DDN "VM_GEN_COUNTER",
//                  Method(ADDR) { Return(Package() { low 32 bits, high 32 bits of `address` }) } }
//   Device(GED0) { _HID "ACPI0013", _CRS { Interrupt(Edge, ActiveHigh, Exclusive) { gsi } },
//                  Method(_EVT, 1) { If (Arg0 == gsi) { Notify(\_SB.VGEN, 0x80) } } }
// (Linux: drivers/virt/vmgenid.c matches VMGENCTR and re-reads the ID on the notification;
// drivers/acpi/evged.c runs _EVT with the GSI when the interrupt fires.)
struct AcpiVmGenId {
    uint64_t address { 0 }; // guest-physical, 8-byte aligned, 16 bytes
    uint32_t gsi { 0 }; // edge-triggered, active high, used by no other device
};

struct AcpiConfig {
    uint32_t vcpus { 1 };
    std::vector<AcpiDevice> devices;
    std::optional<AcpiVmGenId> vmgenid {};
};

// Largest vCPU count the MADT describes: xAPIC ids 0..vcpus-1 and the I/O APIC id (= vcpus)
// must stay below 0xff (the broadcast id, and the "all processors" UID of the LAPIC NMI entry).
constexpr uint32_t kAcpiMaxVcpus = 254;

// COM1 (PNP0501, IO 0x3f8/8, IRQ 4), the CMOS RTC (PNP0B00, IO 0x70/2, IRQ 8) and the i8042
// keyboard controller (PNP0303, IO 0x60/1 + 0x64/1, IRQ 1); all ISA edge, active high.
std::vector<AcpiDevice> legacy_acpi_devices();

// A virtio-mmio transport (_HID "LNRO0005", the id Linux's virtio_mmio driver matches) named
// "VRxx" (xx = index in hex, so index <= 0xff), _UID = index, Memory32Fixed(base, size) and one interrupt.
// Level-triggered matches the virtio-mmio InterruptStatus/InterruptACK semantics, but only if
// the VMM holds the line until the ack (or uses a resampling irqfd); pass Edge when the
// interrupt is injected as a pulse.
AcpiDevice virtio_mmio_acpi_device(uint32_t index, uint64_t base, uint64_t size, uint32_t gsi,
                                   AcpiIrqTrigger trigger = AcpiIrqTrigger::Level);

// The DSDT (header + AML) for `cfg`: \_SB.<devices> (then VGEN and GED0 with `cfg.vmgenid`) and
// \_S5_. Exposed for tests and tools.
Result<std::vector<uint8_t>> build_dsdt(const AcpiConfig& cfg);

// Writes RSDP (at layout::kAcpiStart), XSDT, FADT, MADT and DSDT into
// [layout::kAcpiStart, layout::kAcpiEnd) and returns the RSDP's guest-physical address.
Result<uint64_t> build_acpi_tables(GuestMemory& mem, const AcpiConfig& cfg);

} // namespace vessel
