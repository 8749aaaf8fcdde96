#!/usr/bin/env python3
"""Host side of the virtio-vsock integration test (run by virtio_vsock.sh).

Boots the Linux test guest with --vsock cid=7,socket=DIR/v.sock and vessel.mode=vsock
(guests/linux/modes/vsock.sh), then, through the Unix socket of Firecracker's design:
  * a stale socket file left at the path is replaced at start, and the file is gone after exit;
  * CONNECT to a guest port nobody listens on: the stream closes without "OK" (the guest's RST);
  * host -> guest echo: CONNECT 1234, "OK <port>", 1 MiB sent while the echo is read back, equal;
  * host -> guest sink: CONNECT 1235, 1 MiB sent, the guest prints its SHA-256, equal;
  * guest -> host: the guest connects to CID 2 port 5000, which reaches the listener at
    DIR/v.sock_5000; 1 MiB arrives, its SHA-256 equals the one the guest printed;
  * guest -> host port 5001 (nobody at DIR/v.sock_5001): the guest's connect is reset;
  * Vessel exits 0 after the guest powers off.
Exit status 0 = pass, 1 = fail.
"""
import argparse
import hashlib
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time

MIB = 1 << 20


class Guest:
    """Vessel running the guest; collects its console lines."""

    def __init__(self, cmd):
        self.lines = []
        self.stderr = b""
        self.cond = threading.Condition()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def _read_stdout(self):
        for raw in self.proc.stdout:
            line = raw.decode(errors="replace").rstrip("\r\n").replace("\r", "")
            print("     | " + line, flush=True)  # the console, live (a hang shows where it stopped)
            with self.cond:
                self.lines.append(line)
                self.cond.notify_all()
        with self.cond:
            self.lines.append(None)  # EOF
            self.cond.notify_all()

    def _read_stderr(self):
        self.stderr = self.proc.stderr.read()

    def wait_line(self, pattern, timeout):
        """The first console line matching `pattern` (a regex), or None on timeout/exit."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for line in self.lines:
                    if line is None:
                        return None
                    m = rx.search(line)
                    if m:
                        return m
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(left)


def read_line(sock, limit=64):
    """One '\\n'-terminated line, read byte by byte so that nothing after it is consumed."""
    out = b""
    while len(out) < limit:
        b = sock.recv(1)
        if not b:
            break
        out += b
        if b == b"\n":
            break
    return out


def recv_all(sock):
    chunks = []
    while True:
        b = sock.recv(256 * 1024)
        if not b:
            return b"".join(chunks)
        chunks.append(b)


def host_connect(path, port, timeout):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(path)
    s.sendall(b"CONNECT %d\n" % port)
    return s, read_line(s)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--vessel", required=True)
    ap.add_argument("--kernel", required=True)
    ap.add_argument("--initrd", required=True)
    ap.add_argument("--cmdline", required=True)
    ap.add_argument("--mem", default="256M")
    ap.add_argument("--timeout", type=float, default=900)
    args = ap.parse_args()

    results = []

    def check(ok, what):
        results.append(ok)
        print(("ok   " if ok else "FAIL ") + what, flush=True)
        return ok

    tmp = tempfile.mkdtemp(prefix="vessel-vsock-")
    path = os.path.join(tmp, "v.sock")
    try:
        # A stale socket file (a killed VMM's): bound, closed, never unlinked.
        stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stale.bind(path)
        stale.close()
        # Guest -> host: the listener for CID 2 port 5000; data collected by a thread.
        l5000 = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        l5000.bind(path + "_5000")
        l5000.listen(4)
        l5000.settimeout(args.timeout)
        from_guest = {}

        def accept_5000():
            try:
                c, _ = l5000.accept()
                c.settimeout(args.timeout)
                from_guest["data"] = recv_all(c)
                c.close()
            except OSError as e:
                from_guest["error"] = str(e)

        acceptor = threading.Thread(target=accept_5000, daemon=True)
        acceptor.start()

        cmd = [args.vessel, "run", "--engine", "soft", "--kernel", args.kernel, "--initrd", args.initrd,
               "--cmdline", args.cmdline + " vessel.mode=vsock", "--mem", args.mem,
               "--vsock", "cid=7,socket=" + path, "--no-reboot"]
        print("--- command:", " ".join(cmd), flush=True)
        start = time.monotonic()
        guest = Guest(cmd)

        m = guest.wait_line(r"^vessel-guest: vsock listening", args.timeout)
        if check(m is not None, "guest listening on vsock ports 1234/1235"):
            boot_s = time.monotonic() - start
            st = os.lstat(path)
            check(stat.S_ISSOCK(st.st_mode), "stale socket file replaced by Vessel's listening socket")

            # Nothing listens on guest port 999: the guest resets, Vessel closes the stream.
            s, line = host_connect(path, 999, args.timeout)
            rest = line + recv_all(s)
            s.close()
            check(rest == b"", "CONNECT to a closed guest port: stream closed without OK (got %r)" % rest[:40])

            # Echo: send 1 MiB while reading it back.
            s, line = host_connect(path, 1234, args.timeout)
            check(re.fullmatch(rb"OK \d+\n", line) is not None, "CONNECT 1234 answered %r" % line)
            payload = os.urandom(MIB)
            t0 = time.monotonic()

            def send_echo():
                s.sendall(payload)
                s.shutdown(socket.SHUT_WR)

            sender = threading.Thread(target=send_echo, daemon=True)
            sender.start()
            echoed = recv_all(s)
            echo_s = time.monotonic() - t0
            sender.join(5)
            s.close()
            check(echoed == payload, "1 MiB echoed back by the guest (%d bytes, %s)" %
                  (len(echoed), "equal" if echoed == payload else "DIFFERENT"))
            print("     echo: 2 MiB moved in %.2f s (%.2f MiB/s each way)" % (echo_s, 1 / max(echo_s, 1e-9)))

            # Sink: 1 MiB to port 1235, the guest prints its hash.
            s, line = host_connect(path, 1235, args.timeout)
            check(re.fullmatch(rb"OK \d+\n", line) is not None, "CONNECT 1235 answered %r" % line)
            payload2 = os.urandom(MIB)
            t0 = time.monotonic()
            s.sendall(payload2)
            s.shutdown(socket.SHUT_WR)
            rest = recv_all(s)  # the guest sends nothing and closes
            sink_s = time.monotonic() - t0
            s.close()
            check(rest == b"", "port 1235 sent nothing back")
            want = hashlib.sha256(payload2).hexdigest()
            m = guest.wait_line(r"^vessel-guest: vsock recv bytes=(\d+) sha256=(\w+) status=(\d+)", args.timeout)
            check(m is not None and m.group(1) == str(MIB) and m.group(2) == want and m.group(3) == "0",
                  "guest received 1 MiB intact on port 1235 (%s)" % (m.group(0) if m else "no report"))
            print("     host -> guest: 1 MiB in %.2f s" % sink_s)
            m = guest.wait_line(r"^vessel-guest: vsock echo in=(\S+) out=(\S+) status=(\d+)", 5)
            check(m is not None and m.group(1) == str(MIB) and m.group(2) == str(MIB) and m.group(3) == "0",
                  "guest echo server counted 1 MiB each way (%s)" % (m.group(0) if m else "no report"))

            # Guest -> host.
            m = guest.wait_line(r"^vessel-guest: vsock send bytes=(\d+) sha256=(\w+) status=(\d+) ms=(\d+)",
                                args.timeout)
            acceptor.join(args.timeout)
            data = from_guest.get("data")
            check(m is not None and m.group(3) == "0", "guest sent to CID 2 port 5000 (%s)" %
                  (m.group(0) if m else "no report"))
            check(data is not None and m is not None and len(data) == int(m.group(1)) == MIB and
                  hashlib.sha256(data).hexdigest() == m.group(2),
                  "host listener at PATH_5000 got the guest's 1 MiB intact (%s bytes%s)" %
                  (len(data) if data is not None else "no", ", " + from_guest["error"] if "error" in from_guest
                   else ""))
            if m:
                print("     guest -> host: 1 MiB in %.2f s (guest clock)" % (int(m.group(4)) / 1000))

            m = guest.wait_line(r"^vessel-guest: vsock refused port=5001 status=(\d+) error=(.*)$", args.timeout)
            check(m is not None and m.group(1) != "0" and "reset" in m.group(2).lower(),
                  "guest connect to port 5001 (no listener at PATH_5001) is reset (%s)" %
                  (m.group(0) if m else "no report"))
            m = guest.wait_line(r"^vessel-guest: vsock cid=(\S+)", 1)
            check(m is not None and m.group(1) == "7", "guest CID from the config space is 7 (%s)" %
                  (m.group(0) if m else "no report"))
            check(guest.wait_line(r"^vessel-guest: vsock done$", args.timeout) is not None, "mode finished")
            print("     boot to listening: %.1f s" % boot_s)

        try:
            rc = guest.proc.wait(timeout=max(10, args.timeout - (time.monotonic() - start)))
        except subprocess.TimeoutExpired:
            guest.proc.kill()
            rc = guest.proc.wait()
            check(False, "Vessel did not exit in time")
        time.sleep(0.2)
        check(rc == 0, "Vessel exit status %d (0 expected)" % rc)
        check(not os.path.exists(path), "socket file removed at exit")
        print("--- stderr:")
        print(guest.stderr.decode(errors="replace")[:20000])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    if all(results):
        print("PASS")
        return 0
    return 1


if __name__ == "__main__":
    sys.exit(main())
