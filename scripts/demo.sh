#!/usr/bin/env bash
# Installs Vessel's dependencies, builds it and boots a demo VM.
# Today the demo guest is a Multiboot test kernel on the KVM engine (2 vCPUs: serial output,
# CPL3 compute, SMP bring-up). Once the software engine lands it will be a stock Debian kernel.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DVESSEL_ASAN_TESTS=OFF >/dev/null
cmake --build build -j"$(nproc)" --target vessel guests

echo
echo "== vessel probe"
build/vessel probe
echo
if [ ! -c /dev/kvm ]; then
  echo "demo: /dev/kvm is not available on this machine; the test guests need the KVM engine" >&2
  exit 1
fi
for guest in hello cpl3-compute smp; do
  echo "== vessel run --engine kvm --cpus 2 --kernel build/guests/$guest.elf"
  status=0
  build/vessel run --engine kvm --cpus 2 --mem 256M --kernel "build/guests/$guest.elf" \
    --cmdline "demo" --log-level error </dev/null || status=$?
  echo "(exit status $status; 33 = the guest reported PASS through the debug-exit port)"
  echo
done
