"""Run the benchmarks: ``python -m bench.run [--quick]`` (``make bench`` / ``make bench-quick``).

Every figure is a ratio of two things measured side by side in this run, on this
machine; nothing is compared with remembered numbers. Prints a table and writes
``bench/results.json`` (quick: ``bench/results-quick.json``); the full run also
writes ``bench/RESULTS.md`` (the table for the README) and ``bench/latency.png``.

A figure that misses its target is printed as MISS and kept in the results with
``ok: false``. The exit status is 1 only when a benchmark could not run at all.

All load goes to processes this run starts on 127.0.0.1, each stopped by its pid
at the end; every loop is bounded by a count and a deadline.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

from bench import coldstart, cost, counts, e2e, ingest_speed, memory, rewrite_speed
from bench.messages import small_message
from bench.procs import BENCH, BenchStack, start_baseline, start_standin
from bench.results import Result, failed, markdown, median, table, write_json
from tagrelay_tools.localstack import missing_prerequisites
from tagrelay_tools.standin import StandinClient

SINK_TOPIC = "bench-sink"
INGEST_THREADS = "8"  # deploy.sh: ingest --concurrency=8
RELAY_THREADS = "10"  # deploy.sh: relay concurrency 1 (the default) x --max-instances=10


@dataclass(frozen=True)
class Plan:
    quick: bool
    latency_pairs: int
    latency_warmup: int
    throughput_rounds: int
    throughput_seconds: float
    e2e_messages: int
    paced_messages: int
    paced_seconds: float
    arrival_seconds: float
    cold_repeats: int
    memory_process: bool
    count_messages: int


FULL = Plan(
    quick=False,
    latency_pairs=200,
    latency_warmup=10,
    throughput_rounds=3,
    throughput_seconds=5.0,
    e2e_messages=500,
    paced_messages=500,
    paced_seconds=30.0,
    arrival_seconds=120.0,
    cold_repeats=5,
    memory_process=True,
    count_messages=50,
)
QUICK = Plan(
    quick=True,
    latency_pairs=12,
    latency_warmup=3,
    throughput_rounds=1,
    throughput_seconds=1.5,
    e2e_messages=50,
    paced_messages=30,
    paced_seconds=3.0,
    arrival_seconds=30.0,
    cold_repeats=1,
    memory_process=False,
    count_messages=10,
)


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gb = 0.0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_gb = int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    cpus = os.cpu_count() or 0
    python = platform.python_version()
    framework = version("functions-framework")
    return {
        "cpu": cpu,
        "cpus": cpus,
        "memory_gb": round(memory_gb, 1),
        "os": platform.platform(),
        "python": python,
        "functions_framework": framework,
        "summary": f"{cpus} x {cpu or 'unknown CPU'}, {memory_gb:.0f} GB, {platform.system()}, Python {python}, "
        f"functions-framework {framework}",
    }


class Runner:
    """Runs each benchmark, turning a crash into reported misses instead of losing the rest."""

    def __init__(self) -> None:
        self.results: list[Result] = []
        self.errors: list[str] = []
        self.timings: dict[str, float] = {}
        self.notes: dict[str, str] = {}  # sections of the report beside the table (the cost of a message)

    def step(self, label: str, names: Sequence[tuple[str, str, str]], work: Callable[[], list[Result]]) -> None:
        print(f"-- {label}", flush=True)
        begin = time.monotonic()
        try:
            found = work()
        except Exception as exc:  # report and go on: one broken benchmark must not hide the others
            traceback.print_exc()
            reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
            self.errors.append(f"{label}: {reason}")
            found = [failed(name, unit, target, reason) for name, unit, target in names]
        self.timings[label] = time.monotonic() - begin
        for result in found:
            print(f"   {result.name}: {result.ratio:.3g} ({result.target}) {'ok' if result.ok else 'MISS'}", flush=True)
        self.results.extend(found)


def run(plan: Plan) -> tuple[Runner, dict[str, list[float]], dict[str, list[float]]]:
    runner = Runner()
    ack: dict[str, list[float]] = {}
    e2e_samples: dict[str, list[float]] = {}

    runner.step(
        "rewrite speed",
        [(f"rewrite.{s.label}", "ms", f">= {s.bound:g}") for s in rewrite_speed.sizes(plan.quick)],
        lambda: rewrite_speed.run(plan.quick),
    )
    problems = missing_prerequisites()
    if problems:
        raise SystemExit("the local stack needs:\n" + "\n".join(problems))
    # Memory is not timing: the probes run in their own processes while the stack starts.
    probes = ThreadPoolExecutor(max_workers=2)
    pending = {kind: probes.submit(memory.service, kind) for kind in ("ingest", "relay")}
    workdir = Path(tempfile.mkdtemp(prefix="tagrelay-bench-"))
    stack = BenchStack(
        workdir=workdir,
        routes=BENCH / "routes.toml",
        outbox=workdir / "outbox",
        ingest_env={"THREADS": INGEST_THREADS},
        relay_env={"THREADS": RELAY_THREADS},
    )
    keep = False
    print(f"-- starting the local stack in {workdir}", flush=True)
    begin = time.monotonic()
    try:
        stack.start()
        runner.timings["stack start"] = time.monotonic() - begin
        runner.step(
            "memory (in-process services, run while the stack started)",
            [
                ("memory.ingest.service", "MB", f"<= {memory.BOUND:g}"),
                ("memory.relay.service", "MB", f"<= {memory.BOUND:g}"),
            ],
            lambda: [pending[kind].result(timeout=memory.PROBE_SECONDS) for kind in ("ingest", "relay")],
        )
        stack.ensure_topic(SINK_TOPIC)
        stack.ensure_subscription(f"{SINK_TOPIC}-hold", SINK_TOPIC)
        ingest = stack.start_ingest("ingest-ack", extra={"TAGRELAY_TOPIC": SINK_TOPIC})
        slow = start_standin(stack, "standin-slow")
        StandinClient(slow.url).set_faults({"delay": ingest_speed.MAILGUN_DELAY_SECONDS})
        sync = start_baseline(
            stack,
            "sync-ingest",
            "sync_ingest",
            {
                "THREADS": INGEST_THREADS,
                "MAILGUN_WEBHOOK_SIGNING_KEY": stack.signing_key,
                "MAILGUN_DOMAIN": stack.domain,
                "MAILGUN_API_BASE": slow.url,
                "MAILGUN_API_KEY": stack.api_key,
                "MAILGUN_TIMEOUT": "10",
            },
        )
        start_baseline(stack, "hello", "hello", {"THREADS": INGEST_THREADS})
        floor = start_baseline(
            stack, "publish-only", "publish_only", {"THREADS": INGEST_THREADS, "TAGRELAY_TOPIC": SINK_TOPIC}
        )

        def latency() -> list[Result]:
            urls = {"ingest": ingest.url, "floor": floor.url, "sync": sync.url}
            found = ingest_speed.ack_latency(
                urls, stack.signing_key, plan.latency_pairs, plan.latency_warmup, stack.route_key
            )
            ack["ingest (queue: publish acked)"] = [s * 1000 for s in found.seconds["ingest"]]
            ack["bare publish (the floor)"] = [s * 1000 for s in found.seconds["floor"]]
            ack["synchronous baseline (Mailgun 300 ms)"] = [s * 1000 for s in found.seconds["sync"]]
            return ingest_speed.latency_results(found)

        runner.step(
            "ingest acknowledgement latency",
            [
                ("ingest.ack_latency.p50", "ms", "<= 0.1"),
                ("ingest.ack_latency.p99", "ms", "<= 0.1"),
                ("ingest.overhead.p50", "ms", f"+{ingest_speed.OVERHEAD_P50_MS:g} ms"),
                ("ingest.overhead.p99", "ms", f"+{ingest_speed.OVERHEAD_P99_MS:g} ms"),
            ],
            latency,
        )
        runner.step(
            "ingest throughput",
            [
                ("ingest.throughput", "req/s", ">= 0.5"),
                ("ingest.throughput_vs_floor", "req/s", f">= {ingest_speed.FLOOR_THROUGHPUT_BOUND:g}"),
                ("ingest.cpu_per_post", "ms", f"+{ingest_speed.CPU_MS_BOUND:g} ms"),
            ],
            lambda: ingest_speed.throughput(
                stack,
                {"ingest": "ingest-ack", "floor": "publish-only", "hello": "hello"},
                stack.signing_key,
                plan.throughput_rounds,
                plan.throughput_seconds,
            ),
        )

        def end_to_end() -> list[Result]:
            found = e2e.run(
                stack,
                plan.e2e_messages,
                plan.paced_messages,
                plan.paced_seconds,
                plan.arrival_seconds,
            )
            for name, run in found.runs.items():
                path, mode = name.split(".")
                e2e_samples[f"{path}, {mode}"] = [s * 1000 for s in run.latencies]
            return found.results

        runner.step(
            "end to end",
            [
                ("e2e.throughput", "msg/s", f">= {e2e.THROUGHPUT_BOUND:.3g}"),
                ("e2e.latency.p50", "ms", f"<= {e2e.P50_BOUND:g}"),
                ("e2e.latency.p99", "ms", f"<= {e2e.P99_BOUND:g}"),
            ],
            end_to_end,
        )
        stage_counts: dict[str, counts.Stage] = {}

        def per_message() -> list[Result]:
            found = counts.measure(
                stack, plan.count_messages, lambda n: small_message(f"count-{n}-{uuid.uuid4().hex}@bench.example")
            )
            stage_counts.update(found)
            return counts.results(found)

        runner.step("one message, counted", [("ingest.round_trips", "calls", "value <= 1 calls")], per_message)
        acked = ack.get("ingest (queue: publish acked)", [])
        if stage_counts and acked:
            at_ingest, at_relay = stage_counts["ingest"], stage_counts["relay"]
            bill = cost.estimate(
                cost.stages_from_counts(
                    median(acked) / 1000,
                    at_relay.wall_ms / 1000,
                    at_ingest.documents,
                    at_relay.documents,
                    at_ingest.pubsub_bytes,
                )
            )
            runner.notes["cost"] = f"{cost.markdown(bill)}\n\nAssumptions: {cost.ASSUMPTIONS}"
        for name in ("sync-ingest", "standin-slow", "hello", "ingest-ack", "publish-only"):
            stack.children.pop(name).stop()  # free the CPUs for what follows
        if plan.memory_process:
            runner.step(
                "memory (function processes)",
                [
                    ("memory.ingest.process", "MB", f"<= {memory.BOUND:g}"),
                    ("memory.relay.process", "MB", f"<= {memory.BOUND:g}"),
                ],
                lambda: memory.process(stack),
            )
        runner.step(
            "cold start",
            [("cold_start.ingest", "s", "<= 2"), ("cold_start.relay", "s", "<= 2")],
            lambda: coldstart.run(stack, plan.cold_repeats, SINK_TOPIC, INGEST_THREADS)[0],
        )
    except BaseException:
        keep = True
        raise
    finally:
        probes.shutdown(wait=True)
        stack.stop()
        if keep or runner.errors:
            print(f"-- logs kept in {workdir / 'logs'}", flush=True)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return runner, ack, e2e_samples


ORDER = ("ingest.", "e2e.", "rewrite.", "memory.", "cold_start.")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="tagrelay benchmarks: ratios measured side by side in one run")
    parser.add_argument("--quick", action="store_true", help="a reduced run (under a minute)")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    started = datetime.now(UTC)
    load_before = os.getloadavg()
    begin = time.monotonic()
    runner, ack, e2e_samples = run(plan)
    seconds = time.monotonic() - begin
    load_after = os.getloadavg()
    results = sorted(runner.results, key=lambda r: next(i for i, p in enumerate(ORDER) if r.name.startswith(p)))

    about = machine()
    mode = "quick" if plan.quick else "full"
    print()
    print(table(results))
    missed = [r.name for r in results if not r.ok]
    print()
    print(f"{mode} run: {seconds:.0f} s on {about['summary']}")
    print(f"load average (1 min) before/after: {load_before[0]:.1f}/{load_after[0]:.1f} on {about['cpus']} CPUs")
    print("phases: " + ", ".join(f"{k} {v:.0f} s" for k, v in runner.timings.items()))
    print(f"missed: {', '.join(missed)}" if missed else "every target met")
    for section in runner.notes.values():
        print()
        print(section)
    meta = {
        "mode": mode,
        "started": started.isoformat(timespec="seconds"),
        "seconds": round(seconds, 1),
        "machine": about,
        "phase_seconds": {k: round(v, 1) for k, v in runner.timings.items()},
        "load_average_1min": {"before": round(load_before[0], 2), "after": round(load_after[0], 2)},
        "errors": runner.errors,
        "notes": runner.notes,
    }
    write_json(BENCH / ("results-quick.json" if plan.quick else "results.json"), results, meta)
    if not plan.quick:
        report = markdown(results, about, mode, seconds)
        (BENCH / "RESULTS.md").write_text("\n\n".join([report.rstrip("\n"), *runner.notes.values()]) + "\n")
        from bench.plot import draw

        draw(
            [
                ("(1) ingest acknowledgement", ack),
                ("(3) end to end, paced at half capacity", {k: v for k, v in e2e_samples.items() if "paced" in k}),
                ("(3) end to end, burst", {k: v for k, v in e2e_samples.items() if "burst" in k}),
            ],
            BENCH / "latency.png",
            f"tagrelay latency, {started:%Y-%m-%d}, {about['summary']}",
        )
    return 1 if runner.errors else 0


if __name__ == "__main__":
    sys.exit(main())
