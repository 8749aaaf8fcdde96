# vessel.mode=reboot: `reboot -f` with the kernel's default reboot method (no reboot= on the
# command line), which on Vessel's hardware-reduced ACPI machine is "efi" and, without EFI, ends
# in a real-mode jump to the reset vector F000:FFF0 (src/arch/x86/reset_stub.h).
#   vessel-guest: reboot -f type=<default method, /sys/kernel/reboot/type> cpus=<online CPUs>
# then the kernel prints "reboot: Restarting system" and the VMM sees a machine reset. Should
# reboot -f return, this prints "vessel-guest: reboot FAILED" and the init powers off.
type=$(cat /sys/kernel/reboot/type 2>/dev/null)
echo "vessel-guest: reboot -f type=${type:-unknown} cpus=$(grep -c ^processor /proc/cpuinfo)"
reboot -f
echo "vessel-guest: reboot FAILED"
