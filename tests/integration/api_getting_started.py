#!/usr/bin/env python3
"""Firecracker's getting-started sequence against Vessel, unchanged but for the file names: a
VMM started with --api-sock, then the logger, boot source, root drive, network interface (a real
tap in a network namespace the test creates) and machine config, and InstanceStart — sent either
with curl exactly as Firecracker's guide writes it (--client curl) or with a Python client
(python3-requests-unixsocket, --client python). The guest (Debian's kernel on the soft engine,
guests/linux/modes/api.sh vessel.api=boot) checks that the VMM put root=/dev/vda rw on its command
line, mounts the root drive, takes its address from its MAC as Firecracker's example guests do
and pings the host; then it powers off and the VMM exits 0. Every GET answer on the way is
validated against src/api/openapi.yaml.

exit 0 pass, 1 fail, 77 skip (not root, no kernel/initramfs, no curl or requests_unixsocket)
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
parser.add_argument("--client", choices=["curl", "python"], default="curl")
parser.add_argument("--timeout", type=float, default=600)
args = parser.parse_args()

kernel, initrd, base_cmdline, _ = va.guest_files("amd64")
if args.client == "curl" and shutil.which("curl") is None:
    va.skip("no curl")
if args.client == "python":
    try:
        import requests_unixsocket  # noqa: F401
    except ImportError:
        va.skip("no requests_unixsocket (Debian: python3-requests-unixsocket)")
try:
    from api_schema import ApiSchema
    schema = ApiSchema()
except Exception as e:  # the schema module comes with the OpenAPI file
    schema = None
    print(f"note: no OpenAPI validation ({e})")

TAP_DEV, TAP_IP, MASK_SHORT = "tap0", "172.16.0.1", "/30"
FC_MAC = "06:00:AC:10:00:02"
ns = va.NetNs(TAP_DEV, TAP_IP + MASK_SHORT)
work = tempfile.mkdtemp(prefix="vessel-gs-")
API_SOCKET = os.path.join(work, "firecracker.socket")
LOGFILE = os.path.join(work, "firecracker.log")
ROOTFS = os.path.join(work, "rootfs.ext4")
va.make_ext4(ROOTFS, 32, {"known": "from-the-rootfs\n"})
open(LOGFILE, "w").close()
KERNEL_BOOT_ARGS = f"{base_cmdline} reboot=k panic=1 pci=off vessel.mode=api vessel.api=boot"

VM_ID = f"getting-started-{os.getpid()}"
vmm = va.Vmm(["--api-sock", API_SOCKET, "--id", VM_ID], API_SOCKET, netns=ns.name, workdir=work)
ok = False
try:
    va.check(vmm.ready(), "the API socket accepts connections")
    va.check(oct(os.stat(API_SOCKET).st_mode & 0o777) == "0o600", "the API socket is mode 0600")

    def validate(method, path, reply):
        if schema:
            schema.validate(method, path, reply.status, reply.body, reply.headers.get("content-type", ""))

    r = va.api(API_SOCKET, "GET", "/")
    validate("GET", "/", r)
    va.check(r.status == 200 and r.json()["state"] == "Not started", f"GET / before boot: {r}")

    bodies = [
        ("logger", {"log_path": LOGFILE, "level": "Debug", "show_level": True, "show_log_origin": True}),
        ("boot-source", {"kernel_image_path": kernel, "initrd_path": initrd, "boot_args": KERNEL_BOOT_ARGS}),
        ("drives/rootfs", {"drive_id": "rootfs", "path_on_host": ROOTFS, "is_root_device": True, "is_read_only": False}),
        ("network-interfaces/net1", {"iface_id": "net1", "guest_mac": FC_MAC, "host_dev_name": TAP_DEV}),
        ("machine-config", {"vcpu_count": 2, "mem_size_mib": 1024}),
        ("actions", {"action_type": "InstanceStart"}),
    ]
    if args.client == "curl":
        # The guide's commands: `curl -X PUT --unix-socket "${API_SOCKET}" --data "{...}" "http://localhost/<path>"`
        # (pretty-printed JSON with the guide's line breaks), and the classic guide's -i variant with
        # explicit Accept/Content-Type headers for machine-config.
        for path, body in bodies:
            data = "{\n        " + ",\n        ".join(f"\"{k}\": {va.json.dumps(v)}" for k, v in body.items()) + "\n    }"
            if path == "machine-config":
                cmd = ["curl", "--unix-socket", API_SOCKET, "-i", "-X", "PUT", "http://localhost/machine-config",
                       "-H", "Accept: application/json", "-H", "Content-Type: application/json", "-d", data]
            else:
                cmd = ["curl", "-X", "PUT", "--unix-socket", API_SOCKET, "--data", data, f"http://localhost/{path}"]
            out = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
            text = out.stdout.decode()
            if path == "machine-config":
                va.check(out.returncode == 0 and text.startswith("HTTP/1.1 204"), f"curl -i PUT /{path}: {text!r}")
            else:
                va.check(out.returncode == 0 and text == "", f"curl PUT /{path} prints nothing (204): {text!r}")
    else:
        import requests_unixsocket
        session = requests_unixsocket.Session()
        base = "http+unix://" + API_SOCKET.replace("/", "%2F")
        for path, body in bodies:
            resp = session.put(f"{base}/{path}", json=body)
            va.check(resp.status_code == 204 and resp.content == b"", f"requests PUT /{path}: {resp.status_code} {resp.text}")
        resp = session.get(f"{base}/vm/config")
        va.check(resp.status_code == 200 and resp.json()["drives"][0]["drive_id"] == "rootfs",
                 f"requests GET /vm/config: {resp.status_code}")

    for path in ("/", "/machine-config", "/vm/config", "/version", "/vm/info"):
        r = va.api(API_SOCKET, "GET", path)
        validate("GET", path, r)
        va.check(r.status == 200, f"GET {path} after boot: {r.status}")
    info = va.api(API_SOCKET, "GET", "/").json()
    va.check(info["state"] == "Running", f"state after InstanceStart: {info['state']}")
    cfg = va.api(API_SOCKET, "GET", "/vm/config").json()
    va.check(cfg["machine-config"]["vcpu_count"] == 2 and cfg["machine-config"]["mem_size_mib"] == 1024,
             "GET /vm/config shows the machine config")
    va.check(cfg["network-interfaces"][0]["guest_mac"] == FC_MAC.lower(), "the guest MAC is reported lower-case")
    r = va.api(API_SOCKET, "PUT", "/boot-source", {"kernel_image_path": kernel})
    validate("PUT", "/boot-source", r)
    va.check(r.status == 400 and r.fault() == "The requested operation is not supported after starting the microVM.",
             f"PUT /boot-source after boot: {r}")

    rc = vmm.wait(args.timeout)
    out = vmm.stdout()
    va.check(rc == 0, f"the VMM exits 0 after the guest powers off (status {rc})")
    va.check("vessel-guest: api cmdline root=/dev/vda mode=rw" in out, "the VMM added root=/dev/vda rw")
    va.check("vessel-guest: api rootfs known=from-the-rootfs" in out, "the guest reads the root drive")
    va.check("vessel-guest: api net eth0 addr=172.16.0.2 ping=ok" in out,
             "the guest pings the host over the tap (address from its MAC)")
    log = open(LOGFILE).read()
    va.check(f"[{VM_ID}:" in log and ":INFO:" in log, "the log file has Firecracker-format lines with levels")
    va.check(".cpp:" in log, "show_log_origin puts source locations in the log")
    va.check(not os.path.exists(API_SOCKET), "the API socket is removed when the VMM exits")
    ok = True
finally:
    if not ok or va._failures:
        vmm.dump()
    vmm.kill()
    ns.close()
    shutil.rmtree(work, ignore_errors=True)
va.finish()
