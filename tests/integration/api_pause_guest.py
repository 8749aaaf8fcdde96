#!/usr/bin/env python3
"""Pause and resume on either engine with a test guest (guests/pio-loop.S: N port writes that exit
to the VMM, then it checks its count and reports PASS through the debug-exit port): while it runs
with 2 vCPUs, the VM is paused and resumed again and again through the API. Every pause must
stop the exits (the VMM's exit counters stand still while paused, on KVM), the guest must finish
with its own check passing, and pause/resume latencies are reported.

usage: api_pause_guest.py --engine kvm|soft [--cycles N]
exit 0 pass, 1 fail, 77 skip (no usable /dev/kvm for --engine kvm)
"""
import argparse
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import vessel_api as va  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--engine", choices=["kvm", "soft"], required=True)
parser.add_argument("--cycles", type=int, default=10)
parser.add_argument("--guests", required=True)
args = parser.parse_args()

if args.engine == "kvm" and not (os.access("/dev/kvm", os.R_OK | os.W_OK)):
    va.skip("/dev/kvm is not usable on this host")

work = tempfile.mkdtemp(prefix="vessel-pause-guest-")
sock = os.path.join(work, "api.sock")
# KVM here exits to user space in ~72 us per port write: 60,000 of them take ~4 s.
iterations = 60000 if args.engine == "kvm" else 100000000
vmm = va.Vmm(["run", "--engine", args.engine, "--kernel", os.path.join(args.guests, "pio-loop.elf"), "--cmdline",
              f"iterations={iterations}", "--cpus", "2", "--api-sock", sock, "--id", f"pauseg-{os.getpid()}"], sock,
             workdir=work)
try:
    va.check(vmm.ready(), "the API socket accepts connections")
    pauses, resumes, exits_frozen = [], [], 0
    done_early = False
    for i in range(args.cycles):
        time.sleep(0.1)
        r = va.api(sock, "PATCH", "/vm", {"state": "Paused"})
        if r.status != 204:
            done_early = vmm.proc.poll() is not None
            break
        info = va.api(sock, "GET", "/vm/info").json()
        pauses.append(info["last_pause_us"])
        work_before = sum(v["exits"] + v["instructions"] for v in info["vcpus"])
        time.sleep(0.1)
        info = va.api(sock, "GET", "/vm/info").json()
        work_after = sum(v["exits"] + v["instructions"] for v in info["vcpus"])
        exits_frozen += work_before == work_after
        va.check(info["state"] == "Paused", f"cycle {i}: paused")
        r = va.api(sock, "PATCH", "/vm", {"state": "Resumed"})
        va.check(r.status == 204, f"cycle {i}: resumed")
        resumes.append(va.api(sock, "GET", "/vm/info").json()["last_resume_us"])
    va.check(not done_early, "the guest was still running for every cycle")
    va.check(exits_frozen == len(pauses) and pauses, f"the vCPUs do nothing while paused ({exits_frozen}/{len(pauses)})")
    rc = vmm.wait(300)
    va.check(rc == 33, f"the guest's own check passes after {len(pauses)} pauses (exit status {rc}, want 33)")
    va.check("PASS" in vmm.stdout(), "the guest printed PASS")
    if pauses:
        pauses.sort()
        resumes.sort()
        print(f"{args.engine}, 2 vCPUs: pause median {pauses[len(pauses) // 2]} us (max {pauses[-1]}), "
              f"resume median {resumes[len(resumes) // 2]} us (max {resumes[-1]})")
finally:
    if va._failures:
        vmm.dump()
    vmm.kill()
    shutil.rmtree(work, ignore_errors=True)
va.finish()
