"""(4) The header-only rewrite against a full parse-and-serialise with the stdlib ``email`` package.

Both sides do the same job, turning the received message into the forwarded one
(new From, Reply-To set to the original sender), timed alternately in this process.
The rewrite's body bytes are checked to be identical to the input's; the stdlib's are
checked too, for the record (its serialiser re-folds and changes line endings).
"""

from __future__ import annotations

import email
import email.policy
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage

from bench.messages import sized_message
from bench.results import Result, compare, median
from tagrelay.core.headers import split_message
from tagrelay.core.rewrite import rewrite

ALIAS = "github@example.org"
SENDER = "alice@bank.example"
MIN_SAMPLE_SECONDS = 0.02  # small messages are timed in loops at least this long


@dataclass(frozen=True)
class Size:
    label: str
    size: int
    samples: int
    bound: float
    why: str


def stdlib_forward(raw: bytes) -> bytes:
    """What the rewrite replaces: parse everything, change two headers, serialise everything."""
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    original = str(message.get("From", ""))
    del message["From"]
    del message["Reply-To"]
    message["From"] = f'"Alice Example via example.org" <{ALIAS}>'
    message["Reply-To"] = original
    return message.as_bytes()


def header_rewrite(raw: bytes) -> bytes:
    return rewrite(raw, ALIAS, SENDER).mime


def _first_call(function: Callable[[bytes], bytes], raw: bytes) -> tuple[bytes, int]:
    """One call's output, and how many calls make one sample of at least MIN_SAMPLE_SECONDS."""
    begin = time.perf_counter()
    output = function(raw)
    once = max(time.perf_counter() - begin, 1e-7)
    return output, max(1, int(MIN_SAMPLE_SECONDS / once) + 1)


def _sample(function: Callable[[bytes], bytes], raw: bytes, loops: int) -> float:
    begin = time.perf_counter()
    for _ in range(loops):
        function(raw)
    return (time.perf_counter() - begin) / loops


def measure(size: Size) -> Result:
    raw = sized_message(size.size)
    rewritten, our_loops = _first_call(header_rewrite, raw)
    parsed, their_loops = _first_call(stdlib_forward, raw)
    body = split_message(raw)[1]
    body_identical = split_message(rewritten)[1] == body
    stdlib_body_identical = split_message(parsed)[1] == body
    del rewritten, parsed
    loops = (our_loops, their_loops)
    ours: list[float] = []
    theirs: list[float] = []
    for number in range(size.samples):  # alternate which side goes first
        pair = [(ours, header_rewrite, loops[0]), (theirs, stdlib_forward, loops[1])]
        for into, function, count in pair if number % 2 == 0 else reversed(pair):
            into.append(_sample(function, raw, count))
    result = compare(
        f"rewrite.{size.label}",
        median(ours) * 1000,
        median(theirs) * 1000,
        "ms",
        ">=",
        size.bound,
        inverse=True,
        note=(
            f"{len(raw):,} bytes; median of {size.samples} alternating samples; ratio = times faster. "
            f"{size.why} Rewrite body bytes identical: {'yes' if body_identical else 'NO'}; "
            f"stdlib body identical: {'yes' if stdlib_body_identical else 'no'}."
        ),
        extra={
            "bytes": len(raw),
            "body_identical": body_identical,
            "stdlib_body_identical": stdlib_body_identical,
            "samples": size.samples,
        },
    )
    if not body_identical:  # a rewrite that touches the body fails whatever its speed
        result = Result(**{**result.__dict__, "ok": False})
    return result


def sizes(quick: bool) -> list[Size]:
    small = "Target: never slower than the full parse (header-only work cannot cost more)."
    return [
        Size("2KB", 2_000, 7 if quick else 25, 1.0, small),
        Size("200KB", 200_000, 5 if quick else 15, 1.0, small),
        Size("10MB", 10_000_000, 2 if quick else 7, 20.0, "Target from the issue: >= 20x faster on 10 MB."),
    ]


def run(quick: bool) -> list[Result]:
    return [measure(size) for size in sizes(quick)]
