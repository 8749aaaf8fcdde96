#!/usr/bin/env bash
# virtio-blk end to end: a stock Debian kernel (soft engine) with the modules initramfs and
# vessel.mode=blk (guests/linux/modes/blk.sh) on ext4 images made here with mke2fs -d.
#
# default: /dev/vda is a writable image holding /known, /dev/vdb a read-only one (ro,serial=...).
#   The guest checks /known's SHA-256, writes /newfile (`seq 1 30000`), syncs, runs fstrim
#   (DISCARD), unmounts; mounts vdb read-only and checks that writes are refused; powers off.
#   The host then checks: exit status 0, the guest's report (sizes, GET_ID serials, ro flags),
#   `e2fsck -fn` clean, /newfile read back out of the image with debugfs, vdb's image unchanged.
# --kill: the guest stops after `sync` (vessel.blk=fs-kill) and the host kills the VMM with
#   SIGKILL the moment "vessel-guest: blk sync done" appears on the console stream. The image is
#   then in the state a crash leaves: mounted, with ext4's journal holding the last transaction.
#   What `sync` made durable must be there: on a copy of the image, `e2fsck -fy` replays the
#   journal (what a mount would do), `e2fsck -fn` must then find it clean, and debugfs must read
#   /newfile back exactly. (SIGKILL of the VMM loses nothing that reached the host kernel; what
#   it tests is that the VMM completes a write or FLUSH only after the data is in the image.)
# usage: virtio_blk.sh [--kill] [--timeout S]
# Exit 0 = pass, 1 = fail, 77 = skipped (reason printed).
set -uo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
source "$HERE/../../scripts/linux-guest.env"

kill_test=0
timeout_s=900
while [ $# -gt 0 ]; do
  case "$1" in
    --kill) kill_test=1; shift ;;
    --timeout) timeout_s="$2"; shift 2 ;;
    *) echo "virtio_blk.sh: unknown option $1" >&2; exit 1 ;;
  esac
done

VESSEL="${VESSEL:?set VESSEL to the vessel binary}"
kernel=$(linux_guest_kernel amd64)
initrd=$(linux_guest_initramfs_modules amd64)
[ -s "$kernel" ] || { echo "SKIP: no kernel $kernel (scripts/fetch-kernels.sh fetches it)"; exit 77; }
[ -s "$initrd" ] || { echo "SKIP: no initramfs $initrd (scripts/build-initramfs.sh amd64 builds it)"; exit 77; }
zcat "$initrd" 2>/dev/null | grep -a 'vessel/blk\.sh' >/dev/null ||
  { echo "SKIP: $initrd has no vessel/blk.sh (rebuild it: scripts/build-initramfs.sh amd64)"; exit 77; }
for tool in mke2fs e2fsck debugfs; do
  command -v "$tool" >/dev/null || [ -x "/sbin/$tool" ] || { echo "SKIP: no $tool (e2fsprogs)"; exit 77; }
done
PATH="$PATH:/sbin:/usr/sbin"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
out="$tmp/out" err="$tmp/err"

# The images: 64 MiB ext4 each, /known = 3200 numbered lines (180 KB).
mkdir "$tmp/root"
for i in $(seq 1 3200); do printf '%08d:%s\n' "$i" "vessel-known-file-line-with-some-padding-text"; done >"$tmp/root/known"
known_sha=$(sha256sum <"$tmp/root/known" | cut -c1-64)
make_image() { # file
  truncate -s 64M "$1" && mke2fs -q -F -t ext4 -d "$tmp/root" "$1" >/dev/null 2>"$tmp/mke2fs.err" ||
    { echo "FAIL: mke2fs: $(cat "$tmp/mke2fs.err")"; exit 1; }
}
make_image "$tmp/disk.img"
seq 1 30000 >"$tmp/newfile.expected"

cmdline="$LINUX_GUEST_CMDLINE vessel.mode=blk"
cmd=("$VESSEL" run --engine soft --kernel "$kernel" --initrd "$initrd" --mem "${LINUX_GUEST_MEM_MIB}M"
  --no-reboot --disk "$tmp/disk.img")
if [ "$kill_test" = 1 ]; then
  cmd+=(--cmdline "$cmdline vessel.blk=fs-kill")
else
  make_image "$tmp/ro.img"
  ro_sha=$(sha256sum <"$tmp/ro.img" | cut -c1-64)
  cmd+=(--disk "$tmp/ro.img,ro,serial=vessel-ro-disk" --cmdline "$cmdline vessel.blk=fs")
fi

start=$(date +%s%N)
killed=0
if [ "$kill_test" = 1 ]; then
  # Read the console as a stream and kill at the line, not after polling a file.
  mkfifo "$tmp/console"
  "${cmd[@]}" </dev/null >"$tmp/console" 2>"$err" &
  pid=$!
  deadline=$(( $(date +%s) + timeout_s ))
  # read -t bounds the wait for each line by what is left of the time limit (no watchdog process
  # that could outlive the test and hold ctest's output pipe open).
  while left=$(( deadline - $(date +%s) )) && [ "$left" -gt 0 ] && IFS= read -r -t "$left" line; do
    line=${line%$'\r'}
    printf '%s\n' "$line" >>"$out"
    if [ "$line" = "vessel-guest: blk sync done" ]; then
      kill -9 "$pid"
      killed=1
      break
    fi
  done <"$tmp/console"
  [ "$killed" = 1 ] || kill -9 "$pid" 2>/dev/null # timed out, or the VMM ended by itself
  wait "$pid"
  rc=$?
else
  timeout --kill-after=5 "$timeout_s" "${cmd[@]}" </dev/null 2>"$err" | tr -d '\r' >"$out"
  rc=${PIPESTATUS[0]}
fi
ms=$(( ($(date +%s%N) - start) / 1000000 ))

echo "--- command: ${cmd[*]}"
echo "--- exit status: $rc after $ms ms$([ "$killed" = 1 ] && echo " (killed with SIGKILL at 'sync done')")"
echo "--- stdout:"; head -c 30000 "$out"
echo "--- stderr:"; head -c 20000 "$err"

fail=0
expect() { # regex, what
  if grep -Eq -- "$1" "$out"; then echo "ok   $2"; else echo "FAIL $2: stdout lacks /$1/"; fail=1; fi
}
check() { # what, command...
  local what="$1"; shift
  if "$@"; then echo "ok   $what"; else echo "FAIL $what"; fail=1; fi
}

expect "^vessel-guest: blk vda size=131072 serial=disk.img ro=0\$" "vda: 64 MiB, serial = the image's file name (GET_ID), writable"
expect "^vessel-guest: blk known sha256=$known_sha\$" "the guest read /known intact"
expect "^vessel-guest: blk newfile written bytes=$(wc -c <"$tmp/newfile.expected")\$" "the guest wrote /newfile"
expect "^vessel-guest: blk sync done\$" "the guest synced"

if [ "$kill_test" = 1 ]; then
  if [ "$killed" = 1 ] && [ "$rc" = 137 ]; then echo "ok   vessel killed with SIGKILL"; else echo "FAIL not killed at 'sync done' (exit status $rc)"; fail=1; fi
  # A crash leaves the journal to replay: do what a mount would do, on a copy.
  cp --sparse=always "$tmp/disk.img" "$tmp/replayed.img"
  e2fsck -fy "$tmp/replayed.img" >"$tmp/fsck1" 2>&1
  frc=$?
  echo "--- e2fsck -fy (journal replay) exit status $frc:"; cat "$tmp/fsck1"
  check "e2fsck -fy repaired nothing beyond the journal replay (status 0 or 1)" [ "$frc" -le 1 ]
  check "e2fsck -fn finds the replayed image clean" e2fsck -fn "$tmp/replayed.img"
  debugfs -R "cat /newfile" "$tmp/replayed.img" >"$tmp/newfile.got" 2>/dev/null
  check "/newfile survived kill -9 after sync (debugfs)" cmp -s "$tmp/newfile.got" "$tmp/newfile.expected"
  debugfs -R "cat /known" "$tmp/replayed.img" >"$tmp/known.got" 2>/dev/null
  check "/known intact" cmp -s "$tmp/known.got" "$tmp/root/known"
else
  if [ "$rc" = 0 ]; then echo "ok   exit status 0"; else echo "FAIL exit status $rc, expected 0"; fail=1; fi
  expect "^vessel-guest: blk fstrim ok\$" "fstrim (DISCARD)"
  expect "^vessel-guest: blk umount ok\$" "umount"
  expect "^vessel-guest: blk vdb size=131072 serial=vessel-ro-disk ro=1\$" "vdb: serial from --disk, read-only (VIRTIO_BLK_F_RO)"
  expect "^vessel-guest: blk vdb mount=ok known sha256=$known_sha write=refused raw=refused\$" \
    "vdb mounts read-only, reads /known, refuses file and raw writes"
  expect "reboot: Power down" "power-off through ACPI"
  e2fsck -fn "$tmp/disk.img" >"$tmp/fsck" 2>&1
  frc=$?
  [ "$frc" = 0 ] || { echo "--- e2fsck -fn:"; cat "$tmp/fsck"; }
  check "e2fsck -fn: the image is clean after the guest unmounted it" [ "$frc" = 0 ]
  debugfs -R "cat /newfile" "$tmp/disk.img" >"$tmp/newfile.got" 2>/dev/null
  check "/newfile read back from the image (debugfs) is seq 1 30000" cmp -s "$tmp/newfile.got" "$tmp/newfile.expected"
  check "the read-only image is byte for byte unchanged" [ "$(sha256sum <"$tmp/ro.img" | cut -c1-64)" = "$ro_sha" ]
fi
if grep -Eq "Kernel panic|reboot: Restarting system|blk .*FAILED|unknown task" "$out"; then
  echo "FAIL the guest reported a failure or panicked"; fail=1
fi
[ "$fail" = 0 ] && echo "PASS"
exit "$fail"
