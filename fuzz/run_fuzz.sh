#!/usr/bin/env bash
# Runs one libFuzzer target for a fixed time on a scratch copy of its seed corpus (the committed
# corpus is never modified; new inputs are thrown away with the copy). Exit status: libFuzzer's
# (0 = no crash), 77 = skipped because the binary is not built.
#   run_fuzz.sh BINARY CORPUS_DIR SECONDS [ARTIFACT_DIR]
# Crashing inputs are kept in ARTIFACT_DIR (default: a directory printed at the end); reproduce
# one with `BINARY FILE`.
set -euo pipefail

if [ $# -lt 3 ]; then
  echo "usage: $0 BINARY CORPUS_DIR SECONDS [ARTIFACT_DIR]" >&2
  exit 2
fi
binary=$1 corpus=$2 seconds=$3 artifacts=${4:-}

if [ ! -x "$binary" ]; then
  echo "SKIP: fuzz target $binary is not built (scripts/test.sh builds it; by hand:" \
    "CC=clang CXX=clang++ cmake -S fuzz -B build-fuzz -G Ninja && cmake --build build-fuzz)"
  exit 77
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/vessel-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/corpus"
if [ -d "$corpus" ]; then
  cp -r "$corpus"/. "$work/corpus/"
else
  echo "note: no seed corpus at $corpus; starting from an empty one"
fi
keep_work_on_failure=false
if [ -z "$artifacts" ]; then
  artifacts=$work/artifacts
  keep_work_on_failure=true
fi
mkdir -p "$artifacts"

cmd=("$binary" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
  -artifact_prefix="$artifacts/" "$work/corpus")
echo "+ ${cmd[*]}"
status=0
ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1} UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1} \
  "${cmd[@]}" >"$work/log" 2>&1 || status=$?
if [ "$status" != 0 ]; then
  tail -n 300 "$work/log"
  echo "FAIL: $(basename "$binary") exited with $status; crashing inputs in $artifacts:"
  ls -l "$artifacts"
  if $keep_work_on_failure; then trap - EXIT; fi
  exit 1
fi
tail -n 12 "$work/log"
echo "PASS: $(basename "$binary"): no crash in ${seconds} s"
