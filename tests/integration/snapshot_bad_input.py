#!/usr/bin/env python3
"""Damaged snapshots are refused with the reason, and nothing runs.

A Multiboot test guest (guests/echo.S: echoes COM1 input) runs on the soft engine, is paused and
snapshotted. Then one fresh VMM is asked to load, in turn: the state file with a bit flipped at
positions all over it, truncated in several places, with a newer format version, with a wrong
magic; the memory file one page too long and one page too short; a directory that is not a
snapshot. Each must be a 400 whose fault_message names the file and the reason, the VMM must stay
"Not started" and alive, and finally the intact snapshot must load in that same process and echo
input. The CLI (`vessel run --restore DIR`) must print the reason and exit 1.

exit 0 pass, 1 fail, 77 skip
"""
import argparse
import os
import re
import shutil
import subprocess
import tempfile
import time

import vessel_api as va

ap = argparse.ArgumentParser()
ap.add_argument("--guests", required=True)
args = ap.parse_args()

guest = os.path.join(args.guests, "echo.elf")
if not os.path.isfile(guest):
    va.skip(f"no {guest}")
work = tempfile.mkdtemp(prefix="vessel-snapbad-")
good = os.path.join(work, "good")
os.makedirs(good)
vmms = []


def new_vmm(name, stdin=subprocess.DEVNULL):
    sock = os.path.join(work, f"{name}.sock")
    os.makedirs(os.path.join(work, name), exist_ok=True)
    v = va.Vmm(["--api-sock", sock, "--id", f"bad-{name}-{os.getpid()}", "--engine", "soft"], sock,
               workdir=os.path.join(work, name), stdin=stdin)
    vmms.append(v)
    va.check(v.ready(), f"{name}: the API socket accepts connections")
    return v


def variant(name, state_bytes=None, mem_bytes=None):
    """A copy of the good snapshot with its state and/or memory file replaced."""
    d = os.path.join(work, name)
    os.makedirs(d)
    for f, data in (("vm.state", state_bytes), ("vm.mem", mem_bytes)):
        if data is None:
            shutil.copyfile(os.path.join(good, f), os.path.join(d, f))
        else:
            with open(os.path.join(d, f), "wb") as out:
                out.write(data)
    return d


def load(vmm, d, resume=False):
    return va.api_checked(vmm.sock, "PUT", "/snapshot/load",
                          {"snapshot_path": os.path.join(d, "vm.state"),
                           "mem_backend": {"backend_type": "File", "backend_path": os.path.join(d, "vm.mem")},
                           "resume_vm": resume})


try:
    # The good snapshot.
    a = new_vmm("a")
    for path, body in [("/boot-source", {"kernel_image_path": guest}),
                       ("/machine-config", {"vcpu_count": 1, "mem_size_mib": 64}),
                       ("/actions", {"action_type": "InstanceStart"})]:
        r = va.api(a.sock, "PUT", path, body)
        va.check(r.status == 204, f"PUT {path}: {r}")
    time.sleep(0.5)
    va.check(va.api(a.sock, "PATCH", "/vm", {"state": "Paused"}).status == 204, "pause")
    r = va.api(a.sock, "PUT", "/snapshot/create", {"snapshot_path": os.path.join(good, "vm.state"),
                                                  "mem_file_path": os.path.join(good, "vm.mem")})
    va.check(r.status == 204, f"snapshot: {r}")
    a.kill()
    state = open(os.path.join(good, "vm.state"), "rb").read()
    mem = open(os.path.join(good, "vm.mem"), "rb").read()
    print(f"     state file {len(state)} bytes, memory file {len(mem) >> 20} MiB")

    cases = []
    for pos in sorted({0, 5, 8, 12, 16, 20, 24, 40, len(state) // 3, len(state) // 2, len(state) - 9, len(state) - 1}):
        for bit in (0, 7):
            damaged = bytearray(state)
            damaged[pos] ^= 1 << bit
            if pos < 8:
                why = r"wrong magic"
            elif pos < 12:
                why = r"format version .* (newer|older)"
            elif pos < 16:
                why = r"format version .* newer"
            elif pos < 24:
                why = r"truncated or padded"
            else:
                why = r"checksum mismatch"
            cases.append((f"bit {bit} of byte {pos} flipped", bytes(damaged), None, why))
    for cut in (0, 10, 24, len(state) // 2, len(state) - 1):
        cases.append((f"state truncated to {cut} bytes", state[:cut], None, r"truncated|less than a header"))
    newer = bytearray(state)
    newer[12] += 1
    cases.append(("a newer format minor version", bytes(newer), None, r"format version 1\.1 is newer"))
    newer = bytearray(state)
    newer[8] += 1
    cases.append(("a newer format major version", bytes(newer), None, r"format version 2\.0 is newer"))
    cases.append(("a memory file one page too long", None, mem + bytes(4096), r"holds \d+ bytes, but the snapshot"))
    cases.append(("a memory file one page too short", None, mem[:-4096], r"holds \d+ bytes, but the snapshot"))

    b = new_vmm("b", stdin=subprocess.PIPE)
    for n, (what, s, m, why) in enumerate(cases):
        d = variant(f"case{n}", s, m)
        r = load(b, d)
        fault = r.fault() or ""
        va.check(r.status == 400 and re.search(why, fault) is not None,
                 f"{what}: 400 /{why}/: {r.status} {fault[:160]}")
        info = va.api(b.sock, "GET", "/").json()
        va.check(info.get("state") == "Not started" and b.proc.poll() is None,
                 f"{what}: nothing runs (state {info.get('state')}, VMM alive {b.proc.poll() is None})")
    r = load(b, os.path.join(work, "nonexistent"))
    va.check(r.status == 400 and "cannot open" in (r.fault() or ""), f"a missing snapshot: {r}")

    # The CLI.
    bad_dir = variant("cli", bytes(bytearray(state[:100]) + bytes([state[100] ^ 4]) + state[101:]), None)
    cli = subprocess.run([va.vessel_binary(), "run", "--restore", bad_dir, "--no-api"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, timeout=30)
    err = cli.stderr.decode()
    va.check(cli.returncode == 1 and "checksum mismatch" in err and "vm.state" in err,
             f"vessel run --restore with a flipped bit: exit {cli.returncode}, {err.strip()[:200]}")

    # The intact snapshot still loads into the process that refused all of the above.
    r = load(b, good, resume=True)
    va.check(r.status == 204, f"the intact snapshot loads after {len(cases)} refusals: {r}")
    b.proc.stdin.write(b"vessel-echo-check\n")
    b.proc.stdin.flush()
    va.check(b.wait_output("VESSEL-ECHO-CHECK", 20), "the restored guest echoes its input (upper-cased, as echo.S does)")
finally:
    if va._failures:
        for v in vmms:
            v.dump()
    for v in vmms:
        v.kill()
    shutil.rmtree(work, ignore_errors=True)
va.finish()
