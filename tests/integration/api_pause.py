#!/usr/bin/env python3
"""Pause and resume through the API (PATCH /vm) with Debian's kernel on the soft engine. The guest
(guests/linux/modes/api.sh vessel.api=ticker) prints a line every 100 ms with its uptime and wall
clock. While paused, the console must stay silent; after resuming the lines continue. The guest's
clocks must not count the pause (as with KVM and Firecracker: monotonic time, and with it the
guest's wall clock, stops while the VM is paused), and the kernel must not complain about its
clocks (clocksource watchdog, soft lockups, RCU stalls).

usage: api_pause.py [--pause SECONDS] [--cpus N]
  --pause: how long the VM stays paused (default 2; the soak test uses VESSEL_SOAK_PAUSE_S or 60,
  an hour with VESSEL_SOAK_PAUSE_S=3600).
exit 0 pass, 1 fail, 77 skip
"""
import argparse
import os
import re
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import vessel_api as va  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--pause", type=float)
parser.add_argument("--soak", action="store_true")
parser.add_argument("--cpus", type=int, default=2)
args = parser.parse_args()
pause_s = args.pause if args.pause is not None else (
    float(os.environ.get("VESSEL_SOAK_PAUSE_S", "60")) if args.soak else 2.0)

kernel, initrd, base_cmdline, mem = va.guest_files("amd64")
work = tempfile.mkdtemp(prefix="vessel-pause-")
sock = os.path.join(work, "api.sock")
cmdline = f"{base_cmdline} vessel.mode=api vessel.api=ticker vessel.api.seconds=30"
vmm = va.Vmm(["run", "--engine", "soft", "--kernel", kernel, "--initrd", initrd, "--cmdline", cmdline,
              "--mem", f"{mem}M", "--cpus", str(args.cpus), "--no-reboot", "--api-sock", sock, "--id",
              f"pause-{os.getpid()}"], sock, workdir=work)
TICK = re.compile(r"vessel-guest: tick (\d+) up_ms=(\d+) epoch=(\d+)")
try:
    va.check(vmm.ready(), "the API socket accepts connections")
    va.check(vmm.wait_output("vessel-guest: tick 20 ", 600), "the guest ticks")
    t0 = time.monotonic()
    r = va.api_checked(sock, "PATCH", "/vm", {"state": "Paused"})
    pause_ms = (time.monotonic() - t0) * 1000
    va.check(r.status == 204, f"PATCH /vm Paused: {r}")
    paused_at = time.time()
    va.check(va.api(sock, "GET", "/").json()["state"] == "Paused", "GET / says Paused")
    time.sleep(0.3)  # output already on its way settles
    before = vmm.stdout()
    last_before = TICK.findall(before)[-1]
    # Sleep in slices, checking that nothing comes out meanwhile.
    silent = True
    deadline = paused_at + pause_s
    while time.time() < deadline:
        time.sleep(min(5.0, max(0.0, deadline - time.time())))
        if vmm.stdout() != before:
            silent = False
            break
    va.check(silent, f"no console output while paused for {pause_s:.0f} s")
    t0 = time.monotonic()
    r = va.api_checked(sock, "PATCH", "/vm", {"state": "Resumed"})
    resume_ms = (time.monotonic() - t0) * 1000
    va.check(r.status == 204, f"PATCH /vm Resumed: {r}")
    va.check(va.api(sock, "GET", "/").json()["state"] == "Running", "GET / says Running")
    n_before = int(last_before[0])
    va.check(vmm.wait_output(f"vessel-guest: tick {n_before + 5} ", 120), "the ticks continue after resuming")
    print(f"pause took {pause_ms:.2f} ms, resume {resume_ms:.2f} ms (round trips through the API socket)")
    info = va.api_checked(sock, "GET", "/vm/info").json()
    print(f"inside the VMM: pause {info['last_pause_us']} us, resume {info['last_resume_us']} us")

    rc = vmm.wait(900)
    out = vmm.stdout()
    va.check(rc == 0, f"the VMM exits 0 (status {rc})")
    ticks = [(int(n), int(up), int(ep)) for n, up, ep in TICK.findall(out)]
    gap = None
    for a, b in zip(ticks, ticks[1:]):
        if a[0] == n_before:
            gap = (b[1] - a[1], b[2] - a[2])
    va.check(gap is not None, "the ticks around the pause are there")
    if gap:
        print(f"guest clocks across the pause: uptime +{gap[0]} ms, wall clock +{gap[1]} s (paused {pause_s:.0f} s)")
        va.check(gap[0] < 1000, f"guest monotonic time does not count the pause (+{gap[0]} ms)")
        va.check(gap[1] <= 1 + (1 if pause_s < 2 else 0), f"the guest's wall clock does not count the pause (+{gap[1]} s)")
    m = re.search(r"vessel-guest: ticker clock_complaints=(\d+)", out)
    va.check(m is not None and m.group(1) == "0", "the kernel does not complain about its clocks: "
             + "; ".join(re.findall(r"vessel-guest: dmesg: (.*)", out)))
finally:
    if va._failures:
        vmm.dump()
    vmm.kill()
    shutil.rmtree(work, ignore_errors=True)
va.finish()
