#!/usr/bin/env bash
# Boots a stock Debian kernel with the busybox initramfs (scripts/build-initramfs.sh) and checks
# the test-mode report of guests/linux/init: the CPU count, the SHA-256 of 32 MiB of zeros, the gzip
# round trip, "done", a power-off (not a panic or reset), and the VMM's exit status 0.
# usage: linux_boot.sh [--qemu] [--kernel amd64|cloud|FILE] [--initrd FILE] [--cpus N]
#                      [--boot auto|pvh|decompressor] [--timeout S]
#   default: Vessel's soft engine ($VESSEL run --engine soft); --qemu: qemu-system-x86_64 TCG on
#   microvm, the reference that validates the initramfs and the checks themselves.
#   Kernel command line, memory and paths: scripts/linux-guest.env.
# Exit 0 = pass, 1 = fail, 77 = skipped (reason printed: no kernel, initramfs or QEMU).
set -uo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
source "$HERE/../../scripts/linux-guest.env"

qemu=0
kernel=amd64
initrd="$LINUX_GUEST_INITRAMFS"
cpus=1
boot=""
timeout_s=""
while [ $# -gt 0 ]; do
  case "$1" in
    --qemu) qemu=1; shift ;;
    --kernel) kernel="$2"; shift 2 ;;
    --initrd) initrd="$2"; shift 2 ;;
    --cpus) cpus="$2"; shift 2 ;;
    --boot) boot="$2"; shift 2 ;;
    --timeout) timeout_s="$2"; shift 2 ;;
    *) echo "linux_boot.sh: unknown option $1" >&2; exit 1 ;;
  esac
done
kernel=$(linux_guest_kernel "$kernel")

[ -s "$kernel" ] || { echo "SKIP: no kernel $kernel (scripts/fetch-kernels.sh fetches it)"; exit 77; }
[ -s "$initrd" ] || { echo "SKIP: no initramfs $initrd (scripts/build-initramfs.sh builds it)"; exit 77; }
if [ "$qemu" = 1 ]; then
  command -v "$LINUX_GUEST_QEMU" >/dev/null || { echo "SKIP: no $LINUX_GUEST_QEMU"; exit 77; }
  [ -z "$boot" ] || { echo "linux_boot.sh: --boot applies to Vessel only" >&2; exit 1; }
  # QEMU under TCG takes 4-7 s on an idle host, 15-30 s on a loaded one.
  : "${timeout_s:=120}"
  cmd=("$LINUX_GUEST_QEMU" -accel tcg -M "$LINUX_GUEST_QEMU_MACHINE" -m "$LINUX_GUEST_MEM_MIB" -smp "$cpus"
    -kernel "$kernel" -initrd "$initrd" -append "$(linux_guest_qemu_cmdline)" -nographic -no-reboot)
else
  VESSEL="${VESSEL:?set VESSEL to the vessel binary}"
  : "${timeout_s:=600}"
  cmd=("$VESSEL" run --engine soft --kernel "$kernel" --initrd "$initrd" --cmdline "$LINUX_GUEST_CMDLINE"
    --mem "${LINUX_GUEST_MEM_MIB}M" --cpus "$cpus" --no-reboot)
  [ -z "$boot" ] || cmd+=(--boot "$boot")
fi

out=$(mktemp) err=$(mktemp)
trap 'rm -f "$out" "$err"' EXIT
start=$(date +%s%N)
timeout --kill-after=5 "$timeout_s" "${cmd[@]}" </dev/null 2>"$err" | tr -d '\r' >"$out"
rc=${PIPESTATUS[0]}
ms=$(( ($(date +%s%N) - start) / 1000000 ))

echo "--- command: ${cmd[*]}"
echo "--- exit status: $rc after $ms ms"
echo "--- stdout:"; head -c 30000 "$out"
echo "--- stderr:"; head -c 20000 "$err"
if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
  echo "FAIL: timed out after ${timeout_s}s"; exit 1
fi

fail=0
expect() { # regex, what
  if grep -Eq -- "$1" "$out"; then echo "ok   $2"; else echo "FAIL $2: stdout lacks /$1/"; fail=1; fi
}
if [ "$rc" = 0 ]; then echo "ok   exit status 0"; else echo "FAIL exit status $rc, expected 0"; fail=1; fi
expect "^vessel-guest: kernel=" "init ran"
expect "^vessel-guest: cpus=$cpus\$" "the guest sees $cpus CPU(s)"
expect "^vessel-guest: sha256=$LINUX_GUEST_SHA256_32M_ZEROS ms=[0-9]+\$" "sha256 of 32 MiB of zeros"
expect "^vessel-guest: gzip=ok ms=[0-9]+\$" "gzip round trip"
expect "^vessel-guest: loop=20000 ms=[0-9]+\$" "shell loop"
expect "^vessel-guest: done\$" "init finished"
# Printed by the kernel at KERN_EMERG (so even with quiet) just before the ACPI S5 write; a panic
# or reset prints "Kernel panic" / "reboot: Restarting system" instead.
expect "reboot: Power down" "power-off through ACPI"
if grep -Eq "Kernel panic|reboot: Restarting system" "$out"; then
  echo "FAIL the kernel panicked or reset"; fail=1
fi
[ "$fail" = 0 ] && echo "PASS"
exit "$fail"
