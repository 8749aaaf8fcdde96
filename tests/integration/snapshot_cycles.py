#!/usr/bin/env python3
"""100 snapshot/restore cycles: no leak of file descriptors, threads or memory.

A Multiboot test guest (guests/echo.S) on the soft engine, 2 vCPUs:
  - one VMM takes 100 Full snapshots (pause, create, resume) of its running guest; its open fds
    and threads must be the same after the 10th and the 100th, its RSS may not grow by more than
    8 MiB (page-cache noise);
  - then 100 restores in a row, each in a new process from the previous one's snapshot: the guest
    must echo a line each time (a generation number typed in) and the snapshot it takes must
    restore in the next process; the restored processes' fds and threads are compared too.

exit 0 pass, 1 fail, 77 skip
"""
import argparse
import os
import shutil
import subprocess
import tempfile
import time

import vessel_api as va

ap = argparse.ArgumentParser()
ap.add_argument("--guests", required=True)
ap.add_argument("--cycles", type=int, default=100)
args = ap.parse_args()

guest = os.path.join(args.guests, "echo.elf")
if not os.path.isfile(guest):
    va.skip(f"no {guest}")
work = tempfile.mkdtemp(prefix="vessel-snapcyc-")
vmms = []


def usage(pid):
    # The API connection of the request just answered may still be closing: let it.
    time.sleep(0.3)
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    threads = len(os.listdir(f"/proc/{pid}/task"))
    rss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
    return fds, threads, rss


def new_vmm(name):
    sock = os.path.join(work, f"{name}.sock")
    d = os.path.join(work, name)
    os.makedirs(d, exist_ok=True)
    v = va.Vmm(["--api-sock", sock, "--id", f"cyc-{name}-{os.getpid()}", "--engine", "soft"], sock, workdir=d,
               stdin=subprocess.PIPE)
    vmms.append(v)
    if not v.ready():
        va.check(False, f"{name}: the API socket accepts connections")
    return v


def snap(v, d):
    os.makedirs(d, exist_ok=True)
    return va.api(v.sock, "PUT", "/snapshot/create", {"snapshot_path": os.path.join(d, "vm.state"),
                                                      "mem_file_path": os.path.join(d, "vm.mem")})


try:
    a = new_vmm("a")
    for path, body in [("/boot-source", {"kernel_image_path": guest}),
                       ("/machine-config", {"vcpu_count": 2, "mem_size_mib": 64}),
                       ("/actions", {"action_type": "InstanceStart"})]:
        r = va.api(a.sock, "PUT", path, body)
        va.check(r.status == 204, f"PUT {path}: {r}")
    va.check(a.wait_output("echo: ready", 20), "the guest is up")
    at10 = None
    failures = 0
    t0 = time.time()
    for i in range(1, args.cycles + 1):
        ok = va.api(a.sock, "PATCH", "/vm", {"state": "Paused"}).status == 204
        ok = ok and snap(a, os.path.join(work, "same")).status == 204
        ok = ok and va.api(a.sock, "PATCH", "/vm", {"state": "Resumed"}).status == 204
        failures += not ok
        if i == 10:
            at10 = usage(a.proc.pid)
    end = usage(a.proc.pid)
    print(f"     {args.cycles} snapshots in {time.time() - t0:.1f} s; fds/threads/RSS after 10: {at10}, "
          f"after {args.cycles}: {end}")
    va.check(failures == 0, f"{args.cycles} pause/snapshot/resume cycles succeed ({failures} failed)")
    va.check(end[0] == at10[0], f"no fd leak ({at10[0]} → {end[0]})")
    va.check(end[1] == at10[1], f"no thread leak ({at10[1]} → {end[1]})")
    va.check(end[2] - at10[2] < 8 << 20, f"no memory leak (RSS {at10[2] >> 10} → {end[2] >> 10} KiB)")
    a.proc.stdin.write(b"before\n")
    a.proc.stdin.flush()
    va.check(a.wait_output("BEFORE", 10), "the guest still echoes after the snapshots")
    va.check(va.api(a.sock, "PATCH", "/vm", {"state": "Paused"}).status == 204, "pause for the chain's first snapshot")
    va.check(snap(a, os.path.join(work, "gen0")).status == 204, "the chain's first snapshot")
    a.kill()

    # A chain of restores, each from the previous process's snapshot.
    t0 = time.time()
    seen = []
    broken = None
    for gen in range(1, args.cycles + 1):
        v = new_vmm(f"r{gen}")
        src = os.path.join(work, f"gen{gen - 1}")
        r = va.api(v.sock, "PUT", "/snapshot/load", {"snapshot_path": os.path.join(src, "vm.state"),
                                                    "mem_backend": {"backend_type": "File",
                                                                    "backend_path": os.path.join(src, "vm.mem")},
                                                    "resume_vm": True})
        word = f"gen{gen}x"
        ok = r.status == 204
        if ok:
            v.proc.stdin.write(word.encode() + b"\n")
            v.proc.stdin.flush()
            ok = v.wait_output(word.upper(), 10)
        if ok and gen in (10, args.cycles):
            seen.append(usage(v.proc.pid))
        ok = ok and va.api(v.sock, "PATCH", "/vm", {"state": "Paused"}).status == 204
        ok = ok and snap(v, os.path.join(work, f"gen{gen}")).status == 204
        v.kill()
        vmms.remove(v)
        shutil.rmtree(src, ignore_errors=True)
        if not ok:
            broken = (gen, r)
            v.dump()
            break
    print(f"     {args.cycles} restores in {time.time() - t0:.1f} s; restored process fds/threads/RSS: {seen}")
    va.check(broken is None, f"{args.cycles} restores in a chain, each echoing and snapshotting (broken: {broken})")
    if len(seen) == 2:
        va.check(seen[0][:2] == seen[1][:2], f"restored processes hold the same fds and threads ({seen[0][:2]} vs {seen[1][:2]})")
finally:
    if va._failures:
        for v in vmms:
            v.dump()
    for v in vmms:
        v.kill()
    shutil.rmtree(work, ignore_errors=True)
va.finish()
