#!/usr/bin/env bash
# The soft engine's kvmclock: boots Debian's generic kernel with the busybox initramfs in
# vessel.mode=clock (guests/linux/modes/clock.sh) on 1 and then 2 vCPUs, one after the other, and
# checks that Linux detected KVM, registered kvm-clock through the new MSR pair, runs on it (the
# current clocksource), reported no unstable clock, that `sleep 1` takes about a second of
# uptime, and that the guest's wall clock is the host's.
# usage: pvclock.sh [--kernel amd64|cloud|FILE] [--initrd FILE] [--cpus "1 2"] [--timeout S]
# Exit 0 = pass, 1 = fail, 77 = skipped (reason printed: no kernel or initramfs, or an initramfs
# built before the clock mode existed).
set -uo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
source "$HERE/../../scripts/linux-guest.env"

kernel=amd64
initrd="$LINUX_GUEST_INITRAMFS"
cpu_counts="1 2"
timeout_s=600
while [ $# -gt 0 ]; do
  case "$1" in
    --kernel) kernel="$2"; shift 2 ;;
    --initrd) initrd="$2"; shift 2 ;;
    --cpus) cpu_counts="$2"; shift 2 ;;
    --timeout) timeout_s="$2"; shift 2 ;;
    *) echo "pvclock.sh: unknown option $1" >&2; exit 1 ;;
  esac
done
kernel=$(linux_guest_kernel "$kernel")
VESSEL="${VESSEL:?set VESSEL to the vessel binary}"

[ -s "$kernel" ] || { echo "SKIP: no kernel $kernel (scripts/fetch-kernels.sh fetches it)"; exit 77; }
[ -s "$initrd" ] || { echo "SKIP: no initramfs $initrd (scripts/build-initramfs.sh builds it)"; exit 77; }
# (The archive is several concatenated cpio members; a newc header is followed by the NUL-terminated name.)
if ! gzip -dc "$initrd" | grep -qaP 'vessel/clock\.sh\x00'; then
  echo "SKIP: $initrd has no vessel/clock.sh (built before the clock mode: rerun scripts/build-initramfs.sh)"
  exit 77
fi

out=$(mktemp) err=$(mktemp)
trap 'rm -f "$out" "$err"' EXIT
fail=0
expect() { # regex, what
  if grep -Eq -- "$1" "$out"; then echo "ok   $2"; else echo "FAIL $2: stdout lacks /$1/"; fail=1; fi
}
# The number after "<key>=" on the line starting with "vessel-guest: <prefix>", or empty.
field() { # prefix, key
  grep -E "^vessel-guest: $1" "$out" | head -n 1 | sed -n "s/.* $2=\([0-9-]*\).*/\1/p"
}
in_range() { # value, min, max, what
  if [ -n "$1" ] && [ "$1" -ge "$2" ] && [ "$1" -le "$3" ]; then
    echo "ok   $4: $1 in [$2, $3]"
  else
    echo "FAIL $4: '${1}' not in [$2, $3]"; fail=1
  fi
}

for cpus in $cpu_counts; do
  cmd=("$VESSEL" run --engine soft --kernel "$kernel" --initrd "$initrd"
    --cmdline "$LINUX_GUEST_CMDLINE vessel.mode=clock" --mem "${LINUX_GUEST_MEM_MIB}M" --cpus "$cpus" --no-reboot)
  start_s=$(date +%s) start=$(date +%s%N)
  timeout --kill-after=5 "$timeout_s" "${cmd[@]}" </dev/null 2>"$err" | tr -d '\r' >"$out"
  rc=${PIPESTATUS[0]}
  ms=$(( ($(date +%s%N) - start) / 1000000 )) end_s=$(date +%s)

  echo "=== $cpus vCPU(s) ==="
  echo "--- command: ${cmd[*]}"
  echo "--- exit status: $rc after $ms ms"
  echo "--- stdout:"; head -c 20000 "$out"
  echo "--- stderr:"; head -c 10000 "$err"
  if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
    echo "FAIL: timed out after ${timeout_s}s"; exit 1
  fi
  if [ "$rc" = 0 ]; then echo "ok   exit status 0"; else echo "FAIL exit status $rc, expected 0"; fail=1; fi
  expect "^vessel-guest: clocksource current=kvm-clock " "kvm-clock is the current clocksource"
  expect "^vessel-guest: clocksource .*available=.*kvm-clock" "kvm-clock is registered"
  expect "^vessel-guest: kvm-clock msrs=4b564d01,4b564d00 hypervisor=KVM\$" \
    "the guest found KVM and uses MSR_KVM_SYSTEM_TIME_NEW / MSR_KVM_WALL_CLOCK_NEW"
  expect "^vessel-guest: clock unstable_reports=0\$" "no clocksource marked unstable"
  # sleep is timer-driven: the slow CPU adds only scheduling delay (observed 1.05-1.2 s).
  in_range "$(field sleep1 uptime_ms)" 900 3000 "uptime across sleep 1 (ms)"
  # The guest's time of day: the host's when the guest read it (pvclock wall clock + kvm-clock).
  in_range "$(field epoch epoch)" $((start_s - 2)) $((end_s + 2)) "guest wall clock (s since 1970)"
  expect "reboot: Power down" "power-off through ACPI"
  if grep -Eq "Kernel panic|reboot: Restarting system" "$out"; then
    echo "FAIL the guest panicked or reset"; fail=1
  fi
done

if [ "$fail" = 0 ]; then echo "PASS"; else echo "FAILED"; fi
exit "$fail"
