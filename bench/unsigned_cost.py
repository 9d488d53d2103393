"""What an unauthenticated post costs ingest: peak memory and time, in-process, per size.

    .venv/bin/python -m bench.unsigned_cost [--sizes 1,6,25] [--process]

For each size (MB of body) and each way an attacker may shape an unsigned post,
ingest's ``handle`` answers it while tracemalloc records the peak of Python
allocations; the baseline is just reading the same body (joining its 1 MiB
chunks). The body itself is allocated before measuring, as the server holds it.
Shapes:

- ``urlencoded %41``: ``recipient=…&body-mime=%41%41…`` without signature fields
  (the issue's reproduction: 6 MB cost +460 MB before the fix);
- ``urlencoded %41, bad signature last``: the same with wrong signature fields after the body;
- ``multipart, no signature``: a ``body-mime`` file part of raw octets, no signature;
- ``multipart, bad signature first``: wrong signature fields before the body
  (answered after the first chunk);
- ``multipart, bad signature last``: wrong signature fields after the body.

With ``--process`` the same posts also go over HTTP to ingest under a real
functions-framework process (started here on 127.0.0.1, stopped by its pid; one
fresh process per size): the time to the answer, and how much the worker's
peak RSS (VmHWM) grew over the whole series for that size.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import requests
from urllib3 import encode_multipart_formdata

from bench.procs import memory_kib, worker_pid
from tagrelay.adapters.ledger import MemoryLedger
from tagrelay.adapters.secrets import Secret
from tagrelay.core.config import IngestConfig, SecretRef
from tagrelay.core.log import LOGGER_NAME
from tagrelay.core.routes import load
from tagrelay.services.ingest import Ingest
from tagrelay_tools.localstack import REPO, framework_argv, free_port

MB = 1_000_000
CHUNK = 1 << 20
FieldValue = str | bytes | tuple[str, bytes, str]
BAD_SIGNATURE: list[tuple[str, FieldValue]] = [
    ("timestamp", "1800000000"),
    ("token", "t" * 50),
    ("signature", "0" * 64),
]


@dataclass(frozen=True)
class Post:
    shape: str
    content_type: str
    body: bytes


@dataclass(frozen=True)
class Cost:
    shape: str
    size: int
    status: int
    seconds: float
    peak_bytes: int
    baseline_bytes: int


def unsigned_posts(size: int) -> list[Post]:
    """Posts of about ``size`` bytes that carry no valid signature."""
    head = b"recipient=shop%40example.org&body-mime="
    encoded = head + b"%41" * ((size - len(head)) // 3)
    tail = "&" + "&".join(f"{name}={value!s}" for name, value in BAD_SIGNATURE if isinstance(value, str))
    raw = b"A" * (size - 400)
    envelope: list[tuple[str, FieldValue]] = [("recipient", "shop@example.org"), ("sender", "a@b.example")]
    body_part: tuple[str, FieldValue] = ("body-mime", ("message.mime", raw, "message/rfc822"))
    posts = [
        Post("urlencoded %41", "application/x-www-form-urlencoded", encoded),
        Post("urlencoded %41, bad signature last", "application/x-www-form-urlencoded", encoded + tail.encode()),
    ]
    for shape, fields in (
        ("multipart, no signature", [*envelope, body_part]),
        ("multipart, bad signature first", [*envelope, *BAD_SIGNATURE, body_part]),
        ("multipart, bad signature last", [*envelope, body_part, *BAD_SIGNATURE]),
    ):
        body, content_type = encode_multipart_formdata(fields)
        posts.append(Post(shape, content_type, body))
    return posts


def ingest(max_body_bytes: int = 26 * 1024 * 1024) -> Ingest:
    config = IngestConfig(
        project="bench",
        topic="tagrelay-inbound",
        routes=load('[[route]]\nmatch = "{tag}@example.org"\nforward = "owner+{tag}@gmail.com"\n'),
        signing_key=SecretRef(variable="MAILGUN_WEBHOOK_SIGNING_KEY", value="bench-signing-key"),
        max_age_seconds=9 * 3600,
        publish_timeout=10,
        max_body_bytes=max_body_bytes,
    )
    return Ingest(config, Secret(config.signing_key), _NoPublisher(), MemoryLedger(), clock=lambda: 1_800_000_000.0)


class _NoPublisher:
    def publish(self, data: bytes, attributes: dict[str, str]) -> str:
        raise AssertionError("an unsigned post must never be published")


def chunks(body: bytes) -> Iterator[bytes]:
    """The body as the request stream hands it over (request_chunks reads 1 MiB at a time)."""
    for start in range(0, len(body), CHUNK):
        yield body[start : start + CHUNK]


def peak(action: Callable[[], object]) -> tuple[object, int, float]:
    """(result, peak bytes allocated above the start, seconds) of one call."""
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    started = time.perf_counter()
    result = action()
    seconds = time.perf_counter() - started
    top = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return result, top - base, seconds


def measure(post: Post, service: Ingest | None = None) -> Cost:
    service = service or ingest()
    _, baseline, _ = peak(lambda: b"".join(chunks(post.body)))
    response, used, seconds = peak(lambda: service.handle(post.content_type, chunks(post.body)))
    status = getattr(response, "status", 0)
    return Cost(post.shape, len(post.body), status, seconds, used, baseline)




def through_process(size: int) -> list[tuple[str, int, float, int]]:
    """(shape, status, seconds, worker VmHWM growth in KiB so far) for each unsigned post of ``size``."""
    port = free_port()
    env = {
        **os.environ,
        "GOOGLE_CLOUD_PROJECT": "bench-unsigned",
        "TAGRELAY_ROUTES": str(REPO / "bench" / "routes.toml"),
        "MAILGUN_WEBHOOK_SIGNING_KEY": "bench-signing-key",
    }
    source = REPO / "functions" / "ingest" / "main.py"
    argv = [part.replace("{port}", str(port)) for part in framework_argv(source, "ingest")]
    process = subprocess.Popen(
        argv, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    rows: list[tuple[str, int, float, int]] = []
    try:
        url = f"http://127.0.0.1:{port}/mime"
        deadline = time.monotonic() + 60
        while True:
            try:
                requests.post(url, data=b"a=b", headers={"Content-Type": "text/plain"}, timeout=5)
                break
            except requests.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        worker = worker_pid(process.pid, seconds=30.0)
        before = memory_kib(worker)["VmHWM"]
        for post in unsigned_posts(size):
            started = time.perf_counter()
            response = requests.post(url, data=post.body, headers={"Content-Type": post.content_type}, timeout=60)
            seconds = time.perf_counter() - started
            rows.append((post.shape, response.status_code, seconds, memory_kib(worker)["VmHWM"] - before))
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,6,25", help="body sizes in MB, comma-separated")
    parser.add_argument("--process", action="store_true", help="also post to a functions-framework ingest")
    options = parser.parse_args()
    sizes = [int(float(part) * MB) for part in options.sizes.split(",")]
    logging.getLogger(LOGGER_NAME).addHandler(logging.NullHandler())
    logging.getLogger(LOGGER_NAME).disabled = True  # refusals are logged per post; not part of the table
    print(f"{'shape':<36} {'MB':>4} {'status':>6} {'ms':>7} {'peak MB':>8} {'read-only MB':>12} {'ratio':>6}")
    for size in sizes:
        for post in unsigned_posts(size):
            cost = measure(post)
            print(
                f"{cost.shape:<36} {size / MB:>4.0f} {cost.status:>6} {cost.seconds * 1000:>7.1f} "
                f"{cost.peak_bytes / MB:>8.1f} {cost.baseline_bytes / MB:>12.1f} {cost.peak_bytes / cost.size:>6.2f}"
            )
    if not options.process:
        return
    print(f"\nthrough functions-framework (HTTP):\n{'shape':<36} {'MB':>4} {'status':>6} {'ms':>7} {'VmHWM +MB':>9}")
    for size in sizes:
        for shape, status, seconds, grown in through_process(size):
            print(f"{shape:<36} {size / MB:>4.0f} {status:>6} {seconds * 1000:>7.1f} {grown * 1024 / MB:>9.1f}")


if __name__ == "__main__":
    main()
