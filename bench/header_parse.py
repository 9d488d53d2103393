"""Header parsing time against header-block size: linear means 2 MB takes about twice as long as 1 MB.

The block is the issue's attack: a Subject folded into short continuation lines (`` a\\r\\n``,
4 octets each; 1 MiB is 262,144 lines). Timed in this process, best of N runs per size,
alternating sizes so a busy machine slows both alike. Three steps are timed: the parse
(``headers.parse_fields``), the ingest cap check (``headers.check_header_block``), and the whole
rewrite of the message (``rewrite.rewrite``: parse, scrub, fold, new block).

Run:  .venv/bin/python -m bench.header_parse [--runs 5]
Prints one line per step: the time at 1 MiB and 2 MiB and their ratio (linear: about 2; the
old parser, which joined continuation lines by repeated concatenation, was quadratic: about 4).
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Callable

from tagrelay.core.errors import Undeliverable
from tagrelay.core.headers import MAX_HEADER_BLOCK_BYTES, check_header_block, header_block, parse_fields
from tagrelay.core.rewrite import rewrite

MIB = 1 << 20


def folded_subject(octets: int) -> bytes:
    return b"From: a@b.example\r\nSubject: x\r\n" + b" a\r\n" * (octets // 4) + b"\r\nbody\r\n"


def best(step: Callable[[bytes], object], raw: bytes, runs: int) -> float:
    """The shortest of ``runs`` timings of ``step(raw)``."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        step(raw)
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    one, two = folded_subject(MIB), folded_subject(2 * MIB)
    steps: dict[str, Callable[[bytes], object]] = {
        "parse_fields": lambda raw: parse_fields(header_block(raw)),
        "check_header_block": lambda raw: _checked(raw),
        "rewrite": lambda raw: rewrite(raw, "shop@example.org", "bounce@x.example"),
    }
    print(f"header block cap: {MAX_HEADER_BLOCK_BYTES} bytes (ingest answers 406 above it)")
    for name, step in steps.items():
        pairs = [(best(step, one, 1), best(step, two, 1)) for _ in range(args.runs)]  # alternating sizes
        t1, t2 = min(p[0] for p in pairs), min(p[1] for p in pairs)
        print(f"{name:20s} 1 MiB {t1 * 1000:8.1f} ms   2 MiB {t2 * 1000:8.1f} ms   ratio {t2 / t1:.2f}")


def _checked(raw: bytes) -> None:
    with contextlib.suppress(Undeliverable):  # the 2 MiB block is over the cap; only the time counts here
        check_header_block(raw)


if __name__ == "__main__":
    main()
