#!/usr/bin/env bash
# linux.soft.virtio.console: a Debian kernel on the soft engine with `--console virtio`; the guest
# (guests/linux/modes/console.sh) finds hvc0, writes a marker to /dev/hvc0, prompts on hvc0 and
# reads a line from hvc0, which this test types on Vessel's stdin once the prompt appears. Passing
# shows both directions: output written only to hvc0 reaches stdout, and stdin reaches hvc0 (not
# COM1: the guest reads the line from /dev/hvc0).
#
# Kernel command line "console=ttyS0 console=hvc0": the kernel's console list ends with hvc0 (it
# becomes /dev/console's preferred device once virtio_console is loaded), and ttyS0 carries the
# early boot. Debian builds virtio_console as a module, loaded by the initramfs' init; with
# console=hvc0 alone there is no console when init starts (Linux: "unable to open an initial
# console"), init cannot open /dev/console and exits, and the kernel panics.
# usage: virtio_console.sh [--kernel amd64|cloud|FILE] [--timeout S]
# Exit 0 = pass, 1 = fail, 77 = skipped (reason printed).
set -uo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
source "$HERE/../../scripts/linux-guest.env"

kernel=amd64
timeout_s=600
while [ $# -gt 0 ]; do
  case "$1" in
    --kernel) kernel="$2"; shift 2 ;;
    --timeout) timeout_s="$2"; shift 2 ;;
    *) echo "virtio_console.sh: unknown option $1" >&2; exit 1 ;;
  esac
done
initrd=$(linux_guest_initramfs_modules "$kernel")
kernel=$(linux_guest_kernel "$kernel")
VESSEL="${VESSEL:?set VESSEL to the vessel binary}"
[ -s "$kernel" ] || { echo "SKIP: no kernel $kernel (scripts/fetch-kernels.sh fetches it)"; exit 77; }
[ -s "$initrd" ] || { echo "SKIP: no initramfs $initrd (scripts/build-initramfs.sh amd64 builds it)"; exit 77; }

work=$(mktemp -d)
trap 'exec 3>&- 2>/dev/null; rm -rf "$work"' EXIT
out="$work/out" err="$work/err" fifo="$work/stdin"
mkfifo "$fifo"
exec 3<>"$fifo" # held open: Vessel's stdin sees no end of file while the guest boots

cmd=("$VESSEL" run --engine soft --kernel "$kernel" --initrd "$initrd" --mem "${LINUX_GUEST_MEM_MIB}M"
  --cmdline "console=ttyS0 console=hvc0 quiet panic=-1 vessel.mode=console" --console virtio --no-reboot)
start=$(date +%s%N)
timeout --kill-after=5 "$timeout_s" "${cmd[@]}" <"$fifo" >"$out" 2>"$err" &
pid=$!

# Wait for the guest's prompt on hvc0, then type the line.
typed=0
while kill -0 "$pid" 2>/dev/null; do
  if grep -q "^vessel-guest: hvc0 waiting for a line" "$out"; then
    printf 'hello-from-host\n' >&3
    typed=1
    echo "--- typed a line after $(( ($(date +%s%N) - start) / 1000000 )) ms"
    break
  fi
  sleep 0.5
done
wait "$pid"
rc=$?
ms=$(( ($(date +%s%N) - start) / 1000000 ))
tr -d '\r' <"$out" >"$out.txt"

echo "--- command: ${cmd[*]}"
echo "--- exit status: $rc after $ms ms"
echo "--- stdout:"; head -c 30000 "$out.txt"
echo "--- stderr:"; head -c 20000 "$err"
if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
  echo "FAIL: timed out after ${timeout_s}s"; exit 1
fi

fail=0
expect() { # regex, what
  if grep -Eq -- "$1" "$out.txt"; then echo "ok   $2"; else echo "FAIL $2: stdout lacks /$1/"; fail=1; fi
}
if [ "$rc" = 0 ]; then echo "ok   exit status 0"; else echo "FAIL exit status $rc, expected 0"; fail=1; fi
expect "^vessel-guest: hvc0=present\$" "the guest has hvc0"
expect "^vessel-guest: console active=.*hvc0" "hvc0 is one of the kernel's consoles"
expect "^vessel-guest: hvc0 marker pid[0-9]+-up[0-9.]+\$" "output written to /dev/hvc0 reaches stdout"
if [ "$typed" = 1 ]; then echo "ok   the guest prompted on hvc0"; else echo "FAIL the guest never prompted on hvc0"; fail=1; fi
expect "^vessel-guest: hvc0 got=hello-from-host\$" "the line typed on stdin was read from /dev/hvc0"
expect "reboot: Power down" "power-off through ACPI"
[ "$fail" = 0 ] && echo "PASS"
exit "$fail"
