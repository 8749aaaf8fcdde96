#!/usr/bin/env bash
# A Debian kernel on the soft engine, without --rng, reads 16 bytes of /dev/urandom before its CRNG
# is ready (guests/linux/modes/urandom.sh): Linux 6.1 then spins in try_to_generate_entropy() until
# its timer interrupts have credited enough entropy. The read must finish within MAX_MS of guest
# time (it takes about a second at HZ=250; the soft engine once held the timer interrupt off for
# minutes) and the guest must then power off normally.
# usage: linux_urandom.sh [--kernel amd64|cloud|FILE] [--initrd FILE] [--cpus N] [--max-ms MS] [--timeout S]
# Exit 0 = pass, 1 = fail, 77 = skipped (reason printed: no kernel or initramfs, an initramfs built
# before the urandom mode existed, or a CRNG that was already ready, so nothing was tested).
set -uo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
source "$HERE/../../scripts/linux-guest.env"

kernel=amd64
initrd="$LINUX_GUEST_INITRAMFS"
cpus=1
max_ms=20000
timeout_s=600
while [ $# -gt 0 ]; do
  case "$1" in
    --kernel) kernel="$2"; shift 2 ;;
    --initrd) initrd="$2"; shift 2 ;;
    --cpus) cpus="$2"; shift 2 ;;
    --max-ms) max_ms="$2"; shift 2 ;;
    --timeout) timeout_s="$2"; shift 2 ;;
    *) echo "linux_urandom.sh: unknown option $1" >&2; exit 1 ;;
  esac
done
kernel=$(linux_guest_kernel "$kernel")
VESSEL="${VESSEL:?set VESSEL to the vessel binary}"

[ -s "$kernel" ] || { echo "SKIP: no kernel $kernel (scripts/fetch-kernels.sh fetches it)"; exit 77; }
[ -s "$initrd" ] || { echo "SKIP: no initramfs $initrd (scripts/build-initramfs.sh builds it)"; exit 77; }
# (The archive is several concatenated cpio members; a newc header is followed by the NUL-terminated name.)
if ! gzip -dc "$initrd" | grep -qaP 'vessel/urandom\.sh\x00'; then
  echo "SKIP: $initrd has no vessel/urandom.sh (built before the urandom mode: rerun scripts/build-initramfs.sh)"
  exit 77
fi

out=$(mktemp) err=$(mktemp)
trap 'rm -f "$out" "$err"' EXIT
# No --rng: no hardware RNG may make the CRNG ready before the read.
cmd=("$VESSEL" run --engine soft --kernel "$kernel" --initrd "$initrd" --mem "${LINUX_GUEST_MEM_MIB}M"
  --cpus "$cpus" --cmdline "$LINUX_GUEST_CMDLINE vessel.mode=urandom" --no-reboot)
start=$(date +%s%N)
timeout --kill-after=5 "$timeout_s" "${cmd[@]}" </dev/null 2>"$err" | tr -d '\r' >"$out"
rc=${PIPESTATUS[0]}
ms=$(( ($(date +%s%N) - start) / 1000000 ))

echo "--- command: ${cmd[*]}"
echo "--- exit status: $rc after $ms ms"
echo "--- stdout (last 4000 bytes):"; tail -c 4000 "$out"
echo "--- stderr (last 2000 bytes):"; tail -c 2000 "$err"
if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
  echo "FAIL: timed out after ${timeout_s}s (the guest froze reading /dev/urandom?)"; exit 1
fi
if grep -q '^vessel-guest: urandom crng_ready_before=yes' "$out"; then
  echo "SKIP: the guest's CRNG was ready before the read: try_to_generate_entropy() was not exercised"
  exit 77
fi

fail=0
check() { # description, command...
  local what="$1"; shift
  if "$@"; then echo "ok   $what"; else echo "FAIL $what"; fail=1; fi
}
read_ms=$(sed -n 's/^vessel-guest: urandom bytes=16 ms=\([0-9]*\)$/\1/p' "$out")
check "the CRNG was not ready before the read" grep -q '^vessel-guest: urandom crng_ready_before=no' "$out"
check "16 bytes read" [ -n "$read_ms" ]
check "the read took ${read_ms:-?} ms of guest time (at most $max_ms)" [ -n "$read_ms" ] && [ "${read_ms:-0}" -le "$max_ms" ]
check "the CRNG is ready afterwards" grep -q '^vessel-guest: urandom crng_ready_after=yes' "$out"
check "power-off through ACPI" grep -q 'reboot: Power down' "$out"
check "exit status 0 (got $rc)" [ "$rc" = 0 ]
[ "$fail" = 0 ] && echo "PASS" || echo "FAIL"
exit "$fail"
