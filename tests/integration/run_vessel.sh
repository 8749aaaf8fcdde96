#!/usr/bin/env bash
# Runs vessel and checks its exit status, stdout (guest serial) and stderr.
# usage: run_vessel.sh [--needs-kvm] [--timeout S] --status N [--stdout REGEX]... [--stderr REGEX]...
#                      [--not-stdout REGEX]... [--stdin FILE|closed] -- vessel-args...
# Exit 0 = pass, 1 = fail, 77 = skipped (reason printed).
set -uo pipefail

VESSEL="${VESSEL:?set VESSEL to the vessel binary}"
needs_kvm=0
timeout_s=60
status=""
stdin_file=/dev/null
stdout_re=()
stderr_re=()
not_stdout_re=()
while [ $# -gt 0 ]; do
  case "$1" in
    --needs-kvm) needs_kvm=1; shift ;;
    --timeout) timeout_s="$2"; shift 2 ;;
    --status) status="$2"; shift 2 ;;
    --stdout) stdout_re+=("$2"); shift 2 ;;
    --stderr) stderr_re+=("$2"); shift 2 ;;
    --not-stdout) not_stdout_re+=("$2"); shift 2 ;;
    --stdin) stdin_file="$2"; shift 2 ;;
    --) shift; break ;;
    *) echo "run_vessel.sh: unknown option $1" >&2; exit 1 ;;
  esac
done

if [ "$needs_kvm" = 1 ]; then
  if [ ! -c /dev/kvm ] || ! [ -r /dev/kvm ] || ! [ -w /dev/kvm ]; then
    echo "SKIP: /dev/kvm is not usable on this host"
    exit 77
  fi
fi

out=$(mktemp) err=$(mktemp)
trap 'rm -f "$out" "$err"' EXIT
if [ "$stdin_file" = closed ]; then
  timeout --kill-after=5 "$timeout_s" "$VESSEL" "$@" <&- >"$out" 2>"$err"
else
  timeout --kill-after=5 "$timeout_s" "$VESSEL" "$@" <"$stdin_file" >"$out" 2>"$err"
fi
rc=$?

fail=0
echo "--- command: vessel $*"
echo "--- exit status: $rc"
echo "--- stdout:"; head -c 20000 "$out"
echo "--- stderr:"; head -c 20000 "$err"
if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
  echo "FAIL: timed out after ${timeout_s}s"; exit 1
fi
if [ -n "$status" ] && [ "$rc" != "$status" ]; then
  echo "FAIL: expected exit status $status, got $rc"; fail=1
fi
for re in "${stdout_re[@]+"${stdout_re[@]}"}"; do
  grep -Eq -- "$re" "$out" || { echo "FAIL: stdout lacks /$re/"; fail=1; }
done
for re in "${not_stdout_re[@]+"${not_stdout_re[@]}"}"; do
  grep -Eq -- "$re" "$out" && { echo "FAIL: stdout has /$re/"; fail=1; }
done
for re in "${stderr_re[@]+"${stderr_re[@]}"}"; do
  grep -Eq -- "$re" "$err" || { echo "FAIL: stderr lacks /$re/"; fail=1; }
done
[ "$fail" = 0 ] && echo "PASS"
exit "$fail"
