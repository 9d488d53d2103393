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

``"hold:S"`` in the queue accepts and records the message, then holds the 200 for ``S``
seconds (a relay killed meanwhile never learns that Mailgun has it: issue 12's crash window).

After a send, events, webhooks and suppressions follow Mailgun (see
:mod:`tagrelay_tools.standin_events`, which cites the documentation of each shape):
``GET /v3/<domain>/events``, ``/v3/<domain>/{bounces,complaints,unsubscribes}[/<address>]``
(GET, DELETE), ``/v3/domains/<domain>/webhooks[/<id>]`` (GET, POST, PUT, DELETE), and signed
event webhooks posted to the registered URLs (key in ``TAGRELAY_STANDIN_WEBHOOK_KEY``).

Stored messages (a ``store(notify=...)`` route): ``POST /_standin/stored/<key>`` keeps a raw
message; ``GET /v3/domains/<domain>/messages/<key>`` (basic auth, ``Accept: message/rfc2822``)
answers ``{"body-mime": "..."}`` as Mailgun does, 404 for an unknown key.

:class:`StandinClient` is the one client of this control API (the CLI, the tests, the benchmarks).

Run: ``TAGRELAY_STANDIN_API_KEY=K [TAGRELAY_STANDIN_WEBHOOK_KEY=W] python -m tagrelay_tools.standin
--port P --outbox DIR --domain D``
(the key comes from the environment, never from the command line; :func:`argv` builds this line).
"""

from __future__ import annotations

import argparse
import base64
import email.parser
import email.policy
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
from urllib.parse import parse_qsl, unquote, urlsplit

import requests

from tagrelay.core.envelope import message_id_of
from tagrelay.core.errors import BadRequest
from tagrelay.core.headers import header_block
from tagrelay.core.inbound import parse_form
from tagrelay_tools.standin_events import SUPPRESSION_LISTS, WEBHOOK_IDS, Mailbox

HANG_SECONDS = 120.0
STANDIN_KEY_VARIABLE = "TAGRELAY_STANDIN_API_KEY"  # the key the stand-in accepts (not Mailgun's MAILGUN_API_KEY)
STANDIN_WEBHOOK_KEY_VARIABLE = "TAGRELAY_STANDIN_WEBHOOK_KEY"  # the HTTP webhook signing key its event posts carry
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

    def _control(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = requests.post(self.url + path, json=body, timeout=self.timeout)
        response.raise_for_status()
        return cast(dict[str, Any], response.json())

    def script_outcome(self, recipient: str, **plan: Any) -> None:
        """What the next sends to ``recipient`` do: ``event="failed", severity="permanent", reason="bounce"``,
        ``event="complained"``, ``times=1``...; no plan clears it (see tagrelay_tools.standin_events)."""
        self._control("/_standin/outcomes", {"recipient": recipient, **plan})

    def suppress(self, address: str, kind: str = "bounces") -> None:
        """Put ``address`` on a suppression list (``bounces``, ``complaints``, ``unsubscribes``)."""
        self._control(f"/_standin/suppressions/{kind}", {"address": address})

    def delay_webhooks(self, seconds: float) -> None:
        self._control("/_standin/webhooks/config", {"delay": seconds})

    def repost(self, event_id: str = "", event_data: dict[str, Any] | None = None) -> dict[str, Any]:
        """Post a recorded event (by id) or the given event data to its webhooks again, signed afresh."""
        body: dict[str, Any] = {"event-data": event_data} if event_data is not None else {"id": event_id}
        return cast(dict[str, Any], self._control("/_standin/webhooks/post", body)["event"])

    def webhook_posts(self) -> list[dict[str, Any]]:
        """Each webhook post made so far: url, event, id and the status it got (0: no answer)."""
        response = requests.get(self.url + "/_standin/webhooks/posts", timeout=self.timeout)
        response.raise_for_status()
        return list(response.json()["posts"])

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
    def __init__(self, outbox: Path, domain: str, api_key: str, webhook_key: str = "") -> None:
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
        self.url = ""  # set once the server is bound: the base of the Events API's paging URLs
        self.mailbox = Mailbox(domain, lambda: self.url, webhook_key)
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
        variables = {name[2:]: values[-1] for name, values in (options or {}).items() if name.startswith("v:")}
        self.mailbox.accepted(to, str(record["id"]), _summary_headers(mime), variables)
        return record


def _summary_headers(mime: bytes) -> dict[str, str]:
    """The ``from`` and ``subject`` an event's ``message.headers`` carries."""
    parsed = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(header_block(mime))
    return {name: str(parsed.get(name, "")) for name in ("from", "subject")}


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

        def _route(self) -> tuple[str, dict[str, str]]:
            parts = urlsplit(self.path)
            return parts.path, dict(parse_qsl(parts.query))

        def _form(self, body: bytes) -> dict[str, list[str]]:
            try:
                form = parse_form(self.headers.get("Content-Type", ""), body)
            except BadRequest:
                return {}
            return {name: [v.decode("utf-8", "replace") for v in form.all(name)] for name in form.fields}

        def do_GET(self) -> None:
            path, query = self._route()
            events = f"/v3/{state.domain}/events"
            hooks = f"/v3/domains/{state.domain}/webhooks"
            if path == "/_standin/messages":
                with state.lock:
                    self._reply(200, {"calls": state.calls, "accepted": list(state.accepted)})
            elif path == "/healthz":
                self._reply(200, {"ok": True})
            elif path == "/_standin/webhooks/posts":
                with state.mailbox.lock:
                    self._reply(200, {"posts": list(state.mailbox.posts)})
            elif not self._authorized():
                self._reply(401, {"message": "Invalid private key"})
            elif path == events:
                self._reply(*state.mailbox.query(query))
            elif path.startswith(events + "/"):
                self._reply(*state.mailbox.query_page(path[len(events) + 1 :]))
            elif path == hooks:
                self._reply(200, state.mailbox.webhook_list())
            elif (suppressed := self._suppression_path(path)) is not None:
                name, address = suppressed
                if not address:
                    self._reply(200, state.mailbox.suppression_list(name))
                elif (item := state.mailbox.suppression(name, address)) is None:
                    self._reply(404, {"message": f"Address not found in {name} table"})
                else:
                    self._reply(200, item)
            elif path.startswith(f"/v3/domains/{state.domain}/messages/"):
                with state.lock:
                    raw = state.stored.get(path.rpartition("/")[2])
                if raw is None:
                    self._reply(404, {"message": "Message not found"})
                else:
                    self._reply(200, {"body-mime": raw.decode("utf-8", "surrogateescape")})
            else:
                self._reply(404, {"message": "not found"})

        def _suppression_path(self, path: str) -> tuple[str, str] | None:
            """``/v3/<domain>/<list>[/<address>]`` as (list, address)."""
            prefix = f"/v3/{state.domain}/"
            if not path.startswith(prefix):
                return None
            name, _, address = path[len(prefix) :].partition("/")
            return (name, unquote(address)) if name in SUPPRESSION_LISTS else None

        def do_DELETE(self) -> None:
            path, _ = self._route()
            self._body()
            hook_prefix = f"/v3/domains/{state.domain}/webhooks/"
            if not self._authorized():
                self._reply(401, {"message": "Invalid private key"})
            elif path.startswith(hook_prefix):
                name = path[len(hook_prefix) :]
                if state.mailbox.delete_webhook(name):
                    self._reply(200, {"message": "Webhook has been deleted", "webhook": {"urls": []}})
                else:
                    self._reply(404, {"message": "Webhook not found"})
            elif (suppressed := self._suppression_path(path)) is not None and suppressed[1]:
                name, address = suppressed
                if state.mailbox.unsuppress(name, address):
                    self._reply(200, {"message": f"{name.capitalize()} address has been removed", "address": address})
                else:
                    self._reply(404, {"message": f"Address not found in {name} table"})
            else:
                self._reply(404, {"message": "not found"})

        def do_PUT(self) -> None:
            path, _ = self._route()
            body = self._body()
            hook_prefix = f"/v3/domains/{state.domain}/webhooks/"
            if not self._authorized():
                self._reply(401, {"message": "Invalid private key"})
                return
            name = path[len(hook_prefix) :] if path.startswith(hook_prefix) else ""
            urls = self._form(body).get("url", [])
            if name not in state.mailbox.webhooks or not urls:
                self._reply(404 if urls else 400, {"message": "Webhook not found" if urls else "url is required"})
                return
            state.mailbox.set_webhook(name, urls)
            self._reply(200, {"message": "Webhook has been updated", "webhook": {"urls": urls}})

        def do_POST(self) -> None:
            body = self._body()
            path, _ = self._route()
            if path.startswith("/_standin/"):
                self._control(path, body)
                return
            if path == f"/v3/domains/{state.domain}/webhooks":
                self._create_webhook(body)
                return
            if path != f"/v3/{state.domain}/messages.mime":
                self._reply(404, {"message": f"no such endpoint {path}"})
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
            if fault.startswith("hold:"):
                time.sleep(float(fault.partition(":")[2]))  # accepted and recorded; the answer comes late
            self._reply(200, {"id": record["id"], "message": "Queued. Thank you."})

        def _create_webhook(self, body: bytes) -> None:
            if not self._authorized():
                self._reply(401, {"message": "Invalid private key"})
                return
            form = self._form(body)
            name = (form.get("id") or [""])[-1]
            urls = form.get("url", [])
            if name not in WEBHOOK_IDS or not urls:
                self._reply(400, {"message": "id must be a webhook name and url is required"})
            elif name in state.mailbox.webhooks:
                self._reply(400, {"message": f"Webhook with the id {name} already exists"})
            else:
                state.mailbox.set_webhook(name, urls)
                self._reply(200, {"message": "Webhook has been created", "webhook": {"urls": urls}})

        def _control(self, path: str, body: bytes) -> None:
            mailbox = state.mailbox
            if path.startswith("/_standin/stored/"):  # a raw message, not JSON
                with state.lock:
                    state.stored[path.rpartition("/")[2]] = body
                self._reply(200, {"ok": True})
                return
            plan = json.loads(body or b"{}")
            if path == "/_standin/faults":
                with state.lock:
                    state.queue = [str(x) for x in plan.get("queue", [])]
                    state.rates = {str(k): float(v) for k, v in plan.get("rates", {}).items()}
                    state.random = random.Random(plan.get("seed", 0))  # noqa: S311
                    state.delay = max(0.0, float(plan.get("delay", 0.0)))
            elif path == "/_standin/outcomes":
                mailbox.script(plan)
            elif path.startswith("/_standin/suppressions/") and path.rpartition("/")[2] in SUPPRESSION_LISTS:
                mailbox.suppress(path.rpartition("/")[2], str(plan["address"]))
            elif path == "/_standin/webhooks/config":
                mailbox.delay = max(0.0, float(plan.get("delay", 0.0)))
            elif path == "/_standin/webhooks/post":
                event = mailbox.repost(plan)
                self._reply(200 if event else 404, {"event": event} if event else {"message": "no such event"})
                return
            else:
                self._reply(404, {"message": f"no such endpoint {path}"})
                return
            self._reply(200, {"ok": True})

        def _authorized(self) -> bool:
            expected = "Basic " + base64.b64encode(f"api:{state.api_key}".encode()).decode("ascii")
            return hmac.compare_digest(self.headers.get("Authorization", "").encode(), expected.encode())

    return Handler


def serve(port: int, outbox: Path, domain: str, api_key: str, host: str = "127.0.0.1", webhook_key: str = "") -> None:
    state = Standin(outbox, domain, api_key, webhook_key)
    server = ThreadingHTTPServer((host, port), make_handler(state))
    state.url = f"http://{host}:{server.server_address[1]}"
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
    serve(args.port, args.outbox, args.domain, api_key, webhook_key=os.environ.get(STANDIN_WEBHOOK_KEY_VARIABLE, ""))


if __name__ == "__main__":
    main()
