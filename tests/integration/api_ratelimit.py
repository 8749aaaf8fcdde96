#!/usr/bin/env python3
"""Firecracker's rate limiters, live: a drive configured through the API with a 10 MB/s bandwidth
bucket (2 MB, refilled every 200 ms) is read by the guest (guests/linux/modes/api.sh
vessel.api=read: 20 MiB with O_DIRECT); the read must take the expected time within ±20 %. Then
PATCH /drives raises the limit to 100 MB/s while the guest runs, and the next 20 MiB must go
much faster. Debian's kernel on the soft engine.

exit 0 pass, 1 fail, 77 skip
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import vessel_api as va  # noqa: E402

kernel, initrd, base_cmdline, mem = va.guest_files("amd64")
work = tempfile.mkdtemp(prefix="vessel-rl-")
sock = os.path.join(work, "api.sock")
disk = os.path.join(work, "disk.img")
with open(disk, "wb") as f:
    f.truncate(64 << 20)
MIB = 20
RATE = 10_000_000      # bytes/s
BUCKET = 2_000_000     # refilled completely every 200 ms: 10 MB/s
vmm = va.Vmm(["--api-sock", sock, "--id", f"rl-{os.getpid()}", "--engine", "soft"], sock, workdir=work,
             stdin=subprocess.PIPE)
try:
    va.check(vmm.ready(), "the API socket accepts connections")
    steps = [
        ("/boot-source", {"kernel_image_path": kernel, "initrd_path": initrd,
                          "boot_args": f"{base_cmdline} vessel.mode=api vessel.api=read vessel.api.mb={MIB}"}),
        ("/machine-config", {"vcpu_count": 1, "mem_size_mib": mem}),
        ("/drives/data", {"drive_id": "data", "path_on_host": disk, "is_root_device": False, "is_read_only": True,
                          "rate_limiter": {"bandwidth": {"size": BUCKET, "refill_time": 200}}}),
        ("/actions", {"action_type": "InstanceStart"}),
    ]
    for path, body in steps:
        r = va.api(sock, "PUT", path, body)
        va.check(r.status == 204, f"PUT {path}: {r}")
    va.check(vmm.wait_output("vessel-guest: api read2 waiting", 600), "the first read finished")
    m = re.search(r"vessel-guest: api read1 bytes=(\d+) ms=(\d+)", vmm.stdout())
    va.check(m is not None, "the guest reported the first read")
    if m:
        nbytes, ms = int(m.group(1)), int(m.group(2))
        # The bucket starts full: its first BUCKET bytes pass at once, the rest at RATE.
        expected_ms = (nbytes - BUCKET) / RATE * 1000
        print(f"read {nbytes} bytes at 10 MB/s in {ms} ms (expected {expected_ms:.0f} ms)")
        va.check(abs(ms - expected_ms) <= 0.2 * expected_ms, f"the limited read takes the expected time ±20 % ({ms} vs {expected_ms:.0f} ms)")
    # Before the second read: once it is done the guest powers off and the VMM exits.
    metrics = va.api_checked(sock, "GET", "/metrics").body.decode()
    mt = re.search(r'vessel_block_rate_limiter_throttled_events_total\{device="data"\} (\d+)', metrics)
    va.check(mt is not None and int(mt.group(1)) > 0, "the throttling shows in the metrics")
    cfg = va.api_checked(sock, "GET", "/vm/config").json()
    va.check(cfg["drives"][0]["rate_limiter"]["bandwidth"]["size"] == BUCKET, "GET /vm/config shows the limiter")
    r = va.api_checked(sock, "PATCH", "/drives/data", {"drive_id": "data",
                                               "rate_limiter": {"bandwidth": {"size": 20_000_000, "refill_time": 200}}})
    va.check(r.status == 204, f"PATCH /drives/data raises the limit live: {r}")
    vmm.proc.stdin.write(b"go\n")
    vmm.proc.stdin.flush()
    va.check(vmm.wait_output("vessel-guest: api read2 bytes", 300), "the second read finished")
    m2 = re.search(r"vessel-guest: api read2 bytes=(\d+) ms=(\d+)", vmm.stdout())
    if m and m2:
        ms2 = int(m2.group(2))
        print(f"after the PATCH (100 MB/s): {m2.group(1)} bytes in {ms2} ms")
        va.check(ms2 * 3 < int(m.group(2)), f"the raised limit reads much faster ({ms2} ms vs {m.group(2)} ms)")
    rc = vmm.wait(300)
    va.check(rc == 0, f"the VMM exits 0 ({rc})")
finally:
    if va._failures:
        vmm.dump()
    vmm.kill()
    shutil.rmtree(work, ignore_errors=True)
va.finish()
