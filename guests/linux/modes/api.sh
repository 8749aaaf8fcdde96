# vessel.mode=api: the guest side of the control-plane tests (tests/integration/api_*.py), chosen
# by vessel.api=<task> on the kernel command line.
#
#   vessel.api=boot (Firecracker's getting-started sequence): /dev/vda is the root drive the API
#   configured (the VMM adds "root=/dev/vda rw" to the command line), an ext4 image holding /known;
#   eth0's address comes from its MAC as Firecracker's example guests do (06:00:AC:10:00:02 →
#   172.16.0.2/30, the host end of the tap being .1).
#     vessel-guest: api cmdline root=<the root= word> mode=<rw|ro>
#     vessel-guest: api rootfs known=<contents of /known>|FAILED
#     vessel-guest: api net eth0 addr=<addr> ping=ok|FAILED
#     vessel-guest: api boot done
#
#   vessel.api=ticker: a line every 100 ms for vessel.api.seconds=[20] seconds (the pause test
#   watches the lines stop and resume), then what the kernel said about its clocks:
#     vessel-guest: tick <n> up_ms=<CLOCK_MONOTONIC-based /proc/uptime> epoch=<date +%s>
#     vessel-guest: ticker clock_complaints=<dmesg lines about unstable clocks, lockups, stalls>
#     vessel-guest: dmesg: <each such line, at most 5>
#     vessel-guest: ticker done
#
#   vessel.api=idle: waits (the CLI tests attach to the console, pause, resume and stop it);
#   Ctrl+Alt+Del reaches the init, which powers off.
#
#   vessel.api=read: O_DIRECT reads of /dev/vda for the rate-limiter test, in two phases; the host
#   changes the limit between them and types a line on the console to start the second.
#     vessel-guest: api read1 bytes=<n> ms=<elapsed>
#     vessel-guest: api read2 waiting
#     vessel-guest: api read2 bytes=<n> ms=<elapsed>
#   (vessel.api.mb=[20]: MiB per phase)
#
#   vessel.api=mmds: the metadata service over eth0 (address from the MAC as for boot), read with
#   busybox wget; V2's session token comes from a PUT sent with nc (busybox wget cannot PUT).
#     vessel-guest: mmds token=<token length>|none
#     vessel-guest: mmds get <path> status=ok|FAILED body=<body, newlines as |>
#     vessel-guest: mmds notoken status=ok|FAILED body=...   (a GET without a token)
#     vessel-guest: mmds json body=<the JSON answer to Accept: application/json>
#     vessel-guest: mmds waiting                              (the host changes the store and types a line)
#     vessel-guest: mmds get2 <path> status=... body=...
#     vessel-guest: mmds done
task=boot seconds=20 mb=20
for word in $(cat /proc/cmdline); do
  case "$word" in
    vessel.api=*) task=${word#vessel.api=} ;;
    vessel.api.seconds=*) seconds=${word#vessel.api.seconds=} ;;
    vessel.api.mb=*) mb=${word#vessel.api.mb=} ;;
  esac
done

api_boot() {
  root= rootmode=
  for word in $(cat /proc/cmdline); do
    case "$word" in root=*) root=$word ;; rw|ro) rootmode=$word ;; esac
  done
  echo "vessel-guest: api cmdline root=${root#root=} mode=$rootmode"
  mkdir -p /mnt/root
  if mount -t ext4 /dev/vda /mnt/root 2>/dev/null; then
    echo "vessel-guest: api rootfs known=$(cat /mnt/root/known 2>/dev/null || echo FAILED)"
    umount /mnt/root
  else
    echo "vessel-guest: api rootfs known=FAILED (no ext4 on /dev/vda)"
  fi
  if [ -e /sys/class/net/eth0 ]; then
    mac=$(cat /sys/class/net/eth0/address)
    # The last four bytes of the MAC are the IPv4 address (Firecracker's fcnet-setup.sh rule).
    set -- $(echo "$mac" | tr ':' ' ')
    addr="$((0x$3)).$((0x$4)).$((0x$5)).$((0x$6))"
    host="$((0x$3)).$((0x$4)).$((0x$5)).$((0x$6 - 1))"
    ip link set lo up
    ip addr add "$addr/30" dev eth0 && ip link set eth0 up
    if ping -c 3 -W 5 "$host" >/dev/null 2>&1; then ping=ok; else ping=FAILED; fi
    echo "vessel-guest: api net eth0 addr=$addr ping=$ping"
  else
    echo "vessel-guest: api net eth0 missing"
  fi
  echo "vessel-guest: api boot done"
}

api_ticker() {
  n=0
  end=$(( $(uptime_ms) + seconds * 1000 ))
  while [ "$(uptime_ms)" -lt "$end" ]; do
    n=$((n + 1))
    echo "vessel-guest: tick $n up_ms=$(uptime_ms) epoch=$(date +%s)"
    usleep 100000
  done
  # What a kernel says when its clocks misbehave: the clocksource watchdog marking one unstable,
  # the lockup detectors, RCU stall warnings, the hung-task detector.
  complaints=$(dmesg | grep -iE 'marking clocksource|timekeeping watchdog|clocksource watchdog|skew|unstable|soft lockup|hard lockup|rcu.*stall|hung_task|blocked for more than')
  echo "vessel-guest: ticker clock_complaints=$(printf '%s' "$complaints" | grep -c .)"
  printf '%s\n' "$complaints" | head -n 5 | while read -r line; do [ -n "$line" ] && echo "vessel-guest: dmesg: $line"; done
  echo "vessel-guest: ticker done"
}

api_read() {
  t0=$(uptime_ms)
  dd if=/dev/vda of=/dev/null bs=1M count="$mb" iflag=direct 2>/dev/null
  t1=$(uptime_ms)
  echo "vessel-guest: api read1 bytes=$((mb * 1048576)) ms=$((t1 - t0))"
  echo "vessel-guest: api read2 waiting"
  read -r _ </dev/console
  t0=$(uptime_ms)
  dd if=/dev/vda of=/dev/null bs=1M count="$mb" skip="$mb" iflag=direct 2>/dev/null
  t1=$(uptime_ms)
  echo "vessel-guest: api read2 bytes=$((mb * 1048576)) ms=$((t1 - t0))"
}

mmds_net() {
  mac=$(cat /sys/class/net/eth0/address)
  set -- $(echo "$mac" | tr ':' ' ')
  ip link set lo up
  ip addr add "$((0x$3)).$((0x$4)).$((0x$5)).$((0x$6))/30" dev eth0 && ip link set eth0 up
  ip route add 169.254.169.254 dev eth0
}

# mmds_get label path [extra wget args...]: one GET, reported on one line. Bounded with timeout(1),
# not wget -T: Debian 12's busybox-static (1.35.0) wget crashes (SIGSEGV) whenever -T is given.
mmds_get() {
  label=$1 path=$2
  shift 2
  if body=$(timeout 10 wget -q -O - "$@" "http://169.254.169.254$path" 2>/tmp/wget.err); then
    echo "vessel-guest: mmds $label $path status=ok body=$(printf '%s' "$body" | tr '\n' '|')"
  else
    echo "vessel-guest: mmds $label $path status=FAILED body=$(tr '\n' '|' </tmp/wget.err)"
  fi
}

api_mmds() {
  mmds_net
  token=$(printf 'PUT /latest/api/token HTTP/1.1\r\nX-metadata-token-ttl-seconds: 21600\r\n\r\n' |
    nc 169.254.169.254 80 | tail -n 1)
  echo "vessel-guest: mmds token=${#token}"
  hdr=""
  [ -n "$token" ] && hdr="X-metadata-token: $token"
  mmds_get get /latest/meta-data/ --header "$hdr"
  mmds_get get /latest/meta-data/ami-id --header "$hdr"
  mmds_get get /latest/meta-data/instance/name --header "$hdr"
  mmds_get notoken /latest/meta-data/ami-id
  if body=$(timeout 10 wget -q -O - --header "$hdr" --header "Accept: application/json" http://169.254.169.254/latest 2>/dev/null); then
    echo "vessel-guest: mmds json body=$body"
  else
    echo "vessel-guest: mmds json body=FAILED"
  fi
  echo "vessel-guest: mmds waiting"
  read -r _ </dev/console
  mmds_get get2 /latest/meta-data/ami-id --header "$hdr"
  echo "vessel-guest: mmds done"
}

case "$task" in
  boot) api_boot ;;
  mmds) api_mmds ;;
  ticker) api_ticker ;;
  read) api_read ;;
  idle)
    echo "vessel-guest: api idle"
    while true; do sleep 1; done
    ;;
  *) echo "vessel-guest: api unknown task $task" ;;
esac
