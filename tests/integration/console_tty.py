#!/usr/bin/env python3
"""Console on a real (pseudo-)terminal: raw mode while the VM runs, typing reaches the guest,
Ctrl-C goes to the guest and not the VMM, Ctrl-A x quits, and the terminal's settings are
restored on every exit path (guest exit, Ctrl-A x, SIGTERM).

usage: console_tty.py VESSEL ECHO_GUEST   (exit 0 pass, 1 fail, 77 skip)
"""
import os
import pty
import select
import signal
import sys
import termios
import time

vessel, guest = sys.argv[1], sys.argv[2]
if not os.access("/dev/kvm", os.R_OK | os.W_OK):
    print("SKIP: /dev/kvm is not usable on this host")
    sys.exit(77)

failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        failures.append(what)


def spawn(extra_args):
    pid, fd = pty.fork()
    if pid == 0:
        os.execv(vessel, [vessel, "run", "--engine", "kvm", "--kernel", guest, "--log-level", "error"] + extra_args)
    return pid, fd


def read_until(fd, needle, timeout=20.0):
    out = b""
    end = time.time() + timeout
    while time.time() < end and needle not in out:
        r, _, _ = select.select([fd], [], [], 0.1)
        if r:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
    return out


def wait_status(pid, timeout=20.0):
    end = time.time() + timeout
    while time.time() < end:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return None


def run_case(name, args, actions, expect_status):
    print(f"--- {name}")
    pid, fd = spawn(args)
    # The pty starts in cooked mode with echo: remember it, then wait for the guest's banner.
    time.sleep(0.05)
    before = termios.tcgetattr(fd)
    banner = read_until(fd, b"echo:")
    check(b"echo:" in banner, f"{name}: guest banner appears ({banner[-200:]!r})")
    during = termios.tcgetattr(fd)
    check(not (during[3] & termios.ICANON) and not (during[3] & termios.ECHO) and not (during[3] & termios.ISIG),
          f"{name}: terminal is raw while the VM runs")
    output = actions(pid, fd)
    status = wait_status(pid)
    check(status == expect_status, f"{name}: exit status {status}, expected {expect_status}")
    after = termios.tcgetattr(fd)
    check(after == before or (after[3] & termios.ICANON and after[3] & termios.ECHO),
          f"{name}: terminal settings restored after exit")
    os.close(fd)
    return output


def type_and_quit(pid, fd):
    os.write(fd, b"hello tty\r")
    out = read_until(fd, b"HELLO TTY")
    os.write(fd, b"\x03\r")  # Ctrl-C (its own line): must reach the guest, not kill the VMM
    time.sleep(0.3)
    check(wait_status_nohang(pid), "Ctrl-C did not stop the VMM")
    os.write(fd, b"quit\r")
    out += read_until(fd, b" bytes")
    check(b"HELLO TTY" in out, "typed text reached the guest and came back")
    # 'hello tty\r' (10) + Ctrl-C '\r' (2) + 'quit\r' (5) = 17 bytes
    check(b"\x03" in out and b"bye after 17 bytes" in out, f"the guest counted every byte incl. Ctrl-C ({out[-80:]!r})")
    return out


def wait_status_nohang(pid):
    done, _ = os.waitpid(pid, os.WNOHANG)
    return done == 0


def ctrl_a_x(pid, fd):
    os.write(fd, b"abc")
    read_until(fd, b"ABC")
    os.write(fd, b"\x01x")
    return b""


def sigterm(pid, fd):
    os.kill(pid, signal.SIGTERM)
    return b""


run_case("guest exit", [], type_and_quit, 33)
run_case("Ctrl-A x", [], ctrl_a_x, 0)
run_case("SIGTERM", [], sigterm, 128 + signal.SIGTERM)

if failures:
    print(f"FAIL: {len(failures)} check(s) failed")
    sys.exit(1)
print("PASS")
