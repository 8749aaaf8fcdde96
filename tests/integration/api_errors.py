#!/usr/bin/env python3
"""The API socket under bad and heavy use. A VMM with no VM yet gets one request of every error
class (unknown path, unknown method, malformed JSON, unknown field, missing field, bad value,
wrong phase, body over the payload limit, malformed HTTP) and must answer each with 400 and a
fault message, and keep serving. Then, with a guest running on the soft engine: 50 clients × 20
requests at once (all answered, latency reported), a client sending one byte a second while
others are served (it delays no one), and 1,000 malformed requests (the VMM and the guest
survive). Every answer is validated against src/api/openapi.yaml.

exit 0 pass, 1 fail, 77 skip
"""
import os
import random
import shutil
import socket
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import vessel_api as va  # noqa: E402

try:
    from api_schema import ApiSchema
    schema = ApiSchema()
except Exception as e:
    schema = None
    print(f"note: no OpenAPI validation ({e})")


def validate(method, path, reply, documented=True):
    if schema:
        try:
            if documented:
                schema.validate(method, path, reply.status, reply.body, reply.headers.get("content-type", ""))
            else:  # an unknown path or method: only the error's shape is documented
                schema.validate_error(reply.status, reply.body, reply.headers.get("content-type", ""))
        except AssertionError as e:
            va.check(False, f"OpenAPI: {method} {path}: {e}")


def expect_fault(sock, method, path, body, want, what, raw_body=None, documented=True):
    c = va.UnixHttp(sock)
    try:
        r = c.request(method, path, raw_body if raw_body is not None else body)
    finally:
        c.close()
    validate(method, path, r, documented)
    ok = r.status == 400 and r.fault() is not None and (want is None or want in r.fault())
    va.check(ok, f"{what}: {r}")
    alive = va.api(sock, "GET", "/")
    va.check(alive.status == 200, f"still serving after: {what}")


work = tempfile.mkdtemp(prefix="vessel-api-errors-")
sock = os.path.join(work, "api.sock")
metadata = os.path.join(work, "metadata.json")
with open(metadata, "w") as f:
    f.write('{"latest": {"meta-data": {"from": "--metadata"}}}')
# Firecracker's jailer passes --start-time-us and friends, and --no-seccomp is a no-op here.
vmm = va.Vmm(["--api-sock", sock, "--id", f"errors-{os.getpid()}", "--metadata", metadata, "--no-seccomp",
              "--start-time-us", "0"], sock, workdir=work)
vm = None
try:
    va.check(vmm.ready(), "the API socket accepts connections")
    r = va.api_checked(sock, "GET", "/mmds")
    va.check(r.status == 200 and r.json() == {"latest": {"meta-data": {"from": "--metadata"}}},
             f"--metadata fills the MMDS store: {r}")
    # --- every error class, before boot --------------------------------------------------------
    expect_fault(sock, "GET", "/no/such/path", None, "Invalid request method and/or path: GET no.", "unknown path",
                 documented=False)
    expect_fault(sock, "DELETE", "/machine-config", None, "Invalid request method and/or path: DELETE machine-config.",
                 "unknown method", documented=False)
    expect_fault(sock, "PUT", "/machine-config", None, "An error occurred when deserializing the json body",
                 "malformed JSON", raw_body=b'{"vcpu_count": 2,')
    expect_fault(sock, "PUT", "/machine-config", {"vcpu_count": 2, "mem_size_mib": 256, "colour": "red"},
                 "unknown field `colour`", "unknown field")
    expect_fault(sock, "PUT", "/machine-config", {"vcpu_count": 2}, "missing field `mem_size_mib`", "missing field")
    expect_fault(sock, "PUT", "/machine-config", {"vcpu_count": 0, "mem_size_mib": 256},
                 "The number of vCPUs must be greater than 0", "bad value")
    expect_fault(sock, "PATCH", "/vm", {"state": "Paused"},
                 "The requested operation is not supported before starting the microVM.", "wrong phase")
    expect_fault(sock, "PUT", "/mmds", None, None, "body over the payload limit",
                 raw_body=b'{"k": "' + b"x" * 60000 + b'"}')
    expect_fault(sock, "PUT", "/machine-config", None, "Empty PUT request.", "PUT without a body", raw_body=b"")
    c = va.UnixHttp(sock)
    c.send_raw(b"GARBAGE\x01\x02 / HTTP/1.1\r\n\r\n")
    r = c.read_reply()
    c.close()
    va.check(r.status == 400 and r.fault(), f"malformed HTTP request line: {r}")
    # A second VMM on the same socket is refused (and the first keeps serving).
    second = va.Vmm(["--api-sock", sock, "--id", f"errors-second-{os.getpid()}"], sock,
                    workdir=tempfile.mkdtemp(prefix="vessel-api-second-"))
    rc = second.wait(10)
    va.check(rc == 1 and "already served by a running VMM" in second.stderr(),
             f"a socket a live VMM serves is refused: {rc} {second.stderr()!r}")
    va.check(va.api(sock, "GET", "/").status == 200, "the first VMM still serves its socket")

    # --- a running guest -----------------------------------------------------------------------
    kernel, initrd, base_cmdline, mem = va.guest_files("amd64")
    vm_sock = os.path.join(work, "vm.sock")
    vm = va.Vmm(["run", "--engine", "soft", "--kernel", kernel, "--initrd", initrd, "--cmdline",
                 f"{base_cmdline} vessel.mode=api vessel.api=idle", "--mem", f"{mem}M", "--cpus", "2",
                 "--no-reboot", "--api-sock", vm_sock, "--id", f"errors-vm-{os.getpid()}"], vm_sock,
                workdir=tempfile.mkdtemp(prefix="vessel-api-vm-"))
    va.check(vm.ready(), "the running VM's API socket accepts connections")
    va.check(vm.wait_output("vessel-guest: api idle", 600), "the guest is up")
    expect_fault(vm_sock, "PUT", "/machine-config", {"vcpu_count": 2, "mem_size_mib": 256},
                 "The requested operation is not supported after starting the microVM.", "wrong phase (after boot)")

    # 50 clients x 20 requests at once, each on its own keep-alive connection.
    latencies, errors = [], []
    lock = threading.Lock()

    def client(n):
        try:
            c = va.UnixHttp(vm_sock)
            for i in range(20):
                path = ["/", "/machine-config", "/vm/config", "/version"][(n + i) % 4]
                t0 = time.perf_counter()
                r = c.request("GET", path)
                dt = time.perf_counter() - t0
                with lock:
                    latencies.append(dt)
                    if r.status != 200:
                        errors.append(f"{path}: {r}")
            c.close()
        except Exception as e:  # noqa: BLE001
            with lock:
                errors.append(repr(e))

    threads = [threading.Thread(target=client, args=(n,)) for n in range(50)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    latencies.sort()
    va.check(len(latencies) == 1000 and not errors, f"50 x 20 requests all answered 200 ({len(latencies)}; {errors[:3]})")
    if latencies:
        p50 = latencies[len(latencies) // 2] * 1000
        p99 = latencies[int(len(latencies) * 0.99) - 1] * 1000
        print(f"50 clients x 20 requests: {wall:.2f} s, p50 {p50:.2f} ms, p99 {p99:.2f} ms (Python clients)")

    # A client sending one byte a second: everyone else is served as usual meanwhile.
    slow = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    slow.connect(vm_sock)
    slow_request = b"GET /version HTTP/1.1\r\n\r\n"
    stop = threading.Event()

    def trickle():
        for b in slow_request:
            if stop.is_set():
                return
            slow.send(bytes([b]))
            time.sleep(1.0)

    tt = threading.Thread(target=trickle)
    tt.start()
    worst = 0.0
    t_end = time.time() + 6
    count = bad = 0
    while time.time() < t_end:
        t0 = time.perf_counter()
        r = va.api(vm_sock, "GET", "/")
        worst = max(worst, time.perf_counter() - t0)
        count += 1
        bad += r.status != 200
    va.check(bad == 0, f"every request answered 200 while a slow client trickles ({bad} not)")
    va.check(worst < 0.25, f"a client sending one byte a second delays no one ({count} requests, worst {worst * 1000:.1f} ms)")
    stop.set()
    tt.join()
    slow.close()

    # 1,000 malformed requests, each on a connection of its own.
    rng = random.Random(7)
    templates = [
        lambda: bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200))),
        lambda: b"PUT /machine-config HTTP/1.1\r\nContent-Length: 10\r\n\r\n" + bytes(rng.randrange(256) for _ in range(10)),
        lambda: b"PUT /drives/" + bytes(rng.choice(b"abc_-/%\x00\xff") for _ in range(8)) + b" HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}",
        lambda: b"GET / HTTP/1.1\r\n" + b"X: " + b"y" * rng.randrange(10, 40000) + b"\r\n\r\n",
        lambda: b"PATCH /vm HTTP/1.1\r\nContent-Length: 5\r\n\r\n{\"st",
        lambda: b"PUT /actions HTTP/1.1\r\nContent-Length: 30\r\n\r\n{\"action_type\": [1, {\"a\": null}]}",
        lambda: b"GET /" + b"../" * rng.randrange(1, 100) + b" HTTP/1.1\r\n\r\n",
        lambda: b"PUT /mmds HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ]
    answered = 0
    for i in range(1000):
        data = templates[i % len(templates)]()
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(2)
        try:
            s.connect(vm_sock)
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            if s.recv(1):
                answered += 1
        except OSError:
            pass
        finally:
            s.close()
    print(f"1000 malformed requests: {answered} answered")
    r = va.api(vm_sock, "GET", "/")
    va.check(r.status == 200 and r.json()["state"] == "Running", "the VMM and its guest survive 1,000 malformed requests")
    va.check(vm.proc.poll() is None, "the VMM process is still running")
    r = va.api(vm_sock, "PUT", "/actions", {"action_type": "InstanceKill"})
    va.check(r.status == 204, f"InstanceKill answers 204: {r}")
    va.check(vm.wait(30) == 0, "the VMM exits after InstanceKill")
finally:
    if va._failures:
        vmm.dump()
        if vm:
            vm.dump()
    vmm.kill()
    if vm:
        vm.kill()
    shutil.rmtree(work, ignore_errors=True)
va.finish()
