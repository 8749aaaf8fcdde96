#!/usr/bin/env bash
# Builds Vessel (release + ASan/UBSan unit tests, test guests) and runs every test through ctest.
# The last lines printed are ctest's summary.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
# Stock Debian kernels for the loader tests (cached in ~/.cache/vessel; tests skip without them).
scripts/fetch-kernels.sh >/dev/null || echo "test.sh: could not fetch Debian kernels; their tests will skip"
# The Linux test guest's busybox initramfs (cached there too; the linux.* tests skip without it).
scripts/build-initramfs.sh >/dev/null || echo "test.sh: could not build the initramfs; the Linux guest tests will skip"
# The same with the generic kernel's virtio modules, for the virtio device tests.
scripts/build-initramfs.sh amd64 >/dev/null || echo "test.sh: could not build the modules initramfs; the virtio tests will skip"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DVESSEL_ASAN_TESTS=ON >/dev/null
cmake --build build -j"$(nproc)"
# The libFuzzer targets (fuzz/): a separate clang build; ctest runs each for a few seconds.
CC=clang CXX=clang++ cmake -S fuzz -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build-fuzz -j"$(nproc)"
cd build
ctest --output-on-failure -j"$(nproc)"
