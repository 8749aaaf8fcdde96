#!/usr/bin/env bash
# A Debian kernel on the soft engine runs `reboot -f` with its default reboot method
# (guests/linux/modes/reboot.sh; LINUX_GUEST_CMDLINE has no reboot=), which ends in a jump to the
# reset vector F000:FFF0 (src/arch/x86/reset_stub.h).
#   default: with --no-reboot, Vessel must exit with status 0 and say "guest reset; exiting
#            (--no-reboot)": a reset, not a power-off ("reboot: Power down"), panic or hang.
#   --again: without --no-reboot, the VM must reboot: the fresh machine boots the kernel again and
#            the guest reaches its `reboot -f` a second time; then Vessel gets SIGTERM and must exit
#            with 128 + 15 = 143.
# usage: linux_reboot.sh [--again] [--kernel amd64|cloud|FILE] [--initrd FILE] [--cpus N] [--timeout S]
# Exit 0 = pass, 1 = fail, 77 = skipped (reason printed: no kernel or initramfs, or an initramfs
# built before the reboot mode existed).
set -uo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
source "$HERE/../../scripts/linux-guest.env"

again=0
kernel=amd64
initrd="$LINUX_GUEST_INITRAMFS"
cpus=1
timeout_s=600
while [ $# -gt 0 ]; do
  case "$1" in
    --again) again=1; shift ;;
    --kernel) kernel="$2"; shift 2 ;;
    --initrd) initrd="$2"; shift 2 ;;
    --cpus) cpus="$2"; shift 2 ;;
    --timeout) timeout_s="$2"; shift 2 ;;
    *) echo "linux_reboot.sh: unknown option $1" >&2; exit 1 ;;
  esac
done
kernel=$(linux_guest_kernel "$kernel")
VESSEL="${VESSEL:?set VESSEL to the vessel binary}"

[ -s "$kernel" ] || { echo "SKIP: no kernel $kernel (scripts/fetch-kernels.sh fetches it)"; exit 77; }
[ -s "$initrd" ] || { echo "SKIP: no initramfs $initrd (scripts/build-initramfs.sh builds it)"; exit 77; }
# (The archive is several concatenated cpio members; a newc header is followed by the NUL-terminated name.)
if ! gzip -dc "$initrd" | grep -qaP 'vessel/reboot\.sh\x00'; then
  echo "SKIP: $initrd has no vessel/reboot.sh (built before the reboot mode: rerun scripts/build-initramfs.sh)"
  exit 77
fi

out=$(mktemp) err=$(mktemp)
trap 'rm -f "$out" "$err"' EXIT
cmd=("$VESSEL" run --engine soft --kernel "$kernel" --initrd "$initrd" --mem "${LINUX_GUEST_MEM_MIB}M"
  --cpus "$cpus" --cmdline "$LINUX_GUEST_CMDLINE vessel.mode=reboot" --log-level info)
[ "$again" = 1 ] || cmd+=(--no-reboot)
banner='^vessel-guest: reboot -f '
banners() { tr -d '\r' <"$out" | grep -Ec -- "$banner"; }

start=$(date +%s%N)
if [ "$again" = 0 ]; then
  timeout --kill-after=5 "$timeout_s" "${cmd[@]}" </dev/null >"$out" 2>"$err"
  rc=$?
else
  "${cmd[@]}" </dev/null >"$out" 2>"$err" &
  pid=$!
  deadline=$(( $(date +%s) + timeout_s ))
  # The second banner is printed before that boot's reboot -f: stop the VM at its second reset or
  # shortly after the banner, whichever comes first (both are fine: the reboot already happened).
  while [ "$(banners)" -lt 2 ] && [ "$(date +%s)" -lt "$deadline" ] && kill -0 "$pid" 2>/dev/null; do
    sleep 0.5
  done
  running=0
  kill -0 "$pid" 2>/dev/null && running=1
  kill -TERM "$pid" 2>/dev/null
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && { echo "vessel did not exit within 5 s of SIGTERM"; kill -KILL "$pid"; }
  wait "$pid"
  rc=$?
fi
ms=$(( ($(date +%s%N) - start) / 1000000 ))
tr -d '\r' <"$out" >"$out.txt" && mv "$out.txt" "$out"

echo "--- command: ${cmd[*]}"
echo "--- exit status: $rc after $ms ms"
echo "--- stdout (last 6000 bytes):"; tail -c 6000 "$out"
echo "--- stderr (last 3000 bytes):"; tail -c 3000 "$err"
if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
  echo "FAIL: timed out after ${timeout_s}s (the guest hung after \"reboot: Restarting system\"?)"; exit 1
fi

fail=0
check() { # description, command...
  local what="$1"; shift
  if "$@"; then echo "ok   $what"; else echo "FAIL $what"; fail=1; fi
}
check "the guest ran reboot -f on $cpus CPU(s)" grep -Eq -- "${banner}type=[a-z]+ cpus=$cpus\$" "$out"
check "the kernel restarted the machine" grep -q "reboot: Restarting system" "$out"
check "reboot -f did not return" bash -c "! grep -q 'vessel-guest: reboot FAILED' '$out'"
check "no power-off" bash -c "! grep -q 'reboot: Power down' '$out'"
check "no kernel panic" bash -c "! grep -q 'Kernel panic' '$out'"
if [ "$again" = 0 ]; then
  check "exit status 0 (got $rc)" [ "$rc" = 0 ]
  check "Vessel saw a guest reset" grep -q "guest reset; exiting (--no-reboot)" "$err"
else
  check "Vessel was still running at SIGTERM (no exit of its own)" [ "$running" = 1 ]
  check "exit status 143 (got $rc)" [ "$rc" = 143 ]
  check "Vessel rebooted the VM" grep -q "guest reset; rebooting" "$err"
  check "the guest booted again and reached reboot -f twice (seen $(banners))" [ "$(banners)" -ge 2 ]
fi
[ "$fail" = 0 ] && echo "PASS" || echo "FAIL"
exit "$fail"
