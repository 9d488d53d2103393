"""(6) Cold start: process start to first 200, for ingest and relay against a hello-world function.

Each start is a new process under functions-framework, timed from just before it
is spawned to the first 200 answer to a real request (ingest: a signed post that
is published; relay: a push body that is sent to the stand-in; hello: any post),
so lazily created clients are counted. The three kinds take turns, in a rotating
order, and each figure is the median of its starts.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Callable

from bench.messages import PostFactory, mime_path, push_body, small_message
from bench.procs import BenchStack, first_ok, start_baseline, stop
from bench.results import Result, compare, median
from tagrelay_tools.localstack import REPO

BOUND = 2.0
RECIPIENT = "bench@example.org"
KINDS = ("hello", "ingest", "relay")


def _start(stack: BenchStack, kind: str, topic: str, threads: str) -> tuple[int, Callable[[], bytes], str, str]:
    """Start one process without waiting; its port, request body maker, path and content type."""
    name = f"cold-{kind}"
    with stack.no_wait():
        if kind == "hello":
            child = start_baseline(stack, name, "hello", {"THREADS": threads})
            return child.port, lambda: b"hello", "/", "text/plain"
        if kind == "ingest":
            child = stack.start_ingest(name, extra={"TAGRELAY_TOPIC": topic})
            factory = PostFactory(small_message(f"cold-{uuid.uuid4().hex}@bench.example"), RECIPIENT, stack.signing_key)
            return child.port, factory.next, mime_path(stack.route_key), factory.content_type
        child = stack.start_relay(name)

    def relay_body() -> bytes:
        return push_body(small_message(f"cold-{uuid.uuid4().hex}@bench.example"), RECIPIENT, 1)

    return child.port, relay_body, "/", "application/json"


def measure(stack: BenchStack, kind: str, topic: str, threads: str) -> float:
    begin = time.monotonic()
    try:
        port, body, path, content_type = _start(stack, kind, topic, threads)
        return first_ok(port, path, body, content_type) - begin
    finally:
        stop(stack, f"cold-{kind}")


# What each function imports before its first 200, in the order it does (the framework first; ingest's
# first post needs only the Pub/Sub client; the relay's first message Firestore, Pub/Sub and requests).
FRAMEWORK = ("flask + functions_framework", "import flask, functions_framework")
APP = ("tagrelay.app", "import tagrelay.app")
IMPORTS: dict[str, tuple[tuple[str, str], ...]] = {
    "ingest": (FRAMEWORK, APP, ("google.cloud.pubsub_v1", "from google.cloud import pubsub_v1")),
    "relay": (
        FRAMEWORK,
        APP,
        ("google.cloud.firestore", "from google.cloud import firestore"),
        ("google.cloud.pubsub_v1", "from google.cloud import pubsub_v1"),
        ("requests", "import requests"),
    ),
}


def import_costs(kind: str, repeats: int) -> dict[str, float]:
    """Seconds each import adds after the ones before it, in a fresh interpreter (median of ``repeats``).

    The first is what every function under the framework pays; the rest is what
    ingest and relay add, at import time or on their first request.
    """
    lines = ["import time", "t = time.perf_counter()"]
    for label, statement in IMPORTS[kind]:
        lines += [statement, f"print({label!r}, time.perf_counter() - t)", "t = time.perf_counter()"]
    samples: dict[str, list[float]] = {label: [] for label, _ in IMPORTS[kind]}
    for _ in range(repeats):
        done = subprocess.run(
            [sys.executable, "-c", "\n".join(lines)], cwd=REPO, capture_output=True, timeout=60, check=True
        )
        for line in done.stdout.decode().splitlines():
            label, _, seconds = line.rpartition(" ")
            samples[label].append(float(seconds))
    return {label: median(values) for label, values in samples.items()}


def run(stack: BenchStack, repeats: int, topic: str, threads: str) -> tuple[list[Result], dict[str, list[float]]]:
    times: dict[str, list[float]] = {kind: [] for kind in KINDS}
    for number in range(repeats):
        order = KINDS[number % 3 :] + KINDS[: number % 3]
        for kind in order:
            times[kind].append(measure(stack, kind, topic, threads))
    hello = median(times["hello"])
    imports = {kind: import_costs(kind, max(1, min(3, repeats))) for kind in ("ingest", "relay")}

    def cause(kind: str) -> str:
        found = imports[kind]
        return f"{kind}'s imports in a fresh interpreter: " + ", then ".join(f"{k} {v:.2f} s" for k, v in found.items())

    results = [
        compare(
            f"cold_start.{kind}",
            median(times[kind]),
            hello,
            "s",
            "<=",
            BOUND,
            note=(
                f"process start to first 200, median of {repeats} (each: "
                + ", ".join(f"{t:.2f}" for t in times[kind])
                + f" s; hello: {', '.join(f'{t:.2f}' for t in times['hello'])} s); {cause(kind)}"
            ),
            extra={"samples": times[kind], "hello_samples": times["hello"], "import_seconds": imports[kind]},
        )
        for kind in ("ingest", "relay")
    ]
    return results, times
