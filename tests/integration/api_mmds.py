#!/usr/bin/env python3
"""MMDS, Firecracker's metadata service, read from the guest with busybox. The VMM is configured
through the API (boot source, a network interface on a tap in a namespace the test creates,
PUT /mmds/config for that interface, PUT /mmds with the store) and the guest
(guests/linux/modes/api.sh vessel.api=mmds) asks 169.254.169.254 over its virtio-net: a session
token with a PUT sent through nc, listings and values with wget (IMDS text), a JSON answer, a GET
without a token (accepted in V1, refused in V2); then the host PATCHes the store and the guest
reads the new value. Nothing of this reaches the tap: the VMM answers inside the device.

usage: api_mmds.py --version V1|V2
exit 0 pass, 1 fail, 77 skip
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import vessel_api as va  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--version", choices=["V1", "V2"], default="V2")
args = parser.parse_args()

kernel, initrd, base_cmdline, mem = va.guest_files("amd64")
ns = va.NetNs("tap0", "172.16.0.1/30")
work = tempfile.mkdtemp(prefix="vessel-mmds-")
sock = os.path.join(work, "api.sock")
store = {"latest": {"meta-data": {"ami-id": "ami-12345678", "instance": {"name": "vessel-mmds", "zone": "here"}}}}
vmm = va.Vmm(["--api-sock", sock, "--id", f"mmds-{os.getpid()}"], sock, netns=ns.name, workdir=work,
             stdin=subprocess.PIPE)
try:
    va.check(vmm.ready(), "the API socket accepts connections")
    steps = [
        ("PUT", "/boot-source", {"kernel_image_path": kernel, "initrd_path": initrd,
                                 "boot_args": f"{base_cmdline} vessel.mode=api vessel.api=mmds"}),
        ("PUT", "/machine-config", {"vcpu_count": 1, "mem_size_mib": mem}),
        ("PUT", "/network-interfaces/eth0", {"iface_id": "eth0", "host_dev_name": "tap0",
                                             "guest_mac": "06:00:AC:10:00:02"}),
        ("PUT", "/mmds/config", {"version": args.version, "network_interfaces": ["eth0"]}),
        ("PUT", "/mmds", store),
        ("PUT", "/actions", {"action_type": "InstanceStart"}),
    ]
    for method, path, body in steps:
        r = va.api_checked(sock, method, path, body)
        va.check(r.status == 204, f"{method} {path}: {r}")
        if path == "/mmds/config":
            va.check(r.headers.get("deprecation") == ("true" if args.version == "V1" else None),
                     "V1 is answered with Firecracker's Deprecation header, V2 without")
    r = va.api_checked(sock, "GET", "/mmds")
    va.check(r.status == 200 and r.json() == store, f"GET /mmds returns the store: {r}")

    va.check(vmm.wait_output("vessel-guest: mmds waiting", 600), "the guest made its requests")
    out = vmm.stdout()
    va.check("vessel-guest: mmds token=" in out and "vessel-guest: mmds token=0" not in out,
             "a session token came back for PUT /latest/api/token")
    va.check("mmds get /latest/meta-data/ status=ok body=ami-id|instance/" in out,
             "a listing is IMDS text (keys, '/' after objects)")
    va.check("mmds get /latest/meta-data/ami-id status=ok body=ami-12345678" in out, "a value is its text")
    va.check("mmds get /latest/meta-data/instance/name status=ok body=vessel-mmds" in out, "nested values")
    if args.version == "V1":
        va.check("mmds notoken /latest/meta-data/ami-id status=ok body=ami-12345678" in out,
                 "V1 answers a GET without a token")
    else:
        va.check("mmds notoken /latest/meta-data/ami-id status=FAILED" in out and "401" in out,
                 "V2 refuses a GET without a token (401)")
    va.check('mmds json body={"meta-data":{"ami-id":"ami-12345678","instance":{"name":"vessel-mmds","zone":"here"}}}'
             in out, "Accept: application/json gets JSON")

    r = va.api_checked(sock, "PATCH", "/mmds", {"latest": {"meta-data": {"ami-id": "ami-87654321"}}})
    va.check(r.status == 204, f"PATCH /mmds while the guest runs: {r}")
    vmm.proc.stdin.write(b"go\n")
    vmm.proc.stdin.flush()
    va.check(vmm.wait_output("vessel-guest: mmds done", 120), "the guest read again")
    va.check("mmds get2 /latest/meta-data/ami-id status=ok body=ami-87654321" in vmm.stdout(),
             "the guest sees the patched store")
    rc = vmm.wait(300)
    va.check(rc == 0, f"the VMM exits 0 after the guest powers off ({rc})")
finally:
    if va._failures:
        vmm.dump()
    vmm.kill()
    ns.close()
    shutil.rmtree(work, ignore_errors=True)
va.finish()
