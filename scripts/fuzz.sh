#!/usr/bin/env bash
# Builds and runs one libFuzzer target for longer than ctest does (developers).
#   scripts/fuzz.sh NAME [SECONDS] [extra libFuzzer flags...]
# NAME is fuzz/NAME_fuzz.cpp (e.g. virtqueue). Runs on a scratch copy of fuzz/corpus/NAME; the
# inputs it finds are kept in build-fuzz/corpus/NAME (merge good ones into fuzz/corpus/NAME by
# hand: `build-fuzz/NAME_fuzz -merge=1 fuzz/corpus/NAME build-fuzz/corpus/NAME`); crashes go to
# build-fuzz/artifacts/NAME/. Without NAME, lists the targets.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ $# -lt 1 ]; then
  echo "usage: $0 NAME [SECONDS] [libFuzzer flags...]; targets:"
  for f in fuzz/*_fuzz.cpp; do b=$(basename "$f"); echo "  ${b%_fuzz.cpp}"; done
  exit 2
fi
name=$1
seconds=${2:-300}
shift $(( $# >= 2 ? 2 : 1 ))
if [ ! -f "fuzz/${name}_fuzz.cpp" ]; then
  echo "fuzz.sh: no fuzz target fuzz/${name}_fuzz.cpp" >&2
  exit 2
fi

if [ ! -f build-fuzz/CMakeCache.txt ]; then
  CC=clang CXX=clang++ cmake -S fuzz -B build-fuzz -G Ninja >/dev/null
fi
cmake --build build-fuzz --target "${name}_fuzz" -j"$(nproc)"

corpus=build-fuzz/corpus/$name
artifacts=build-fuzz/artifacts/$name
mkdir -p "$corpus" "$artifacts"
cmd=(build-fuzz/"${name}_fuzz" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
  -artifact_prefix="$artifacts/" "$@" "$corpus" "fuzz/corpus/$name")
echo "+ ${cmd[*]}"
# The first corpus directory is where libFuzzer writes new inputs; the committed one is only read.
exec "${cmd[@]}"
