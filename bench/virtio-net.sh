#!/usr/bin/env bash
# virtio-net benchmark: guest <-> host TCP throughput, Vessel (--engine soft) side by side with
# qemu-system-x86_64 -accel tcg -M microvm (-netdev tap + virtio-net-device), the same stock
# Debian kernel and busybox initramfs (guests/linux/modes/net.sh), each VM on a tap in its own
# network namespace with the host end (tests/integration/virtio_net_peer.py) on 10.99.0.1.
# MB/s = 10^6 bytes per second; the ratio is Vessel/QEMU (above 1 = Vessel faster).
# Both directions are timed by the host end: guest->host from the connection to EOF, host->guest
# from the connection until the guest reports (a second connection) that it has read everything.
#   bench/virtio-net.sh [build-dir]      (default: build; needs root, /dev/net/tun, ip, python3)
# Environment: MB (default 64) MiB each way; CHECK (default 0): 1 = random data hashed with
# SHA-256 on both ends, as the integration test (the guest hashes outside the timed transfer,
# but it makes the run longer), 0 = zeros; RUNS (default 1); TIMEOUT (default 1500) s per run.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/linux-guest.env
BUILD="${1:-build}"
VESSEL="$BUILD/vessel"
MB="${MB:-64}"
CHECK="${CHECK:-0}"
RUNS="${RUNS:-1}"
TIMEOUT="${TIMEOUT:-1500}"
QEMU_TIMEOUT="${QEMU_TIMEOUT:-300}"
KERNEL=$(linux_guest_kernel amd64)
INITRD=$(linux_guest_initramfs_modules amd64)
[ -x "$VESSEL" ] || { echo "no $VESSEL: build first (scripts/test.sh)"; exit 1; }
[ "$(id -u)" = 0 ] || { echo "needs root (network namespaces and taps)"; exit 1; }
[ -c /dev/net/tun ] || { echo "no /dev/net/tun (modprobe tun)"; exit 1; }
command -v ip >/dev/null || { echo "no ip (iproute2)"; exit 1; }
command -v "$LINUX_GUEST_QEMU" >/dev/null || { echo "no $LINUX_GUEST_QEMU: run scripts/install-deps.sh"; exit 1; }
[ -s "$KERNEL" ] || { echo "no kernel $KERNEL: run scripts/fetch-kernels.sh"; exit 1; }
[ -s "$INITRD" ] || { echo "no initramfs $INITRD: run scripts/build-initramfs.sh amd64"; exit 1; }

GUEST_ARGS="vessel.mode=net vessel.net.mb=$MB vessel.net.check=$CHECK vessel.net.addr=10.99.0.2/24 vessel.net.host=10.99.0.1"
tmp=$(mktemp -d)
ns=""
peer_pid=""
cleanup() {
  [ -n "$peer_pid" ] && kill "$peer_pid" 2>/dev/null
  [ -n "$ns" ] && ip netns del "$ns" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT

declare -A samples failed
bytes=$((MB * 1048576))
mbps() { awk -v b="$bytes" -v ms="$1" 'BEGIN { if (ms > 0) printf "%.2f", b / ms / 1000; else print "n/a" }'; }

# One run in a fresh namespace (the VMM uses the tap vtap0 there).
run_once() { # config, timeout, command...
  local config="$1" limit="$2" rc=0 line
  shift 2
  ns="vessel-bench-$$-$config"
  ip netns add "$ns"
  ip -n "$ns" link set lo up
  ip -n "$ns" tuntap add dev vtap0 mode tap
  ip -n "$ns" addr add 10.99.0.1/24 dev vtap0
  ip -n "$ns" link set vtap0 up
  rm -f "$tmp/peer.out" "$tmp/peer.log"
  ip netns exec "$ns" python3 tests/integration/virtio_net_peer.py --mb "$MB" --check "$CHECK" \
    --out "$tmp/peer.out" --timeout "$limit" >"$tmp/peer.log" 2>&1 &
  peer_pid=$!
  for _ in $(seq 100); do grep -q ready "$tmp/peer.log" 2>/dev/null && break; sleep 0.1; done
  timeout --kill-after=5 "$limit" ip netns exec "$ns" "$@" </dev/null 2>&1 | tr -d '\r' >"$tmp/out" ||
    rc=${PIPESTATUS[0]}
  kill "$peer_pid" 2>/dev/null || true
  wait "$peer_pid" 2>/dev/null || true
  peer_pid=""
  ip netns del "$ns"
  ns=""
  local up_ms down_ms down_bytes up_bytes
  up_ms=$(sed -n 's/^up_ms=//p' "$tmp/peer.out" 2>/dev/null)
  up_bytes=$(sed -n 's/^up_bytes=//p' "$tmp/peer.out" 2>/dev/null)
  line=$(grep "^vessel-guest: net download" "$tmp/out" || true)
  down_bytes=$(sed -n 's/.* bytes=\([0-9]*\) .*/\1/p' <<<"$line")
  down_ms=$(sed -n 's/^down_ms=//p' "$tmp/peer.out" 2>/dev/null)
  if [ "$rc" != 0 ] || [ "$up_bytes" != "$bytes" ] || [ "$down_bytes" != "$bytes" ] ||
    ! grep -q "^vessel-guest: net done" "$tmp/out"; then
    failed[$config]="exit status $rc$([ "$rc" = 124 ] && echo " (timed out after ${limit}s)"), up $up_bytes down $down_bytes bytes: $(grep -v '^$' "$tmp/out" | tail -4 | tr '\n' ' ' | cut -c1-400)"
    return 1
  fi
  if [ "$CHECK" = 1 ]; then
    local up_sum down_sum
    up_sum=$(grep "^vessel-guest: net upload" "$tmp/out" | sed -n 's/.* sha256=\([0-9a-f]*\) .*/\1/p')
    down_sum=$(sed -n 's/.* sha256=\([0-9a-f]*\) .*/\1/p' <<<"$line")
    if [ "$up_sum" != "$(sed -n 's/^up_sha256=//p' "$tmp/peer.out")" ] ||
      [ "$down_sum" != "$(sed -n 's/^down_sha256_sent=//p' "$tmp/peer.out")" ]; then
      failed[$config]="checksum mismatch"
      return 1
    fi
  fi
  samples[$config.up]+=" $(mbps "$up_ms")"
  samples[$config.down]+=" $(mbps "$down_ms")"
  samples[$config.up_irqs]+=" $(grep "^vessel-guest: net upload" "$tmp/out" | sed -n 's/.* irqs=\([0-9]*\).*/\1/p')"
  samples[$config.down_irqs]+=" $(sed -n 's/.* irqs=\([0-9]*\).*/\1/p' <<<"$line")"
}

# shellcheck disable=SC2086 # $1 is a list of space-separated numbers, split on purpose
median() {
  [ -n "${1// /}" ] || { echo n/a; return; }
  printf '%s\n' $1 | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a != "n/a" && b != "n/a" && b > 0) printf "%.2f", a / b; else print "n/a" }'; }

echo "# virtio-net: Vessel soft engine vs QEMU TCG ($(date -u +%Y-%m-%d), $(nproc) cores, $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg))"
echo "# $MB MiB each way over TCP, $([ "$CHECK" = 1 ] && echo "random data + SHA-256 on both ends" || echo "zeros, no hashing"); median of $RUNS; $($LINUX_GUEST_QEMU --version | head -1)"
echo

ONLY="${ONLY:-}"
for _ in $(seq "$([ "$ONLY" = vessel ] && echo 0 || echo "$RUNS")"); do
  run_once qemu "$QEMU_TIMEOUT" "$LINUX_GUEST_QEMU" -accel tcg -M "$LINUX_GUEST_QEMU_MACHINE" -m "$LINUX_GUEST_MEM_MIB" \
    -kernel "$KERNEL" -initrd "$INITRD" -append "$(linux_guest_qemu_cmdline) $GUEST_ARGS" -nographic -no-reboot \
    -device virtio-rng-device -netdev tap,id=n0,ifname=vtap0,script=no,downscript=no \
    -device virtio-net-device,netdev=n0 || true # a hang now and then: the other runs still count
done
for _ in $(seq "$([ "$ONLY" = qemu ] && echo 0 || echo "$RUNS")"); do
  run_once vessel "$TIMEOUT" "$VESSEL" run --engine soft --kernel "$KERNEL" --initrd "$INITRD" \
    --mem "${LINUX_GUEST_MEM_MIB}M" --no-reboot --cmdline "$LINUX_GUEST_CMDLINE $GUEST_ARGS" --rng \
    --net tap=vtap0 || break
done

printf "%-40s %10s %10s %14s\n" "" qemu-tcg vessel "vessel/qemu"
for m in up down up_irqs down_irqs; do
  q=$(median "${samples[qemu.$m]:-}")
  v=$(median "${samples[vessel.$m]:-}")
  case "$m" in
    up) label="guest -> host, MB/s" ;;
    down) label="host -> guest, MB/s" ;;
    up_irqs) label="guest -> host, device interrupts" ;;
    down_irqs) label="host -> guest, device interrupts" ;;
  esac
  printf "%-40s %10s %10s %14s\n" "$label" "$q" "$v" "$(ratio "$v" "$q")"
done
echo "(samples: $(for c in qemu vessel; do for m in up down; do printf '%s.%s:%s  ' "$c" "$m" "${samples[$c.$m]:-}"; done; done))"
status=0
for c in qemu vessel; do
  if [ -n "${failed[$c]:-}" ]; then
    echo "FAILED: $c: ${failed[$c]}"
    status=1
  fi
done
exit "$status"
