#!/bin/sh
# Boots a test guest under QEMU (-no-reboot, so a guest reset or triple fault ends QEMU with
# status 0) and checks the exit status and the COM1 output. For guests that do not simply end
# with PASS / status 33 (qemu-check.sh covers those). The serial output is copied to stdout.
#
# usage: qemu-expect.sh <machine> <accel> <status> <guest.elf> [option...]
#   --cmdline TEXT      kernel command line (-append)
#   --stdin FILE        console input (COM1 receives the file's bytes)
#   --stdout REGEX      a line of the output must match (grep -E; CRs removed); repeatable
#   --not-stdout REGEX  no line may match; repeatable
#   e.g. qemu-expect.sh microvm tcg 0 build/guests/triple-fault.elf --stdout '^triple-fault:'
# environment: QEMU (default qemu-system-x86_64), TIMEOUT in seconds (default 60)
set -u
if [ $# -lt 4 ]; then
    echo "usage: $0 <machine> <accel> <status> <guest.elf> [--cmdline T] [--stdin F] [--stdout RE]... [--not-stdout RE]..." >&2
    exit 2
fi
machine=$1 accel=$2 want=$3 elf=$4
shift 4
cmdline="" input=/dev/null
out=$(mktemp) || exit 2
checks=$(mktemp) || exit 2
trap 'rm -f "$out" "$checks"' EXIT
while [ $# -gt 0 ]; do
    case "$1" in
        --cmdline) cmdline=$2; shift 2 ;;
        --stdin) input=$2; shift 2 ;;
        --stdout) printf '+%s\n' "$2" >>"$checks"; shift 2 ;;
        --not-stdout) printf -- '-%s\n' "$2" >>"$checks"; shift 2 ;;
        *) echo "qemu-expect: unknown option $1" >&2; exit 2 ;;
    esac
done
qemu=${QEMU:-qemu-system-x86_64}

timeout "${TIMEOUT:-60}" "$qemu" -M "$machine" -accel "$accel" -m 256 -smp 1 \
    -nographic -no-reboot -nodefaults -serial stdio \
    -device isa-debug-exit,iobase=0xf4,iosize=0x04 \
    -kernel "$elf" -append "$cmdline" >"$out" 2>&1 <"$input"
status=$?
cat "$out"
fail=0
if [ "$status" -ne "$want" ]; then
    echo "qemu-expect: $elf on $machine/$accel: exit status $status, expected $want" >&2
    fail=1
fi
while IFS= read -r check; do
    re=${check#?}
    case "$check" in
        +*) tr -d '\r' <"$out" | grep -Eq -- "$re" ||
                { echo "qemu-expect: $elf on $machine/$accel: no line matches /$re/" >&2; fail=1; } ;;
        -*) tr -d '\r' <"$out" | grep -Eq -- "$re" &&
                { echo "qemu-expect: $elf on $machine/$accel: a line matches /$re/" >&2; fail=1; } ;;
    esac
done <"$checks"
exit "$fail"
