"""(1) Ingest acknowledgement latency against the synchronous design, and (2) ingest throughput
against a hello-world function, both with the real processes side by side.

(1) One client posts signed Mailgun posts alternately to ingest (200 once Pub/Sub
acknowledged the publish) and to the synchronous baseline (200 once the message
was resent through a stand-in that delays every Mailgun call by 300 ms).

(2) Eight clients post back to back, in alternating rounds, to ingest and to a
hello-world function under the same framework and the same server settings.

Ingest publishes to a topic of its own that only a pull subscription holds, so
the relay does not compete for the CPUs while ingest is measured.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.load import Client, LoopResult, Outcome, Request, closed_loop
from bench.messages import PostFactory, mime_path, small_message
from bench.procs import CpuMeter, describe_cpu
from bench.results import Result, compare, percentile
from tagrelay_tools.localstack import Stack

RECIPIENT = "bench@example.org"
MAILGUN_DELAY_SECONDS = 0.3
LATENCY_BOUND = 0.1
THROUGHPUT_BOUND = 0.5
CLIENTS = 8


@dataclass
class Latencies:
    ingest: list[float]
    baseline: list[float]
    failures: int


def ack_latency(ingest_url: str, sync_url: str, key: str, pairs: int, warmup: int, route_key: str = "") -> Latencies:
    factory = PostFactory(small_message("latency@bench.example"), RECIPIENT, key)
    ours, theirs = Client(ingest_url), Client(sync_url)
    samples: tuple[list[Outcome], list[Outcome]] = ([], [])
    try:
        for number in range(warmup + pairs):
            sides = [(ours, samples[0]), (theirs, samples[1])]
            for client, into in sides if number % 2 == 0 else reversed(sides):
                outcome = client.timed(Request(mime_path(route_key), factory.next(), factory.content_type))
                if number >= warmup:
                    into.append(outcome)
    finally:
        ours.close()
        theirs.close()
    failures = sum(1 for side in samples for o in side if o.status != 200)
    return Latencies(
        [o.seconds for o in samples[0] if o.status == 200],
        [o.seconds for o in samples[1] if o.status == 200],
        failures,
    )


def latency_results(found: Latencies) -> list[Result]:
    results = []
    for q in (50, 99):
        result = compare(
            f"ingest.ack_latency.p{q}",
            percentile(found.ingest, q) * 1000,
            percentile(found.baseline, q) * 1000,
            "ms",
            "<=",
            LATENCY_BOUND,
            note=(
                f"signed post -> 200, one client, {len(found.ingest)} alternating pairs; baseline: the synchronous "
                f"design (verify, rewrite, resend through a stand-in that delays each call "
                f"{MAILGUN_DELAY_SECONDS * 1000:.0f} ms). Ingest publishes to a topic held by a pull subscription, "
                "so the relay does not run meanwhile"
                + (f"; {found.failures} failed requests" if found.failures else "")
            ),
            extra={"samples": len(found.ingest), "failures": found.failures},
        )
        if found.failures:
            result = Result(**{**result.__dict__, "ok": False})
        results.append(result)
    return results


def throughput(stack: Stack, ingest: str, hello: str, key: str, rounds: int, seconds: float) -> list[Result]:
    """``ingest`` and ``hello`` name the stack's children to load; their CPU use is measured too."""
    urls = {"ingest": stack.children[ingest].url, "hello": stack.children[hello].url}
    meters = {"ingest": CpuMeter(stack, [ingest, "pubsub", "firestore"]), "hello": CpuMeter(stack, [hello])}
    factory = PostFactory(small_message("throughput@bench.example"), RECIPIENT, key)

    def make(number: int) -> tuple[Request, str]:
        return Request(mime_path(stack.route_key), factory.next(), factory.content_type), ""

    sides: dict[str, list[LoopResult]] = {"ingest": [], "hello": []}
    for url in urls.values():  # warm both
        closed_loop(url, make, CLIENTS, seconds=min(1.0, seconds))
    for number in range(rounds):
        order = ["ingest", "hello"]
        for side in order if number % 2 == 0 else reversed(order):
            meters[side].start()
            sides[side].append(closed_loop(urls[side], make, CLIENTS, seconds=seconds))
            meters[side].stop()

    def rate(runs: list[LoopResult]) -> float:
        total = sum(r.seconds for r in runs)
        return sum(len(r.ok) for r in runs) / total if total else 0.0

    failures = {side: sum(r.failures for r in runs) for side, runs in sides.items()}
    cpu = {side: meters[side].per(sum(len(r.ok) for r in runs)) for side, runs in sides.items()}
    busy_ms = percentile([o.seconds for r in sides["ingest"] for o in r.ok], 50) * 1000
    result = compare(
        "ingest.throughput",
        rate(sides["ingest"]),
        rate(sides["hello"]),
        "req/s",
        ">=",
        THROUGHPUT_BOUND,
        note=(
            f"{CLIENTS} clients back to back, {rounds} alternating rounds of {seconds:g} s; baseline: hello-world "
            "under functions-framework with the same settings (1 gunicorn worker, THREADS=8). "
            f"Ingest p50 under this load {busy_ms:.0f} ms ({CLIENTS} clients / {busy_ms:.0f} ms = "
            f"{CLIENTS / busy_ms * 1000 if busy_ms else 0:.0f} req/s). "
            f"Ingest: {describe_cpu(cpu['ingest'], 'request')}; hello: {describe_cpu(cpu['hello'], 'request')}"
            + (f"; failed requests: {failures}" if any(failures.values()) else "")
        ),
        extra={
            "failures": failures,
            "cpu_ms_per_request": cpu,
            "ingest_p50_ms": busy_ms,
        },
    )
    if failures["ingest"]:
        result = Result(**{**result.__dict__, "ok": False})
    return [result]
