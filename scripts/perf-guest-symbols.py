#!/usr/bin/env python3
"""Fold a perf profile of the soft engine into guest kernel functions.

Run the VMM with VESSEL_JIT_PERFMAP=1 (each translation is then listed in /tmp/perf-<pid>.map as
`<host address> <size> vessel-guest-<guest rip>`) and the guest kernel with `nokaslr`, record with
`perf record -p <pid>`, then:
    perf script -i perf.data -F ip,sym | scripts/perf-guest-symbols.py System.map /tmp/perf-<pid>.map
(perf does not read the map itself: the translation buffer is a memfd, not anonymous memory.)
Prints each guest function's share of all samples in translated code, then the host functions.
System.map comes with the Debian kernel package (/boot/System.map-<version>).
"""
import bisect
import sys


def sorted_table(pairs):
    pairs.sort()
    return [p[0] for p in pairs], [p[1] if len(p) == 2 else p[1:] for p in pairs]


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    syms = []
    with open(sys.argv[1]) as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3 and parts[1] in "tTwW":
                syms.append((int(parts[0], 16), parts[2]))
    sym_at, sym_name = sorted_table(syms)
    # A translation buffer fills upwards from its start; one that starts below the last one seen
    # means the buffer was reset: the translations above it are gone (exact for one vCPU, whose
    # buffer is the only one; with more, a reset in one buffer can hide another's blocks).
    blocks = {}
    last = 0
    with open(sys.argv[2]) as f:
        for line in f:
            start, size, name = line.split()
            start = int(start, 16)
            if start < last:
                blocks = {a: b for a, b in blocks.items() if not start <= a < start + (32 << 20)}
            last = start
            blocks[start] = (int(size, 16), int(name.rsplit("-", 1)[1], 16))
    block_at, block_info = sorted_table([(a, s, r) for a, (s, r) in blocks.items()])

    guest, host, total = {}, {}, 0
    for line in sys.stdin:
        parts = line.split(None, 1)
        if not parts:
            continue
        total += 1
        ip = int(parts[0], 16)
        i = bisect.bisect_right(block_at, ip) - 1
        if i >= 0 and ip < block_at[i] + block_info[i][0]:
            j = bisect.bisect_right(sym_at, block_info[i][1]) - 1
            name = sym_name[j] if j >= 0 else "?"
            guest[name] = guest.get(name, 0) + 1
        else:
            name = parts[1].strip() if len(parts) > 1 else "?"
            host[name] = host.get(name, 0) + 1
    if not total:
        sys.exit("no samples on stdin")
    print(f"# {total} samples; translated guest code {100 * sum(guest.values()) / total:.1f}%")
    for name, n in sorted(guest.items(), key=lambda kv: -kv[1])[:40]:
        print(f"{100 * n / total:6.2f}%  {name}")
    print(f"# elsewhere {100 * sum(host.values()) / total:.1f}%")
    for name, n in sorted(host.items(), key=lambda kv: -kv[1])[:30]:
        print(f"{100 * n / total:6.2f}%  {name[:110]}")


if __name__ == "__main__":
    main()
