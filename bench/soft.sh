#!/usr/bin/env bash
# Software-engine benchmark: Vessel (--engine soft) side by side with qemu-system-x86_64 -accel tcg
# -M microvm booting the same stock Debian kernel with the same busybox initramfs, in the same run.
# The guest (guests/linux/init, test mode) reports its own timings; the table shows the medians
# and the ratios Vessel/QEMU (below 1 = Vessel faster). Vessel runs twice: with the host-side
# decompression + PVH entry (--boot pvh) and with the kernel's own decompressor.
#   bench/soft.sh [build-dir]      (default: build; run scripts/test.sh or demo.sh first)
# Environment: RUNS (default 3) runs per configuration, CPUS (default 1), KERNEL (default amd64:
# Debian's generic kernel; or cloud, or a file), TIMEOUT (default 600) seconds per Vessel run.
# Kernel command line and paths: scripts/linux-guest.env.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/linux-guest.env
BUILD="${1:-build}"
VESSEL="$BUILD/vessel"
RUNS="${RUNS:-3}"
CPUS="${CPUS:-1}"
KERNEL=$(linux_guest_kernel "${KERNEL:-amd64}")
TIMEOUT="${TIMEOUT:-600}"
[ -x "$VESSEL" ] || { echo "no $VESSEL: build first (scripts/test.sh)"; exit 1; }
command -v "$LINUX_GUEST_QEMU" >/dev/null || { echo "no $LINUX_GUEST_QEMU: run scripts/install-deps.sh"; exit 1; }
[ -s "$KERNEL" ] || { echo "no kernel $KERNEL: run scripts/fetch-kernels.sh"; exit 1; }
[ -s "$LINUX_GUEST_INITRAMFS" ] || { echo "no initramfs $LINUX_GUEST_INITRAMFS: run scripts/build-initramfs.sh"; exit 1; }
QEMU_CMDLINE=$(linux_guest_qemu_cmdline)

qemu_cmd=("$LINUX_GUEST_QEMU" -accel tcg -M "$LINUX_GUEST_QEMU_MACHINE" -m "$LINUX_GUEST_MEM_MIB" -smp "$CPUS"
  -kernel "$KERNEL" -initrd "$LINUX_GUEST_INITRAMFS" -append "$QEMU_CMDLINE" -nographic -no-reboot)
vessel_cmd=("$VESSEL" run --engine soft --kernel "$KERNEL" --initrd "$LINUX_GUEST_INITRAMFS"
  --cmdline "$LINUX_GUEST_CMDLINE" --mem "${LINUX_GUEST_MEM_MIB}M" --cpus "$CPUS" --no-reboot)

# Results per configuration: space-separated samples per measure, and a failure message.
declare -A samples failed
configs=(qemu pvh decompressor)
measures=(wall boot sha256 gzip loop)

# One run: the whole process's wall time and the guest's report; a run counts only if the guest
# computed the right hash, said "done" and the VMM exited 0.
run_once() { # config, timeout, command...
  local config="$1" limit="$2"; shift 2
  local out start end rc=0
  out=$(mktemp)
  start=$(date +%s%N)
  timeout --kill-after=5 "$limit" "$@" </dev/null 2>&1 | tr -d '\r' >"$out" || rc=${PIPESTATUS[0]}
  end=$(date +%s%N)
  if [ "$rc" != 0 ] || ! grep -q "^vessel-guest: done" "$out" ||
    ! grep -q "^vessel-guest: sha256=$LINUX_GUEST_SHA256_32M_ZEROS " "$out"; then
    failed[$config]="exit status $rc$([ "$rc" = 124 ] && echo " (timed out after ${limit}s)"): $(grep -v '^$' "$out" | tail -3 | tr '\n' ' ' | cut -c1-300)"
    rm -f "$out"
    return 1
  fi
  samples[$config.wall]+=" $(( (end - start) / 1000000 ))"
  samples[$config.boot]+=" $(sed -n 's/^vessel-guest: kernel=.* uptime_ms=\([0-9]*\).*/\1/p' "$out")"
  samples[$config.sha256]+=" $(sed -n 's/^vessel-guest: sha256=.* ms=\([0-9]*\).*/\1/p' "$out")"
  samples[$config.gzip]+=" $(sed -n 's/^vessel-guest: gzip=ok ms=\([0-9]*\).*/\1/p' "$out")"
  samples[$config.loop]+=" $(sed -n 's/^vessel-guest: loop=20000 ms=\([0-9]*\).*/\1/p' "$out")"
  rm -f "$out"
}

# shellcheck disable=SC2086
median() { # samples (ms) -> median in seconds, or n/a
  [ -n "${1// /}" ] || { echo n/a; return; }
  printf '%s\n' $1 | sort # $1: space-separated numbers, split on purpose -n | awk '{a[NR]=$1} END {printf "%.2f", a[int((NR+1)/2)]/1000}'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a != "n/a" && b != "n/a" && b > 0) printf "%.2f", a / b; else print "n/a" }'; }

echo "# Vessel soft engine vs QEMU TCG ($(date -u +%Y-%m-%d), $(nproc) cores, $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg))"
echo "# kernel $(readlink -f "$KERNEL"), initramfs $(readlink -f "$LINUX_GUEST_INITRAMFS")"
echo "# ${LINUX_GUEST_MEM_MIB} MiB, $CPUS vCPU(s), median of $RUNS; $($LINUX_GUEST_QEMU --version | head -1)"
echo "# vessel cmdline: $LINUX_GUEST_CMDLINE"
echo "# qemu cmdline:   $QEMU_CMDLINE   (tsc_early_khz: see scripts/linux-guest.env)"
echo

for _ in $(seq "$RUNS"); do
  run_once qemu 180 "${qemu_cmd[@]}" || break
done
for boot in pvh decompressor; do
  for _ in $(seq "$RUNS"); do
    run_once "$boot" "$TIMEOUT" "${vessel_cmd[@]}" --boot "$boot" || break # e.g. engine not ready: once is enough
  done
done

label() {
  case "$1" in
    wall) echo "whole process (start to exit), s" ;;
    boot) echo "guest: kernel start to /init, s" ;;
    sha256) echo "guest: sha256 of 32 MiB (dd | sha256sum), s" ;;
    gzip) echo "guest: gzip round trip of 3.4 MiB, s" ;;
    loop) echo "guest: shell loop, 20000 iterations, s" ;;
  esac
}
printf "%-44s %8s %12s %12s %10s %10s\n" "" qemu-tcg "vessel-pvh" "vessel-dec" "pvh/qemu" "dec/qemu"
for m in "${measures[@]}"; do
  q=$(median "${samples[qemu.$m]:-}")
  p=$(median "${samples[pvh.$m]:-}")
  d=$(median "${samples[decompressor.$m]:-}")
  printf "%-44s %8s %12s %12s %10s %10s\n" "$(label "$m")" "$q" "$p" "$d" "$(ratio "$p" "$q")" "$(ratio "$d" "$q")"
done
echo "(guest times come from /proc/uptime: 10 ms resolution, the guest's own clock)"
status=0
for c in "${configs[@]}"; do
  if [ -n "${failed[$c]:-}" ]; then
    case "$c" in
      qemu) what="QEMU TCG" ;;
      *) what="vessel --engine soft --boot $c" ;;
    esac
    echo "FAILED: $what: ${failed[$c]}"
    [ "$c" = qemu ] && status=1
  fi
done
exit "$status"
