#!/usr/bin/env bash
# Installs every build, test and benchmark dependency of Vessel from Debian 12's archive.
# Idempotent: packages already present are skipped by apt.
set -euo pipefail

PKGS=(
  # toolchain
  build-essential cmake ninja-build ccache clang lld libclang-rt-14-dev clang-format pkg-config
  binutils
  # libraries (see README "Dependencies")
  libzydis-dev libxbyak-dev nlohmann-json3-dev libcli11-dev libspdlog-dev libfmt-dev
  zlib1g-dev liblzma-dev libzstd-dev liblz4-dev libbz2-dev liburing-dev libseccomp-dev libhttp-parser-dev libxxhash-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  # test guests, benchmarks, guest images
  python3 qemu-system-x86 acpica-tools busybox-static cpio e2fsprogs iproute2 xz-utils gzip zstd lz4 bzip2 curl gdb
  # API tests: a Python client and the OpenAPI validation
  python3-requests-unixsocket python3-jsonschema python3-yaml python3-prometheus-client
)

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -ne 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "install-deps: all dependencies present"
fi
