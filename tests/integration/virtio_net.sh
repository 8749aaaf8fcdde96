#!/usr/bin/env bash
# linux.soft.virtio.net: a stock Debian kernel on the soft engine with a virtio-net device on a
# tap, all inside a private network namespace (nothing reaches the host's network):
#   host (namespace)  vtap0 10.99.0.1/24, tests/integration/virtio_net_peer.py on 5001/5002
#   guest             eth0 10.99.0.2/24, guests/linux/modes/net.sh
# Checks: the guest pings the host and the host pings the guest; 64 MiB of random data each way
# over TCP with matching SHA-256 on both ends; Vessel powers off cleanly. Prints the throughput.
# The VM also gets virtio-rng: without a hardware RNG the guest's /dev/urandom (the test data)
# waits for the kernel's jitter entropy, which the soft engine does not provide quickly.
# usage: virtio_net.sh [--mb N] [--timeout S] [--cpus N]
# Exit 0 = pass, 1 = fail, 77 = skipped (reason printed: not root, no /dev/net/tun, no ip,
# no python3, no kernel or initramfs).
set -uo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
source "$HERE/../../scripts/linux-guest.env"

mb=64
timeout_s=1500 # the guest runs on the software CPU: boot ~10 s, then the transfers
cpus=1
while [ $# -gt 0 ]; do
  case "$1" in
    --mb) mb="$2"; shift 2 ;;
    --timeout) timeout_s="$2"; shift 2 ;;
    --cpus) cpus="$2"; shift 2 ;;
    *) echo "virtio_net.sh: unknown option $1" >&2; exit 1 ;;
  esac
done

skip() { echo "SKIP: $*"; exit 77; }
VESSEL="${VESSEL:?set VESSEL to the vessel binary}"
kernel=$(linux_guest_kernel amd64)
initrd=$(linux_guest_initramfs_modules amd64)
[ "$(id -u)" = 0 ] || skip "needs root (a network namespace and a tap device)"
[ -c /dev/net/tun ] || skip "no /dev/net/tun (modprobe tun)"
command -v ip >/dev/null || skip "no ip command (iproute2)"
command -v python3 >/dev/null || skip "no python3 (the host end of the test)"
[ -s "$kernel" ] || skip "no kernel $kernel (scripts/fetch-kernels.sh fetches it)"
[ -s "$initrd" ] || skip "no initramfs $initrd (scripts/build-initramfs.sh amd64 builds it)"
# (the archive is several concatenated cpio archives: look for the name in its newc headers)
[ "$(gzip -dc "$initrd" | grep -ac 'vessel/net\.sh')" -gt 0 ] ||
  skip "$initrd has no vessel/net.sh test mode (rerun scripts/build-initramfs.sh amd64)"

ns="vessel-test-$$"
tmp=$(mktemp -d)
peer_pid=""
cleanup() {
  [ -n "$peer_pid" ] && kill "$peer_pid" 2>/dev/null
  ip netns del "$ns" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
ip netns add "$ns" || skip "cannot create network namespace $ns"
ip -n "$ns" link set lo up
ip -n "$ns" tuntap add dev vtap0 mode tap || { echo "FAIL: ip tuntap add in $ns"; exit 1; }
ip -n "$ns" addr add 10.99.0.1/24 dev vtap0
ip -n "$ns" link set vtap0 up

ip netns exec "$ns" python3 "$HERE/virtio_net_peer.py" --addr 10.99.0.1 --guest 10.99.0.2 --mb "$mb" \
  --out "$tmp/peer.out" --timeout "$timeout_s" >"$tmp/peer.log" 2>&1 &
peer_pid=$!
for _ in $(seq 100); do grep -q ready "$tmp/peer.log" 2>/dev/null && break; sleep 0.1; done
grep -q ready "$tmp/peer.log" || { echo "FAIL: the host peer did not start:"; cat "$tmp/peer.log"; exit 1; }

cmd=("$VESSEL" run --engine soft --kernel "$kernel" --initrd "$initrd" --mem "${LINUX_GUEST_MEM_MIB}M"
  --cpus "$cpus" --no-reboot --net tap=vtap0,mac=52:54:00:00:99:02 --rng
  --cmdline "$LINUX_GUEST_CMDLINE vessel.mode=net vessel.net.mb=$mb vessel.net.addr=10.99.0.2/24 vessel.net.host=10.99.0.1")
start=$(date +%s%N)
timeout --kill-after=5 "$timeout_s" ip netns exec "$ns" "${cmd[@]}" </dev/null 2>"$tmp/err" | tr -d '\r' >"$tmp/out"
rc=${PIPESTATUS[0]}
ms=$(( ($(date +%s%N) - start) / 1000000 ))

echo "--- command: ip netns exec $ns ${cmd[*]}"
echo "--- exit status: $rc after $ms ms"
echo "--- stdout:"; head -c 30000 "$tmp/out"
echo "--- stderr:"; head -c 20000 "$tmp/err"
echo "--- host peer:"; cat "$tmp/peer.log" "$tmp/peer.out" 2>/dev/null
if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
  echo "FAIL: timed out after ${timeout_s}s"; exit 1
fi

fail=0
ok() { echo "ok   $*"; }
bad() { echo "FAIL $*"; fail=1; }
expect() { # regex, what
  if grep -Eq -- "$1" "$tmp/out"; then ok "$2"; else bad "$2: stdout lacks /$1/"; fi
}
peer() { sed -n "s/^$1=//p" "$tmp/peer.out" 2>/dev/null; }
field() { # line-regex, key: value of key=... on the first guest line matching
  grep -E -- "$1" "$tmp/out" | head -n 1 | tr ' ' '\n' | sed -n "s/^$2=//p" | head -n 1
}

[ "$rc" = 0 ] && ok "exit status 0" || bad "exit status $rc, expected 0"
expect "^vessel-guest: net eth0 mac=52:54:00:00:99:02 " "the guest has eth0 with the configured MAC"
expect "^vessel-guest: net ping host=ok" "the guest pings the host"
[ "$(peer ping)" = ok ] && ok "the host pings the guest" || bad "the host cannot ping the guest"

bytes=$((mb * 1048576))
up_sum=$(field "^vessel-guest: net upload" sha256)
up_ms=$(field "^vessel-guest: net upload" ms)
if [ -n "$up_sum" ] && [ "$up_sum" = "$(peer up_sha256)" ] && [ "$(peer up_bytes)" = "$bytes" ]; then
  ok "guest -> host: $bytes bytes, sha256 $up_sum on both ends"
else
  bad "guest -> host: guest sent sha256 '$up_sum', host got $(peer up_bytes) bytes, sha256 '$(peer up_sha256)'"
fi
down_sum=$(field "^vessel-guest: net download" sha256)
down_bytes=$(field "^vessel-guest: net download" bytes)
down_ms=$(field "^vessel-guest: net download" ms)
if [ -n "$down_sum" ] && [ "$down_sum" = "$(peer down_sha256_sent)" ] && [ "$down_bytes" = "$bytes" ]; then
  ok "host -> guest: $bytes bytes, sha256 $down_sum on both ends"
else
  bad "host -> guest: host sent sha256 '$(peer down_sha256_sent)', guest got $down_bytes bytes, sha256 '$down_sum'"
fi
expect "^vessel-guest: net done" "the guest finished"
expect "reboot: Power down" "power-off through ACPI"
grep -Eq "Kernel panic|reboot: Restarting system" "$tmp/out" && bad "the kernel panicked or reset"

# Throughput, timed by the host (the guest's clock is not the reference): guest -> host from the
# connection to EOF, host -> guest from the connection until the guest says it has read it all.
# The guest makes and hashes its data before and after (files on a tmpfs), not while sending.
mbps() { [ -n "$2" ] && [ "$2" -gt 0 ] && awk -v b="$1" -v ms="$2" 'BEGIN { printf "%.2f", b / ms / 1000 }' || echo "?"; }
echo "throughput: guest->host $(mbps "$bytes" "$(peer up_ms)") MB/s, host->guest $(mbps "$bytes" "$(peer down_ms)") MB/s" \
  "(guest-timed: $(mbps "$bytes" "$up_ms"), $(mbps "$bytes" "$down_ms"))"
[ "$fail" = 0 ] && echo "PASS"
exit "$fail"
