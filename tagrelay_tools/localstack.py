"""The whole pipeline on one machine: real emulators, real function processes.

Starts the Pub/Sub and Firestore emulators that ship with the Google Cloud CLI,
the Mailgun stand-in, ingest, relay and events under ``functions-framework`` (the
stand-in's event webhooks registered to events), the
topics, and a push subscription from the inbound topic to the relay (as Eventarc
does in production). Every child runs in its own process group and is stopped
by its process id. Used by ``tagrelay run`` and by the integration tests.

The push subscription has neither a retry policy nor a dead-letter policy: on
the emulator either one stops redelivery (see DESIGN.md), so locally the relay's
own max-age guard ends retries and dead-letters explicitly.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from tagrelay_tools import mailgun_posts
from tagrelay_tools.standin import STANDIN_KEY_VARIABLE, STANDIN_WEBHOOK_KEY_VARIABLE, StandinClient
from tagrelay_tools.standin import argv as standin_argv

HTTP_TIMEOUT = 5.0
EMULATOR_START_SECONDS = 90.0
PROCESS_START_SECONDS = 45.0
STOP_SECONDS = 10.0
REPO = Path(__file__).resolve().parent.parent
STATE_FILE = Path(".tagrelay") / "local.json"  # where 'tagrelay run' records the running stack (default workdir)


INSTALL_HINT = {
    "gcloud": (
        "the Google Cloud CLI is not on PATH. Install it with its emulators: "
        "'apt-get install google-cloud-cli google-cloud-cli-pubsub-emulator google-cloud-cli-firestore-emulator' "
        "(Google's apt repository, see https://cloud.google.com/sdk/docs/install), or with an SDK archive: "
        "'gcloud components install beta pubsub-emulator cloud-firestore-emulator'"
    ),
    "pubsub-emulator": (
        "the Pub/Sub emulator is not installed: 'apt-get install google-cloud-cli-pubsub-emulator' "
        "or 'gcloud components install beta pubsub-emulator'"
    ),
    "cloud-firestore-emulator": (
        "the Firestore emulator is not installed: 'apt-get install google-cloud-cli-firestore-emulator' "
        "or 'gcloud components install cloud-firestore-emulator'"
    ),
    "java": "the emulators need Java 11 or newer: 'apt-get install default-jre-headless'",
}


class StackError(RuntimeError):
    """The local stack could not start; the message says what to do."""


def missing_prerequisites() -> list[str]:
    """Install hints for every missing system piece (empty when all is there)."""
    problems: list[str] = []
    gcloud = shutil.which("gcloud")
    if gcloud is None:
        problems.append(INSTALL_HINT["gcloud"])
    else:
        platform = Path(os.path.realpath(gcloud)).parent.parent / "platform"
        for component in ("pubsub-emulator", "cloud-firestore-emulator"):
            if platform.is_dir() and not (platform / component).is_dir():
                problems.append(INSTALL_HINT[component])
    if shutil.which("java") is None:
        problems.append(INSTALL_HINT["java"])
    return problems


PORT_RANGE_VARIABLE = "TAGRELAY_PORT_RANGE"  # "LOW-HIGH": where free_port looks (tests/conftest.py sets one per worker)


def free_port() -> int:
    """A port free on 127.0.0.1 right now, for a child that binds it a moment later.

    With ``TAGRELAY_PORT_RANGE=LOW-HIGH`` it is drawn from that range, so two test workers starting
    stacks side by side never hand the same port to two children (a port the kernel chooses is free
    when chosen, not when the child binds it seconds later); otherwise the kernel chooses.
    """
    low, _, high = os.environ.get(PORT_RANGE_VARIABLE, "").partition("-")
    if low.isdigit() and high.isdigit() and 1024 <= int(low) < int(high) <= 65535:
        for _ in range(200):
            port = secrets.randbelow(int(high) - int(low) + 1) + int(low)
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log: Path
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def tail(self, lines: int = 15) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def kill(self) -> None:
        """SIGKILL this child's process group at once (a crash: nothing in it runs another line)."""
        if self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        self.process.wait(timeout=STOP_SECONDS)

    def stop(self) -> None:
        """Stop this child and its process group (the group id is the child's pid)."""
        if self.process.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, STOP_SECONDS), (signal.SIGKILL, STOP_SECONDS)):
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.process.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue


@dataclass
class Stack:
    workdir: Path
    routes: Path
    outbox: Path
    project: str = "tagrelay-local"
    domain: str = "example.org"
    topic: str = "tagrelay-inbound"
    deadletter_topic: str = "tagrelay-deadletter"
    firestore: bool = True
    claim_bucket: str = "tagrelay-claims-local"
    relay_env: dict[str, str] = field(default_factory=dict)
    ingest_env: dict[str, str] = field(default_factory=dict)
    events_env: dict[str, str] = field(default_factory=dict)
    signing_key: str = field(default_factory=lambda: "local-" + secrets.token_hex(16))
    api_key: str = field(default_factory=lambda: "key-" + secrets.token_hex(16))
    reply_key: str = field(default_factory=lambda: secrets.token_hex(32))  # reverse addresses (issue 13)
    route_key: str = field(default_factory=lambda: secrets.token_urlsafe(32))  # "" runs ingest without one
    children: dict[str, Child] = field(default_factory=dict)
    ingest_port: int = 0  # chosen at start (0: a free port when ingest starts)

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> Stack:
        problems = missing_prerequisites()
        if problems:
            raise StackError("\n".join(problems))
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "logs").mkdir(exist_ok=True)
        (self.workdir / "pubsub-data").mkdir(exist_ok=True)
        try:
            self._start_emulators()
            self.start_standin()
            self.ensure_topic(self.topic)
            self.ensure_topic(self.deadletter_topic)
            self.ensure_subscription(f"{self.deadletter_topic}-hold", self.deadletter_topic)
            self.ingest_port = free_port()  # known before the relay starts: its leak notices link to ingest
            relay = self.start_relay()
            self.ensure_subscription(f"{self.topic}-relay", self.topic, push_endpoint=relay.url + "/")
            self.start_ingest(extra={"PORT": str(self.ingest_port)})
            events = self.start_events()
            self.register_webhooks(events.url + "/")
            self.write_state()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for child in reversed(list(self.children.values())):
            child.stop()
        self.children.clear()

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- pieces ----------------------------------------------------------------------

    @property
    def pubsub_host(self) -> str:
        return f"127.0.0.1:{self.children['pubsub'].port}"

    @property
    def pubsub_url(self) -> str:
        return self.children["pubsub"].url

    @property
    def ingest_url(self) -> str:
        return self.children["ingest"].url

    def ingest_target(self, path: str = "/mime", base: str | None = None, route_key: str | None = None) -> str:
        """Where Mailgun's route would post: the ingest URL, ``path`` and the route key as ``?k=``.

        ``route_key`` overrides the stack's own ("" for none), to post as someone who does not know it.
        """
        key = self.route_key if route_key is None else route_key
        return mailgun_posts.target(base or self.ingest_url, path, key)

    @property
    def standin_url(self) -> str:
        return self.children["standin"].url

    @property
    def standin(self) -> StandinClient:
        """The control API of the stack's Mailgun stand-in."""
        return StandinClient(self.standin_url)

    def start_standin(self, name: str = "standin", outbox: Path | None = None) -> Child:
        """A Mailgun stand-in with the stack's domain and key (another one needs its own ``outbox``)."""
        argv = standin_argv(outbox or self.outbox, self.domain)
        keys = {STANDIN_KEY_VARIABLE: self.api_key, STANDIN_WEBHOOK_KEY_VARIABLE: self.signing_key}
        return self.spawn(name, argv, keys, ready_path="/healthz")

    def _start_emulators(self) -> None:
        self.spawn(
            "pubsub",
            [
                "gcloud",
                "beta",
                "emulators",
                "pubsub",
                "start",
                "--host-port=127.0.0.1:{port}",
                f"--project={self.project}",
                f"--data-dir={self.workdir / 'pubsub-data'}",
                "--quiet",
            ],
            {},
            ready_path="/",
            start_seconds=EMULATOR_START_SECONDS,
            wait=False,
        )
        if self.firestore:
            self.spawn(
                "firestore",
                ["gcloud", "emulators", "firestore", "start", "--host-port=127.0.0.1:{port}", "--quiet"],
                {},
                ready_path="/",
                start_seconds=EMULATOR_START_SECONDS,
                wait=False,
            )
        self.spawn(
            "storage",
            [
                sys.executable,
                "-m",
                "gcp_storage_emulator",
                "start",
                "--host",
                "127.0.0.1",
                "--port",
                "{port}",
                "--in-memory",
            ],
            {},
            ready_path="/",
            wait=False,
        )
        for name in ("pubsub", "firestore", "storage"):
            if name in self.children:
                self.wait_ready(self.children[name], "/", EMULATOR_START_SECONDS)
        response = requests.post(
            f"{self.children['storage'].url}/storage/v1/b",
            params={"project": self.project},
            json={"name": self.claim_bucket},
            timeout=HTTP_TIMEOUT,
        )
        if response.status_code not in (200, 409):
            raise StackError(f"storage emulator refused the bucket: {response.status_code} {response.text[:200]}")

    def function_env(self, extra: dict[str, str]) -> dict[str, str]:
        env = {
            "GOOGLE_CLOUD_PROJECT": self.project,
            "PUBSUB_EMULATOR_HOST": self.pubsub_host,
            "TAGRELAY_ROUTES": str(self.routes),
            "TAGRELAY_TOPIC": self.topic,
            "TAGRELAY_DEADLETTER_TOPIC": self.deadletter_topic,
            "STORAGE_EMULATOR_HOST": self.children["storage"].url,
        }
        if "firestore" in self.children:
            env["FIRESTORE_EMULATOR_HOST"] = f"127.0.0.1:{self.children['firestore'].port}"
        return {**env, **extra}

    def ingest_environment(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """Everything ingest is configured with on this stack (as deploy.sh configures it in production)."""
        return self.function_env(
            {
                "MAILGUN_WEBHOOK_SIGNING_KEY": self.signing_key,
                "TAGRELAY_REPLY_KEY": self.reply_key,
                "TAGRELAY_CLAIM_BUCKET": self.claim_bucket,
                "TAGRELAY_ROUTE_KEY": self.route_key,
                "TAGRELAY_ALIAS_CACHE_SECONDS": "1",  # tagrelay block/lock show within a second locally
                **self.ingest_env,
                **(extra or {}),
            }
        )

    def relay_environment(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """Everything the relay is configured with on this stack (as deploy.sh configures it in production)."""
        return self.function_env(
            {
                "MAILGUN_DOMAIN": self.domain,
                "MAILGUN_API_BASE": self.standin_url,
                "MAILGUN_API_KEY": self.api_key,
                "TAGRELAY_REPLY_KEY": self.reply_key,
                "TAGRELAY_CLAIM_BUCKET": self.claim_bucket,
                "MAILGUN_TIMEOUT": "10",
                **({"TAGRELAY_PUBLIC_URL": f"http://127.0.0.1:{self.ingest_port}"} if self.ingest_port else {}),
                **self.relay_env,
                **(extra or {}),
            }
        )

    def events_environment(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """Everything the events function is configured with on this stack (issue 12): ingest's signing key,
        the Mailgun stand-in for owner notices, the dead-letter topic and the claim bucket of kept copies."""
        return self.function_env(
            {
                "MAILGUN_WEBHOOK_SIGNING_KEY": self.signing_key,
                "MAILGUN_DOMAIN": self.domain,
                "MAILGUN_API_BASE": self.standin_url,
                "MAILGUN_API_KEY": self.api_key,
                "TAGRELAY_CLAIM_BUCKET": self.claim_bucket,
                "MAILGUN_TIMEOUT": "10",
                **self.events_env,
                **(extra or {}),
            }
        )

    def start_events(self, name: str = "events", extra: dict[str, str] | None = None) -> Child:
        env = self.events_environment(extra)
        return self.spawn(name, self._framework("events", "http"), env, ready_path=None)

    def register_webhooks(self, url: str) -> None:
        """Point the stand-in's event webhooks at ``url``, as ``tagrelay mailgun ensure-webhooks`` does
        with Mailgun's (the same client: created, replaced when they point elsewhere)."""
        from tagrelay_tools.mailgun_api import MailgunApi, MailgunApiError
        from tagrelay_tools.mailgun_setup import WebhooksClient

        with requests.Session() as session:
            api = MailgunApi(session, self.standin_url, self.api_key, timeout=HTTP_TIMEOUT)
            try:
                WebhooksClient(api, self.domain).ensure(url)
            except MailgunApiError as exc:
                raise StackError(f"event webhooks not registered: {exc.reason}") from None

    def start_ingest(self, name: str = "ingest", extra: dict[str, str] | None = None) -> Child:
        return self.spawn(name, self._framework("ingest", "http"), self.ingest_environment(extra), ready_path=None)

    def start_relay(self, name: str = "relay", extra: dict[str, str] | None = None) -> Child:
        env = self.relay_environment(extra)
        return self.spawn(name, self._framework("relay", "cloudevent"), env, ready_path=None)

    def restart(self, name: str, hard: bool = False) -> Child:
        """Stop a function process by its pid (SIGTERM; ``hard``: SIGKILL, a crash) and start it again
        on the same port."""
        old = self.children.pop(name)
        if hard:
            old.kill()
        else:
            old.stop()
        starters = {"relay": self.start_relay, "events": self.start_events}
        return starters.get(name, self.start_ingest)(name=name, extra={"PORT": str(old.port)})

    def _framework(self, function: str, signature: str) -> list[str]:
        return framework_argv(REPO / "functions" / function / "main.py", function, signature)

    def spawn(
        self,
        name: str,
        argv: list[str],
        env: dict[str, str],
        ready_path: str | None,
        start_seconds: float = PROCESS_START_SECONDS,
        wait: bool = True,
    ) -> Child:
        port = int(env.pop("PORT", 0)) or free_port()
        log = self.workdir / "logs" / f"{name}.log"
        handle = log.open("ab")
        process = subprocess.Popen(
            [part.replace("{port}", str(port)) for part in argv],
            env={**os.environ, **env},
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=REPO,
        )
        handle.close()
        child = Child(name, process, log, port)
        self.children[name] = child
        if wait:
            self.wait_ready(child, ready_path, start_seconds)
        return child

    def wait_ready(self, child: Child, path: str | None, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if child.process.poll() is not None:
                raise StackError(f"{child.name} exited with code {child.process.returncode}:\n{child.tail()}")
            if _answers(child.port, path):
                return
            time.sleep(0.2)
        raise StackError(f"{child.name} did not start within {seconds:g}s:\n{child.tail()}")

    def ensure_topic(self, topic: str) -> None:
        self._put(f"/v1/projects/{self.project}/topics/{topic}", {})

    def ensure_subscription(self, name: str, topic: str, push_endpoint: str | None = None) -> None:
        body: dict[str, object] = {"topic": f"projects/{self.project}/topics/{topic}", "ackDeadlineSeconds": 60}
        if push_endpoint:
            body["pushConfig"] = {"pushEndpoint": push_endpoint}
        self._put(f"/v1/projects/{self.project}/subscriptions/{name}", body)

    def pull(self, subscription: str, max_messages: int = 100) -> list[dict[str, Any]]:
        """Pull and acknowledge what a subscription holds: ``{"data": bytes, "attributes": dict}`` each."""
        base = f"{self.pubsub_url}/v1/projects/{self.project}/subscriptions/{subscription}"
        response = requests.post(
            f"{base}:pull", json={"maxMessages": max_messages, "returnImmediately": True}, timeout=HTTP_TIMEOUT
        )
        response.raise_for_status()
        received = response.json().get("receivedMessages", [])
        if received:
            ack = {"ackIds": [m["ackId"] for m in received]}
            requests.post(f"{base}:acknowledge", json=ack, timeout=HTTP_TIMEOUT).raise_for_status()
        return [
            {"data": base64.b64decode(m["message"].get("data", "")), "attributes": m["message"].get("attributes", {})}
            for m in received
        ]

    def _put(self, path: str, body: dict[str, object]) -> None:
        response = requests.put(self.pubsub_url + path, json=body, timeout=HTTP_TIMEOUT)
        if response.status_code not in (200, 409):
            raise StackError(f"emulator refused PUT {path}: {response.status_code} {response.text[:200]}")

    def delivery_record(self, key: str) -> dict[str, Any] | None:
        """A delivery record as the Firestore emulator holds it (its REST API; values decoded), or None."""
        host = f"127.0.0.1:{self.children['firestore'].port}"
        url = f"http://{host}/v1/projects/{self.project}/databases/(default)/documents/tagrelay_deliveries/{key}"
        response = requests.get(url, headers={"Authorization": "Bearer owner"}, timeout=HTTP_TIMEOUT)
        if response.status_code == 404:
            return None
        response.raise_for_status()
        return {name: firestore_value(value) for name, value in response.json().get("fields", {}).items()}

    def write_state(self) -> Path:
        """Record URLs and local keys for ``tagrelay send`` (mode 0600)."""
        path = self.workdir / STATE_FILE.name
        state = {
            "ingest_url": self.ingest_url,
            "events_url": self.children["events"].url if "events" in self.children else "",
            "signing_key": self.signing_key,
            "reply_key": self.reply_key,
            "route_key": self.route_key,
            "outbox": str(self.outbox),
            "standin_url": self.standin_url,
            "api_key": self.api_key,  # the stand-in's, for tagrelay suppressions/status --local
            "domain": self.domain,
            "routes": str(self.routes),
            "pubsub_host": self.pubsub_host,
            "firestore_host": f"127.0.0.1:{self.children['firestore'].port}" if "firestore" in self.children else "",
            "project": self.project,
            "pids": {name: child.process.pid for name, child in self.children.items()},
        }
        path.write_text(json.dumps(state, indent=2))
        path.chmod(0o600)
        return path


def firestore_value(value: dict[str, Any]) -> Any:
    """One value of Firestore's REST representation as Python (maps and arrays recursively)."""
    if "mapValue" in value:
        return {k: firestore_value(v) for k, v in value["mapValue"].get("fields", {}).items()}
    if "arrayValue" in value:
        return [firestore_value(v) for v in value["arrayValue"].get("values", [])]
    if "integerValue" in value:
        return int(value["integerValue"])
    if "bytesValue" in value:
        return base64.b64decode(value["bytesValue"])
    if "nullValue" in value:
        return None
    for kind in ("stringValue", "doubleValue", "booleanValue", "timestampValue", "referenceValue"):
        if kind in value:
            return value[kind]
    return value


def running_state(path: Path = STATE_FILE) -> dict[str, Any] | None:
    """What 'tagrelay run' recorded about the stack it runs (URLs, local keys), or None when there is none."""
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def framework_argv(source: Path, target: str, signature: str = "http") -> list[str]:
    """A function under functions-framework on 127.0.0.1 (``{port}`` left for ``Stack.spawn``)."""
    return [
        sys.executable,
        "-m",
        "functions_framework",
        "--target",
        target,
        "--source",
        str(source),
        "--signature-type",
        signature,
        "--host",
        "127.0.0.1",
        "--port",
        "{port}",
    ]


def _answers(port: int, path: str | None) -> bool:
    try:
        if path is None:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0):
                return True
        response = requests.get(f"http://127.0.0.1:{port}{path}", timeout=2.0)
        return response.status_code < 500
    except (OSError, requests.RequestException):
        return False
