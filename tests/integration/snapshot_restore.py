#!/usr/bin/env python3
"""Snapshot and restore of a running Linux guest through Firecracker's API (Debian's kernel on the
soft engine). The guest (guests/linux/modes/snapshot.sh) extends a hash chain, printing each link
and appending it to a file on an ext4 virtio-blk disk (synced), and keeps a vsock connection to
the host open.

  1. boot, let the chain grow, pause, PUT /snapshot/create (Full), SIGKILL the VMM;
  2. a new VMM: PUT /snapshot/load (File backend, resume_vm): the chain goes on with no gap or
     repeat (every hash recomputed here), the disk file holds every printed link, the vsock
     connection is reset and the guest connects again;
  3. with --diff: a base Full, then 3 Diff snapshots while the guest runs, and a Full of the same
     moment as the last diff; `vessel snapshot-merge` folds the diffs into the base, whose memory
     must then be byte-identical to the Full; a third VMM restores the merged base and the chain
     goes on from the last diff's moment.

exit 0 pass, 1 fail, 77 skip
"""
import argparse
import filecmp
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

import vessel_api as va
from snapshot_chain import chain_of, check_chain, wait_for

ap = argparse.ArgumentParser()
ap.add_argument("--cpus", type=int, default=1)
ap.add_argument("--diff", action="store_true", help="also the Diff chain and snapshot-merge")
args = ap.parse_args()

kernel, initrd, base_cmdline, mem = va.guest_files("amd64")
work = tempfile.mkdtemp(prefix="vessel-snap-")
disk = os.path.join(work, "disk.img")
vsock_path = os.path.join(work, "v.sock")
PORT = 5000


def make_disk():
    # No journal: what the guest synced is in place in the image, readable by debugfs at once.
    src = tempfile.mkdtemp(dir=work)
    with open(os.path.join(src, "README"), "w") as f:
        f.write("snapshot test disk\n")
    with open(disk, "wb") as f:
        f.truncate(64 << 20)
    mke2fs = shutil.which("mke2fs") or "/sbin/mke2fs"
    subprocess.run([mke2fs, "-q", "-F", "-t", "ext4", "-O", "^has_journal", "-d", src, disk], check=True)


class VsockListener:
    """The host end of the guest's connections to CID 2 port PORT (Firecracker: PATH_PORT)."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(8)
        self.lines = []  # (time, line)
        self.connections = 0
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
            threading.Thread(target=self._read, args=(c,), daemon=True).start()

    def _read(self, c):
        buf = b""
        while True:
            try:
                data = c.recv(4096)
            except OSError:
                break
            if not data:
                break
            buf += data
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                with self.lock:
                    self.lines.append((time.time(), line.decode(errors="replace")))
        c.close()

    def lines_after(self, t):
        with self.lock:
            return [l for (when, l) in self.lines if when >= t]


def new_vmm(name):
    sock = os.path.join(work, f"{name}.sock")
    os.makedirs(os.path.join(work, name), exist_ok=True)
    vmm = va.Vmm(["--api-sock", sock, "--id", f"snap-{name}-{os.getpid()}", "--engine", "soft"], sock, workdir=os.path.join(work, name))
    va.check(vmm.ready(), f"{name}: the API socket accepts connections")
    return vmm


def snapshot(vmm, kind, dirname):
    d = os.path.join(work, dirname)
    os.makedirs(d, exist_ok=True)
    t0 = time.time()
    r = va.api_checked(vmm.sock, "PUT", "/snapshot/create",
                       {"snapshot_type": kind, "snapshot_path": os.path.join(d, "vm.state"),
                        "mem_file_path": os.path.join(d, "vm.mem")})
    ms = (time.time() - t0) * 1000
    va.check(r.status == 204, f"PUT /snapshot/create {kind} → {dirname}: {r}")
    st = os.stat(os.path.join(d, "vm.mem")) if r.status == 204 else None
    if st:
        print(f"     {kind} snapshot: {ms:.0f} ms, memory file {st.st_size >> 20} MiB, {st.st_blocks * 512 / 2**20:.1f} MiB on disk")
    return d


def pause(vmm, state):
    r = va.api_checked(vmm.sock, "PATCH", "/vm", {"state": state})
    va.check(r.status == 204, f"PATCH /vm {state}: {r}")


def last_link(vmm):
    links = chain_of(vmm.stdout())
    return links[-1][0] if links else -1


def restore(name, snapdir, track=False):
    vmm = new_vmm(name)
    t0 = time.time()
    r = va.api_checked(vmm.sock, "PUT", "/snapshot/load",
                       {"snapshot_path": os.path.join(snapdir, "vm.state"),
                        "mem_backend": {"backend_type": "File", "backend_path": os.path.join(snapdir, "vm.mem")},
                        "track_dirty_pages": track, "resume_vm": True})
    va.check(r.status == 204, f"{name}: PUT /snapshot/load (resume_vm): {r}")
    print(f"     load answered in {(time.time() - t0) * 1000:.1f} ms")
    info = va.api_checked(vmm.sock, "GET", "/").json()
    va.check(info.get("state") == "Running", f"{name}: GET / says Running ({info.get('state')})")
    return vmm


def disk_chain():
    out = subprocess.run(["debugfs", "-R", "cat /chain", disk], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    links = []
    for line in out.stdout.decode(errors="replace").splitlines():
        m = re.match(r"^(\d+) ([0-9a-f]{16})$", line)
        if m:
            links.append((int(m.group(1)), m.group(2)))
    return links


vmms = []
try:
    make_disk()
    listener = VsockListener(f"{vsock_path}_{PORT}")

    # 1. Boot and snapshot.
    a = new_vmm("a")
    vmms.append(a)
    for path, body in [
        ("/boot-source", {"kernel_image_path": kernel, "initrd_path": initrd,
                          "boot_args": f"{base_cmdline} vessel.mode=snapshot vessel.snap.vsock={PORT}"}),
        ("/machine-config", {"vcpu_count": args.cpus, "mem_size_mib": mem, "track_dirty_pages": True}),
        ("/drives/data", {"drive_id": "data", "path_on_host": disk, "is_root_device": False, "is_read_only": False}),
        ("/vsock", {"guest_cid": 3, "uds_path": vsock_path}),
        ("/actions", {"action_type": "InstanceStart"}),
    ]:
        r = va.api(a.sock, "PUT", path, body)
        va.check(r.status == 204, f"PUT {path}: {r}")
    va.check(wait_for(lambda: last_link(a) >= 5, 600), "the guest's chain reaches link 5")
    va.check(wait_for(lambda: len(listener.lines_after(0)) >= 3, 60), "vsock lines arrive from the guest")
    pause(a, "Paused")
    # track_dirty_pages from /machine-config: a Diff works on the VM booted through the API.
    snapshot(a, "Diff", "boot-diff")
    full = snapshot(a, "Full", "full")
    before = a.stdout()
    n_before = last_link(a)
    os.kill(a.proc.pid, signal.SIGKILL)
    a.proc.wait()
    print(f"     snapshot taken after link {n_before}; VMM a killed with SIGKILL")

    # 2. Restore in a new process.
    t_restore = time.time()
    b = restore("b", full, track=True)
    vmms.append(b)
    va.check(wait_for(lambda: last_link(b) >= n_before + 5, 300), f"the restored chain reaches link {n_before + 5}")
    check_chain(chain_of(before + b.stdout()), "console chain across the restore")
    va.check(wait_for(lambda: "snap vsock ended 1" in b.stdout(), 60),
             "the guest's vsock connection was reset by the restore")
    va.check(wait_for(lambda: any(l.startswith("vsock-line 2 ") for l in listener.lines_after(t_restore)), 60),
             "the guest connected again over vsock and its lines arrive")
    pause(b, "Paused")
    on_disk = disk_chain()
    check_chain(on_disk, "the disk file")
    va.check(on_disk and on_disk[-1][0] >= last_link(b) - 1,
             f"the disk holds every printed link (last on disk {on_disk[-1][0] if on_disk else None}, "
             f"last printed {last_link(b)})")
    pause(b, "Resumed")

    if args.diff:
        # 3. A Diff chain on the restored VM (it tracks dirty pages since its load).
        pause(b, "Paused")
        base = snapshot(b, "Full", "base")
        pause(b, "Resumed")
        for k in (1, 2, 3):
            n = last_link(b)
            va.check(wait_for(lambda: last_link(b) >= n + 3, 120), f"the chain grows before diff {k}")
            pause(b, "Paused")
            snapshot(b, "Diff", f"diff{k}")
            if k < 3:
                pause(b, "Resumed")
        ref = snapshot(b, "Full", "ref")
        before_c = b.stdout()
        n_before_c = last_link(b)
        b.kill()
        merge = subprocess.run([va.vessel_binary(), "snapshot-merge", base] + [os.path.join(work, f"diff{k}") for k in (1, 2, 3)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        va.check(merge.returncode == 0, f"vessel snapshot-merge: {merge.stdout.decode().strip()} {merge.stderr.decode().strip()}")
        same = filecmp.cmp(os.path.join(base, "vm.mem"), os.path.join(ref, "vm.mem"), shallow=False)
        if not same:
            differ = []
            with open(os.path.join(base, "vm.mem"), "rb") as f1, open(os.path.join(ref, "vm.mem"), "rb") as f2:
                page = 0
                while True:
                    p1, p2 = f1.read(4096), f2.read(4096)
                    if not p1:
                        break
                    if p1 != p2:
                        differ.append(page)
                    page += 1
            print(f"     {len(differ)} pages differ, first: {[hex(p * 4096) for p in differ[:12]]}")
        va.check(same, "base + 3 merged diffs is byte-identical to a Full snapshot of the same moment")
        c = restore("c", base)
        vmms.append(c)
        va.check(wait_for(lambda: last_link(c) >= n_before_c + 3, 300), "the chain goes on from the merged snapshot")
        links_c = chain_of(c.stdout())
        va.check(bool(links_c) and links_c[0][0] <= n_before_c + 1,
                 f"the merged snapshot resumes where the last diff was taken (first new link "
                 f"{links_c[0][0] if links_c else None}, last before {n_before_c})")
        check_chain(chain_of(before + before_c + c.stdout()), "console chain across both restores")
finally:
    if va._failures:
        for v in vmms:
            v.dump()
    for v in vmms:
        v.kill()
    if os.environ.get("VESSEL_KEEP"):
        print(f"     kept {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
va.finish()
