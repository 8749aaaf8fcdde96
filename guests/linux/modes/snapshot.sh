# vessel.mode=snapshot: a stateful workload for the snapshot tests (tests/integration/snapshot_*.py).
#
# A hash chain: link i's hash is the first 16 hex digits of sha256("<previous hash> <i>"), starting
# from "seed". Every link is printed on the console and, when /dev/vda holds an ext2/3/4 file
# system, appended to /mnt/chain and synced, so that a restored guest that skips or repeats a
# link, or loses a flushed write, shows it. Each link also carries 8 bytes of /dev/urandom
# (clones of one snapshot must print different ones).
#   vessel-guest: snap disk=<yes|no> vsock=<port|no>
#   vessel-guest: chain <i> <hash> rand=<16 hex digits>
#
# vessel.snap.vsock=PORT: a background loop connects to the host (CID 2) on PORT and sends a line
# every 200 ms; when the connection ends (a restore resets the transport) it says so and connects
# again:
#   vessel-guest: snap vsock connect <n>
#   vessel-guest: snap vsock ended <n> status=<vsock-tool's exit status>
# vessel.snap.delay=[0.2]: seconds between links.
vport=no delay=0.2
for word in $(cat /proc/cmdline); do
  case "$word" in
    vessel.snap.vsock=*) vport=${word#vessel.snap.vsock=} ;;
    vessel.snap.delay=*) delay=${word#vessel.snap.delay=} ;;
  esac
done

disk=no
if [ -b /dev/vda ]; then
  mkdir -p /mnt
  if mount -t ext4 /dev/vda /mnt 2>/dev/null; then disk=yes; fi
fi
echo "vessel-guest: snap disk=$disk vsock=$vport"

if [ "$vport" != no ]; then
  (
    n=0
    while :; do
      n=$((n + 1))
      echo "vessel-guest: snap vsock connect $n"
      (while :; do echo "vsock-line $n $(cut -d' ' -f1 /proc/uptime)"; sleep 0.2; done) | vsock-tool connect 2 "$vport" >/dev/null 2>/tmp/vsock.err
      echo "vessel-guest: snap vsock ended $n status=$?"
      sleep 0.5
    done
  ) &
fi

h=seed
i=0
while :; do
  h=$(echo "$h $i" | sha256sum | cut -c1-16)
  r=$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')
  if [ "$disk" = yes ]; then
    echo "$i $h" >>/mnt/chain
    sync
  fi
  echo "vessel-guest: chain $i $h rand=$r"
  i=$((i + 1))
  sleep "$delay"
done
