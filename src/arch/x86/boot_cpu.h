// The boot vCPU's architectural state for a loaded kernel: flat segments from a small boot GDT
// and, for the Linux 64-bit boot protocol, identity page tables covering the first 4 GiB.
#pragma once

#include <cstdint>

#include "arch/x86/cpu_state.h"
#include "base/result.h"
#include "loader/boot.h"
#include "memory/guest_memory.h"

namespace vessel {

// Selectors of the boot GDT written at layout::kBootGdt.
namespace boot_gdt {
constexpr uint16_t kCode32 = 0x08; // 32-bit flat code (PVH, Multiboot)
constexpr uint16_t kCode64 = 0x10; // 64-bit code (__BOOT_CS of the Linux 64-bit boot protocol)
constexpr uint16_t kData = 0x18;   // flat read/write data (__BOOT_DS)
constexpr unsigned kEntries = 4;

constexpr uint64_t kNullDescriptor = 0;
constexpr uint64_t kCode32Descriptor = 0x00cf9b000000ffffULL; // base 0, limit 4 GiB, G, D, P, type 0xb
constexpr uint64_t kCode64Descriptor = 0x00af9b000000ffffULL; // as above but L=1, D=0
constexpr uint64_t kDataDescriptor = 0x00cf93000000ffffULL;   // base 0, limit 4 GiB, G, B, P, type 0x3
} // namespace boot_gdt

// Page-table entry bits used by the boot identity map.
namespace boot_paging {
constexpr uint64_t kPresent = 1ULL << 0;
constexpr uint64_t kWritable = 1ULL << 1;
constexpr uint64_t kPageSize = 1ULL << 7; // 2 MiB page in a PD entry
constexpr unsigned kPdCount = 4;          // 4 page directories of 512 x 2 MiB = 4 GiB
} // namespace boot_paging

// Writes the boot GDT (and, for EntryMode::Long64, the identity page tables) into guest memory
// and returns the vCPU state that starts the kernel at entry.rip.
Result<CpuState> make_boot_cpu_state(GuestMemory& mem, const BootEntry& entry);

} // namespace vessel
