#!/usr/bin/env bash
# Checks that a guest reset reboots the VM (no --no-reboot): a guest that resets itself right after
# printing its banner must print the banner again on the fresh machine. vessel runs until the
# banner has appeared twice (at most SECONDS), then gets SIGTERM; it must still have been running
# and must exit with 128 + 15 = 143. With --log-level info in the vessel arguments, stderr must also
# say "guest reset; rebooting".
# usage: reboot.sh [--needs-kvm] [--seconds S] --banner REGEX -- vessel-args...
# Exit 0 = pass, 1 = fail, 77 = skipped (reason printed).
set -uo pipefail

VESSEL="${VESSEL:?set VESSEL to the vessel binary}"
needs_kvm=0
seconds=3
banner=""
while [ $# -gt 0 ]; do
  case "$1" in
    --needs-kvm) needs_kvm=1; shift ;;
    --seconds) seconds="$2"; shift 2 ;;
    --banner) banner="$2"; shift 2 ;;
    --) shift; break ;;
    *) echo "reboot.sh: unknown option $1" >&2; exit 1 ;;
  esac
done
[ -n "$banner" ] || { echo "reboot.sh: --banner is required" >&2; exit 1; }

if [ "$needs_kvm" = 1 ]; then
  if [ ! -c /dev/kvm ] || ! [ -r /dev/kvm ] || ! [ -w /dev/kvm ]; then
    echo "SKIP: /dev/kvm is not usable on this host"
    exit 77
  fi
fi

out=$(mktemp) err=$(mktemp)
trap 'rm -f "$out" "$err"' EXIT
"$VESSEL" "$@" </dev/null >"$out" 2>"$err" &
pid=$!

banners() { grep -Ec -- "$banner" "$out"; }
deadline=$(( $(date +%s%N) + seconds * 1000000000 ))
while [ "$(banners)" -lt 2 ] && [ "$(date +%s%N)" -lt "$deadline" ] && kill -0 "$pid" 2>/dev/null; do
  sleep 0.05
done

fail=0
running=0
kill -0 "$pid" 2>/dev/null && running=1
kill -TERM "$pid" 2>/dev/null
# Bounded wait for the exit after SIGTERM, then SIGKILL.
for _ in $(seq 50); do
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.1
done
if kill -0 "$pid" 2>/dev/null; then
  kill -KILL "$pid" 2>/dev/null
  echo "FAIL: vessel did not exit within 5 s of SIGTERM (if stderr shows it kept rebooting, the"
  echo "      signal was lost: a SIGTERM read while a reset is already stopping the VM is dropped)"
  fail=1
fi
wait "$pid"
rc=$?
count=$(banners)

echo "--- command: vessel $*"
echo "--- exit status: $rc"
echo "--- banner /$banner/ seen $count time(s)"
echo "--- stdout (last 2000 bytes):"; tail -c 2000 "$out"
echo "--- stderr (last 2000 bytes):"; tail -c 2000 "$err"
if [ "$running" != 1 ]; then
  echo "FAIL: vessel exited by itself before SIGTERM"; fail=1
fi
if [ "$count" -lt 2 ]; then
  echo "FAIL: the banner appeared $count time(s) in ${seconds}s, expected at least 2 (no reboot?)"; fail=1
fi
if [ "$rc" != 143 ]; then
  echo "FAIL: expected exit status 143 (128 + SIGTERM), got $rc"; fail=1
fi
if grep -q -- "--log-level info" <<<"$*" && ! grep -q "guest reset; rebooting" "$err"; then
  echo "FAIL: stderr lacks \"guest reset; rebooting\""; fail=1
fi
grep -q "FAIL" "$out" && { echo "FAIL: the guest printed FAIL"; fail=1; }
[ "$fail" = 0 ] && echo "PASS"
exit "$fail"
