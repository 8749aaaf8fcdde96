#!/usr/bin/env bash
# Builds the Linux test guest's initramfs: Debian's busybox-static and guests/linux/init in a gzip'd
# cpio (newc) archive, cached outside the clone in ~/.cache/vessel/initramfs (VESSEL_CACHE
# overrides ~/.cache/vessel) and rebuilt only when its inputs change: the file name carries the
# busybox package version and a hash of the init script and of this script.
# Prints the archive's path on stdout; a stable link initramfs.cpio.gz points at it.
#
# With a kernel flavour (`build-initramfs.sh amd64` or `cloud-amd64`), the archive also carries that
# kernel's modules (~/.cache/vessel/kernels/modules-<flavour>, from scripts/fetch-kernels.sh) in
# /lib/modules with their load order, for the virtio device tests; its stable link is
# initramfs-<flavour>.cpio.gz. Modules must match the kernel exactly, hence one archive per kernel.
#
# Archive layout: /init, /vessel/*.sh (extra test modes, guests/linux/modes), /bin/busybox (applet links are made at boot by `busybox --install -s`), /bin/vsock-tool,
# empty /proc /sys /dev /tmp /root /etc /sbin /usr/bin /usr/sbin, /dev/console (so the kernel can
# give init a console before devtmpfs is mounted), and /lib/modules, empty: the hook for kernel
# modules (see the "kernel modules hook" in guests/linux/init).
# The archive is reproducible (owner root, mtime 0), and building it needs no root.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
INIT="$ROOT/guests/linux/init"
MODES="$ROOT/guests/linux/modes"
FLAVOUR="${1:-}"
CACHE="${VESSEL_CACHE:-$HOME/.cache/vessel}/initramfs"
BUSYBOX=/bin/busybox

if ! dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q "install ok installed"; then
  echo "build-initramfs: installing busybox-static" >&2
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends busybox-static cpio >&2
fi
file -L "$BUSYBOX" 2>/dev/null | grep -q "statically linked" ||
  { echo "build-initramfs: $BUSYBOX is not a static binary (busybox-static expected)" >&2; exit 1; }

# --- vsock-tool (virtio-vsock test mode): busybox has no AF_VSOCK, so the archive carries a tiny
# static client/server, guests/linux/vsock-tool.c, as /bin/vsock-tool (its source is in the hash).
VSOCK_TOOL_SRC="$ROOT/guests/linux/vsock-tool.c"
build_vsock_tool() { # output path
  gcc -static -Os -s -Wall -o "$1" "$VSOCK_TOOL_SRC" ||
    { echo "build-initramfs: cannot build $VSOCK_TOOL_SRC (gcc with static glibc needed)" >&2; exit 1; }
}
# --- end vsock-tool ---

bb_version=$(dpkg-query -W -f='${Version}' busybox-static)
hash=$(cat "$INIT" "$0" "$MODES"/*.sh "$VSOCK_TOOL_SRC" | sha256sum | cut -c1-12)
name="vessel-busybox-$(tr -c 'A-Za-z0-9.+\n-' _ <<<"$bb_version")-$hash.cpio.gz"
mkdir -p "$CACHE"
out="$CACHE/$name"

# One newc header plus name for a file without data (directory or device node).
newc_entry() { # path, mode (octal), device major, device minor
  local path="$1" mode=$((8#$2)) major="$3" minor="$4" namesize=$((${#1} + 1))
  printf '070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%s\0' \
    0 "$mode" 0 0 1 0 0 0 0 "$major" "$minor" "$namesize" 0 "$path"
  # the 110-byte header plus the name is padded to a multiple of 4
  local pad=$(( (4 - (110 + namesize) % 4) % 4 ))
  head -c "$pad" /dev/zero
}

if [ ! -s "$out" ]; then
  stage=$(mktemp -d)
  trap 'rm -rf "$stage"' EXIT
  mkdir -p "$stage/root/"{bin,sbin,usr/bin,usr/sbin,proc,sys,tmp,root,etc,lib/modules,vessel}
  cp "$BUSYBOX" "$stage/root/bin/busybox"
  build_vsock_tool "$stage/root/bin/vsock-tool"
  cp "$MODES"/*.sh "$stage/root/vessel/"
  cp "$INIT" "$stage/root/init"
  chmod 755 "$stage/root/init" "$stage/root/bin/busybox"
  find "$stage/root" -exec touch -h -d @0 {} +
  {
    # Device nodes cannot be made without root: /dev and /dev/console are written by hand as their
    # own archive, which the kernel unpacks first (it accepts concatenated archives).
    newc_entry dev 40755 0 0
    newc_entry dev/console 20600 5 1
    newc_entry 'TRAILER!!!' 0 0 0
    (cd "$stage/root" && find . -mindepth 1 | LC_ALL=C sort | sed 's|^\./||' |
      cpio --quiet -o -H newc -R 0:0 --reproducible)
  } | gzip -9 -n >"$stage/initramfs.cpio.gz"
  # Keep only the current archive.
  find "$CACHE" -maxdepth 1 -name 'vessel-busybox-*.cpio.gz' ! -name "$name" -delete
  mv "$stage/initramfs.cpio.gz" "$out"
  echo "build-initramfs: built $out" >&2
fi
ln -sfn "$name" "$CACHE/initramfs.cpio.gz"
[ -n "$FLAVOUR" ] || { echo "$out"; exit 0; }

# The base archive plus one with the kernel's modules (the kernel unpacks concatenated archives).
modules="${VESSEL_CACHE:-$HOME/.cache/vessel}/kernels/modules-$FLAVOUR"
[ -s "$modules/load" ] || { echo "build-initramfs: no $modules/load (run scripts/fetch-kernels.sh)" >&2; exit 1; }
version=$(basename "$(readlink -f "$modules")")
mhash=$(cat "$out" "$modules/load" | sha256sum | cut -c1-12)
mname="vessel-busybox-$version-$mhash.cpio.gz"
mout="$CACHE/$mname"
if [ ! -s "$mout" ]; then
  stage=$(mktemp -d)
  trap 'rm -rf "$stage"' EXIT
  mkdir -p "$stage/root/lib/modules"
  cp "$modules"/*.ko "$modules/load" "$stage/root/lib/modules/"
  find "$stage/root" -exec touch -h -d @0 {} +
  cp "$out" "$stage/all.cpio.gz"
  (cd "$stage/root" && find lib -mindepth 1 | LC_ALL=C sort |
    cpio --quiet -o -H newc -R 0:0 --reproducible) | gzip -9 -n >>"$stage/all.cpio.gz"
  find "$CACHE" -maxdepth 1 -name "vessel-busybox-$version-*.cpio.gz" ! -name "$mname" -delete
  mv "$stage/all.cpio.gz" "$mout"
  echo "build-initramfs: built $mout" >&2
fi
ln -sfn "$mname" "$CACHE/initramfs-$FLAVOUR.cpio.gz"
echo "$mout"
