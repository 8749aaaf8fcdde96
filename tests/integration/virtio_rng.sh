#!/usr/bin/env bash
# linux.soft.virtio.rng: a Debian kernel on the soft engine with --rng; the guest
# (guests/linux/modes/rng.sh) must pick virtio_rng as its hardware RNG and read 64 KiB from
# /dev/hwrng, and the data must look random (all 256 byte values present) and differ between two
# boots (the host's getrandom() feeds it, not a fixed pattern).
# usage: virtio_rng.sh [--kernel amd64|cloud|FILE] [--timeout S]
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
    *) echo "virtio_rng.sh: unknown option $1" >&2; exit 1 ;;
  esac
done
initrd=$(linux_guest_initramfs_modules "$kernel")
kernel=$(linux_guest_kernel "$kernel")
VESSEL="${VESSEL:?set VESSEL to the vessel binary}"
[ -s "$kernel" ] || { echo "SKIP: no kernel $kernel (scripts/fetch-kernels.sh fetches it)"; exit 77; }
[ -s "$initrd" ] || { echo "SKIP: no initramfs $initrd (scripts/build-initramfs.sh amd64 builds it)"; exit 77; }
# (several concatenated cpio archives: look for the name in the newc headers)
[ "$(gzip -dc "$initrd" | grep -ac 'vessel/rng\.sh')" -gt 0 ] ||
  { echo "SKIP: $initrd has no vessel/rng.sh test mode (rerun scripts/build-initramfs.sh amd64)"; exit 77; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail=0
check() { # description, command...
  local what="$1"; shift
  if "$@"; then echo "ok   $what"; else echo "FAIL $what"; fail=1; fi
}

run_once() { # output file
  timeout --kill-after=5 "$timeout_s" "$VESSEL" run --engine soft --kernel "$kernel" --initrd "$initrd" \
    --mem "${LINUX_GUEST_MEM_MIB}M" --cmdline "$LINUX_GUEST_CMDLINE vessel.mode=rng" --rng --no-reboot \
    </dev/null >"$1" 2>"$1.err"
  local rc=$?
  tr -d '\r' <"$1" >"$1.txt"
  grep '^vessel-guest:' "$1.txt"
  return $rc
}

for n in 1 2; do
  run_once "$work/out$n"
  rc=$?
  check "boot $n: exit status 0 (got $rc)" [ "$rc" -eq 0 ]
  check "boot $n: virtio_rng is the current hardware RNG" grep -q '^vessel-guest: rng_current=virtio_rng' "$work/out$n.txt"
  check "boot $n: 65536 bytes read with all 256 byte values" \
    grep -qE '^vessel-guest: hwrng bytes=65536 distinct=256 ' "$work/out$n.txt"
done
h1=$(sed -n 's/^vessel-guest: hwrng .*sha256=\([0-9a-f]*\).*/\1/p' "$work/out1.txt")
h2=$(sed -n 's/^vessel-guest: hwrng .*sha256=\([0-9a-f]*\).*/\1/p' "$work/out2.txt")
check "the two boots read different data ($h1 vs $h2)" [ -n "$h1" ] && [ -n "$h2" ] && [ "$h1" != "$h2" ]
if [ $fail -ne 0 ]; then
  echo "--- stderr of the last boot:"; cat "$work/out2.err"
  echo FAIL
  exit 1
fi
echo PASS
