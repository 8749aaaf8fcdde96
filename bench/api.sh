#!/usr/bin/env bash
# Control-plane benchmark: how fast the API socket is there and answers, how fast a VM starts and
# pauses, with QEMU's QMP as the side-by-side reference where it has the same operation.
#   bench/api.sh [build-dir]     (default: build)
# Measures (medians over RUNS, default 11, unless said otherwise):
#   start → socket   process start until the API socket accepts a connection (Vessel: `vessel
#                    --api-sock`; QEMU: `qemu-system-x86_64 -S -qmp unix:...` until its QMP socket accepts)
#   GET / latency    50 clients x 200 requests at once on keep-alive connections (bench/api_load.cpp):
#                    p50 / p99 of the round trips
#   InstanceStart    → first guest instruction, measured inside Vessel (GET /vm/info): a Multiboot test
#                    guest, and Debian's kernel (loaded and decompressed on the host) on the soft engine
#   pause / resume   PATCH /vm round trips with 2 vCPUs running (soft engine: Debian's kernel; KVM: a
#                    test guest) and the time inside the VMM; QEMU TCG: QMP stop / cont with 2 vCPUs
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/linux-guest.env
BUILD="${1:-build}"
VESSEL="$BUILD/vessel"
LOAD="$BUILD/vessel_api_load"
RUNS="${RUNS:-11}"
[ -x "$VESSEL" ] && [ -x "$LOAD" ] || { echo "build first: $VESSEL and $LOAD (cmake --build $BUILD)"; exit 1; }
KERNEL=$(linux_guest_kernel amd64)
INITRD=$(linux_guest_initramfs_modules amd64)
work=$(mktemp -d)
export VESSEL_RUN_DIR="$work/run"
trap 'pkill -P $$ 2>/dev/null; rm -rf "$work"' EXIT

python3 - "$VESSEL" "$LOAD" "$work" "$RUNS" "$KERNEL" "$INITRD" "$LINUX_GUEST_CMDLINE" "$LINUX_GUEST_QEMU" <<'EOF'
import json, os, socket, statistics, subprocess, sys, time
vessel, load, work, runs, kernel, initrd, cmdline, qemu = sys.argv[1:9]
runs = int(runs)
guests = os.path.join(os.path.dirname(vessel), "guests")

def wait_socket(path, proc, timeout=10):
    t_end = time.perf_counter() + timeout
    while time.perf_counter() < t_end:
        try:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.connect(path); s.close()
            return time.perf_counter()
        except OSError:
            if proc.poll() is not None:
                return None
    return None

def http(path, method, target, body=None):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.connect(path)
    data = json.dumps(body).encode() if body is not None else b""
    req = f"{method} {target} HTTP/1.1\r\nHost: x\r\n" + (f"Content-Length: {len(data)}\r\n" if body is not None else "")
    t0 = time.perf_counter()
    s.sendall(req.encode() + b"\r\n" + data)
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += s.recv(65536)
    head, rest = buf.split(b"\r\n\r\n", 1)
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    while len(rest) < length:
        rest += s.recv(65536)
    dt = time.perf_counter() - t0
    s.close()
    return int(head.split(b" ")[1]), rest, dt

def med(xs):
    return statistics.median(xs) if xs else float("nan")

rows = []
# --- process start -> API socket accepting ------------------------------------------------------
vs, qs = [], []
for i in range(runs):
    sock = os.path.join(work, f"s{i}.sock")
    t0 = time.perf_counter()
    p = subprocess.Popen([vessel, "--api-sock", sock, "--id", f"bench{i}"], stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t1 = wait_socket(sock, p)
    if t1: vs.append((t1 - t0) * 1000)
    p.kill(); p.wait()
    qsock = os.path.join(work, f"q{i}.sock")
    t0 = time.perf_counter()
    q = subprocess.Popen([qemu, "-S", "-M", "microvm", "-accel", "tcg", "-m", "256", "-display", "none",
                          "-nodefaults", "-qmp", f"unix:{qsock},server=on,wait=off"],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t1 = wait_socket(qsock, q)
    if t1: qs.append((t1 - t0) * 1000)
    q.kill(); q.wait()
rows.append(("process start -> API socket accepting (ms)", med(vs), med(qs), "< 5 ms"))

# --- GET / latency with 50 clients -------------------------------------------------------------------
sock = os.path.join(work, "load.sock")
p = subprocess.Popen([vessel, "--api-sock", sock, "--id", "bench-load"], stdin=subprocess.DEVNULL,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
wait_socket(sock, p)
out = subprocess.run([load, sock, "--clients", "50", "--requests", "200"], stdout=subprocess.PIPE).stdout.decode()
print("api_load (idle VMM): " + out.strip())
idle = dict(kv.split("=") for kv in out.split())
p.kill(); p.wait()

# --- InstanceStart -> first guest instruction ---------------------------------------------------------
def instance_start(kernel_path, initrd_path, args, engine, cpus=1):
    sock = os.path.join(work, "start.sock")
    p = subprocess.Popen([vessel, "--api-sock", sock, "--id", "bench-start", "--engine", engine],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_socket(sock, p)
    boot = {"kernel_image_path": kernel_path, "boot_args": args}
    if initrd_path: boot["initrd_path"] = initrd_path
    http(sock, "PUT", "/boot-source", boot)
    http(sock, "PUT", "/machine-config", {"vcpu_count": cpus, "mem_size_mib": 256})
    st, body, api_s = http(sock, "PUT", "/actions", {"action_type": "InstanceStart"})
    us = 0
    for _ in range(200):
        try:
            st2, info, _ = http(sock, "GET", "/vm/info")
            us = json.loads(info)["instance_start_to_first_instruction_us"]
            if us: break
        except OSError:
            break
        time.sleep(0.01)
    p.kill(); p.wait()
    return us / 1000.0 if st == 204 else float("nan"), api_s * 1000

hello = os.path.join(guests, "echo.elf")
ms_hello = [instance_start(hello, None, "", "soft")[0] for _ in range(runs)]
ms_linux = [instance_start(kernel, initrd, cmdline, "soft")[0] for _ in range(max(3, runs // 3))]
rows.append(("InstanceStart -> first instruction, Multiboot guest, soft (ms)", med(ms_hello), None, "-"))
rows.append(("InstanceStart -> first instruction, Debian kernel, soft (ms)", med(ms_linux), None, "-"))

# --- pause / resume with 2 vCPUs ----------------------------------------------------------------------
def pause_resume(args, cycles):
    sock = os.path.join(work, "pause.sock")
    p = subprocess.Popen([vessel, "run", "--api-sock", sock, "--id", "bench-pause"] + args,
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_socket(sock, p, 30)
    time.sleep(3)  # let the guest get going
    pa, re_, pin, rin = [], [], [], []
    for _ in range(cycles):
        st, _, dt = http(sock, "PATCH", "/vm", {"state": "Paused"}); pa.append(dt * 1000)
        info = json.loads(http(sock, "GET", "/vm/info")[1]); pin.append(info["last_pause_us"] / 1000)
        time.sleep(0.05)
        st, _, dt = http(sock, "PATCH", "/vm", {"state": "Resumed"}); re_.append(dt * 1000)
        info = json.loads(http(sock, "GET", "/vm/info")[1]); rin.append(info["last_resume_us"] / 1000)
        time.sleep(0.1)
    p.kill(); p.wait()
    return med(pa), med(re_), med(pin), med(rin)

soft = pause_resume(["--engine", "soft", "--kernel", kernel, "--initrd", initrd, "--cpus", "2", "--cmdline",
                     cmdline + " vessel.mode=api vessel.api=ticker vessel.api.seconds=600"], runs)
kvm_ok = subprocess.run([vessel, "probe"], stdout=subprocess.PIPE).stdout.decode().find("/dev/kvm usable: yes") >= 0
kvm = pause_resume(["--engine", "kvm", "--kernel", os.path.join(guests, "echo.elf"), "--cpus", "2"], runs) if kvm_ok else None

# QEMU TCG: QMP stop / cont with 2 vCPUs running the same kernel.
def qmp_pause():
    qsock = os.path.join(work, "qmp.sock")
    q = subprocess.Popen([qemu, "-M", "microvm,acpi=on", "-accel", "tcg", "-m", "256", "-smp", "2", "-display", "none",
                          "-kernel", kernel, "-initrd", initrd, "-append", cmdline + " vessel.mode=api vessel.api=idle",
                          "-serial", "null", "-qmp", f"unix:{qsock},server=on,wait=off"],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_socket(qsock, q)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.connect(qsock)
    f = s.makefile("rwb")
    def cmd(c):
        t0 = time.perf_counter()
        f.write(json.dumps({"execute": c}).encode() + b"\n"); f.flush()
        while True:
            msg = json.loads(f.readline())
            if "return" in msg or "error" in msg:
                return (time.perf_counter() - t0) * 1000
    f.readline(); cmd("qmp_capabilities")
    time.sleep(3)
    st, co = [], []
    for _ in range(runs):
        st.append(cmd("stop")); time.sleep(0.05); co.append(cmd("cont")); time.sleep(0.1)
    q.kill(); q.wait()
    return med(st), med(co)
qemu_stop, qemu_cont = qmp_pause()

print()
print(f"| measure | Vessel | QEMU | ratio | target |")
print(f"|---|---|---|---|---|")
def fmt(v): return "-" if v is None or v != v else f"{v:.2f}"
for name, v, q, target in rows:
    ratio = f"{v / q:.2f}x" if q else "-"
    print(f"| {name} | {fmt(v)} | {fmt(q)} | {ratio} | {target} |")
print(f"| GET / p50 with 50 clients (us) | {float(idle['p50_us']):.1f} | - | - | - |")
print(f"| GET / p99 with 50 clients (us) | {float(idle['p99_us']):.1f} | - | - | < 1000 us |")
print(f"| pause, soft engine, 2 vCPUs: API round trip / inside the VMM (ms) | {fmt(soft[0])} / {fmt(soft[2])} | {fmt(qemu_stop)} (QMP stop) | {soft[0] / qemu_stop:.2f}x | < 1 ms |")
print(f"| resume, soft engine, 2 vCPUs: API round trip / inside the VMM (ms) | {fmt(soft[1])} / {fmt(soft[3])} | {fmt(qemu_cont)} (QMP cont) | {soft[1] / qemu_cont:.2f}x | < 1 ms |")
if kvm:
    print(f"| pause, KVM, 2 vCPUs: API round trip / inside the VMM (ms) | {fmt(kvm[0])} / {fmt(kvm[2])} | - | - | < 1 ms |")
    print(f"| resume, KVM, 2 vCPUs: API round trip / inside the VMM (ms) | {fmt(kvm[1])} / {fmt(kvm[3])} | - | - | < 1 ms |")
else:
    print("| pause/resume, KVM | skipped: /dev/kvm not usable here | | | |")
EOF
