# vessel.mode=net: virtio-net against a host peer (tests/integration/virtio_net_peer.py) listening
# on the host end of the tap: TCP port 5001 takes an upload, port 5002 sends a download, and a
# connection to port 5003 tells the peer the download has been read (so that it can time it).
# Settings from the kernel command line (defaults in brackets):
#   vessel.net.addr=[10.99.0.2/24]  this guest's eth0 address
#   vessel.net.host=[10.99.0.1]     the host's (the peer's) address
#   vessel.net.mb=[64]              MiB sent each way
#   vessel.net.check=[1]            1: random data, SHA-256 of everything sent and received;
#                                   0: zeros, no hashing (raw throughput; bench/virtio-net.sh)
# Output:
#   vessel-guest: net eth0 mac=<mac> addr=<addr>
#   vessel-guest: net ping host=ok|FAILED
#   vessel-guest: net upload bytes=<n> sha256=<hash|-> ms=<elapsed> irqs=<n> peer: <the peer's reply line>
#   vessel-guest: net download bytes=<n> sha256=<hash|-> ms=<elapsed> irqs=<n>
# (irqs: the device's interrupts during the transfer, from /proc/interrupts)
#   vessel-guest: net done
addr=10.99.0.2/24 host=10.99.0.1 mb=64 check=1
for word in $(cat /proc/cmdline); do
  case "$word" in
    vessel.net.addr=*) addr=${word#*=} ;;
    vessel.net.host=*) host=${word#*=} ;;
    vessel.net.mb=*) mb=${word#*=} ;;
    vessel.net.check=*) check=${word#*=} ;;
  esac
done

# Interrupts of eth0's virtio device so far (all CPUs).
net_irqs() {
  awk -v dev="$dev" '$NF == dev { for (i = 2; i <= NF && $i ~ /^[0-9]+$/; i++) s += $i } END { print s + 0 }' \
    /proc/interrupts
}

net_test() {
  if [ ! -e /sys/class/net/eth0 ]; then
    echo "vessel-guest: net no eth0 FAILED ($(ls /sys/class/net | tr '\n' ' '))"
    return
  fi
  ip link set lo up
  ip addr add "$addr" dev eth0 && ip link set eth0 up || echo "vessel-guest: net ip config FAILED"
  echo "vessel-guest: net eth0 mac=$(cat /sys/class/net/eth0/address) addr=$addr"
  dev=$(basename "$(readlink /sys/class/net/eth0/device)")

  if ping -c 3 -W 5 "$host" >/tmp/ping.out 2>&1; then
    echo "vessel-guest: net ping host=ok"
  else
    echo "vessel-guest: net ping host=FAILED: $(tail -n 2 /tmp/ping.out | tr '\n' ' ')"
  fi

  # Guest -> host. busybox nc half-closes the connection at the end of its stdin, then prints
  # what the peer answers (byte count, hash, and whether it could ping us) until the peer closes.
  bytes=$((mb * 1048576))
  irq0=$(net_irqs)
  if [ "$check" = 1 ]; then
    rm -f /tmp/up.fifo && mkfifo /tmp/up.fifo
    sha256sum </tmp/up.fifo >/tmp/up.sum &
    t0=$(uptime_ms)
    dd if=/dev/urandom bs=1M count="$mb" 2>/dev/null | tee /tmp/up.fifo | nc "$host" 5001 >/tmp/up.reply
    t1=$(uptime_ms)
    wait
    set -- $(cat /tmp/up.sum)
    sum=$1
  else
    t0=$(uptime_ms)
    dd if=/dev/zero bs=1M count="$mb" 2>/dev/null | nc "$host" 5001 >/tmp/up.reply
    t1=$(uptime_ms)
    sum=-
  fi
  irq1=$(net_irqs)
  echo "vessel-guest: net upload bytes=$bytes sha256=$sum ms=$((t1 - t0)) irqs=$((irq1 - irq0)) peer: $(head -n 1 /tmp/up.reply)"

  # Host -> guest: the peer sends as soon as we connect and closes when done.
  rm -f /tmp/dn.fifo && mkfifo /tmp/dn.fifo
  wc -c </tmp/dn.fifo >/tmp/dn.count &
  irq0=$(net_irqs)
  t0=$(uptime_ms)
  if [ "$check" = 1 ]; then
    nc "$host" 5002 </dev/null | tee /tmp/dn.fifo | sha256sum >/tmp/dn.sum
  else
    nc "$host" 5002 </dev/null >/tmp/dn.fifo
    echo - >/tmp/dn.sum
  fi
  t1=$(uptime_ms)
  nc "$host" 5003 </dev/null
  irq1=$(net_irqs)
  wait
  set -- $(cat /tmp/dn.sum)
  echo "vessel-guest: net download bytes=$(cat /tmp/dn.count) sha256=$1 ms=$((t1 - t0)) irqs=$((irq1 - irq0))"
  echo "vessel-guest: net done"
}
net_test
