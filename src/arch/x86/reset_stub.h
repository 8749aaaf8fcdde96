// The one piece of "firmware" Vessel's BIOS-less machine has: code at the legacy reset vector
// F000:FFF0 (guest-physical layout::kResetVector) that asks for a machine reset.
//
// Why it exists: an OS that wants to restart a PC can, as its last resort, return to real mode
// and jump to F000:FFF0, where a PC's firmware starts over. Linux does exactly this on every
// reboot here, not only as a last resort: with a hardware-reduced ACPI FADT (ours) its x86
// reboot_init() makes EFI the default reboot method (efi_reboot_required()); without EFI runtime
// services efi_reboot() returns, and native_machine_emergency_restart() goes on to BOOT_BIOS,
// machine_real_restart(), which jumps to F000:FFF0 without ever trying the ACPI reset register or
// the keyboard controller. Vessel has no firmware to restart, so the stub pulses the i8042's reset
// line: the same guest reset as any other (a fresh machine, or an exit with --no-reboot).
#pragma once

#include <array>
#include <cstdint>

#include "base/result.h"
#include "memory/guest_memory.h"

namespace vessel {

// The stub's bytes, which decode to the same instructions in real, protected and long mode:
//   mov al, 0xfe ; out 0x64, al   (i8042 command 0xfe: pulse output line 0, the CPU reset)
//   cli ; hlt ; jmp $-3           (stay halted should the reset not take effect at once)
inline constexpr std::array<uint8_t, 8> kResetStubCode = { 0xb0, 0xfe, 0xe6, 0x64, 0xfa, 0xf4, 0xeb, 0xfd };

// Writes kResetStubCode at layout::kResetVector (the rest of the stub page stays zero).
Result<void> write_reset_stub(GuestMemory& mem);

} // namespace vessel
