#!/usr/bin/env bash
# Runs one test guest on the kvm and the soft engine and requires the same serial output and
# exit status from both. Usage: same_on_engines.sh GUEST [vessel run arguments...]
# Exits 77 (skip) with the reason when KVM is unusable here. Timing-dependent details are
# normalised before the comparison: tick counts ("ticks: N") and the order in which APs report
# ("cpu N up" lines are sorted).
set -uo pipefail
guest="$1"; shift
[ -r /dev/kvm ] && [ -w /dev/kvm ] || { echo "SKIP: /dev/kvm is not usable here"; exit 77; }
dir=$(mktemp -d); trap 'rm -rf "$dir"' EXIT
for engine in kvm soft; do
  timeout 120 "$VESSEL" run --engine "$engine" --kernel "$guest" "$@" </dev/null >"$dir/$engine.out" 2>"$dir/$engine.err"
  echo $? >"$dir/$engine.status"
  echo "--- $engine: exit status $(cat "$dir/$engine.status")"; cat "$dir/$engine.out"
done
normalise() { sed -E 's/(ticks: )[0-9]+/\1N/' "$1" | awk '/^cpu [0-9]+ up/ { ups[n++] = $0; next } { print } END { for (i = 0; i < n; i++) print ups[i] | "sort" }'; }
normalise "$dir/kvm.out" >"$dir/kvm.norm"
normalise "$dir/soft.out" >"$dir/soft.norm"
if ! diff -u "$dir/kvm.norm" "$dir/soft.norm"; then echo "FAIL: serial output differs"; exit 1; fi
if ! diff "$dir/kvm.status" "$dir/soft.status"; then echo "FAIL: exit status differs"; cat "$dir"/*.err; exit 1; fi
[ -s "$dir/kvm.out" ] || { echo "FAIL: the guest printed nothing"; exit 1; }
echo PASS
