"""(5) Peak RSS added by forwarding a 25 MB message, in ingest and in relay, against the message size.

Two views, both in fresh processes:

- ``process``: the real function processes under functions-framework (a new ingest
  and a new relay, warmed with a few small messages); the gunicorn worker's VmHWM
  is reset to its RSS, the 25 MB message goes through, and the new peak is read.
  The ingest's output (the message as Pub/Sub carries it) is what the relay gets.
- ``service``: ``python -m bench.memprobe`` runs the service in-process with
  in-memory doubles for the network, which leaves out the HTTP framework, the
  Google clients and the stand-in (see bench/memprobe.py).
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

import requests

from bench.load import Client, Request
from bench.messages import PostFactory, mime_path, push_body, sized_message, small_message, unique_post
from bench.procs import BenchStack, memory_kib, reset_peak, stop, worker_pid
from bench.results import Result, compare, failed
from tagrelay_tools.localstack import REPO

MESSAGE_BYTES = 25_000_000
BOUND = 2.0  # issue 11: peak memory for a 25 MB message at most 2x its size in each function
TOPIC = "bench-memory"
HOLD = "bench-memory-hold"
RECIPIENT = "bench@example.org"
PROBE_SECONDS = 120.0
BIG_REQUEST_TIMEOUT = 180.0
MB = 1_000_000


def _result(name: str, added: int, message: int, note: str, extra: dict[str, Any]) -> Result:
    return compare(name, added / MB, message / MB, "MB", "<=", BOUND, note=note, extra=extra)


def service(kind: str) -> Result:
    """The in-process probe in a fresh interpreter."""
    name = f"memory.{kind}.service"
    completed = subprocess.run(
        [sys.executable, "-m", "bench.memprobe", kind, "--size", str(MESSAGE_BYTES)],
        cwd=REPO,
        capture_output=True,
        timeout=PROBE_SECONDS,
        check=False,
    )
    lines = [line for line in completed.stdout.decode().splitlines() if line.startswith('{"service"')]
    if completed.returncode != 0 or not lines:
        reason = completed.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        return failed(name, "MB", f"<= {BOUND:g}", f"probe exited {completed.returncode}: {reason[0]}")
    report = json.loads(lines[-1])
    path = report.get("path", "")
    note = (
        f"in-process {kind} service, fresh interpreter, network doubles; peak RSS added over the "
        f"{report['message_bytes'] / MB:.0f} MB message's own input; path: {path}"
        + ("" if report["peak_reset"] else "; VmHWM could not be reset, so the peak is over the earlier peak")
    )
    return _result(name, int(report["peak_added"]), int(report["message_bytes"]), note, report)


def _pull_one(stack: BenchStack, message_id: str, seconds: float = 30.0) -> dict[str, Any] | None:
    base = f"{stack.pubsub_url}/v1/projects/{stack.project}/subscriptions/{HOLD}"
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        response = requests.post(f"{base}:pull", json={"maxMessages": 10, "returnImmediately": True}, timeout=30)
        response.raise_for_status()
        received = response.json().get("receivedMessages", [])
        if received:
            ack = {"ackIds": [m["ackId"] for m in received]}
            requests.post(f"{base}:acknowledge", json=ack, timeout=30).raise_for_status()
        for item in received:
            message: dict[str, Any] = item["message"]
            if message.get("attributes", {}).get("message_id") == f"<{message_id}>":
                return message
        time.sleep(0.2)
    return None


def _peak_of(child_pid: int, send: Callable[[], None]) -> tuple[int, int, bool]:
    """Reset the worker's peak, run ``send()``, return (RSS before, peak after, reset worked) in bytes."""
    reset = reset_peak(child_pid)
    before = memory_kib(child_pid)
    send()
    after = memory_kib(child_pid)
    start = before["VmRSS"] if reset else before["VmHWM"]
    return start * 1024, after["VmHWM"] * 1024, reset


def process(stack: BenchStack) -> list[Result]:
    """Both real function processes, ingest first; its published message feeds the relay."""
    stack.ensure_topic(TOPIC)
    stack.ensure_subscription(HOLD, TOPIC)
    message_id = f"memory-{uuid.uuid4().hex}@bench.example"
    raw = sized_message(MESSAGE_BYTES, message_id=message_id)
    results: list[Result] = []

    ingest = stack.start_ingest("memory-ingest", extra={"TAGRELAY_TOPIC": TOPIC})
    try:
        pid = worker_pid(ingest)
        client = Client(ingest.url, timeout=BIG_REQUEST_TIMEOUT)
        factory = PostFactory(small_message("warm@bench.example"), RECIPIENT, stack.signing_key)
        for _ in range(3):
            client.send(Request(mime_path(stack.route_key), factory.next(), factory.content_type))
        post = unique_post(raw, RECIPIENT, stack.signing_key)
        big = Request(mime_path(stack.route_key), post.body, post.content_type)
        answer: list[int] = []
        before, peak, reset = _peak_of(pid, lambda: answer.append(client.send(big)[0]))
        client.close()
    finally:
        stop(stack, "memory-ingest")
    status = answer[0] if answer else 0
    path = "claim check" if status == 200 else f"refused with HTTP {status}"
    results.append(
        _result(
            "memory.ingest.process",
            peak - before,
            len(raw),
            f"real ingest under functions-framework (gunicorn worker VmHWM), answered {status}; path: {path}"
            + ("" if reset else "; VmHWM not reset"),
            {"status": status, "rss_before": before, "peak_after": peak},
        )
    )

    published = _pull_one(stack, message_id) if status == 200 else None
    if published is not None:
        body = json.dumps(
            {"message": published, "subscription": f"projects/{stack.project}/subscriptions/bench-memory-push"}
        ).encode()
        how = f"the message ingest published ({len(base64.b64decode(published.get('data', '')))} bytes of data"
        how += ", claim check)" if published.get("attributes", {}).get("claim") else ")"
    else:
        body = push_body(raw, RECIPIENT, 1)
        how = "an inline push body (ingest did not publish it)"
    relay = stack.start_relay("memory-relay")
    try:
        pid = worker_pid(relay)
        client = Client(relay.url, timeout=BIG_REQUEST_TIMEOUT)
        for number in range(3):
            warm = push_body(small_message(f"warm-{uuid.uuid4().hex}@bench.example"), RECIPIENT, number)
            client.send(Request("/", warm, "application/json"))
        answer.clear()
        before, peak, reset = _peak_of(
            pid, lambda: answer.append(client.send(Request("/", body, "application/json"))[0])
        )
        client.close()
    finally:
        stop(stack, "memory-relay")
    arrived = any(r["message_id"] == f"<{message_id}>" for r in stack.standin.accepted())
    results.append(
        _result(
            "memory.relay.process",
            peak - before,
            len(raw),
            f"real relay under functions-framework, fed {how}; answered {answer[0] if answer else 0}, "
            f"arrived at the stand-in: {'yes' if arrived else 'NO'}" + ("" if reset else "; VmHWM not reset"),
            {"status": answer[0] if answer else 0, "arrived": arrived, "rss_before": before, "peak_after": peak},
        )
    )
    if not arrived:
        results[-1] = Result(**{**results[-1].__dict__, "ok": False})
    return results
