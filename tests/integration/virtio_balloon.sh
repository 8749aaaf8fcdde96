#!/usr/bin/env bash
# linux.soft.virtio.balloon: a Debian kernel on the soft engine with 256 MiB and
# `--balloon-target 64M`. The guest (guests/linux/modes/balloon.sh) dirties most of its free
# memory and frees it, then (re)binds the balloon driver, which inflates 64 MiB; at each step it
# waits for a line on the serial console. This test measures Vessel's resident memory
# (RssAnon + RssShmem from /proc/PID/status: guest RAM is shared memory) when the guest has
# dirtied its memory and again once the balloon is inflated, and checks that it dropped by at
# least 48 MiB of the 64: Vessel really gave the inflated pages back to the host.
# usage: virtio_balloon.sh [--kernel amd64|cloud|FILE] [--timeout S]
# Exit 0 = pass, 1 = fail, 77 = skipped (reason printed).
set -uo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
source "$HERE/../../scripts/linux-guest.env"

kernel=amd64
timeout_s=900
min_drop_kb=$((48 * 1024))
while [ $# -gt 0 ]; do
  case "$1" in
    --kernel) kernel="$2"; shift 2 ;;
    --timeout) timeout_s="$2"; shift 2 ;;
    *) echo "virtio_balloon.sh: unknown option $1" >&2; exit 1 ;;
  esac
done
initrd=$(linux_guest_initramfs_modules "$kernel")
kernel=$(linux_guest_kernel "$kernel")
VESSEL="${VESSEL:?set VESSEL to the vessel binary}"
[ -s "$kernel" ] || { echo "SKIP: no kernel $kernel (scripts/fetch-kernels.sh fetches it)"; exit 77; }
[ -s "$initrd" ] || { echo "SKIP: no initramfs $initrd (scripts/build-initramfs.sh amd64 builds it)"; exit 77; }

work=$(mktemp -d)
pid=""
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null
  exec 3>&- 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
out="$work/out" err="$work/err" fifo="$work/stdin"
mkfifo "$fifo"
exec 3<>"$fifo" # the serial console's input; held open so that Vessel never sees end of file

cmd=("$VESSEL" run --engine soft --kernel "$kernel" --initrd "$initrd" --mem 256M --balloon-target 64M
  --cmdline "console=ttyS0 quiet panic=-1 vessel.mode=balloon" --no-reboot --log-level info)
start=$(date +%s)
"${cmd[@]}" <"$fifo" >"$out" 2>"$err" &
pid=$!

rss_kb() { # RssAnon + RssShmem of Vessel, in KiB
  awk '/^RssAnon:|^RssShmem:/ { kb += $2 } END { print kb + 0 }' "/proc/$pid/status" 2>/dev/null
}
# Waits for a stdout line matching $1; fails on exit, timeout or a guest-reported failure.
wait_for() {
  while kill -0 "$pid" 2>/dev/null; do
    if tr -d '\r' <"$out" | grep -q -- "$1"; then return 0; fi
    if tr -d '\r' <"$out" | grep -q "^vessel-guest: balloon FAILED"; then return 1; fi
    if [ $(( $(date +%s) - start )) -ge "$timeout_s" ]; then echo "--- timed out after ${timeout_s}s"; return 1; fi
    sleep 0.5
  done
  return 1
}

fail=0
rss_touched="" rss_inflated=""
if wait_for "^vessel-guest: balloon waiting (touched)"; then
  rss_touched=$(rss_kb)
  echo "--- guest memory dirtied: Vessel RssAnon+RssShmem = $rss_touched kB"
  printf 'go\n' >&3
  if wait_for "^vessel-guest: balloon waiting (inflated)"; then
    rss_inflated=$(rss_kb)
    echo "--- balloon inflated: Vessel RssAnon+RssShmem = $rss_inflated kB"
    printf 'go\n' >&3
  fi
fi
# The guest powers off after its last line; kill it if it does not within a minute.
for _ in $(seq 120); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
kill "$pid" 2>/dev/null
wait "$pid"
rc=$?
pid=""
tr -d '\r' <"$out" >"$out.txt"

echo "--- command: ${cmd[*]}"
echo "--- exit status: $rc after $(( $(date +%s) - start )) s"
echo "--- stdout:"; head -c 30000 "$out.txt"
echo "--- stderr:"; head -c 20000 "$err"

expect() { # file, regex, what
  if grep -Eq -- "$2" "$1"; then echo "ok   $3"; else echo "FAIL $3: lacks /$2/"; fail=1; fi
}
if [ "$rc" = 0 ]; then echo "ok   exit status 0"; else echo "FAIL exit status $rc, expected 0"; fail=1; fi
expect "$out.txt" "^vessel-guest: balloon device=virtio[0-9]+ " "the balloon driver bound at boot"
expect "$out.txt" "^vessel-guest: balloon touched mb=[0-9]+ " "the guest dirtied and freed its memory"
expect "$out.txt" "^vessel-guest: balloon inflated mb=(6[0-9]) " "the guest's MemFree dropped by the 64 MiB target"
expect "$err" "virtio-balloon: the guest's balloon reached the target of 64 MiB" "Vessel saw the target reached"
expect "$err" "virtio-balloon: guest statistics #[0-9]+: total [0-9]+ MiB, free [0-9]+ MiB" \
  "the guest's statistics arrived"
expect "$out.txt" "reboot: Power down" "power-off through ACPI"
if [ -n "$rss_touched" ] && [ -n "$rss_inflated" ]; then
  drop=$((rss_touched - rss_inflated))
  if [ "$drop" -ge "$min_drop_kb" ]; then
    echo "ok   Vessel's resident memory dropped by $((drop / 1024)) MiB (at least $((min_drop_kb / 1024)))"
  else
    echo "FAIL Vessel's resident memory dropped by only $((drop / 1024)) MiB (want $((min_drop_kb / 1024)))"
    fail=1
  fi
else
  echo "FAIL the guest did not reach both measuring points"
  fail=1
fi
[ "$fail" = 0 ] && echo "PASS"
exit "$fail"
