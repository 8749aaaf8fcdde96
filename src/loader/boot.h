// What a loader hands to the VMM: how the boot vCPU must start. The VMM turns this into a
// CpuState (arch/x86/boot_cpu) — loaders never touch an engine.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "arch/x86/e820.h"
#include "base/result.h"
#include "memory/guest_memory.h"

namespace vessel {

enum class EntryMode {
    Long64,      // 64-bit long mode, identity-mapped first 4 GiB (Linux 64-bit boot protocol)
    Protected32, // 32-bit protected mode, flat segments, paging off (PVH, Multiboot)
};

struct BootEntry {
    EntryMode mode { EntryMode::Long64 };
    uint64_t rip { 0 };
    uint64_t rsp { 0 };
    uint64_t rax { 0 }, rbx { 0 }, rsi { 0 };
    std::string kind; // "bzImage", "bzImage (host-decompressed, PVH)", "ELF PVH", "Multiboot" ...
};

enum class BootPath {
    Auto,          // bzImage: host-side decompression + PVH if possible, else in-guest decompressor
    Decompressor,  // bzImage: the kernel's own decompressor (64-bit boot protocol)
    Pvh,           // require PVH entry (decompress on the host if the file is a bzImage)
};

struct LoadRequest {
    std::string kernel_path;
    std::string initrd_path; // empty: none
    std::string cmdline;
    BootPath path { BootPath::Auto };
    uint64_t rsdp_addr { 0 }; // guest-physical address of the ACPI RSDP, 0 if none
};

// Loads the kernel (bzImage, ELF vmlinux with a PVH note, or Multiboot 1 ELF), the initrd and
// the command line into guest memory and writes the boot information structure the format uses.
// Every failure names the file and the reason.
Result<BootEntry> load_kernel(GuestMemory& memory, const std::vector<E820Entry>& e820, const LoadRequest& request);

} // namespace vessel
