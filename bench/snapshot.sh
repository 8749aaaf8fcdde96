#!/usr/bin/env bash
# Snapshot benchmark, Vessel (soft engine) beside QEMU TCG (microvm, migrate to a file and
# -incoming from it), same kernel, initramfs and interactive shell (vessel.mode=shell).
#   bench/snapshot.sh [build-dir]     (default: build)
# Measures:
#   restore → running   for 256 MiB and 4 GiB guests: from the restore request (Vessel: PUT
#                       /snapshot/load with resume_vm; QEMU: process start with -incoming) until a
#                       byte typed on the console comes back echoed by the guest's tty (the guest
#                       is running and taking interrupts); also from process start for Vessel.
#                       Median of RUNS (default 5).
#   create              a 1 GiB guest that wrote 200 MiB (a file in its tmpfs): Full snapshot time
#                       and memory file size on disk; then 20 MiB more and a Diff snapshot
#                       (QEMU: migrate to a file, which has no diff).
#   clones              restores per second of one 128 MiB snapshot, CLONES (default 100) in a row,
#                       each left running; then how many idle clones are held at once, and the PSS
#                       per clone (from /proc/PID/smaps_rollup). CLONES=500 for the issue's target.
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/linux-guest.env
BUILD="${1:-build}"
VESSEL="$BUILD/vessel"
RUNS="${RUNS:-5}"
CLONES="${CLONES:-100}"
[ -x "$VESSEL" ] || { echo "build first: $VESSEL"; exit 1; }
KERNEL=$(linux_guest_kernel amd64)
INITRD=$(linux_guest_initramfs_modules amd64)
QCMDLINE=$(linux_guest_qemu_cmdline)
work=$(mktemp -d /var/tmp/vessel-bench-snap.XXXXXX)
export VESSEL_RUN_DIR="$work/run"
trap 'pkill -P $$ 2>/dev/null; pkill -f "$work" 2>/dev/null; rm -rf "$work"' EXIT

python3 - "$VESSEL" "$work" "$RUNS" "$CLONES" "$KERNEL" "$INITRD" "$LINUX_GUEST_CMDLINE" "$QCMDLINE" "$LINUX_GUEST_QEMU" <<'EOF'
import json, os, socket, statistics, subprocess, sys, time
vessel, work, runs, clones, kernel, initrd, cmdline, qcmdline, qemu = sys.argv[1:10]
runs, clones = int(runs), int(clones)
PROMPT = b"vessel# "

def wait_socket(path, proc, timeout=20):
    end = time.perf_counter() + timeout
    while time.perf_counter() < end:
        try:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.connect(path); s.close()
            return time.perf_counter()
        except OSError:
            if proc.poll() is not None:
                return None
            time.sleep(0.0005)
    return None

def http(path, method, target, body=None):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.connect(path)
    data = json.dumps(body).encode() if body is not None else b""
    s.sendall(f"{method} {target} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(data)}\r\n\r\n".encode() + data)
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk: break
        buf += chunk
    s.close()
    return int(buf.split(b" ")[1]) if buf else 0, buf

class Console:
    """A process's stdout, read without blocking into a buffer."""
    def __init__(self, proc):
        self.proc, self.buf = proc, b""
        os.set_blocking(proc.stdout.fileno(), False)
    def pump(self):
        try:
            data = os.read(self.proc.stdout.fileno(), 65536)
            if data: self.buf += data
        except BlockingIOError:
            pass
    def wait(self, needle, timeout, start=0):
        end = time.perf_counter() + timeout
        while time.perf_counter() < end:
            self.pump()
            if needle in self.buf[start:]:
                return time.perf_counter()
            time.sleep(0.0002)
        return None
    def send(self, data):
        self.proc.stdin.write(data); self.proc.stdin.flush()

def med(xs):
    return statistics.median(xs) if xs else float("nan")

def disk_mib(path):
    return os.stat(path).st_blocks * 512 / 2**20

def vessel_boot(name, mem_mib, track=False):
    sock = os.path.join(work, f"{name}.sock")
    p = subprocess.Popen([vessel, "--api-sock", sock, "--id", name, "--engine", "soft"], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    wait_socket(sock, p)
    for path, body in [("/boot-source", {"kernel_image_path": kernel, "initrd_path": initrd,
                                         "boot_args": f"{cmdline} vessel.mode=shell"}),
                       ("/machine-config", {"vcpu_count": 1, "mem_size_mib": mem_mib, "track_dirty_pages": track}),
                       ("/actions", {"action_type": "InstanceStart"})]:
        http(sock, "PUT", path, body)
    c = Console(p)
    if not c.wait(PROMPT, 600):
        sys.exit(f"{name}: no shell prompt")
    return p, sock, c

def vessel_snapshot(sock, d, kind="Full"):
    os.makedirs(d, exist_ok=True)
    http(sock, "PATCH", "/vm", {"state": "Paused"})
    t0 = time.perf_counter()
    st, _ = http(sock, "PUT", "/snapshot/create", {"snapshot_type": kind, "snapshot_path": f"{d}/vm.state",
                                                  "mem_file_path": f"{d}/vm.mem"})
    dt = (time.perf_counter() - t0) * 1000
    if st != 204: sys.exit(f"snapshot {d}: HTTP {st}")
    return dt, disk_mib(f"{d}/vm.mem")

def vessel_restore(name, d, paused=False):
    """(ms from load request to echo, ms from process start to echo, process)."""
    sock = os.path.join(work, f"{name}.sock")
    t_start = time.perf_counter()
    p = subprocess.Popen([vessel, "--api-sock", sock, "--id", name], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    wait_socket(sock, p)
    c = Console(p)
    t0 = time.perf_counter()
    st, _ = http(sock, "PUT", "/snapshot/load", {"snapshot_path": f"{d}/vm.state",
                                                "mem_backend": {"backend_type": "File", "backend_path": f"{d}/vm.mem"},
                                                "resume_vm": not paused})
    if st != 204: sys.exit(f"load {d}: HTTP {st}")
    if paused:
        return (time.perf_counter() - t0) * 1000, None, p
    c.send(b"Q")
    t1 = c.wait(b"Q", 30)
    if t1 is None: sys.exit(f"{name}: no echo after the restore")
    return (t1 - t0) * 1000, (t1 - t_start) * 1000, p

def qemu_cmd(mem_mib, qmp, extra=()):
    return [qemu, "-M", "microvm,acpi=on", "-accel", "tcg", "-m", str(mem_mib), "-display", "none",
            "-nodefaults", "-no-user-config", "-serial", "stdio", "-kernel", kernel, "-initrd", initrd,
            "-append", f"{qcmdline} vessel.mode=shell", "-qmp", f"unix:{qmp},server=on,wait=off", *extra]

def qmp(path, *commands):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.connect(path)
    f = s.makefile("rwb")
    f.readline()
    out = []
    for cmd in ({"execute": "qmp_capabilities"},) + commands:
        f.write(json.dumps(cmd).encode() + b"\n"); f.flush()
        while True:
            line = json.loads(f.readline())
            if "return" in line or "error" in line:
                out.append(line); break
    s.close()
    return out

def qemu_boot(mem_mib, name):
    q = os.path.join(work, f"{name}.qmp")
    p = subprocess.Popen(qemu_cmd(mem_mib, q), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    c = Console(p)
    if not c.wait(PROMPT, 600):
        sys.exit(f"qemu {name}: no shell prompt")
    return p, q, c

def qemu_save(q, path):
    t0 = time.perf_counter()
    qmp(q, {"execute": "stop"}, {"execute": "migrate", "arguments": {"uri": f"exec:cat > {path}"}})
    while True:
        r = qmp(q, {"execute": "query-migrate"})[-1]["return"]
        if r.get("status") in ("completed", "failed"): break
        time.sleep(0.005)
    return (time.perf_counter() - t0) * 1000, disk_mib(path)

def qemu_restore(mem_mib, path, name):
    q = os.path.join(work, f"{name}.qmp")
    t0 = time.perf_counter()
    p = subprocess.Popen(qemu_cmd(mem_mib, q, ("-incoming", f"exec:cat {path}")), stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    c = Console(p)
    wait_socket(q, p)
    while True:
        try:
            if qmp(q, {"execute": "query-migrate"})[-1]["return"].get("status") == "completed": break
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.002)
    qmp(q, {"execute": "cont"})
    c.send(b"Q")
    t1 = c.wait(b"Q", 60)
    p.kill(); p.wait()
    return (t1 - t0) * 1000 if t1 else float("nan")

rows = []
# --- restore -> running -------------------------------------------------------------------------
for mem in (256, 4096):
    p, sock, c = vessel_boot(f"r{mem}", mem)
    d = os.path.join(work, f"snap{mem}")
    vessel_snapshot(sock, d)
    p.kill(); p.wait()
    req, start = [], []
    for i in range(runs):
        a, b, rp = vessel_restore(f"r{mem}-{i}", d)
        req.append(a); start.append(b)
        rp.kill(); rp.wait()
    qp, qq, qc = qemu_boot(mem, f"q{mem}")
    qf = os.path.join(work, f"q{mem}.mig")
    qemu_save(qq, qf)
    qp.kill(); qp.wait()
    qt = [qemu_restore(mem, qf, f"qr{mem}-{i}") for i in range(max(1, runs // 2))]
    rows.append((f"restore → guest echoes, {mem} MiB (ms)", f"{med(req):.1f} (process start → echo {med(start):.1f})",
                 f"{med(qt):.0f}", med(req) / med(qt)))

# --- create, Full and Diff, 1 GiB guest with 200 MiB written -----------------------------------
p, sock, c = vessel_boot("create", 1024, track=True)
n = len(c.buf)
# (The marker is computed by the shell: the echo of the typed line must not match it.)
c.send(b"yes abcdefghijklmnopqrstuvwxyz | head -c 209715200 > /tmp/fill; echo fill-$((6*7))\n")
c.wait(b"fill-42\r\n", 900, n)
full_ms, full_mib = vessel_snapshot(sock, os.path.join(work, "c-full"))
http(sock, "PATCH", "/vm", {"state": "Resumed"})
n = len(c.buf)
c.send(b"yes 0123456789 | head -c 20971520 > /tmp/more; echo more-$((6*7))\n")
c.wait(b"more-42\r\n", 300, n)
diff_ms, diff_mib = vessel_snapshot(sock, os.path.join(work, "c-diff"), "Diff")
p.kill(); p.wait()
qp, qq, qc = qemu_boot(1024, "qcreate")
n = len(qc.buf)
qc.send(b"yes abcdefghijklmnopqrstuvwxyz | head -c 209715200 > /tmp/fill; echo fill-$((6*7))\n")
qc.wait(b"fill-42\r\n", 900, n)
q_ms, q_mib = qemu_save(qq, os.path.join(work, "qcreate.mig"))
qp.kill(); qp.wait()
rows.append(("Full snapshot, 1 GiB guest, 200 MiB written: time (ms) / file on disk (MiB)",
             f"{full_ms:.0f} / {full_mib:.0f}", f"{q_ms:.0f} / {q_mib:.0f}", full_ms / q_ms))
rows.append(("Diff snapshot after 20 MiB more: time (ms) / file on disk (MiB)", f"{diff_ms:.0f} / {diff_mib:.0f}",
             "(no diff)", float("nan")))

# --- clones ------------------------------------------------------------------------------------
p, sock, c = vessel_boot("clone-src", 128)
d = os.path.join(work, "clone")
vessel_snapshot(sock, d)
p.kill(); p.wait()
held = []
t0 = time.perf_counter()
for i in range(clones):
    try:
        _, _, cp = vessel_restore(f"clone-{i}", d)
    except SystemExit as e:
        print(f"clone {i}: {e}")
        break
    held.append(cp)
rate = len(held) / (time.perf_counter() - t0)
time.sleep(2)
pss = []
for cp in held:
    try:
        with open(f"/proc/{cp.pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    pss.append(int(line.split()[1]) / 1024)
    except OSError:
        pass
alive = sum(cp.poll() is None for cp in held)
load1 = os.getloadavg()[0]
for cp in held:
    cp.kill()
for cp in held:
    cp.wait()
rows.append((f"clones of a 128 MiB guest: restores per second ({len(held)} in a row, each left running)",
             f"{rate:.0f}/s", "-", float("nan")))
rows.append((f"idle clones held at once / median PSS per clone (MiB) / load average",
             f"{alive} / {med(pss):.1f} / {load1:.1f}", "-", float("nan")))

print("| measure | Vessel | QEMU TCG | ratio |")
print("|---|---|---|---|")
for name, v, q, r in rows:
    print(f"| {name} | {v} | {q} | {'' if r != r else f'{r:.3f}x'} |")
EOF
