"""Shared pieces of the control-plane tests: the Linux test guest's files (scripts/linux-guest.env),
a VMM process with an API socket, a small HTTP client over the Unix socket (stdlib only, so that
tests can send exactly the bytes they mean), network namespaces with a tap, and check()/finish().
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
ENV_FILE = os.path.join(ROOT, "scripts", "linux-guest.env")

_failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        _failures.append(what)
    return cond


def finish():
    if _failures:
        print(f"FAILED: {len(_failures)} check(s): " + "; ".join(_failures))
        sys.exit(1)
    print("PASS")
    sys.exit(0)


def skip(why):
    print(f"SKIP: {why}")
    sys.exit(77)


def vessel_binary():
    v = os.environ.get("VESSEL")
    if not v:
        sys.exit("set VESSEL to the vessel binary")
    return v


def guest_files(flavour="amd64"):
    """(kernel, modules initramfs, base cmdline, memory MiB) of the Linux test guest; skips when absent."""
    script = ('source "$1"; printf "%s\\0" "$(linux_guest_kernel "$2")" "$(linux_guest_initramfs_modules "$2")" '
              '"$LINUX_GUEST_CMDLINE" "$LINUX_GUEST_MEM_MIB"')
    out = subprocess.run(["bash", "-c", script, "bash", ENV_FILE, flavour], check=True,
                         stdout=subprocess.PIPE).stdout.decode().split("\0")
    kernel, initrd, cmdline, mem = out[:4]
    for path, how in ((kernel, "scripts/fetch-kernels.sh fetches it"),
                      (initrd, "scripts/build-initramfs.sh amd64 builds it")):
        if not os.path.isfile(path) or os.path.getsize(path) == 0:
            skip(f"no {path} ({how})")
    return kernel, initrd, cmdline, int(mem)


def make_ext4(path, size_mib, files):
    """A raw ext4 image made with mke2fs -d from a directory holding `files` {name: text}."""
    if shutil.which("mke2fs") is None and not os.path.exists("/sbin/mke2fs"):
        skip("no mke2fs (e2fsprogs)")
    src = tempfile.mkdtemp()
    try:
        for name, text in files.items():
            with open(os.path.join(src, name), "w") as f:
                f.write(text)
        with open(path, "wb") as f:
            f.truncate(size_mib << 20)
        mke2fs = shutil.which("mke2fs") or "/sbin/mke2fs"
        subprocess.run([mke2fs, "-q", "-F", "-t", "ext4", "-d", src, path], check=True)
    finally:
        shutil.rmtree(src)


class HttpReply:
    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body

    def json(self):
        return json.loads(self.body)

    def fault(self):
        try:
            return json.loads(self.body).get("fault_message")
        except ValueError:
            return None

    def __repr__(self):
        return f"HTTP {self.status} {self.body[:300]!r}"


class UnixHttp:
    """One keep-alive connection to an API socket; raw requests in, parsed replies out."""

    def __init__(self, path, timeout=30.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.buf = b""

    def close(self):
        self.sock.close()

    def send_raw(self, data):
        self.sock.sendall(data)

    def request(self, method, path, body=None, headers=None):
        body_bytes = b"" if body is None else (body if isinstance(body, bytes) else
                                               (body if isinstance(body, str) else json.dumps(body)).encode())
        head = f"{method} {path} HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n"
        for k, v in (headers or {}).items():
            head += f"{k}: {v}\r\n"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body_bytes)}\r\n"
        self.send_raw(head.encode() + b"\r\n" + body_bytes)
        return self.read_reply()

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        self.buf += chunk

    def read_reply(self):
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        status = int(parts[1])
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        length = int(headers.get("content-length", "0"))
        while len(self.buf) < length:
            self._fill()
        body, self.buf = self.buf[:length], self.buf[length:]
        return HttpReply(status, headers, body)


def api(path, method, target, body=None, headers=None):
    c = UnixHttp(path)
    try:
        return c.request(method, target, body, headers)
    finally:
        c.close()


_schema = None


def schema():
    """The OpenAPI description (src/api/openapi.yaml) through api_schema.py, loaded once."""
    global _schema
    if _schema is None:
        from api_schema import ApiSchema
        _schema = ApiSchema()
    return _schema


def api_checked(path, method, target, body=None):
    """api(), with the answer validated against the OpenAPI description (a failed check if not)."""
    r = api(path, method, target, body)
    try:
        schema().validate(method, target.split("?")[0], r.status, r.body, r.headers.get("content-type", ""))
    except AssertionError as e:
        check(False, f"OpenAPI: {method} {target}: {e}")
    return r


def wait_for_socket(path, proc, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            return False
        try:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(path)
            s.close()
            return True
        except OSError:
            time.sleep(0.005)
    return False


class Vmm:
    """A `vessel` process (API mode or run) with its output collected in files."""

    def __init__(self, args, sock, env=None, netns=None, stdin=subprocess.DEVNULL, workdir=None):
        self.workdir = workdir or tempfile.mkdtemp(prefix="vessel-api-")
        self.sock = sock
        self.out_path = os.path.join(self.workdir, "stdout")
        self.err_path = os.path.join(self.workdir, "stderr")
        cmd = [vessel_binary()] + args
        if netns:
            cmd = ["ip", "netns", "exec", netns] + cmd
        self.cmd = cmd
        self.out = open(self.out_path, "wb")
        self.err = open(self.err_path, "wb")
        full_env = dict(os.environ)
        full_env.update(env or {})
        self.proc = subprocess.Popen(cmd, stdin=stdin, stdout=self.out, stderr=self.err, env=full_env)
        print("--- command: " + " ".join(cmd), flush=True)

    def ready(self, timeout=10.0):
        return wait_for_socket(self.sock, self.proc, timeout)

    def stdout(self):
        with open(self.out_path, "rb") as f:
            return f.read().decode("utf-8", "replace").replace("\r", "")

    def stderr(self):
        with open(self.err_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def wait_output(self, text, timeout):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if text in self.stdout():
                return True
            if self.proc.poll() is not None:
                return text in self.stdout()
            time.sleep(0.05)
        return False

    def wait(self, timeout):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def dump(self):
        print("--- stdout (last 6000 bytes):")
        print(self.stdout()[-6000:])
        print("--- stderr (last 4000 bytes):")
        print(self.stderr()[-4000:])


class NetNs:
    """A network namespace of the test's own with a tap device (address on the host end)."""

    def __init__(self, tap, addr):
        if os.geteuid() != 0:
            skip("needs root (a network namespace and a tap device)")
        if not os.path.exists("/dev/net/tun"):
            skip("no /dev/net/tun")
        if shutil.which("ip") is None:
            skip("no ip command (iproute2)")
        self.name = f"vessel-api-{os.getpid()}"
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        self.run("ip", "link", "set", "lo", "up")
        self.run("ip", "tuntap", "add", "dev", tap, "mode", "tap")
        self.run("ip", "addr", "add", addr, "dev", tap)
        self.run("ip", "link", "set", tap, "up")

    def run(self, *cmd):
        subprocess.run(["ip", "netns", "exec", self.name] + list(cmd), check=True)

    def close(self):
        subprocess.run(["ip", "netns", "del", self.name], check=False)
