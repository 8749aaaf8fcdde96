// The guest-physical memory map of Vessel's PC-like microvm (no BIOS).
#pragma once

#include <cstdint>

namespace vessel::layout {

constexpr uint64_t KiB = 1024;
constexpr uint64_t MiB = 1024 * KiB;
constexpr uint64_t GiB = 1024 * MiB;

// Low memory used by the VMM's boot set-up (all below 640 KiB, reported as RAM in e820 except
// where noted; the kernel sees these as ordinary usable memory once it has booted).
constexpr uint64_t kBootGdt = 0x500;            // boot GDT (4 entries)
constexpr uint64_t kBootIdt = 0x520;            // empty boot IDT
constexpr uint64_t kPvhStartInfo = 0x6000;      // hvm_start_info + its memmap
constexpr uint64_t kMultibootInfo = 0x6000;     // multiboot_info + mmap (never both)
constexpr uint64_t kZeroPage = 0x7000;          // Linux boot_params
constexpr uint64_t kBootStack = 0x8ff0;         // initial stack pointer for the BSP
constexpr uint64_t kPml4 = 0x9000;              // boot identity page tables: PML4,
constexpr uint64_t kPdpt = 0xa000;              //   PDPT,
constexpr uint64_t kPd = 0xb000;                //   4 PDs (0xb000..0xefff) mapping 4 GiB
constexpr uint64_t kCmdline = 0x20000;          // kernel command line
constexpr uint64_t kCmdlineMax = 64 * KiB;      // incl. terminating NUL
constexpr uint64_t kEbdaStart = 0x9fc00;        // reserved: MP table lives here
constexpr uint64_t kMpTable = kEbdaStart;
constexpr uint64_t kLowRamEnd = 0xa0000;        // 640 KiB
constexpr uint64_t kBiosStart = 0xe0000;        // reserved: ACPI RSDP and tables,
constexpr uint64_t kAcpiStart = kBiosStart;
constexpr uint64_t kAcpiEnd = 0xfe000;
constexpr uint64_t kVmGenIdPage = 0xfe000;      //   then a page for the VM Generation ID (16 bytes
constexpr uint64_t kVmGenId = kVmGenIdPage;     //   at its start; the DSDT's \_SB.VGEN.ADDR),
constexpr uint64_t kVmGenIdSize = 16;
constexpr uint64_t kResetStubPage = 0xff000;    //   then the firmware stub page with
constexpr uint64_t kResetVector = 0xffff0;      //   the legacy reset vector F000:FFF0
constexpr uint64_t kBiosEnd = 0x100000;
constexpr uint64_t kHighMemStart = 0x100000;    // 1 MiB

// The 32-bit MMIO hole: RAM never lives in [kMmioHoleStart, 4 GiB).
constexpr uint64_t kMmioHoleStart = 0xc0000000;
constexpr uint64_t kVirtioMmioBase = 0xd0000000; // virtio-mmio windows, 4 KiB each
constexpr uint64_t kVirtioMmioSize = 0x1000;
constexpr uint64_t kIoapicBase = 0xfec00000;
constexpr uint64_t kIoapicSize = 0x1000;
constexpr uint64_t kLapicBase = 0xfee00000;
constexpr uint64_t kLapicSize = 0x1000;
constexpr uint64_t k4GiB = 4 * GiB;

// Minimum RAM Vessel accepts.
constexpr uint64_t kMinRam = 16 * MiB;

// Legacy I/O ports.
constexpr uint16_t kCom1Port = 0x3f8;
constexpr uint8_t kCom1Irq = 4;
constexpr uint16_t kI8042Port = 0x60;           // data 0x60, command/status 0x64
constexpr uint16_t kRtcPort = 0x70;             // index 0x70, data 0x71
constexpr uint8_t kRtcIrq = 8;
// The ACPI Generic Event Device's interrupt (\_SB.GED0), which announces a new VM Generation ID:
// the x87 FPU's legacy IRQ13, which nothing on x86-64 uses (virtio devices never take it).
constexpr uint8_t kGedGsi = 13;
constexpr uint16_t kDebugExitPort = 0xf4;       // QEMU isa-debug-exit compatible
// ACPI hardware-reduced sleep control / status registers (FADT SLEEP_CONTROL_REG / STATUS_REG).
constexpr uint16_t kAcpiSleepControlPort = 0x3c0;
constexpr uint16_t kAcpiSleepStatusPort = 0x3c1;
// ACPI reset register (FADT RESET_REG, I/O space): writing kAcpiResetValue resets the machine.
constexpr uint16_t kAcpiResetPort = 0x3c2;
constexpr uint8_t kAcpiResetValue = 0x1;
// SLP_TYP value for S5 (soft off) advertised by the DSDT's \_S5 package.
constexpr uint8_t kAcpiSlpTypS5 = 5;

constexpr uint32_t kIoapicPins = 24;

} // namespace vessel::layout
