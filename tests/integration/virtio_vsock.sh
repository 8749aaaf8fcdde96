#!/usr/bin/env bash
# virtio-vsock end to end: Debian's kernel on the soft engine with the busybox initramfs (modules and
# /bin/vsock-tool) in vessel.mode=vsock; the host side (virtio_vsock.py) talks to it through
# Vessel's Unix socket both ways, 1 MiB each (see virtio_vsock.py for the checks).
# usage: virtio_vsock.sh [--kernel amd64|cloud|FILE] [--initrd FILE] [--timeout S]
# Exit 0 = pass, 1 = fail, 77 = skipped (reason printed: no kernel, initramfs or python3).
set -uo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
source "$HERE/../../scripts/linux-guest.env"

kernel=amd64
initrd=""
timeout_s=900
while [ $# -gt 0 ]; do
  case "$1" in
    --kernel) kernel="$2"; shift 2 ;;
    --initrd) initrd="$2"; shift 2 ;;
    --timeout) timeout_s="$2"; shift 2 ;;
    *) echo "virtio_vsock.sh: unknown option $1" >&2; exit 1 ;;
  esac
done
[ -n "$initrd" ] || initrd=$(linux_guest_initramfs_modules "$kernel")
kernel=$(linux_guest_kernel "$kernel")
VESSEL="${VESSEL:?set VESSEL to the vessel binary}"

[ -s "$kernel" ] || { echo "SKIP: no kernel $kernel (scripts/fetch-kernels.sh fetches it)"; exit 77; }
[ -s "$initrd" ] || { echo "SKIP: no initramfs $initrd (scripts/build-initramfs.sh amd64 builds it)"; exit 77; }
command -v python3 >/dev/null || { echo "SKIP: no python3"; exit 77; }
# The archive must carry the vsock mode and its tool (an archive built before they existed does not).
# (A plain search of the uncompressed bytes: the file is several concatenated cpio archives.)
if ! { gzip -dc "$initrd" 2>/dev/null || true; } | grep -aq "vessel/vsock\.sh"; then
  echo "SKIP: $initrd has no vessel/vsock.sh (rebuild it: scripts/build-initramfs.sh amd64)"; exit 77
fi

exec python3 "$HERE/virtio_vsock.py" --vessel "$VESSEL" --kernel "$kernel" --initrd "$initrd" \
  --cmdline "$LINUX_GUEST_CMDLINE" --mem "${LINUX_GUEST_MEM_MIB}M" --timeout "$timeout_s"
