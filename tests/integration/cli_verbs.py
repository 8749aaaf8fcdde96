#!/usr/bin/env python3
"""The virsh-like verbs, as a user types them in a terminal (each through a pseudo-terminal; a\nscript's view through pipes for `run --detach` and `info --json`):
`vessel run --detach` starts Debian's kernel with the busybox shell on the soft engine in the
background; `vessel ls` lists it; `vessel console` attaches from another terminal, runs a command
in the guest's shell and detaches with Ctrl-A d (the VM runs on); `vessel pause`/`resume` change
its state as `ls` and `info` show; `vessel top` draws its table; `vessel stop` shuts it down
through Ctrl+Alt+Del and returns once the VMM is gone; `vessel kill` stops a second one at once.

exit 0 pass, 1 fail, 77 skip
"""
import os
import pty
import re
import select
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import vessel_api as va  # noqa: E402

VESSEL = va.vessel_binary()
kernel, initrd, base_cmdline, mem = va.guest_files("amd64")
run_dir = tempfile.mkdtemp(prefix="vessel-cli-run-")
env = dict(os.environ, VESSEL_RUN_DIR=run_dir)


def run(args, timeout=60):
    """A verb on a pseudo-terminal, as typed in a terminal: (status, what it printed, the same).
    stdout and stderr are the terminal both; the text is returned twice for the callers' sake."""
    term = Pty(args)
    status = term.wait(timeout)
    text = term.out.decode("utf-8", "replace").replace("\r\n", "\n")
    return status, text, text


def run_piped(args, timeout=60):
    """A verb with its output in pipes (a script's view): (status, stdout, stderr)."""
    p = subprocess.run([VESSEL] + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, timeout=timeout)
    return p.returncode, p.stdout.decode(), p.stderr.decode()


class Pty:
    """A verb on a pseudo-terminal, as in a real terminal."""

    def __init__(self, args):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            os.execve(VESSEL, [VESSEL] + args, env)
        self.out = b""

    def read_until(self, pattern, timeout):
        deadline = time.time() + timeout
        rx = re.compile(pattern)
        while time.time() < deadline:
            if rx.search(self.out):
                return True
            r, _, _ = select.select([self.fd], [], [], 0.2)
            if r:
                try:
                    data = os.read(self.fd, 65536)
                except OSError:
                    break
                if not data:
                    break
                self.out += data
        return bool(rx.search(self.out))

    def write(self, data):
        os.write(self.fd, data)

    def drain(self):
        while True:
            try:
                r, _, _ = select.select([self.fd], [], [], 0.1)
                if not r:
                    return
                data = os.read(self.fd, 65536)
            except OSError:
                return
            if not data:
                return
            self.out += data

    def wait(self, timeout):
        deadline = time.time() + timeout
        while time.time() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.drain()  # what it wrote just before exiting
                return os.waitstatus_to_exitcode(status)
            try:
                r, _, _ = select.select([self.fd], [], [], 0.1)
                if r:
                    self.out += os.read(self.fd, 65536)
            except OSError:
                time.sleep(0.1)
        return None


def start_detached(vm_id, mode):
    rc, out, err = run_piped(["run", "--detach", "--id", vm_id, "--engine", "soft", "--kernel", kernel, "--initrd", initrd,
                        "--cmdline", f"{base_cmdline} {mode}", "--mem", f"{mem}M", "--cpus", "2"])
    va.check(rc == 0 and out.strip() == vm_id, f"vessel run --detach prints the id and returns: rc={rc} {out!r} {err!r}")


def run_until_running(vm, timeout=600):
    """Waits until the detached VM's console shows its guest's idle line (through the history)."""
    con = Pty(["console", vm, "--history", "65536"])
    ok = con.read_until(rb"vessel-guest: api idle", timeout)
    con.write(b"\x01d")
    con.wait(10)
    return ok


vm_id = f"cli-{os.getpid()}"
other = f"cli-kill-{os.getpid()}"
try:
    start_detached(vm_id, "vessel.mode=shell")
    rc, out, _ = run(["ls"])
    va.check(rc == 0 and re.search(rf"^{vm_id}\s+Running\s+soft\s+2\s+{mem} MiB", out, re.M) is not None,
             f"vessel ls lists the VM:\n{out}")

    # The console from "another terminal": wait for the shell, run a command, detach.
    con = Pty(["console", vm_id, "--history", "65536"])
    va.check(con.read_until(rb"Connected to ", 10), "vessel console attaches")
    va.check(con.read_until(rb"vessel-guest: shell", 600), "the guest's boot output is there (history)")
    con.write(b"\r")
    va.check(con.read_until(rb"vessel# ", 120), "the guest's shell prompt appears")
    con.write(b"echo hello-$((6*7))\r")
    va.check(con.read_until(rb"hello-42", 60), "a command typed in the console runs in the guest")
    con.write(b"\x01d")
    va.check(con.wait(10) == 0, "Ctrl-A d detaches (exit status 0)")
    va.check(b"detached" in con.out, "the console says it detached")
    rc, out, _ = run(["info", vm_id])
    va.check(rc == 0 and "state:         Running" in out, f"the VM runs on after detaching:\n{out}")

    rc, _, err = run(["pause", vm_id])
    va.check(rc == 0, f"vessel pause: {err}")
    rc, out, _ = run(["ls"])
    va.check(re.search(rf"^{vm_id}\s+Paused", out, re.M) is not None, f"vessel ls shows Paused:\n{out}")
    rc, out, _ = run_piped(["info", vm_id, "--json"])
    va.check(rc == 0 and '"state": "Paused"' in out, "vessel info --json shows Paused")
    rc, _, err = run(["resume", vm_id])
    va.check(rc == 0, f"vessel resume: {err}")
    rc, out, _ = run(["ls"])
    va.check(re.search(rf"^{vm_id}\s+Running", out, re.M) is not None, f"vessel ls shows Running again:\n{out}")

    top = Pty(["top", "-n", "3", "-d", "0.5"])
    va.check(top.wait(30) == 0, "vessel top -n 3 exits by itself")
    screen = top.out.decode("utf-8", "replace")
    va.check("INSTR/s" in screen and vm_id in screen, "vessel top draws the table with the VM")
    rows = [line for line in screen.splitlines() if line.startswith(vm_id)]
    va.check(any(re.search(r"\d+(\.\d+)?[KMG]?\s", row.split()[5] + " ") for row in rows[1:]) if len(rows) > 1 else False,
             f"vessel top shows guest instructions per second: {rows[-1:]}")

    # `vessel stop` on a guest whose init powers off on Ctrl+Alt+Del (the busybox shell's init only
    # does once its shell exits), `vessel kill` on the shell one.
    start_detached(other, "vessel.mode=api vessel.api=idle")
    va.check(run_until_running(other), "the second VM's guest is up")
    watch = Pty(["console", other])  # sees the guest's last words
    va.check(watch.read_until(rb"Connected to ", 10), "a console watches the second VM")
    rc, _, err = run(["stop", other, "--timeout", "120"], timeout=180)
    va.check(rc == 0, f"vessel stop returns once the guest has shut down: {err}")
    va.check(watch.wait(10) == 0, "the watching console ends with the VM")
    va.check(b"ctrl-alt-del: powering off" in watch.out and b"the VM has exited" in watch.out,
             f"the guest shut down because of Ctrl+Alt+Del: {watch.out[-300:]!r}")
    rc, out, _ = run(["ls"])
    va.check(other not in out, f"the stopped VM is gone from vessel ls:\n{out}")
    rc, _, err = run(["kill", vm_id])
    va.check(rc == 0, f"vessel kill: {err}")
    rc, out, _ = run(["ls"])
    va.check(vm_id not in out, "the killed VM is gone from vessel ls")
    rc, _, err = run(["info", "no-such-vm"])
    va.check(rc == 1 and "no VM 'no-such-vm'" in err, f"an unknown id is a clear error: {err}")
finally:
    for name in (vm_id, other):
        run_piped(["kill", name])
    if va._failures:
        for f in os.listdir(run_dir):
            if f.endswith(".log"):
                print(f"--- {f} (last 4000 bytes):")
                print(open(os.path.join(run_dir, f), errors="replace").read()[-4000:])
    shutil.rmtree(run_dir, ignore_errors=True)
va.finish()
