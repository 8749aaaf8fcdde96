#!/usr/bin/env bash
# --engine auto: on a host whose KVM runs guest kernels natively it boots the guest on KVM;
# on a host like ours (kvm_pvm, no VT-x/AMD-V) it picks the soft engine, quickly; either way the
# guest runs and exits through the debug port.
set -uo pipefail
guest="$1"
probe=$(timeout 5 "$VESSEL" probe) || { echo "FAIL: vessel probe failed or hung"; exit 1; }
echo "$probe"
if [ -d /sys/module/kvm_pvm ] && ! grep -q "engine: soft" <<<"$probe"; then
  echo "FAIL: kvm_pvm is loaded but probe did not choose the soft engine"; exit 1
fi
err=$(mktemp); trap 'rm -f "$err"' EXIT
start=$(date +%s%N)
timeout 30 "$VESSEL" run --engine auto --kernel "$guest" </dev/null >/dev/null 2>"$err"
rc=$?
ms=$(( ($(date +%s%N) - start) / 1000000 ))
cat "$err"
echo "exit status $rc after ${ms} ms"
[ "$rc" = 33 ] || { echo "FAIL: expected the guest to run (status 33)"; exit 1; }
echo PASS
