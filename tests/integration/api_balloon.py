#!/usr/bin/env python3
"""The balloon through the API, live: configured before boot (PUT /balloon, statistics every 1 s),
then while Debian's kernel runs on the soft engine PATCH /balloon moves the target and the guest's
virtio_balloon driver follows it (GET /balloon/statistics: actual_mib reaches the target; the
guest's memory statistics arrive and refresh), PATCH /balloon/statistics changes the interval, and
Firecracker's rules hold (statistics cannot be switched off after boot; a target above the VM's
memory is refused). Every answer is validated against src/api/openapi.yaml.

exit 0 pass, 1 fail, 77 skip
"""
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import vessel_api as va  # noqa: E402

try:
    from api_schema import ApiSchema
    schema = ApiSchema()
except Exception as e:
    schema = None
    print(f"note: no OpenAPI validation ({e})")


def call(sock, method, path, body=None):
    r = va.api(sock, method, path, body)
    if schema:
        try:
            schema.validate(method, path, r.status, r.body, r.headers.get("content-type", ""))
        except AssertionError as e:
            va.check(False, f"OpenAPI: {method} {path}: {e}")
    return r


def wait_stats(sock, pred, timeout):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        r = call(sock, "GET", "/balloon/statistics")
        if r.status == 200:
            last = r.json()
            if pred(last):
                return last
        time.sleep(0.5)
    return last


kernel, initrd, base_cmdline, _ = va.guest_files("amd64")
work = tempfile.mkdtemp(prefix="vessel-balloon-")
sock = os.path.join(work, "api.sock")
vmm = va.Vmm(["--api-sock", sock, "--id", f"balloon-{os.getpid()}", "--engine", "soft"], sock, workdir=work)
try:
    va.check(vmm.ready(), "the API socket accepts connections")
    for path, body in [
        ("/boot-source", {"kernel_image_path": kernel, "initrd_path": initrd,
                          "boot_args": f"{base_cmdline} vessel.mode=api vessel.api=idle"}),
        ("/machine-config", {"vcpu_count": 1, "mem_size_mib": 256}),
        ("/balloon", {"amount_mib": 0, "deflate_on_oom": True, "stats_polling_interval_s": 1}),
        ("/actions", {"action_type": "InstanceStart"}),
    ]:
        r = call(sock, "PUT", path, body)
        va.check(r.status == 204, f"PUT {path}: {r}")
    va.check(vmm.wait_output("vessel-guest: api idle", 600), "the guest is up")
    r = call(sock, "PATCH", "/balloon", {"amount_mib": 64})
    va.check(r.status == 204, f"PATCH /balloon to 64 MiB: {r}")
    va.check(call(sock, "GET", "/balloon").json()["amount_mib"] == 64, "GET /balloon shows the new target")
    s = wait_stats(sock, lambda s: s["actual_mib"] == 64 and "free_memory" in s, 120)
    va.check(s is not None and s["actual_mib"] == 64 and s["target_mib"] == 64,
             f"the guest's driver inflates to the target: {s}")
    va.check(s is not None and s.get("total_memory", 0) > 128 << 20, f"the guest reports its memory: {s}")
    first = s.get("free_memory") if s else None
    # Statistics refresh on their own every second (the VMM asks for them): the device's count
    # of statistics updates grows.
    import re

    def updates():
        m = re.search(r"^vessel_balloon_stats_updates_count_total (\d+)$", call(sock, "GET", "/metrics").body.decode(),
                      re.M)
        return int(m.group(1)) if m else -1

    u0 = updates()
    time.sleep(3.5)
    u1 = updates()
    va.check(u0 >= 1 and u1 - u0 >= 2, f"statistics arrive every second on their own ({u0} -> {u1} updates)")
    r = call(sock, "PATCH", "/balloon/statistics", {"stats_polling_interval_s": 2})
    va.check(r.status == 204, f"PATCH /balloon/statistics interval 2: {r}")
    r = call(sock, "PATCH", "/balloon/statistics", {"stats_polling_interval_s": 0})
    va.check(r.status == 400 and "Statistics cannot be enabled/disabled after activation." in (r.fault() or ""),
             f"statistics cannot be switched off after boot: {r}")
    r = call(sock, "PATCH", "/balloon", {"amount_mib": 4096})
    va.check(r.status == 400 and "Amount of pages requested is too large." in (r.fault() or ""),
             f"a target above the VM's memory is refused: {r}")
    r = call(sock, "PATCH", "/balloon", {"amount_mib": 0})
    s = wait_stats(sock, lambda s: s["actual_mib"] == 0, 120)
    va.check(r.status == 204 and s is not None and s["actual_mib"] == 0, f"the balloon deflates to 0: {s}")
    print(f"free memory seen by the guest: {first} bytes with 64 MiB in the balloon")
    r = call(sock, "PUT", "/actions", {"action_type": "InstanceKill"})
    va.check(r.status == 204, "InstanceKill")
    va.check(vmm.wait(30) is not None, "the VMM exits")
finally:
    if va._failures:
        vmm.dump()
    vmm.kill()
    shutil.rmtree(work, ignore_errors=True)
va.finish()
