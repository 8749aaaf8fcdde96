#!/usr/bin/env bash
# virtio-blk benchmark: Vessel (--engine soft) side by side with qemu-system-x86_64 -accel tcg
# -M microvm -device virtio-blk-device, both booting the same stock Debian kernel with the same
# modules initramfs in vessel.mode=blk vessel.blk=bench (guests/linux/modes/blk.sh): the guest
# times, with its own clock (10 ms resolution), sequential O_DIRECT reads of the 256 MiB
# /dev/vda (dd bs=1M iflag=direct, eight passes: 2 GiB) and sequential O_DIRECT writes of it
# (dd bs=1M oflag=direct, eight passes). Each run gets a fresh 256 MiB raw image of random bytes, written just before
# (so it is in the host's page cache: what is measured is the virtio path, not the host's disk).
# The table shows medians in MB/s (10^6 bytes/s) and the ratio Vessel/QEMU (above 1 = Vessel
# faster; the target is >= 1.0).
#   bench/virtio-blk.sh [build-dir]      (default: build)
# Environment: RUNS (default 3), TIMEOUT (default 600) seconds per run, IMAGE_DIR (default: a
# temporary directory under $TMPDIR or /tmp). QEMU uses its defaults for the drive (cache=writeback,
# aio=threads), Vessel its defaults (page cache, io_uring).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/linux-guest.env
BUILD="${1:-build}"
VESSEL="$BUILD/vessel"
RUNS="${RUNS:-3}"
TIMEOUT="${TIMEOUT:-600}"
KERNEL=$(linux_guest_kernel amd64)
INITRD=$(linux_guest_initramfs_modules amd64)
[ -x "$VESSEL" ] || { echo "no $VESSEL: build first (scripts/test.sh)"; exit 1; }
command -v "$LINUX_GUEST_QEMU" >/dev/null || { echo "no $LINUX_GUEST_QEMU: run scripts/install-deps.sh"; exit 1; }
[ -s "$KERNEL" ] || { echo "no kernel $KERNEL: run scripts/fetch-kernels.sh"; exit 1; }
[ -s "$INITRD" ] || { echo "no initramfs $INITRD: run scripts/build-initramfs.sh amd64"; exit 1; }
zcat "$INITRD" | grep -a 'vessel/blk\.sh' >/dev/null ||
  { echo "$INITRD lacks vessel/blk.sh: run scripts/build-initramfs.sh amd64"; exit 1; }

tmp=$(mktemp -d "${IMAGE_DIR:-${TMPDIR:-/tmp}}/vessel-blk-bench.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
img="$tmp/bench.img"
CMDLINE="$LINUX_GUEST_CMDLINE vessel.mode=blk vessel.blk=bench"
QEMU_CMDLINE="$(linux_guest_qemu_cmdline) vessel.mode=blk vessel.blk=bench"

qemu_cmd=("$LINUX_GUEST_QEMU" -accel tcg -M "$LINUX_GUEST_QEMU_MACHINE" -m "$LINUX_GUEST_MEM_MIB" -smp 1
  -kernel "$KERNEL" -initrd "$INITRD" -append "$QEMU_CMDLINE" -nographic -no-reboot
  -drive "file=$img,format=raw,if=none,id=disk0" -device virtio-blk-device,drive=disk0)
vessel_cmd=("$VESSEL" run --engine soft --kernel "$KERNEL" --initrd "$INITRD" --cmdline "$CMDLINE"
  --mem "${LINUX_GUEST_MEM_MIB}M" --cpus 1 --no-reboot --disk "$img")

declare -A samples failed
run_once() { # config, command...
  local config="$1"; shift
  local out rc=0
  # A fully written image, freshly in the host's page cache for both VMMs: the benchmark measures
  # the virtio path, not the host's disk (nor its zeroing of unwritten extents on first read).
  rm -f "$img"
  head -c 256M /dev/urandom >"$img"
  sync "$img" # no host writeback of it during the run
  out=$(mktemp)
  timeout --kill-after=5 "$TIMEOUT" "$@" </dev/null 2>&1 | tr -d '\r' >"$out" || rc=${PIPESTATUS[0]}
  local r w
  r=$(sed -n 's/^vessel-guest: blk bench read ms=\([0-9]*\) bytes=2147483648$/\1/p' "$out")
  w=$(sed -n 's/^vessel-guest: blk bench write ms=\([0-9]*\) bytes=2147483648$/\1/p' "$out")
  if [ "$rc" != 0 ] || [ -z "$r" ] || [ -z "$w" ]; then
    failed[$config]="exit status $rc: $(grep -v '^$' "$out" | tail -3 | tr '\n' ' ' | cut -c1-300)"
    rm -f "$out"
    return 1
  fi
  samples[$config.read]+=" $r"
  samples[$config.write]+=" $w"
  rm -f "$out"
}

# shellcheck disable=SC2086 # a list of space-separated numbers, split on purpose
median() { [ -n "${1// /}" ] || { echo n/a; return; }; printf '%s\n' $1 | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
mbps() { awk -v ms="$1" 'BEGIN { if (ms == "n/a") print "n/a"; else if (ms == 0) print "inf"; else printf "%.1f", 2147.483648 / (ms / 1000) }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a != "n/a" && b != "n/a" && a != "inf" && b != "inf" && b > 0) printf "%.2f", a / b; else print "n/a" }'; }

echo "# virtio-blk: Vessel soft engine vs QEMU TCG microvm ($(date -u +%Y-%m-%d), $(nproc) cores, $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg))"
echo "# kernel $(readlink -f "$KERNEL"), initramfs $(readlink -f "$INITRD")"
echo "# 256 MiB raw image on $(df --output=fstype "$tmp" | tail -1) ($tmp), guest dd bs=1M O_DIRECT, median of $RUNS; $($LINUX_GUEST_QEMU --version | head -1)"
echo

# Alternating, so that a change in the host's load (other jobs) hits both alike.
for _ in $(seq "$RUNS"); do
  [ -n "${failed[qemu]:-}" ] || run_once qemu "${qemu_cmd[@]}" || true
  [ -n "${failed[vessel]:-}" ] || run_once vessel "${vessel_cmd[@]}" || true
done

printf '%-34s %12s %12s %8s\n' "measure (guest clock)" "Vessel" "QEMU" "ratio"
for m in read write; do
  v=$(mbps "$(median "${samples[vessel.$m]:-}")")
  q=$(mbps "$(median "${samples[qemu.$m]:-}")")
  printf '%-34s %9s MB/s %7s MB/s %7sx\n' "sequential $m, 8 x 256 MiB, bs=1M" "$v" "$q" "$(ratio "$v" "$q")"
done
echo
echo "samples (ms): vessel read:${samples[vessel.read]:-} write:${samples[vessel.write]:-}; qemu read:${samples[qemu.read]:-} write:${samples[qemu.write]:-}"
for c in vessel qemu; do
  [ -z "${failed[$c]:-}" ] || echo "$c FAILED: ${failed[$c]}"
done
