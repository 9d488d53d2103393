"""A local stand-in for the Mailgun API, for the local stack and the tests.

``POST /v3/<domain>/messages.mime`` (basic auth ``api:KEY``) writes the
``message`` it receives to ``<outbox>/<n>.eml`` and its envelope to
``<n>.json``, and answers like Mailgun: ``{"id": "<…>", "message": "Queued. Thank you."}``.

For fault tests, ``POST /_standin/faults`` sets a plan of forced answers:
``{"queue": ["500", "429", "hang", ...]}`` consumed one per call, and/or
``{"rates": {"500": 0.1, "hang": 0.05}, "seed": 7}`` drawn per call, and/or
``{"delay": 0.3}``: seconds added before every ``messages.mime`` answer (a slow
Mailgun, for the benchmarks; absent means no delay).
``GET /_standin/messages`` lists what was accepted.

Stored messages (a ``store(notify=...)`` route): ``POST /_standin/stored/<key>`` keeps a raw
message; ``GET /v3/domains/<domain>/messages/<key>`` (basic auth, ``Accept: message/rfc2822``)
answers ``{"body-mime": "..."}`` as Mailgun does, 404 for an unknown key.

:class:`StandinClient` is the one client of this control API (the CLI, the tests, the benchmarks).

Run: ``TAGRELAY_STANDIN_API_KEY=K python -m tagrelay_tools.standin --port P --outbox DIR --domain D``
(the key comes from the environment, never from the command line; :func:`argv` builds this line).
"""

from __future__ import annotations

import argparse
import base64
import hmac
import json
import os
import random
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypedDict, cast

import requests

from tagrelay.core.envelope import message_id_of
from tagrelay.core.errors import BadRequest
from tagrelay.core.inbound import parse_form

HANG_SECONDS = 120.0
STANDIN_KEY_VARIABLE = "TAGRELAY_STANDIN_API_KEY"  # the key the stand-in accepts (not Mailgun's MAILGUN_API_KEY)
CONTROL_TIMEOUT_SECONDS = 30.0
POLL_SECONDS = 0.2


class Accepted(TypedDict):
    """One message the stand-in accepted, as ``GET /_standin/messages`` lists it."""

    n: int
    to: list[str]
    id: str
    message_id: str
    path: str


class FaultPlan(TypedDict, total=False):
    """A plan for ``POST /_standin/faults``: forced answers ("500", "429", "hang"...) and a delay."""

    queue: list[str]
    rates: dict[str, float]
    seed: int
    delay: float


class StandinClient:
    """The stand-in's control API: what it accepted, how often it was called, and the faults it answers with."""

    def __init__(self, url: str, timeout: float = CONTROL_TIMEOUT_SECONDS) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def _messages(self) -> dict[str, Any]:
        response = requests.get(self.url + "/_standin/messages", timeout=self.timeout)
        response.raise_for_status()
        return cast(dict[str, Any], response.json())

    def accepted(self) -> list[Accepted]:
        return list(self._messages()["accepted"])

    def calls(self) -> int:
        """``messages.mime`` calls so far, answered or faulted."""
        return int(self._messages()["calls"])

    def set_faults(self, plan: FaultPlan) -> None:
        """Replace the fault plan (an empty plan answers every call normally)."""
        response = requests.post(self.url + "/_standin/faults", json=plan, timeout=self.timeout)
        response.raise_for_status()

    def wait_for(self, found: Callable[[Accepted], bool], seconds: float) -> Accepted | None:
        """The first accepted message for which ``found`` is true, polling up to ``seconds``; None if none came."""
        deadline = time.monotonic() + seconds
        while True:
            for record in self.accepted():
                if found(record):
                    return record
            if time.monotonic() >= deadline:
                return None
            time.sleep(POLL_SECONDS)


def argv(outbox: Path, domain: str) -> list[str]:
    """The stand-in's command line (``{port}`` left for ``Stack.spawn``); its key goes in STANDIN_KEY_VARIABLE."""
    return [
        sys.executable,
        "-m",
        "tagrelay_tools.standin",
        "--port",
        "{port}",
        "--outbox",
        str(outbox),
        "--domain",
        domain,
    ]


class Standin:
    def __init__(self, outbox: Path, domain: str, api_key: str) -> None:
        self.outbox = outbox
        self.domain = domain
        self.api_key = api_key
        self.lock = threading.Lock()
        self.accepted: list[dict[str, Any]] = []
        self.calls = 0
        self.queue: list[str] = []
        self.rates: dict[str, float] = {}
        self.delay = 0.0
        self.stored: dict[str, bytes] = {}
        self.random = random.Random(0)  # noqa: S311 - fault draws, not cryptography
        outbox.mkdir(parents=True, exist_ok=True)
        self.next_number = 1 + max((int(p.stem) for p in outbox.glob("*.eml") if p.stem.isdigit()), default=0)

    def forced(self) -> str:
        with self.lock:
            self.calls += 1
            if self.queue:
                return self.queue.pop(0)
            draw = self.random.random()
            for outcome, rate in self.rates.items():
                if draw < rate:
                    return outcome
                draw -= rate
            return ""

    def store(self, to: list[str], mime: bytes, options: dict[str, list[str]] | None = None) -> dict[str, Any]:
        with self.lock:
            number = self.next_number
            self.next_number += 1
            record = {
                "n": number,
                "to": to,
                "options": options or {},  # the o:/h:/v: parameters of the send, for tests to assert
                "id": f"<{number}.{int(time.time())}@standin.{self.domain}>",
                "message_id": message_id_of(mime),
            }
            path = self.outbox / f"{number}.eml"
            path.write_bytes(mime)
            (self.outbox / f"{number}.json").write_text(json.dumps(record))
            record["path"] = str(path)
            self.accepted.append(record)
            return record


def make_handler(state: Standin) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            return

        def _reply(self, status: int, body: dict[str, Any] | list[Any], headers: dict[str, str] | None = None) -> None:
            data = json.dumps(body).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def _body(self) -> bytes:
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def do_GET(self) -> None:
            if self.path == "/_standin/messages":
                with state.lock:
                    self._reply(200, {"calls": state.calls, "accepted": list(state.accepted)})
            elif self.path == "/healthz":
                self._reply(200, {"ok": True})
            elif self.path.startswith(f"/v3/domains/{state.domain}/messages/"):
                if not self._authorized():
                    self._reply(401, {"message": "Invalid private key"})
                    return
                with state.lock:
                    raw = state.stored.get(self.path.rpartition("/")[2])
                if raw is None:
                    self._reply(404, {"message": "Message not found"})
                else:
                    self._reply(200, {"body-mime": raw.decode("utf-8", "surrogateescape")})
            else:
                self._reply(404, {"message": "not found"})

        def do_POST(self) -> None:
            body = self._body()
            if self.path == "/_standin/faults":
                plan = json.loads(body or b"{}")
                with state.lock:
                    state.queue = [str(x) for x in plan.get("queue", [])]
                    state.rates = {str(k): float(v) for k, v in plan.get("rates", {}).items()}
                    state.random = random.Random(plan.get("seed", 0))  # noqa: S311
                    state.delay = max(0.0, float(plan.get("delay", 0.0)))
                self._reply(200, {"ok": True})
                return
            if self.path.startswith("/_standin/stored/"):
                with state.lock:
                    state.stored[self.path.rpartition("/")[2]] = body
                self._reply(200, {"ok": True})
                return
            if self.path != f"/v3/{state.domain}/messages.mime":
                self._reply(404, {"message": f"no such endpoint {self.path}"})
                return
            if state.delay:
                time.sleep(state.delay)
            if not self._authorized():
                self._reply(401, {"message": "Invalid private key"})
                return
            fault = state.forced()
            if fault == "hang":
                time.sleep(HANG_SECONDS)
                return
            if fault == "429":
                self._reply(429, {"message": "Too many requests"}, {"Retry-After": "1"})
                return
            if fault.isdigit():
                self._reply(int(fault), {"message": f"injected {fault}"})
                return
            try:
                form = parse_form(self.headers.get("Content-Type", ""), body)
            except BadRequest as exc:
                self._reply(400, {"message": exc.reason})
                return
            upload = form.files.get("message")
            to = [v.decode("utf-8", "replace") for v in form.all("to")]
            if upload is None or not to:
                self._reply(400, {"message": "'to' and 'message' are required"})
                return
            options = {
                name: [v.decode("utf-8", "replace") for v in form.all(name)]
                for name in form.fields
                if name.startswith(("o:", "h:", "v:"))
            }
            record = state.store(to, upload.data, options)
            self._reply(200, {"id": record["id"], "message": "Queued. Thank you."})

        def _authorized(self) -> bool:
            expected = "Basic " + base64.b64encode(f"api:{state.api_key}".encode()).decode("ascii")
            return hmac.compare_digest(self.headers.get("Authorization", "").encode(), expected.encode())

    return Handler


def serve(port: int, outbox: Path, domain: str, api_key: str, host: str = "127.0.0.1") -> None:
    server = ThreadingHTTPServer((host, port), make_handler(Standin(outbox, domain, api_key)))
    server.daemon_threads = True
    server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description="Local Mailgun API stand-in")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--outbox", type=Path, required=True)
    parser.add_argument("--domain", required=True)
    args = parser.parse_args()
    api_key = os.environ.get(STANDIN_KEY_VARIABLE, "")
    if not api_key:
        parser.error(f"set {STANDIN_KEY_VARIABLE} to the API key the stand-in accepts")
    serve(args.port, args.outbox, args.domain, api_key)


if __name__ == "__main__":
    main()
