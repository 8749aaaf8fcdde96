# vessel.mode=net: virtio-net against a host peer (tests/integration/virtio_net_peer.py) listening
# on the host end of the tap: TCP port 5001 takes an upload, port 5002 sends a download, and a
# connection to port 5003 tells the peer the download has been read (so that it can time it).
# Settings from the kernel command line (defaults in brackets):
#   vessel.net.addr=[10.99.0.2/24]  this guest's eth0 address
#   vessel.net.host=[10.99.0.1]     the host's (the peer's) address
#   vessel.net.mb=[64]              MiB sent each way
#   vessel.net.check=[1]            1: random data, SHA-256 of everything sent and received;
#                                   0: zeros, no hashing (bench/virtio-net.sh; quicker)
#   vessel.net.dir=[both]           up (guest -> host only), down (host -> guest only) or both
# Output:
#   vessel-guest: net eth0 mac=<mac> addr=<addr>
#   vessel-guest: net ping host=ok|FAILED
#   vessel-guest: net upload bytes=<n> sha256=<hash|-> ms=<elapsed> irqs=<n> idle=<%> peer: <the peer's reply line>
#   vessel-guest: net download bytes=<n> sha256=<hash|-> ms=<elapsed> irqs=<n> idle=<%>
#   vessel-guest: net done
# (ms: the transfer alone, guest clock; irqs: the device's interrupts meanwhile; idle: the share
# of CPU time the guest spent idle meanwhile)
addr=10.99.0.2/24 host=10.99.0.1 mb=64 check=1 dir=both
for word in $(cat /proc/cmdline); do
  case "$word" in
    vessel.net.addr=*) addr=${word#*=} ;;
    vessel.net.host=*) host=${word#*=} ;;
    vessel.net.mb=*) mb=${word#*=} ;;
    vessel.net.check=*) check=${word#*=} ;;
    vessel.net.dir=*) dir=${word#*=} ;;
  esac
done

# Jiffies (USER_HZ ticks) all CPUs spent idle so far, and in total.
cpu_idle() { awk '$1 == "cpu" { print $5 + $6 }' /proc/stat; }
cpu_total() { awk '$1 == "cpu" { s = 0; for (i = 2; i <= NF; i++) s += $i; print s }' /proc/stat; }
# The idle share (%) between the idle0/total0 and idle1/total1 readings.
idle_pct() { echo $(((idle1 - idle0) * 100 / (total1 - total0 + 1))); }

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

  # The data lives in files on a tmpfs of its own, made and hashed before and after the
  # transfers: the timed part is only nc and the network, not /dev/urandom or SHA-256 (and not
  # a pipeline of four processes taking turns on one slow vCPU).
  mkdir -p /data
  mount -t tmpfs -o size=$((mb + 8))m tmpfs /data || echo "vessel-guest: net tmpfs FAILED"
  bytes=$((mb * 1048576))

  if [ "$dir" != down ]; then
    # Guest -> host. busybox nc half-closes the connection at the end of its stdin, then prints
    # what the peer answers (byte count, hash, and whether it could ping us) until the peer closes.
    if [ "$check" = 1 ]; then
      dd if=/dev/urandom of=/data/up bs=1M count="$mb" 2>/dev/null
      set -- $(sha256sum /data/up)
      sum=$1
    else
      dd if=/dev/zero of=/data/up bs=1M count="$mb" 2>/dev/null
      sum=-
    fi
    irq0=$(net_irqs) idle0=$(cpu_idle) total0=$(cpu_total)
    t0=$(uptime_ms)
    nc "$host" 5001 </data/up >/tmp/up.reply
    t1=$(uptime_ms)
    irq1=$(net_irqs) idle1=$(cpu_idle) total1=$(cpu_total)
    rm -f /data/up
    echo "vessel-guest: net upload bytes=$bytes sha256=$sum ms=$((t1 - t0)) irqs=$((irq1 - irq0)) idle=$(idle_pct) peer: $(head -n 1 /tmp/up.reply)"
  fi

  if [ "$dir" != up ]; then
    # Host -> guest: the peer sends as soon as we connect and closes when done; the connection to
    # port 5003 tells it we have everything.
    irq0=$(net_irqs) idle0=$(cpu_idle) total0=$(cpu_total)
    t0=$(uptime_ms)
    nc "$host" 5002 </dev/null >/data/down
    t1=$(uptime_ms)
    irq1=$(net_irqs) idle1=$(cpu_idle) total1=$(cpu_total)
    nc "$host" 5003 </dev/null
    sum=-
    if [ "$check" = 1 ]; then
      set -- $(sha256sum /data/down)
      sum=$1
    fi
    echo "vessel-guest: net download bytes=$(wc -c </data/down) sha256=$sum ms=$((t1 - t0)) irqs=$((irq1 - irq0)) idle=$(idle_pct)"
    rm -f /data/down
  fi
  umount /data
  echo "vessel-guest: net done"
}
net_test
