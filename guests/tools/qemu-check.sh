#!/bin/sh
# Boots a test guest under QEMU and checks that it passed: exit status 33 (debug-exit 0x10)
# and a "PASS" line on COM1. The serial output is copied to stdout.
#
# usage: qemu-check.sh <machine> <accel> <cpus> <guest.elf> [command line]
#   e.g. qemu-check.sh microvm tcg 2 build/guests/smp.elf
#        qemu-check.sh q35 kvm 2 build/guests/pio-loop.elf iterations=1000
# environment: QEMU (default qemu-system-x86_64), TIMEOUT in seconds (default 60)
set -u
if [ $# -lt 4 ]; then
    echo "usage: $0 <machine> <accel> <cpus> <guest.elf> [command line]" >&2
    exit 2
fi
machine=$1 accel=$2 cpus=$3 elf=$4
cmdline=${5-}
qemu=${QEMU:-qemu-system-x86_64}
out=$(mktemp) || exit 2
trap 'rm -f "$out"' EXIT

timeout "${TIMEOUT:-60}" "$qemu" -M "$machine" -accel "$accel" -m 256 -smp "$cpus" \
    -nographic -no-reboot -nodefaults -serial stdio \
    -device isa-debug-exit,iobase=0xf4,iosize=0x04 \
    -kernel "$elf" -append "$cmdline" >"$out" 2>&1 </dev/null
status=$?
cat "$out"
if [ "$status" -ne 33 ]; then
    echo "qemu-check: $elf on $machine/$accel/$cpus: exit status $status, expected 33" >&2
    exit 1
fi
if ! tr -d '\r' <"$out" | grep -qx PASS; then
    echo "qemu-check: $elf on $machine/$accel/$cpus: no PASS line" >&2
    exit 1
fi
exit 0
