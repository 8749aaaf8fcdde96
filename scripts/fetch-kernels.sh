#!/usr/bin/env bash
# Fetches Debian's current stock kernels with `apt-get download` and unpacks their vmlinuz into
# ~/.cache/vessel/kernels (outside the clone, reused across builds):
#   vmlinuz-<version>-amd64, vmlinuz-<version>-cloud-amd64, and stable names vmlinuz-amd64 and
#   vmlinuz-cloud-amd64 pointing at them;
#   modules-<version>/: the modules named in scripts/guest-modules.txt and their dependencies
#   (from the package's modules.dep), flat, plus `load`: their file names in load order.
set -euo pipefail
MODULE_LIST="$(cd "$(dirname "$0")" && pwd)/guest-modules.txt"
CACHE="${VESSEL_CACHE:-$HOME/.cache/vessel}/kernels"
mkdir -p "$CACHE"
cd "$CACHE"

# Copies the wanted modules and their dependencies (depth first, dependencies before users)
# out of an unpacked /lib/modules/<version> into a flat directory with a `load` list.
extract_modules() { # modules dir, output dir
  local src="$1" out="$2"
  rm -rf "$out"
  mkdir -p "$out"
  python3 - "$src" "$out" "$MODULE_LIST" <<'PY'
# The package carries no modules.dep (depmod writes it at install time): dependencies come from
# each module's own .modinfo section ("depends=a,b").
import os, shutil, struct, sys
src, out, wanted_file = sys.argv[1:4]

def modinfo(path):
    data = open(path, "rb").read()
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    sections = [struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize) for i in range(shnum)]
    names_off = sections[shstrndx][4]
    for name, _, _, _, off, size in sections:
        end = data.index(b"\0", names_off + name)
        if data[names_off + name:end] == b".modinfo":
            fields = data[off:off + size].split(b"\0")
            return dict(f.decode().split("=", 1) for f in fields if b"=" in f)
    return {}

by_name = {}
for root, _, files in os.walk(os.path.join(src, "kernel")):
    for f in files:
        if f.endswith(".ko"):
            by_name[f[:-3].replace("-", "_")] = os.path.join(root, f)
builtin = set()
if os.path.exists(os.path.join(src, "modules.builtin")):
    builtin = {os.path.basename(l.strip())[:-3].replace("-", "_") for l in open(os.path.join(src, "modules.builtin"))}
order, seen = [], set()
def visit(key):
    if key in seen:
        return
    seen.add(key)
    if key not in by_name:
        if key in builtin:
            return
        sys.exit(f"fetch-kernels: module {key} is neither in this kernel package nor built in")
    for dep in filter(None, modinfo(by_name[key]).get("depends", "").split(",")):
        visit(dep.replace("-", "_"))
    order.append(by_name[key])
for line in open(wanted_file):
    name = line.split("#")[0].strip()
    if name:
        visit(name.replace("-", "_"))
with open(os.path.join(out, "load"), "w") as load:
    for path in order:
        shutil.copy(path, out)
        load.write(os.path.basename(path) + "\n")
PY
}

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
  local modules_hash
  modules_hash=$(sha256sum <"$MODULE_LIST" | cut -c1-12)
  if [ ! -s "vmlinuz-$version" ] || [ "$(cat "modules-$version/list-hash" 2>/dev/null)" != "$modules_hash" ]; then
    local tmp
    tmp=$(mktemp -d)
    chmod 755 "$tmp" # apt-get download hands the file to the _apt user
    (cd "$tmp" && apt-get download -qq "$pkg" >/dev/null)
    dpkg-deb --fsys-tarfile "$tmp"/*.deb | tar -xO "./boot/vmlinuz-$version" > "vmlinuz-$version.part"
    mkdir -p "$tmp/root"
    dpkg-deb --fsys-tarfile "$tmp"/*.deb | tar -x -C "$tmp/root" "./lib/modules/$version"
    extract_modules "$tmp/root/lib/modules/$version" "modules-$version.part"
    echo "$modules_hash" >"modules-$version.part/list-hash"
    rm -rf "modules-$version"
    mv "modules-$version.part" "modules-$version"
    mv "vmlinuz-$version.part" "vmlinuz-$version"
    rm -rf "$tmp"
    echo "fetch-kernels: $pkg -> $CACHE/vmlinuz-$version, modules-$version ($(wc -l <"modules-$version/load") modules)"
  fi
  ln -sf "vmlinuz-$version" "$link"
  ln -sfn "modules-$version" "modules-${link#vmlinuz-}"
}

fetch linux-image-amd64 vmlinuz-amd64
fetch linux-image-cloud-amd64 vmlinuz-cloud-amd64
ls -l "$CACHE"
