#!/usr/bin/env bash
# Fetches Debian's current stock kernels with `apt-get download` and unpacks their vmlinuz into
# ~/.cache/vessel/kernels (outside the clone, reused across builds):
#   vmlinuz-<version>-amd64, vmlinuz-<version>-cloud-amd64, and stable names vmlinuz-amd64 and
#   vmlinuz-cloud-amd64 pointing at them.
set -euo pipefail
CACHE="${VESSEL_CACHE:-$HOME/.cache/vessel}/kernels"
mkdir -p "$CACHE"
cd "$CACHE"

fetch() { # meta-package name, stable link name
  local meta="$1" link="$2" pkg
  # The meta-package depends on the versioned image package; resolve it from apt's metadata.
  pkg=$(apt-cache depends "$meta" 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
  if [ -z "$pkg" ]; then
    apt-get update -qq >/dev/null 2>&1 || true
    pkg=$(apt-cache depends "$meta" 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
  fi
  [ -n "$pkg" ] || { echo "fetch-kernels: cannot resolve $meta" >&2; return 1; }
  local version=${pkg#linux-image-}
  # Signed images are named linux-image-X-amd64 with a -unsigned twin; either carries vmlinuz.
  if [ ! -s "vmlinuz-$version" ]; then
    local tmp
    tmp=$(mktemp -d)
    chmod 755 "$tmp" # apt-get download hands the file to the _apt user
    (cd "$tmp" && apt-get download -qq "$pkg" >/dev/null)
    dpkg-deb --fsys-tarfile "$tmp"/*.deb | tar -xO "./boot/vmlinuz-$version" > "vmlinuz-$version.part"
    mv "vmlinuz-$version.part" "vmlinuz-$version"
    rm -rf "$tmp"
    echo "fetch-kernels: $pkg -> $CACHE/vmlinuz-$version"
  fi
  ln -sf "vmlinuz-$version" "$link"
}

fetch linux-image-amd64 vmlinuz-amd64
fetch linux-image-cloud-amd64 vmlinuz-cloud-amd64
ls -l "$CACHE"
