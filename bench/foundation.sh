#!/usr/bin/env bash
# Foundation benchmarks: Vessel (--engine kvm) side by side with qemu-system-x86_64 -accel kvm
# -M microvm on the same Multiboot test guests, in the same run. Prints figures and ratios.
#   bench/foundation.sh [build-dir]      (default: build; run scripts/test.sh or demo.sh first)
# Environment: RUNS (default 11) start-up repetitions, PIO_EXITS (default 100000).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD="${1:-build}"
VESSEL="$BUILD/vessel"
GUESTS="$BUILD/guests"
RUNS="${RUNS:-11}"
PIO_EXITS="${PIO_EXITS:-100000}"
QEMU=qemu-system-x86_64
[ -x "$VESSEL" ] || { echo "no $VESSEL: build first (scripts/test.sh)"; exit 1; }
command -v "$QEMU" >/dev/null || { echo "no $QEMU: run scripts/install-deps.sh"; exit 1; }
[ -c /dev/kvm ] || { echo "no /dev/kvm: these benchmarks compare KVM engines"; exit 1; }

qemu_cmd() { # guest, cmdline, extra args...
  local guest="$1" cmdline="$2"; shift 2
  echo "$QEMU" -M microvm -accel kvm -m 256 -smp 2 -nographic -nodefaults -no-reboot -serial stdio \
    -device isa-debug-exit,iobase=0xf4,iosize=0x04 -kernel "$guest" -append "$cmdline" "$@"
}
vessel_cmd() { # guest, cmdline
  echo "$VESSEL" run --engine kvm --mem 256M --cpus 2 --kernel "$1" --cmdline "$2" --log-level error
}

# Runs a guest command; it must end through the debug-exit port with PASS (status 33).
check_status() {
  local rc=0
  "$@" </dev/null >/dev/null 2>&1 || rc=$?
  if [ "$rc" != 33 ]; then
    echo "benchmark run failed (exit status $rc, expected 33): $*" >&2
    exit 1
  fi
}

# Median wall time in ms of running a command RUNS times (its output discarded).
median_ms() {
  local times=()
  for _ in $(seq "$RUNS"); do
    local start end
    start=$(date +%s%N)
    check_status "$@"
    end=$(date +%s%N)
    times+=($(( (end - start) / 1000 )))
  done
  printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {printf "%.2f", a[int((NR+1)/2)]/1000}'
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }

echo "# Vessel foundation benchmarks ($(date -u +%Y-%m-%d), $(nproc) cores, $(uname -r))"
echo "# host KVM: $([ -d /sys/module/kvm_pvm ] && echo 'kvm_pvm (nested paravirtual; ratios matter, not absolute times)' || echo kvm)"
echo

# 1. Start-up: whole process for a guest that prints one line and exits through port 0xf4,
#    and (Vessel) exec -> first KVM_RUN from strace timestamps.
v_start=$(median_ms $(vessel_cmd "$GUESTS/hello.elf" x))
q_start=$(median_ms $(qemu_cmd "$GUESTS/hello.elf" x))
first_run=$(strace -f -ttt -e trace=execve,ioctl "$VESSEL" run --engine kvm --mem 256M --cpus 2 \
  --kernel "$GUESTS/hello.elf" --log-level error </dev/null 2>&1 >/dev/null |
  awk '/execve/ && !t0 { for (i=1;i<=NF;i++) if ($i ~ /^[0-9]+\.[0-9]+$/) { t0=$i; break } }
       /KVM_RUN/ { for (i=1;i<=NF;i++) if ($i ~ /^[0-9]+\.[0-9]+$/) { printf "%.2f", ($i-t0)*1000; exit } }' || true)
# exec -> first KVM_RUN without strace: vCPU 0 logs the wall-clock time of its first KVM_RUN.
first_runs=()
for _ in $(seq "$RUNS"); do
  t0=$(date +%s%N)
  t1=$("$VESSEL" run --engine kvm --mem 256M --cpus 2 --kernel "$GUESTS/hello.elf" --log-level debug </dev/null 2>&1 >/dev/null |
    sed -n 's/.*vCPU 0: first KVM_RUN at realtime \([0-9]*\)\.\([0-9]*\).*/\1\2/p' || true)
  [ -n "$t1" ] && first_runs+=($(( (t1 - t0) / 1000 )))
done
first_run_clean=$(printf '%s\n' "${first_runs[@]}" | sort -n | awk '{a[NR]=$1} END {printf "%.2f", a[int((NR+1)/2)]/1000}')
memslot=$(strace -T -e trace=ioctl "$VESSEL" run --engine kvm --mem 256M --kernel "$GUESTS/hello.elf" \
  --log-level error </dev/null 2>&1 >/dev/null | awk -F'<' '/SET_USER_MEMORY_REGION/ { gsub(/>/,"",$2); s+=$2 } END { printf "%.2f", s*1000 }' || true)
echo "## start-up (hello guest, 256 MiB, 2 vCPUs; median of $RUNS)"
printf "%-44s %10s %10s %8s\n" "" vessel qemu "ratio"
printf "%-44s %10s %10s %8s\n" "whole process, ms" "$v_start" "$q_start" "$(ratio "$v_start" "$q_start")"
printf "%-44s %10s\n" "exec -> first KVM_RUN, ms" "$first_run_clean"
printf "%-44s %10s\n" "exec -> first KVM_RUN, ms (under strace)" "$first_run"
printf "%-44s %10s\n" "  of which KVM_SET_USER_MEMORY_REGION, ms" "$memslot"
echo

# 2. Memory: VMM resident memory beyond guest RAM, sampled while a 256 MiB / 2 vCPU VM runs.
#    Guest RAM is a memfd in both (QEMU: memory-backend-memfd) so RssShmem is guest RAM.
rss_beyond() { # command...
  "$@" </dev/null >/dev/null 2>&1 &
  local pid=$! best=""
  for _ in $(seq 20); do
    sleep 0.1
    [ -r /proc/$pid/status ] || break
    local v
    v=$(awk '/^RssAnon/ {a=$2} /^RssFile/ {f=$2} END {print a+f}' /proc/$pid/status 2>/dev/null || true)
    [ -n "$v" ] && best=$v
  done
  kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true
  awk -v k="$best" 'BEGIN { printf "%.2f", k/1024 }'
}
v_rss=$(rss_beyond $(vessel_cmd "$GUESTS/pio-loop.elf" "iterations=100000000"))
q_rss=$(rss_beyond $(qemu_cmd "$GUESTS/pio-loop.elf" "iterations=100000000" \
  -object memory-backend-memfd,id=ram,size=256M -machine memory-backend=ram))
echo "## resident memory beyond guest RAM (RssAnon + RssFile, MiB; VM 256 MiB, 2 vCPUs)"
printf "%-44s %10s %10s %8s\n" "" vessel qemu "ratio"
printf "%-44s %10s %10s %8s\n" "VMM overhead, MiB" "$v_rss" "$q_rss" "$(ratio "$v_rss" "$q_rss")"
echo

# 3. Exit round trips: CPL3 port writes to 0x80 and MMIO writes to 0xc0000000, each one exit.
exits_per_s() { # exits, command...
  local n="$1"; shift
  local start end
  start=$(date +%s%N); check_status "$@"; end=$(date +%s%N)
  awk -v n="$n" -v ns="$((end - start))" 'BEGIN { printf "%.0f", n / (ns / 1e9) }'
}
v_pio=$(exits_per_s "$PIO_EXITS" $(vessel_cmd "$GUESTS/pio-loop.elf" "iterations=$PIO_EXITS"))
q_pio=$(exits_per_s "$PIO_EXITS" $(qemu_cmd "$GUESTS/pio-loop.elf" "iterations=$PIO_EXITS"))
v_mmio=$(exits_per_s "$PIO_EXITS" $(vessel_cmd "$GUESTS/mmio-loop.elf" "iterations=$PIO_EXITS"))
q_mmio=$(exits_per_s "$PIO_EXITS" $(qemu_cmd "$GUESTS/mmio-loop.elf" "iterations=$PIO_EXITS"))
echo "## exit round trips ($PIO_EXITS exits, whole process incl. start-up)"
printf "%-44s %10s %10s %8s\n" "" vessel qemu "ratio"
printf "%-44s %10s %10s %8s\n" "port-I/O exits per second" "$v_pio" "$q_pio" "$(ratio "$v_pio" "$q_pio")"
printf "%-44s %10s %10s %8s\n" "MMIO exits per second" "$v_mmio" "$q_mmio" "$(ratio "$v_mmio" "$q_mmio")"
