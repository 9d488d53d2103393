"""Load on 127.0.0.1: timed requests over kept-alive connections, closed and open loops.

``http.client`` rather than ``requests``: the client shares two CPUs with the servers
it measures, so it should cost as little as possible. Every loop is bounded by a
count and a deadline, and every request by a timeout.
"""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

REQUEST_TIMEOUT = 30.0


@dataclass(frozen=True)
class Request:
    path: str
    body: bytes
    content_type: str


@dataclass
class Outcome:
    """One request: when it started (wall clock, ns), how long it took (s), the status."""

    started_ns: int
    seconds: float
    status: int
    key: str = ""


class Client:
    """One kept-alive HTTP/1.1 connection to a local server, reopened when it drops."""

    def __init__(self, url: str, timeout: float = REQUEST_TIMEOUT) -> None:
        parts = urlsplit(url)
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or 80
        self._timeout = timeout
        self._connection: http.client.HTTPConnection | None = None

    def _open(self) -> http.client.HTTPConnection:
        if self._connection is None:
            self._connection = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)
        return self._connection

    def send(self, request: Request) -> tuple[int, bytes]:
        """Send one request; a connection dropped by the server is retried once on a new one."""
        for attempt in (1, 2):
            connection = self._open()
            try:
                connection.request(
                    "POST",
                    request.path,
                    body=request.body,
                    headers={"Content-Type": request.content_type, "Content-Length": str(len(request.body))},
                )
                response = connection.getresponse()
                data = response.read()
                if response.will_close:
                    self.close()
                return response.status, data
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def timed(self, request: Request, key: str = "") -> Outcome:
        started_ns = time.time_ns()
        begin = time.perf_counter()
        try:
            status, _ = self.send(request)
        except OSError:
            status = 0
        return Outcome(started_ns, time.perf_counter() - begin, status, key)

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


@dataclass
class LoopResult:
    outcomes: list[Outcome] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> list[Outcome]:
        return [o for o in self.outcomes if 200 <= o.status < 300]

    @property
    def failures(self) -> int:
        return len(self.outcomes) - len(self.ok)

    @property
    def rate(self) -> float:
        return len(self.ok) / self.seconds if self.seconds > 0 else 0.0


def closed_loop(
    url: str,
    make: Callable[[int], tuple[Request, str]],
    clients: int,
    seconds: float | None = None,
    count: int | None = None,
) -> LoopResult:
    """``clients`` threads send back to back until ``seconds`` pass or ``count`` requests are sent.

    ``make(n)`` builds request number n and the key it is recorded under. At least
    one of the two bounds must be given; a count run also stops after a deadline.
    """
    if seconds is None and count is None:
        raise ValueError("give a duration or a count")
    deadline = time.monotonic() + (seconds if seconds is not None else 600.0)
    lock = threading.Lock()
    issued = 0

    def take() -> int | None:
        nonlocal issued
        with lock:
            if (count is not None and issued >= count) or time.monotonic() >= deadline:
                return None
            issued += 1
            return issued - 1

    return _run_clients(url, clients, take, make, lambda: max(1.0, deadline - time.monotonic()) + REQUEST_TIMEOUT)


def paced(
    url: str, requests: Sequence[tuple[Request, str]], rate: float, clients: int, deadline_seconds: float
) -> LoopResult:
    """Open loop: request i is started at ``i / rate`` seconds (or as soon as a client is free)."""
    lock = threading.Lock()
    start = time.monotonic()
    stop = start + deadline_seconds
    next_index = 0

    def take() -> int | None:
        nonlocal next_index
        with lock:
            if next_index >= len(requests):
                return None
            index = next_index
            next_index += 1
        due = start + index / rate
        if due >= stop:
            return None
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        return index

    return _run_clients(url, clients, take, requests.__getitem__, lambda: deadline_seconds + REQUEST_TIMEOUT)


def _run_clients(
    url: str,
    clients: int,
    take: Callable[[], int | None],
    make: Callable[[int], tuple[Request, str]],
    join_timeout: Callable[[], float],
) -> LoopResult:
    """``clients`` threads, each with its own connection, send request ``make(n)`` for every n ``take`` gives."""
    lock = threading.Lock()
    result = LoopResult()

    def work() -> None:
        client = Client(url)
        mine: list[Outcome] = []
        try:
            while (number := take()) is not None:
                request, key = make(number)
                mine.append(client.timed(request, key))
        finally:
            client.close()
            with lock:
                result.outcomes.extend(mine)

    threads = [threading.Thread(target=work, daemon=True) for _ in range(clients)]
    begin = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=join_timeout())
    result.seconds = time.perf_counter() - begin
    return result
