#!/usr/bin/env python3
"""The host end of the virtio-net guest test (guests/linux/modes/net.sh), run inside the test's
network namespace on the tap's address.

  port 5001: takes one upload: reads to EOF (SHA-256, bytes, time from the first byte to EOF),
             pings the guest (raw ICMP echo), answers "bytes=N sha256=H ping=ok|FAILED ms=T" and
             closes.
  port 5002: sends one download of --mb MiB (random with --check, else zeros) and closes.
  port 5003: the guest connects once it has read the whole download: down_ms is the time from
             the download's connection to this one (host-timed, like up_ms: the guest's clock
             is not the reference).

Prints "ready" once both listen. Results go to --out as key=value lines, rewritten as they come:
up_bytes, up_sha256, up_ms, ping, down_sha256_sent, down_bytes, down_send_ms, down_ms. Exits when both
transfers are done or after --timeout.
"""
import argparse
import hashlib
import os
import socket
import struct
import sys
import threading
import time


def icmp_checksum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def ping(addr, count=3, timeout=5.0):
    """ICMP echo through a raw socket (root; no ping binary needed). True if any reply came."""
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    except OSError as e:
        print("virtio_net_peer: raw socket: %s" % e, file=sys.stderr)
        return False
    ident = os.getpid() & 0xFFFF
    replies = 0
    with s:
        for seq in range(count):
            payload = b"vessel-ping" + bytes(21)
            header = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
            header = struct.pack("!BBHHH", 8, 0, icmp_checksum(header + payload), ident, seq)
            s.sendto(header + payload, (addr, 0))
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                s.settimeout(max(0.01, deadline - time.monotonic()))
                try:
                    packet, peer = s.recvfrom(2048)
                except socket.timeout:
                    break
                ihl = (packet[0] & 0x0F) * 4
                kind, _, _, rid, rseq = struct.unpack("!BBHHH", packet[ihl:ihl + 8])
                if peer[0] == addr and kind == 0 and rid == ident and rseq == seq:
                    replies += 1
                    break
    return replies > 0


def listen(addr, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, port))
    s.listen(1)
    return s


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--addr", default="10.99.0.1")
    ap.add_argument("--guest", default="10.99.0.2")
    ap.add_argument("--mb", type=int, default=64)
    ap.add_argument("--check", type=int, default=1)
    ap.add_argument("--out", required=True)
    ap.add_argument("--timeout", type=float, default=1800)
    args = ap.parse_args()

    results = {}
    lock = threading.Lock()

    def record(**kv):
        # Rewritten on every result: the test reads what is there when the guest is done.
        with lock:
            results.update(kv)
            with open(args.out + ".tmp", "w") as f:
                for k, v in sorted(results.items()):
                    f.write("%s=%s\n" % (k, v))
            os.replace(args.out + ".tmp", args.out)

    size = args.mb << 20
    data = os.urandom(size) if args.check else bytes(size)
    record(down_sha256_sent=hashlib.sha256(data).hexdigest())

    up_sock = listen(args.addr, 5001)
    down_sock = listen(args.addr, 5002)
    done_sock = listen(args.addr, 5003)
    down_start = []

    def upload():
        conn, _ = up_sock.accept()
        with conn:
            t0 = time.monotonic()
            h = hashlib.sha256()
            n = 0
            while True:
                chunk = conn.recv(1 << 20)
                if not chunk:
                    break
                h.update(chunk)
                n += len(chunk)
            ms = int((time.monotonic() - t0) * 1000)
            ok = ping(args.guest)
            record(up_bytes=n, up_sha256=h.hexdigest(), up_ms=ms, ping="ok" if ok else "FAILED")
            conn.sendall(("bytes=%d sha256=%s ping=%s ms=%d\n" % (n, h.hexdigest(), "ok" if ok else "FAILED",
                                                                   ms)).encode())

    def download():
        conn, _ = down_sock.accept()
        with conn:
            t0 = time.monotonic()
            down_start.append(t0)
            view = memoryview(data)
            for off in range(0, size, 1 << 20):
                conn.sendall(view[off:off + (1 << 20)])
            conn.shutdown(socket.SHUT_WR)
            record(down_bytes=size, down_send_ms=int((time.monotonic() - t0) * 1000))

    def done():
        conn, _ = done_sock.accept()
        t1 = time.monotonic()
        conn.close()
        if down_start:
            record(down_ms=int((t1 - down_start[0]) * 1000))

    threads = [threading.Thread(target=f, daemon=True) for f in (upload, download, done)]
    for t in threads:
        t.start()
    print("ready", flush=True)
    deadline = time.monotonic() + args.timeout
    for t in threads:
        t.join(max(0, deadline - time.monotonic()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
