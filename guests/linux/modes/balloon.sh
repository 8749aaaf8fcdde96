# vessel.mode=balloon: virtio-balloon (vessel run --balloon-target SIZE) giving guest memory back
# to the host. tests/integration/virtio_balloon.sh drives it through the serial console: it
# measures Vessel's resident memory at each "waiting" line and then types a line to go on.
#
# The driver inflates to the target as soon as it binds, at module load, before any of this runs,
# when most guest memory has never been touched (so there is nothing for the host to release). To
# see the host's memory shrink, the balloon is unbound first (the driver deflates and resets the
# device), memory is dirtied and freed again, and the driver is bound once more: it inflates to
# the same target, now taking pages the host had to back.
#   vessel-guest: balloon device=<virtioN> <meminfo>     (after boot: the balloon is inflated)
#   vessel-guest: balloon unbound <meminfo>              (the balloon is empty)
#   vessel-guest: balloon touched mb=<MiB written and freed> <meminfo>
#   vessel-guest: balloon waiting (touched)              (host: measure, then type a line)
#   vessel-guest: balloon inflated mb=<drop of MemFree after binding> ms=<time> <meminfo>
#   vessel-guest: balloon waiting (inflated)             (host: measure, then type a line)
# <meminfo> = "total_kb=<MemTotal> free_kb=<MemFree>". Errors: "vessel-guest: balloon FAILED <why>".
drv=/sys/bus/virtio/drivers/virtio_balloon
meminfo() {
  awk '/^MemTotal:/ { t = $2 } /^MemFree:/ { f = $2 } END { printf "total_kb=%d free_kb=%d", t, f }' /proc/meminfo
}
free_kb() { awk '/^MemFree:/ { print $2 }' /proc/meminfo; }

balloon_mode() {
  dev=$(ls -d "$drv"/virtio* 2>/dev/null | head -n 1)
  [ -n "$dev" ] || { echo "vessel-guest: balloon FAILED no device bound to virtio_balloon"; return; }
  dev=${dev##*/}
  echo "vessel-guest: balloon device=$dev $(meminfo)"

  echo "$dev" >"$drv/unbind" || { echo "vessel-guest: balloon FAILED unbind"; return; }
  echo "vessel-guest: balloon unbound $(meminfo)"

  # Dirty all but ~48 MiB of free memory through a tmpfs file, then free it. (/tmp is a 64 MiB
  # tmpfs; this one is sized for the job.)
  fill=$(( $(free_kb) / 1024 - 48 ))
  [ "$fill" -gt 64 ] || { echo "vessel-guest: balloon FAILED only $fill MiB to dirty"; return; }
  mkdir -p /mnt/balloon
  mount -t tmpfs -o size=$((fill + 8))m tmpfs /mnt/balloon
  dd if=/dev/zero of=/mnt/balloon/fill bs=1M count="$fill" 2>/dev/null
  rm -f /mnt/balloon/fill
  umount /mnt/balloon
  echo "vessel-guest: balloon touched mb=$fill $(meminfo)"
  echo "vessel-guest: balloon waiting (touched)"
  read -r _

  before=$(free_kb)
  t0=$(uptime_ms)
  echo "$dev" >"$drv/bind" || { echo "vessel-guest: balloon FAILED bind"; return; }
  # Inflated pages leave MemFree (with DEFLATE_ON_OOM MemTotal stays). Wait for 60 MiB of the
  # 64 MiB target: other allocations move MemFree a little either way.
  drop=0
  i=0
  while [ $i -lt 600 ]; do
    drop=$(( (before - $(free_kb)) / 1024 ))
    [ "$drop" -ge 60 ] && break
    sleep 0.5
    i=$((i + 1))
  done
  if [ "$drop" -ge 60 ]; then
    echo "vessel-guest: balloon inflated mb=$drop ms=$(( $(uptime_ms) - t0 )) $(meminfo)"
  else
    echo "vessel-guest: balloon FAILED MemFree dropped by only $drop MiB in 300 s $(meminfo)"
  fi
  echo "vessel-guest: balloon waiting (inflated)"
  read -r _
}
balloon_mode
