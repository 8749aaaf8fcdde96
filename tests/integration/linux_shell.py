#!/usr/bin/env python3
"""The Linux test guest's interactive shell on a real (pseudo-)terminal: boots a stock Debian
kernel with the busybox initramfs and vessel.mode=shell, waits for the prompt, runs a command,
interrupts a running `sleep 100` with Ctrl-C (the shell and the VMM must both survive: Ctrl-C
belongs to the guest's foreground job), then `poweroff -f` must end the VMM with status 0.

usage: linux_shell.py [--qemu] [--kernel amd64|cloud|FILE] [--cpus N] [--boot auto|pvh|decompressor]
  default: Vessel's soft engine ($VESSEL run --engine soft); --qemu: qemu-system-x86_64 TCG with
  -nographic (which puts the terminal in raw mode, so Ctrl-C reaches the guest too).
  Kernel command line, memory and paths: scripts/linux-guest.env.
exit 0 pass, 1 fail, 77 skip (no kernel, initramfs or QEMU)
"""
import argparse
import os
import pty
import select
import shutil
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ENV_FILE = os.path.join(HERE, "..", "..", "scripts", "linux-guest.env")
PROMPT = b"vessel# "

parser = argparse.ArgumentParser()
parser.add_argument("--qemu", action="store_true")
parser.add_argument("--kernel", default="amd64")
parser.add_argument("--cpus", type=int, default=1)
parser.add_argument("--boot")
args = parser.parse_args()


def guest_env(kernel):
    """The shared settings, read through bash: kernel file, initramfs, cmdline, memory, QEMU."""
    script = ('source "$1"; printf "%s\\0" "$(linux_guest_kernel "$2")" "$LINUX_GUEST_INITRAMFS" '
              '"$LINUX_GUEST_CMDLINE" "$LINUX_GUEST_MEM_MIB" "$LINUX_GUEST_QEMU" "$LINUX_GUEST_QEMU_MACHINE" '
              '"$(linux_guest_qemu_cmdline)"')
    out = subprocess.run(["bash", "-c", script, "bash", ENV_FILE, kernel], check=True,
                         stdout=subprocess.PIPE).stdout
    return out.split(b"\0")[:7]


kernel, initrd, cmdline, mem, qemu, machine, qemu_cmdline = (v.decode() for v in guest_env(args.kernel))
if args.qemu:
    cmdline = qemu_cmdline
cmdline += " vessel.mode=shell"
for path, how in ((kernel, "scripts/fetch-kernels.sh fetches it"), (initrd, "scripts/build-initramfs.sh builds it")):
    if not os.path.isfile(path) or os.path.getsize(path) == 0:
        print(f"SKIP: no {path} ({how})")
        sys.exit(77)
if args.qemu:
    if shutil.which(qemu) is None:
        print(f"SKIP: no {qemu}")
        sys.exit(77)
    if args.boot:
        sys.exit("linux_shell.py: --boot applies to Vessel only")
    cmd = [qemu, "-accel", "tcg", "-M", machine, "-m", mem, "-smp", str(args.cpus), "-kernel", kernel,
           "-initrd", initrd, "-append", cmdline, "-nographic", "-no-reboot"]
    boot_timeout = 120.0
else:
    vessel = os.environ.get("VESSEL")
    if not vessel:
        sys.exit("linux_shell.py: set VESSEL to the vessel binary")
    cmd = [vessel, "run", "--engine", "soft", "--kernel", kernel, "--initrd", initrd, "--cmdline", cmdline,
           "--mem", f"{mem}M", "--cpus", str(args.cpus), "--no-reboot"]
    if args.boot:
        cmd += ["--boot", args.boot]
    boot_timeout = 600.0
print("--- command: " + " ".join(cmd))

failures = []
transcript = bytearray()


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        failures.append(what)
    return cond


cursor = 0  # where the next read_until starts looking in the transcript


def read_until(fd, needle, timeout):
    """Reads the terminal until needle appears after the cursor, and moves the cursor past it.
    Returns the transcript from the old cursor on (up to the needle when found)."""
    global cursor
    start = cursor
    end = time.time() + timeout
    while True:
        at = transcript.find(needle, start)
        if at >= 0:
            cursor = at + len(needle)
            return bytes(transcript[start:cursor])
        if time.time() >= end:
            return bytes(transcript[start:])
        r, _, _ = select.select([fd], [], [], 0.1)
        if r:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # EIO: the VMM exited and closed the terminal
                return bytes(transcript[start:])
            if not chunk:
                return bytes(transcript[start:])
            transcript.extend(chunk)


def running(pid):
    done, _ = os.waitpid(pid, os.WNOHANG)
    return done == 0


def wait_status(pid, fd, timeout):
    end = time.time() + timeout
    while time.time() < end:
        read_until(fd, b"\0never\0", 0.1)  # keep draining the terminal so the VMM cannot block
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return None


def run(pid, fd):
    t0 = time.time()
    out = read_until(fd, PROMPT, boot_timeout)
    if not check(PROMPT in out, f"shell prompt after {time.time() - t0:.1f} s"):
        return False
    os.write(fd, b"echo $((6*7))\r")
    # Lines end in "\r\r\n" on the serial console; the echoed command line shows $((6*7)), not 42.
    out = read_until(fd, b"\n42\r", 30)
    check(b"\n42\r" in out, "echo $((6*7)) printed 42")
    read_until(fd, PROMPT, 10)

    # "started" on a line of its own comes from the command, not from its echo.
    os.write(fd, b"echo started; sleep 100\r")
    out = read_until(fd, b"\nstarted\r", 30)
    check(b"\nstarted\r" in out, "sleep 100 started")
    time.sleep(1.0)  # let the shell fork and exec sleep
    t1 = time.time()
    os.write(fd, b"\x03")
    out = read_until(fd, PROMPT, 30)
    check(PROMPT in out and time.time() - t1 < 30, f"Ctrl-C interrupted sleep 100 ({time.time() - t1:.1f} s)")
    check(running(pid), "Ctrl-C did not stop the VMM")
    os.write(fd, b"echo status=$?\r")  # sleep killed by SIGINT: 128 + 2
    out = read_until(fd, b"\nstatus=130\r", 30)
    check(b"\nstatus=130\r" in out, "sleep ended by SIGINT (status 130), the shell survived")
    read_until(fd, PROMPT, 10)

    os.write(fd, b"poweroff -f\r")
    return True


pid, fd = pty.fork()
if pid == 0:
    os.execvp(cmd[0], cmd)
powered_off = False
try:
    powered_off = run(pid, fd)
finally:
    if not powered_off:
        os.kill(pid, signal.SIGTERM)
    status = wait_status(pid, fd, 60 if args.qemu else 300)
    if powered_off:
        check(status == 0, f"exit status {status} after poweroff -f, expected 0")
    os.close(fd)
print("--- terminal transcript:")
print(transcript.decode(errors="replace")[-20000:])
if failures:
    print(f"FAIL: {len(failures)} check(s) failed")
    sys.exit(1)
print("PASS")
