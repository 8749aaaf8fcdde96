#!/usr/bin/env python3
"""A running guest moves between engines through snapshots: soft → KVM → soft.

  1. guests/pio-loop.S (N port writes from CPL 3, 2 vCPUs; KVM here exits to user space for each,
     so it takes seconds there): started on the soft engine, snapshotted mid-run, restored on KVM
     (`vessel --engine kvm`), snapshotted there mid-run, restored on the soft engine again, where
     it finishes: its count of exits is the one asked for and it reports PASS (exit status 33).
     The POST port's counter and every vCPU register crossed the engines twice.
  2. guests/cpl3-compute.S (primes by trial division at CPL 3, hashed, checked against a value
     computed at build time): snapshotted mid-computation on the soft engine, finished on KVM:
     the hash must match.
KVM's half skips with the reason where /dev/kvm is missing or unusable.

exit 0 pass, 1 fail, 77 skip
"""
import argparse
import os
import re
import shutil
import tempfile
import time

import vessel_api as va

ap = argparse.ArgumentParser()
ap.add_argument("--guests", required=True)
args = ap.parse_args()

if not os.access("/dev/kvm", os.R_OK | os.W_OK):
    va.skip("/dev/kvm is not usable on this host: the KVM half of soft ↔ KVM cannot run")

work = tempfile.mkdtemp(prefix="vessel-xengine-")
vmms = []


def vmm(name, engine):
    sock = os.path.join(work, f"{name}.sock")
    d = os.path.join(work, name)
    os.makedirs(d, exist_ok=True)
    v = va.Vmm(["--api-sock", sock, "--id", f"x-{name}-{os.getpid()}", "--engine", engine], sock, workdir=d)
    vmms.append(v)
    va.check(v.ready(), f"{name} ({engine}): the API socket accepts connections")
    return v


def snapshot(v, name):
    d = os.path.join(work, f"snap-{name}")
    os.makedirs(d, exist_ok=True)
    r = va.api(v.sock, "PATCH", "/vm", {"state": "Paused"})
    if r.status != 204:
        return None
    r = va.api(v.sock, "PUT", "/snapshot/create", {"snapshot_path": f"{d}/vm.state", "mem_file_path": f"{d}/vm.mem"})
    va.check(r.status == 204, f"snapshot {name}: {r}")
    return d


def load(v, d):
    r = va.api(v.sock, "PUT", "/snapshot/load", {"snapshot_path": f"{d}/vm.state",
                                                "mem_backend": {"backend_type": "File", "backend_path": f"{d}/vm.mem"},
                                                "resume_vm": True})
    va.check(r.status == 204, f"load {os.path.basename(d)} on {v.cmd[-1]}: {r}")
    return r.status == 204


def exits_of(v):
    info = va.api(v.sock, "GET", "/vm/info").json()
    return sum(c.get("exits", 0) + c.get("instructions", 0) for c in info.get("vcpus", []))


try:
    # 1. soft -> KVM -> soft with pio-loop.
    N = 40000
    a = vmm("a", "soft")
    for path, body in [("/boot-source", {"kernel_image_path": os.path.join(args.guests, "pio-loop.elf"),
                                         "boot_args": f"iterations={N}"}),
                       ("/machine-config", {"vcpu_count": 2, "mem_size_mib": 32}),
                       ("/actions", {"action_type": "InstanceStart"})]:
        r = va.api(a.sock, "PUT", path, body)
        va.check(r.status == 204, f"PUT {path}: {r}")
    s1 = snapshot(a, "soft1")
    va.check(s1 is not None and "PASS" not in a.stdout(), "the soft engine's run was caught before it finished")
    a.kill()
    b = vmm("b", "kvm")
    r = va.api(b.sock, "PUT", "/snapshot/load", {"snapshot_path": f"{s1}/vm.state",
                                                "mem_backend": {"backend_type": "File", "backend_path": f"{s1}/vm.mem"},
                                                "resume_vm": True}) if s1 else None
    refused = r is not None and r.status == 400 and "cannot present the CPU the guest saw: missing" in (r.fault() or "")
    if refused:
        # This host's KVM lacks features the soft engine's CPU model shows its guests: the restore
        # must be refused cleanly, naming them, with nothing running.
        state = va.api(b.sock, "GET", "/").json().get("state")
        va.check(state == "Not started" and b.proc.poll() is None,
                 f"the refused restore left the VMM fresh and alive ({state})")
        if not va._failures:
            va.skip(f"KVM here cannot present the soft engine's CPU ({r.fault()}); soft ↔ KVM needs a CPU model "
                    "both offer (CPU templates). The refusal was checked.")
    va.check(r is not None and r.status == 204, f"load the soft engine's snapshot on KVM: {r}")
    if r is not None and r.status == 204:
        time.sleep(1.0)
        e1 = exits_of(b)
        time.sleep(0.5)
        e2 = exits_of(b)
        va.check(e2 > e1, f"the guest runs on KVM (exits {e1} → {e2})")
        s2 = snapshot(b, "kvm")
        va.check(s2 is not None and "PASS" not in b.stdout(), "the KVM run was caught before it finished")
        b.kill()
        c = vmm("c", "soft")
        if s2 and load(c, s2):
            rc = c.wait(120)
            out = a.stdout() + b.stdout() + c.stdout()
            va.check(rc == 33, f"the guest finishes on the soft engine and passes (exit status {rc}, want 33)")
            va.check(f"pio-loop: {N} exits" in out and "PASS" in out, "it counted every exit across the three runs")

    # 2. soft -> KVM with cpl3-compute: a result checked against the build-time reference.
    d = vmm("d", "soft")
    for path, body in [("/boot-source", {"kernel_image_path": os.path.join(args.guests, "cpl3-compute.elf")}),
                       ("/machine-config", {"vcpu_count": 1, "mem_size_mib": 32}),
                       ("/actions", {"action_type": "InstanceStart"})]:
        va.api(d.sock, "PUT", path, body)
    time.sleep(0.05)
    s3 = snapshot(d, "compute")
    caught = s3 is not None and "result:" not in d.stdout()
    d.kill()
    if caught:
        e = vmm("e", "kvm")
        if load(e, s3):
            rc = e.wait(120)
            out = d.stdout() + e.stdout()
            m = re.search(r"result: (0x[0-9a-f]+)\s+expected: (0x[0-9a-f]+)", out)
            va.check(m is not None and m.group(1) == m.group(2) and "PASS" in out,
                     f"the computation started on the soft engine finishes on KVM with the right hash ({m.groups() if m else None}, rc {rc})")
    else:
        print("     (cpl3-compute finished on the soft engine before it could be snapshotted: part 2 not exercised)")
finally:
    if va._failures:
        for v in vmms:
            v.dump()
    for v in vmms:
        v.kill()
    shutil.rmtree(work, ignore_errors=True)
va.finish()
