#!/usr/bin/env python3
"""20 clones of one snapshot at once, each with its own randomness.

Debian's kernel on the soft engine runs guests/linux/modes/snapshot.sh (a hash chain whose links
each carry 8 bytes of /dev/urandom). It is snapshotted, and 20 new VMMs load the snapshot at the
same time (each with resume_vm). Every clone must go on with the same chain (they are copies of
one machine) and print different random bytes after the restore: the restore gives each a new
VM Generation ID and notifies the guest, whose kernel reseeds its RNG (drivers/virt/vmgenid.c).
Without that, every clone would print the same bytes.

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
ap.add_argument("--clones", type=int, default=20)
args = ap.parse_args()

kernel, initrd, base_cmdline, mem = va.guest_files("amd64")
work = tempfile.mkdtemp(prefix="vessel-clones-")
CHAIN = re.compile(r"^vessel-guest: chain (\d+) ([0-9a-f]{16}) rand=([0-9a-f]+)$", re.M)
vmms = []


def new_vmm(name):
    sock = os.path.join(work, f"{name}.sock")
    d = os.path.join(work, name)
    os.makedirs(d, exist_ok=True)
    v = va.Vmm(["--api-sock", sock, "--id", f"clone-{name}-{os.getpid()}", "--engine", "soft"], sock, workdir=d)
    vmms.append(v)
    return v


def links(v):
    return [(int(m.group(1)), m.group(2), m.group(3)) for m in CHAIN.finditer(v.stdout())]


try:
    src = new_vmm("src")
    va.check(src.ready(), "source: the API socket accepts connections")
    for path, body in [
        ("/boot-source", {"kernel_image_path": kernel, "initrd_path": initrd,
                          "boot_args": f"{base_cmdline} vessel.mode=snapshot vessel.snap.delay=0.5"}),
        ("/machine-config", {"vcpu_count": 1, "mem_size_mib": mem}),
        ("/actions", {"action_type": "InstanceStart"}),
    ]:
        r = va.api(src.sock, "PUT", path, body)
        va.check(r.status == 204, f"PUT {path}: {r}")
    deadline = time.time() + 600
    while time.time() < deadline and len(links(src)) < 3:
        time.sleep(0.1)
    va.check(len(links(src)) >= 3, "the source's chain runs")
    va.check(va.api(src.sock, "PATCH", "/vm", {"state": "Paused"}).status == 204, "pause the source")
    snap = os.path.join(work, "snap")
    os.makedirs(snap)
    r = va.api(src.sock, "PUT", "/snapshot/create", {"snapshot_path": os.path.join(snap, "vm.state"),
                                                     "mem_file_path": os.path.join(snap, "vm.mem")})
    va.check(r.status == 204, f"snapshot: {r}")
    last = links(src)[-1][0]
    src.kill()

    clones = [new_vmm(f"c{i}") for i in range(args.clones)]
    for c in clones:
        va.check(c.ready(), "clone: the API socket accepts connections")
    t0 = time.time()
    for c in clones:
        r = va.api(c.sock, "PUT", "/snapshot/load",
                   {"snapshot_path": os.path.join(snap, "vm.state"),
                    "mem_backend": {"backend_type": "File", "backend_path": os.path.join(snap, "vm.mem")},
                    "resume_vm": True})
        va.check(r.status == 204, f"clone load: {r}")
    print(f"     {args.clones} clones loaded in {(time.time() - t0) * 1000:.0f} ms")
    deadline = time.time() + 600
    while time.time() < deadline and not all(len([l for l in links(c) if l[0] > last]) >= 1 for c in clones):
        time.sleep(0.2)
    firsts = {}
    for i, c in enumerate(clones):
        new = [l for l in links(c) if l[0] > last]
        va.check(bool(new), f"clone {i} goes on with the chain")
        if new:
            firsts[i] = new[0]
    # The same machine: the same chain...
    va.check(len({(n, h) for n, h, _ in firsts.values()}) == 1,
             f"every clone continues the same chain ({sorted({(n, h) for n, h, _ in firsts.values()})[:3]})")
    # ...but its own randomness.
    rands = [r for _, _, r in firsts.values()]
    print(f"     first random bytes after the restore: {rands[:5]}...")
    va.check(len(set(rands)) == len(rands) == args.clones,
             f"all {args.clones} clones print different random bytes ({len(set(rands))} distinct of {len(rands)})")
finally:
    if va._failures:
        for v in vmms[:3]:
            v.dump()
    for v in vmms:
        v.kill()
    shutil.rmtree(work, ignore_errors=True)
va.finish()
