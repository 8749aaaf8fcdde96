# vessel.mode=console: the virtio console (vessel run --console virtio) as the guest's hvc0.
# tests/integration/virtio_console.sh drives it; lines on hvc0 reach the host's stdout, and the
# host types a line on stdin after the prompt.
#   vessel-guest: hvc0=present|missing             (/sys/class/tty/hvc0)
#   vessel-guest: console active=<consoles>        (/sys/class/tty/console/active)
#   vessel-guest: hvc0 marker <pid and uptime>     (written to /dev/hvc0)
#   vessel-guest: hvc0 waiting for a line          (written to /dev/hvc0: the host's cue)
#   vessel-guest: hvc0 got=<the line read from /dev/hvc0>|TIMEOUT
if [ -e /sys/class/tty/hvc0 ]; then
  echo "vessel-guest: hvc0=present"
  echo "vessel-guest: console active=$(cat /sys/class/tty/console/active 2>/dev/null)"
  # Open hvc0 for reading before the cue, so nothing the host types can arrive before the tty
  # is open. Canonical mode: `read` returns at the newline.
  exec 3</dev/hvc0
  # (Not from /dev/urandom: early in boot its first read can wait a long time for entropy.)
  read -r up _ </proc/uptime
  marker="pid$$-up${up}"
  echo "vessel-guest: hvc0 marker $marker" >/dev/hvc0
  echo "vessel-guest: hvc0 waiting for a line" >/dev/hvc0
  if read -r -t 120 line <&3; then
    echo "vessel-guest: hvc0 got=$line" >/dev/hvc0
  else
    echo "vessel-guest: hvc0 got=TIMEOUT" >/dev/hvc0
  fi
  exec 3<&-
else
  echo "vessel-guest: hvc0=missing"
fi
