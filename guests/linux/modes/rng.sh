# vessel.mode=rng: the virtio-rng device as the guest's hardware RNG.
#   vessel-guest: rng_current=<driver>        (/sys/class/misc/hw_random/rng_current)
#   vessel-guest: hwrng bytes=<n> distinct=<distinct byte values in 64 KiB> sha256=<of the data>
current=$(cat /sys/class/misc/hw_random/rng_current 2>/dev/null)
echo "vessel-guest: rng_current=${current:-none}"
if dd if=/dev/hwrng of=/tmp/rng bs=4096 count=16 2>/dev/null; then
  n=$(wc -c </tmp/rng)
  distinct=$(od -An -v -tu1 -w1 /tmp/rng | sort -u | wc -l)
  set -- $(sha256sum </tmp/rng)
  echo "vessel-guest: hwrng bytes=$n distinct=$distinct sha256=$1"
else
  echo "vessel-guest: hwrng FAILED"
fi
