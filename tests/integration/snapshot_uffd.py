#!/usr/bin/env python3
"""Restore with the Uffd memory backend through `vessel uffd-handler` (Firecracker's
page-fault-handler protocol), Debian's kernel on the soft engine running the hash-chain guest
(guests/linux/modes/snapshot.sh, as tests/integration/snapshot_restore.py).

  1. boot, let the chain grow, pause, PUT /snapshot/create (Full), SIGKILL the VMM;
  2. restore it in a new VMM per handler mode: lazy, lazy with --record, --prefetch of that
     trace, --eager (and the File backend beside them, for comparison); each time the chain goes
     on with no gap or repeat and correct hashes, the VMM is killed, and the handler exits by
     itself with a summary of the pages it served (the trace written, in record mode).

Restore → running: from PUT /snapshot/load (resume_vm) until a byte typed on the console comes
back echoed by the guest's tty.

exit 0 pass, 1 fail, 77 skip
"""
import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import tempfile
import time

import vessel_api as va
from snapshot_chain import chain_of, check_chain, wait_for

ap = argparse.ArgumentParser()
ap.add_argument("--cpus", type=int, default=1)
ap.add_argument("--runs", type=int, default=1, help="restores per mode (the median time is reported)")
args = ap.parse_args()

kernel, initrd, base_cmdline, mem = va.guest_files("amd64")
work = tempfile.mkdtemp(prefix="vessel-uffd-")
SUMMARY = re.compile(r"faults=(\d+) lazy=(\d+) zero=(\d+) prefetched=(\d+) eager=(\d+) raced=(\d+) removed=(\d+) "
                     r"recorded=(\d+)")


def last_link(vmm):
    links = chain_of(vmm.stdout(), ignore="Q")
    return links[-1][0] if links else -1


def new_vmm(name, stdin=subprocess.DEVNULL):
    sock = os.path.join(work, f"{name}.sock")
    d = os.path.join(work, name)
    os.makedirs(d, exist_ok=True)
    vmm = va.Vmm(["--api-sock", sock, "--id", f"uffd-{name}-{os.getpid()}", "--engine", "soft"], sock,
                 stdin=stdin, workdir=d)
    vmms.append(vmm)
    va.check(vmm.ready(), f"{name}: the API socket accepts connections")
    return vmm


def restore(name, backend, path, before, n_before):
    """Loads the snapshot into a new VMM; returns (load ms, echo ms) once the chain went on."""
    vmm = new_vmm(name, stdin=subprocess.PIPE)
    t0 = time.perf_counter()
    r = va.api(vmm.sock, "PUT", "/snapshot/load",
               {"snapshot_path": os.path.join(snap, "vm.state"),
                "mem_backend": {"backend_type": backend, "backend_path": path}, "resume_vm": True})
    load_ms = (time.perf_counter() - t0) * 1000
    fault = r.fault() or ""
    if r.status != 204 and "userfaultfd" in fault and ("not permitted" in fault or "not implemented" in fault):
        va.skip(f"the kernel refuses a userfaultfd: {fault}")
    va.check(r.status == 204, f"{name}: PUT /snapshot/load ({backend}, resume_vm): {r}")
    vmm.proc.stdin.write(b"Q")
    vmm.proc.stdin.flush()
    echoed = wait_for(lambda: "Q" in vmm.stdout(), 30, step=0.0005)
    echo_ms = (time.perf_counter() - t0) * 1000
    va.check(echoed, f"{name}: the guest's tty echoes a typed byte")
    va.check(wait_for(lambda: last_link(vmm) >= n_before + 3, 120), f"{name}: the chain reaches link {n_before + 3}")
    check_chain(chain_of(before + vmm.stdout(), ignore="Q"), f"{name}: console chain across the restore")
    print(f"     {name}: load answered in {load_ms:.1f} ms, restore → running (echo) {echo_ms:.1f} ms")
    os.kill(vmm.proc.pid, signal.SIGKILL)
    vmm.proc.wait()
    return load_ms, echo_ms


def handler(name, extra):
    sock = os.path.join(work, f"handler-{name}.sock")
    out = open(os.path.join(work, f"handler-{name}.out"), "w+b")
    cmd = [va.vessel_binary(), "uffd-handler", "--socket", sock, "--mem-file", os.path.join(snap, "vm.mem")] + extra
    print("--- command: " + " ".join(cmd), flush=True)
    p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    handlers.append(p)
    va.check(wait_for(lambda: os.path.exists(sock) or p.poll() is not None, 10) and p.poll() is None,
             f"uffd-handler {name}: listening on its socket")
    return p, sock, out


def handler_summary(name, p, out):
    rc = p.wait(30) if wait_for(lambda: p.poll() is not None, 30) else None
    out.seek(0)
    text = out.read().decode(errors="replace")
    print("     " + "\n     ".join(l for l in text.splitlines() if l))
    va.check(rc == 0, f"uffd-handler {name}: exits by itself after the VMM, status 0 (got {rc})")
    m = SUMMARY.search(text)
    va.check(m is not None, f"uffd-handler {name}: prints a summary")
    keys = ("faults", "lazy", "zero", "prefetched", "eager", "raced", "removed", "recorded")
    return dict(zip(keys, map(int, m.groups()))) if m else dict.fromkeys(keys, 0)


vmms, handlers = [], []
try:
    a = new_vmm("a")
    for path, body in [
        ("/boot-source", {"kernel_image_path": kernel, "initrd_path": initrd,
                          "boot_args": f"{base_cmdline} vessel.mode=snapshot"}),
        ("/machine-config", {"vcpu_count": args.cpus, "mem_size_mib": mem}),
        ("/actions", {"action_type": "InstanceStart"}),
    ]:
        r = va.api(a.sock, "PUT", path, body)
        va.check(r.status == 204, f"PUT {path}: {r}")
    va.check(wait_for(lambda: last_link(a) >= 5, 600, step=0.1), "the guest's chain reaches link 5")
    va.check(va.api(a.sock, "PATCH", "/vm", {"state": "Paused"}).status == 204, "pause")
    snap = os.path.join(work, "snap")
    os.makedirs(snap)
    r = va.api(a.sock, "PUT", "/snapshot/create", {"snapshot_type": "Full", "snapshot_path": os.path.join(snap, "vm.state"),
                                                   "mem_file_path": os.path.join(snap, "vm.mem")})
    va.check(r.status == 204, f"PUT /snapshot/create: {r}")
    before, n_before = a.stdout(), last_link(a)
    os.kill(a.proc.pid, signal.SIGKILL)
    a.proc.wait()
    st = os.stat(os.path.join(snap, "vm.mem"))
    data_pages = st.st_blocks * 512 // 4096
    print(f"     snapshot after link {n_before}: memory file {st.st_size >> 20} MiB, {data_pages} pages of data")

    times = {}
    times["File"] = [restore(f"file{i}", "File", os.path.join(snap, "vm.mem"), before, n_before)
                     for i in range(args.runs)]

    trace = os.path.join(work, "restore.trace")
    modes = [("lazy", []), ("record", ["--record", trace]), ("prefetch", ["--prefetch", trace]), ("eager", ["--eager"])]
    for run, (name, extra) in [(i, m) for m in modes for i in range(args.runs if m[0] != "record" else 1)]:
        p, sock, out = handler(f"{name}{run}", extra)
        times.setdefault(name, []).append(restore(f"{name}{run}", "Uffd", sock, before, n_before))
        s = handler_summary(name, p, out)
        va.check(s["faults"] > 0 or name == "eager", f"{name}: the handler served page faults ({s['faults']})")
        if name in ("lazy", "record"):
            va.check(s["lazy"] > 100, f"{name}: pages served lazily from the file ({s['lazy']})")
        if name == "record":
            va.check(os.path.exists(trace) and s["recorded"] == s["lazy"] + s["zero"],
                     f"record: the trace holds every page faulted ({s['recorded']})")
        if name == "prefetch":
            va.check(s["prefetched"] > 100, f"prefetch: pages copied ahead from the trace ({s['prefetched']})")
            va.check(s["lazy"] < times_lazy_pages, f"prefetch: fewer pages served on a fault than without "
                                                   f"({s['lazy']} < {times_lazy_pages})")
        if name == "eager":
            va.check(s["eager"] + s["raced"] >= data_pages * 9 // 10,
                     f"eager: (nearly) every data page copied at once ({s['eager']} of {data_pages})")
        if name == "lazy":
            times_lazy_pages = s["lazy"]
    print("     restore → running (median ms, from PUT /snapshot/load to the echo; load answered): "
          + ", ".join(f"{k} {statistics.median(e for _, e in v):.1f} ({statistics.median(l for l, _ in v):.1f})"
                      for k, v in times.items()))
finally:
    if va._failures:
        for v in vmms:
            v.dump()
    for v in vmms:
        v.kill()
    for p in handlers:
        if p.poll() is None:
            p.kill()
            p.wait()
    if os.environ.get("VESSEL_KEEP"):
        print(f"     kept {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
va.finish()
