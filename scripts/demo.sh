#!/usr/bin/env bash
# Installs Vessel's dependencies, builds it and boots a demo VM: Debian's stock kernel
# (linux-image-amd64, fetched with apt-get download) with a busybox initramfs, on the engine
# `--engine auto` picks for this host (the software engine where KVM cannot run guest kernels
# natively, like our PVM hosts). The guest prints its CPU count, hashes 32 MiB, runs a gzip round
# trip and a shell loop, and powers off through ACPI. Then a test guest on every usable engine.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DVESSEL_ASAN_TESTS=OFF >/dev/null
cmake --build build -j"$(nproc)" --target vessel guests
scripts/fetch-kernels.sh >/dev/null
initramfs=$(scripts/build-initramfs.sh)
# shellcheck source=linux-guest.env
. scripts/linux-guest.env

echo
echo "== vessel probe"
build/vessel probe
echo
kernel=$(linux_guest_kernel amd64)
echo "== vessel run --engine auto --cpus 2 --mem 256M --kernel $kernel --initrd $initramfs"
status=0
build/vessel run --engine auto --cpus 2 --mem 256M --kernel "$kernel" --initrd "$initramfs" \
  --cmdline "$LINUX_GUEST_CMDLINE" </dev/null || status=$?
echo "(exit status $status; 0 = the guest powered off through ACPI)"
echo
engines=(soft)
if [ -c /dev/kvm ]; then engines+=(kvm); fi
for engine in "${engines[@]}"; do
  echo "== vessel run --engine $engine --cpus 2 --kernel build/guests/smp.elf"
  status=0
  build/vessel run --engine "$engine" --cpus 2 --mem 256M --kernel build/guests/smp.elf --log-level error \
    </dev/null || status=$?
  echo "(exit status $status; 33 = the guest reported PASS through the debug-exit port)"
  echo
done

# The control plane: a VM in the background, driven through its API socket (Firecracker's API)
# and the verbs that use it.
echo "== vessel run --detach --id demo ... (a guest that idles), then the verbs and the API"
build/vessel run --detach --id demo --engine auto --cpus 2 --mem 256M --kernel "$kernel" --initrd "$initramfs" \
  --cmdline "$LINUX_GUEST_CMDLINE vessel.mode=api vessel.api=idle"
# Wait until the guest is up: its console's history (attached for a moment, without a terminal)
# shows the idle line.
for _ in $(seq 150); do
  timeout 2 build/vessel console demo --history 65536 </dev/null 2>/dev/null | grep -q "vessel-guest: api idle" && break
done
build/vessel ls
sock=$(build/vessel info demo --json | python3 -c 'import json, sys; print(json.load(sys.stdin)["api_socket"])')
echo "-- curl --unix-socket $sock http://localhost/"
curl -s --unix-socket "$sock" http://localhost/; echo
echo "-- curl --unix-socket $sock -X PATCH http://localhost/vm -d '{\"state\": \"Paused\"}'"
curl -s --unix-socket "$sock" -X PATCH http://localhost/vm -d '{"state": "Paused"}'
build/vessel ls
build/vessel resume demo
echo "-- vessel stop demo (Ctrl+Alt+Del; the guest powers off)"
build/vessel stop demo --timeout 120 && echo "(stopped)"
