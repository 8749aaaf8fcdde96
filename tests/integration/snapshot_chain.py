"""The hash-chain guest of the snapshot tests (guests/linux/modes/snapshot.sh): parsing its links,
recomputing their hashes, and waiting for it."""
import hashlib
import re
import time

import vessel_api as va

CHAIN = re.compile(r"^vessel-guest: chain (\d+) ([0-9a-f]{16}) rand=([0-9a-f]+)$", re.M)


def expected_chain(n):
    """The first n hashes: link i's is sha256("<previous> <i>\\n")[:16], from "seed"."""
    h, out = "seed", []
    for i in range(n):
        h = hashlib.sha256(f"{h} {i}\n".encode()).hexdigest()[:16]
        out.append(h)
    return out


def chain_of(text, ignore=""):
    """(index, hash) of every complete link in `text`; characters in `ignore` are removed first
    (a byte typed to time a restore is echoed into the output)."""
    for c in ignore:
        text = text.replace(c, "")
    return [(int(m.group(1)), m.group(2)) for m in CHAIN.finditer(text)]


def check_chain(links, what):
    """Links must be 0, 1, 2... with the right hashes."""
    if not links:
        return va.check(False, f"{what}: no links")
    want = expected_chain(links[-1][0] + 1)
    idx = [i for i, _ in links]
    ok_order = idx == list(range(len(links)))
    bad = [(i, h) for i, h in links if i < len(want) and want[i] != h]
    return va.check(ok_order and not bad,
                    f"{what}: links 0..{links[-1][0]} consecutive with correct hashes"
                    + ("" if ok_order else f" (indices {idx[:3]}...{idx[-3:]}, {len(idx)} links)")
                    + ("" if not bad else f" (wrong hash at {bad[:3]})"))


def wait_for(pred, timeout, step=0.02):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return True
        time.sleep(step)
    return pred()
