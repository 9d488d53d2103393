"""deploy.sh against a fake gcloud (tests/deploy/fake_gcloud.py) and a local Mailgun Routes stand-in.

The fake records every call (argv, and only the length of stdin) and keeps a small
simulated project in a JSON file, so a second run sees what the first one made.

Decision tested here: functions are redeployed only when their staged source or
deploy flags changed (a fingerprint label on each function), or with --redeploy;
every other resource is created once and then only described.
"""

from __future__ import annotations

import copy
import json
import os
import pty
import re
import shutil
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.deploy.routes_standin import RoutesStandin  # noqa: E402

DEPLOY = ROOT / "deploy.sh"
FAKE = Path(__file__).resolve().parent / "fake_gcloud.py"
PROJECT = "tagrelay-test"
REGION = "europe-west1"
DOMAIN = "example.org"
API_KEY = "sekrit-api-KEY-123"
SIGNING_KEY = "sekrit-signing-KEY-456"
ROTATED_KEY = "sekrit-rotated-KEY-789"
TYPED_KEY = "typed-sekrit-KEY-999"
SECRET_VALUES = (API_KEY, SIGNING_KEY, ROTATED_KEY, TYPED_KEY)
INGEST_SA = f"serviceAccount:tagrelay-ingest@{PROJECT}.iam.gserviceaccount.com"
RELAY_SA = f"serviceAccount:tagrelay-relay@{PROJECT}.iam.gserviceaccount.com"
EVENTS_SA = f"serviceAccount:tagrelay-events@{PROJECT}.iam.gserviceaccount.com"
ALERT_EMAIL = "ops@example.com"
EVENTS_URL = f"https://{REGION}-{PROJECT}.cloudfunctions.net/tagrelay-events"
EVENT_WEBHOOKS = ("delivered", "permanent_fail", "temporary_fail", "complained")
METRIC = "tagrelay_undeliverable"
POLICY = "tagrelay: mail dead-lettered or a forward target suppressed"
# Until the events function (issue 12, engineer "events") is on this branch, a sandbox without
# functions/events/main.py gets this one; with it, the real one is copied like the others.
EVENTS_PLACEHOLDER = (
    '"""Placeholder entry point for the deploy tests."""\n\n\ndef events(request):\n    return "", 204\n'
)
PUBSUB_AGENT = "serviceAccount:service-123456789012@gcp-sa-pubsub.iam.gserviceaccount.com"
API_KEY_VERSION = f"projects/{PROJECT}/secrets/tagrelay-mailgun-api-key/versions/latest"
SIGNING_KEY_VERSION = f"projects/{PROJECT}/secrets/tagrelay-webhook-signing-key/versions/latest"
REPLY_KEY_VERSION = f"projects/{PROJECT}/secrets/tagrelay-reply-key/versions/latest"
ROUTE_KEY_SECRET = "tagrelay-route-key"
INGEST_URL = f"https://{REGION}-{PROJECT}.cloudfunctions.net/tagrelay-ingest/mime"
MUTATING = {
    "create",
    "deploy",
    "enable",
    "update",
    "add",
    "add-iam-policy-binding",
    "remove-iam-policy-binding",
    "delete",
    "rm",
}
APIS = {
    f"{api}.googleapis.com"
    for api in (
        "cloudfunctions",
        "run",
        "cloudbuild",
        "eventarc",
        "pubsub",
        "secretmanager",
        "firestore",
        "artifactregistry",
        "storage",
        "logging",
        "monitoring",
    )
}


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str
    calls: list[list[str]]
    entries: list[dict[str, Any]] = field(default_factory=list)

    def find(self, *words: str) -> list[list[str]]:
        """Calls whose argv contains every word (a word is a whole argument)."""
        return [argv for argv in self.calls if all(w in argv for w in words)]

    def one(self, *words: str) -> list[str]:
        found = self.find(*words)
        assert len(found) == 1, f"expected one call with {words}, got {found}"
        return found[0]

    def changes(self) -> list[list[str]]:
        return [argv for argv in self.calls if MUTATING & set(argv[:4])]


# What a sandbox copies: what deploy.sh reads, plus tooling, a test and a benchmark that it must not ship.
REPO_FILES = (
    "deploy.sh",
    "requirements.txt",
    "routes.example.toml",
    "tagrelay",
    "functions",
    "tagrelay_tools",
    "tests/unit/test_config.py",
    "bench/run.py",
)


class Sandbox:
    """A copy of the repository, a fake gcloud first on PATH, and the Routes stand-in as Mailgun.

    Working on a copy keeps the function fingerprints stable while someone edits the real tree.
    """

    def __init__(self, tmp: Path, standin: RoutesStandin, source: Path = ROOT) -> None:
        self.tmp = tmp
        self.standin = standin
        self.repo = tmp / "repo"
        self.repo.mkdir()
        for name in REPO_FILES:
            if (source / name).is_dir():
                shutil.copytree(source / name, self.repo / name, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                (self.repo / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source / name, self.repo / name)
        events = self.repo / "functions" / "events" / "main.py"
        if not events.exists():
            events.parent.mkdir(parents=True, exist_ok=True)
            events.write_text(EVENTS_PLACEHOLDER)
        self.bin = tmp / "bin"
        self.bin.mkdir()
        wrapper = self.bin / "gcloud"
        wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" -I -S "{FAKE}" "$@"\n')
        wrapper.chmod(0o755)
        self.log = tmp / "gcloud-calls.jsonl"
        self.state_file = tmp / "gcloud-state.json"
        self.build = tmp / "build"
        self.routes = tmp / "routes.toml"
        shutil.copy(self.repo / "routes.example.toml", self.routes)
        keep = ("HOME", "LANG", "LC_ALL", "TMPDIR")
        self.env = {name: os.environ[name] for name in keep if name in os.environ}
        self.env.update(
            PATH=f"{self.bin}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
            FAKE_GCLOUD_LOG=str(self.log),
            FAKE_GCLOUD_STATE=str(self.state_file),
            TAGRELAY_BUILD_DIR=str(self.build),
            PYTHON=sys.executable,
            MAILGUN_API_KEY=API_KEY,
            MAILGUN_WEBHOOK_SIGNING_KEY=SIGNING_KEY,
            MAILGUN_API_BASE=standin.url,
            TAGRELAY_ALERT_EMAIL=ALERT_EMAIL,
        )

    def clone(self, tmp: Path) -> Sandbox:
        """A sandbox holding this one's deployment: the same sources, cloud state and Mailgun routes."""
        other = Sandbox(tmp, self.standin, source=self.repo)
        shutil.copy(self.routes, other.routes)
        shutil.copy(self.state_file, other.state_file)
        return other

    def entries(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def state(self) -> dict[str, Any]:
        return dict(json.loads(self.state_file.read_text()))

    def route_keys(self) -> list[str]:
        """Every route key version deploy.sh generated (the simulated Secret Manager holds them)."""
        if not self.state_file.exists():
            return []
        return list(self.state().get("secret_payloads", {}).get(ROUTE_KEY_SECRET, []))

    def edit_state(self, change: Any) -> None:
        state = self.state()
        change(state)
        self.state_file.write_text(json.dumps(state))

    def resources(self, kind: str) -> dict[str, Any]:
        return dict(self.state().get("resources", {}).get(kind, {}))

    def run(
        self, *args: str, env: dict[str, str | None] | None = None, settings: bool = True, cwd: Path | None = None
    ) -> Run:
        before = len(self.entries())
        environment = dict(self.env)
        for name, value in (env or {}).items():
            if value is None:
                environment.pop(name, None)
            else:
                environment[name] = value
        argv = ["bash", str(self.repo / "deploy.sh")]
        if settings:
            argv += ["--project", PROJECT, "--region", REGION, "--domain", DOMAIN, "--routes", str(self.routes)]
        done = subprocess.run(
            [*argv, *args],
            env=environment,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        entries = self.entries()[before:]
        # Every run of every test: no secret value in any argument gcloud saw, nor in the output.
        recorded = json.dumps(entries)
        for value in (*SECRET_VALUES, *self.route_keys()):
            assert value not in recorded, f"a secret value reached gcloud's argv: {args}"
            assert value not in done.stdout + done.stderr, f"a secret value was printed: {args}"
        return Run(done.returncode, done.stdout, done.stderr, [e["argv"] for e in entries], entries)


@dataclass
class FirstDeploy:
    box: Sandbox
    run: Run
    mailgun_routes: list[dict[str, Any]]
    mailgun_webhooks: dict[str, dict[str, list[str]]] = field(default_factory=dict)


@pytest.fixture(scope="module")
def standin() -> Iterator[RoutesStandin]:
    """One Routes stand-in for the module, so every sandbox deploys the same MAILGUN_API_BASE."""
    server = RoutesStandin(API_KEY)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def first(tmp_path_factory: pytest.TempPathFactory, standin: RoutesStandin) -> FirstDeploy:
    """One deploy into an empty project, shared by the tests that only look at what it did."""
    standin.routes.clear()
    standin.webhooks.clear()
    box = Sandbox(tmp_path_factory.mktemp("first"), standin)
    run = box.run()
    assert run.code == 0, run.stdout + run.stderr
    return FirstDeploy(box, run, copy.deepcopy(standin.routes), copy.deepcopy(standin.webhooks))


@pytest.fixture
def box(first: FirstDeploy, tmp_path: Path) -> Sandbox:
    """A project where the first deploy already happened (Mailgun included)."""
    first.box.standin.routes[:] = copy.deepcopy(first.mailgun_routes)
    first.box.standin.webhooks.clear()
    first.box.standin.webhooks.update(copy.deepcopy(first.mailgun_webhooks))
    first.box.standin.requests.clear()
    return first.box.clone(tmp_path)


@pytest.fixture
def empty(first: FirstDeploy, tmp_path: Path) -> Sandbox:
    """An empty project and an empty Mailgun account."""
    first.box.standin.routes.clear()
    first.box.standin.webhooks.clear()
    first.box.standin.requests.clear()
    return Sandbox(tmp_path, first.box.standin, source=first.box.repo)


def flag(argv: list[str], name: str) -> str:
    values = [arg.split("=", 1)[1] for arg in argv if arg.startswith(f"--{name}=")]
    assert len(values) == 1, f"--{name} appears {len(values)} times in {argv}"
    return values[0]


def env_vars(argv: list[str]) -> dict[str, str]:
    return dict(pair.split("=", 1) for pair in flag(argv, "set-env-vars").split(","))


# -- the first run (into an empty project) ----------------------------------------


def test_first_run_enables_apis_and_creates_messaging_and_secrets(first: FirstDeploy) -> None:
    box, run = first.box, first.run
    assert set(box.state()["services"]) == APIS
    assert run.one("topics", "create", "tagrelay-inbound")
    assert run.one("topics", "create", "tagrelay-deadletter")
    hold = run.one("subscriptions", "create", "tagrelay-deadletter-hold")
    assert flag(hold, "topic") == "tagrelay-deadletter"
    assert flag(hold, "expiration-period") == "never"  # nobody pulls it; it must not expire after 31 days
    for name, value in (("tagrelay-mailgun-api-key", API_KEY), ("tagrelay-webhook-signing-key", SIGNING_KEY)):
        assert run.one("secrets", "create", name)
        [add] = [e for e in run.entries if e["argv"][:4] == ["secrets", "versions", "add", name]]
        assert "--data-file=-" in add["argv"]
        assert add["stdin_len"] == len(value)
        assert box.state()["secret_payloads"][name] == [value]


def test_first_run_creates_service_accounts_firestore_ttl_and_bucket(first: FirstDeploy) -> None:
    box, run = first.box, first.run
    assert set(box.resources("iam service-accounts")) == {
        f"tagrelay-ingest@{PROJECT}.iam.gserviceaccount.com",
        f"tagrelay-relay@{PROJECT}.iam.gserviceaccount.com",
        f"tagrelay-events@{PROJECT}.iam.gserviceaccount.com",
    }
    database = run.one("firestore", "databases", "create")
    assert flag(database, "type") == "firestore-native"
    assert flag(database, "location") == REGION
    for group in (
        "tagrelay_tokens",
        "tagrelay_deliveries",
        "tagrelay_refusals",
        "tagrelay_event_tokens",
        "tagrelay_alias_leaks",
    ):
        ttl = run.one("ttls", "update", "expires_at", f"--collection-group={group}")
        assert "--enable-ttl" in ttl
    bucket = run.one("buckets", "create", f"gs://{PROJECT}-tagrelay-claims")
    assert "--uniform-bucket-level-access" in bucket
    assert "--public-access-prevention" in bucket
    stored = box.resources("storage buckets")[f"{PROJECT}-tagrelay-claims"]
    assert stored["lifecycle_config"] == {"rule": [{"action": {"type": "Delete"}, "condition": {"age": 7}}]}


def test_ingest_is_a_public_http_function_with_its_own_account(first: FirstDeploy) -> None:
    ingest = first.run.one("functions", "deploy", "tagrelay-ingest")
    for expected in ("--gen2", "--trigger-http", "--allow-unauthenticated", "--runtime=python312"):
        assert expected in ingest
    assert flag(ingest, "entry-point") == "ingest"
    assert flag(ingest, "memory") == "512Mi"
    assert flag(ingest, "concurrency") == "8"
    assert flag(ingest, "cpu") == "1"  # concurrency above 1 needs a whole CPU
    assert flag(ingest, "service-account") == INGEST_SA.split(":", 1)[1]
    assert env_vars(ingest) == {
        "GOOGLE_CLOUD_PROJECT": PROJECT,
        "TAGRELAY_TOPIC": "tagrelay-inbound",
        "TAGRELAY_ROUTES": "routes.toml",
        "MAILGUN_WEBHOOK_SIGNING_KEY_SECRET": SIGNING_KEY_VERSION,
        "TAGRELAY_CLAIM_BUCKET": f"{PROJECT}-tagrelay-claims",
        "TAGRELAY_REPLY_KEY_SECRET": REPLY_KEY_VERSION,
        # pinned: an instance keeps its route key until ingest is redeployed with the next one
        "TAGRELAY_ROUTE_KEY_SECRET": f"projects/{PROJECT}/secrets/{ROUTE_KEY_SECRET}/versions/1",
    }


def test_relay_is_a_private_retrying_topic_function(first: FirstDeploy) -> None:
    relay = first.run.one("functions", "deploy", "tagrelay-relay")
    assert "--gen2" in relay
    assert "--retry" in relay
    assert flag(relay, "trigger-topic") == "tagrelay-inbound"
    assert "--allow-unauthenticated" not in relay
    assert "--no-allow-unauthenticated" in relay
    assert "--trigger-http" not in relay
    assert flag(relay, "entry-point") == "relay"
    assert flag(relay, "service-account") == RELAY_SA.split(":", 1)[1]
    assert flag(relay, "trigger-service-account") == RELAY_SA.split(":", 1)[1]
    variables = env_vars(relay)
    assert variables["MAILGUN_DOMAIN"] == DOMAIN
    assert variables["MAILGUN_API_BASE"] == first.box.standin.url
    assert variables["MAILGUN_API_KEY_SECRET"] == API_KEY_VERSION
    assert variables["TAGRELAY_DEADLETTER_TOPIC"] == "tagrelay-deadletter"
    assert variables["TAGRELAY_CLAIM_BUCKET"] == f"{PROJECT}-tagrelay-claims"  # large refusal records
    assert variables["TAGRELAY_ROUTES"] == "routes.toml"
    assert variables["TAGRELAY_REPLY_KEY_SECRET"] == REPLY_KEY_VERSION
    # leak notices link to ingest's /block (issue 14): the URL of the ingest deployed just before
    assert variables["TAGRELAY_PUBLIC_URL"] == f"https://{REGION}-{PROJECT}.cloudfunctions.net/tagrelay-ingest"


def runtime_sources() -> set[str]:
    """The runtime package as git tracks it in this repository (computed without deploy.sh)."""
    listed = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-z", "--", "tagrelay"], capture_output=True, check=True
    ).stdout.decode()
    return {name for name in listed.split("\0") if name}


def staged_files(box: Sandbox, entry: str) -> set[str]:
    return {str(p.relative_to(box.build / entry)) for p in (box.build / entry).rglob("*") if not p.is_dir()}


def test_each_function_ships_exactly_its_entry_point_the_runtime_package_and_routes(first: FirstDeploy) -> None:
    box = first.box
    expected = {"main.py", "requirements.txt", "routes.toml"} | runtime_sources()
    assert "tagrelay/core/routes.py" in expected and not any("tagrelay_tools" in f for f in expected)
    for name, entry_file in (("tagrelay-ingest", "ingest"), ("tagrelay-relay", "relay"), ("tagrelay-events", "events")):
        assert set(box.resources("functions")[name]["source_files"]) == expected  # what gcloud uploaded
        assert staged_files(box, entry_file) == expected
        staged = box.build / entry_file
        assert (staged / "main.py").read_bytes() == (box.repo / "functions" / entry_file / "main.py").read_bytes()
        assert (staged / "routes.toml").read_bytes() == box.routes.read_bytes()
        assert (staged / "tagrelay/core/rewrite.py").read_bytes() == (ROOT / "tagrelay/core/rewrite.py").read_bytes()
        assert not [p for p in staged.rglob("*") if p.is_symlink()]


def plant_strays(repo: Path) -> None:
    """What a working tree holds beside the runtime sources: caches, notes, and edited tooling, tests, bench."""
    for cache in ("tagrelay/__pycache__/app.cpython-312.pyc", "tagrelay/core/__pycache__/rewrite.cpython-312.pyc"):
        (repo / cache).parent.mkdir(parents=True, exist_ok=True)
        (repo / cache).write_bytes(b"\x00cached")
    (repo / "tagrelay/core/notes.txt").write_text("scratch notes, not a module\n")
    for edited in ("tagrelay_tools/cli.py", "tagrelay_tools/standin.py", "tests/unit/test_config.py", "bench/run.py"):
        with (repo / edited).open("a") as source:
            source.write("\n# an edit that must not redeploy production\n")


def test_tooling_tests_and_caches_are_neither_staged_nor_fingerprinted(box: Sandbox) -> None:
    plant_strays(box.repo)
    again = box.run()
    assert again.code == 0, again.stderr
    assert again.changes() == []  # same fingerprint: nothing redeployed
    assert "tagrelay-ingest: active, source and settings unchanged" in again.stdout
    forced = box.run("--redeploy")  # and when it is deployed, none of it is shipped
    assert forced.code == 0, forced.stderr
    expected = {"main.py", "requirements.txt", "routes.toml"} | runtime_sources()
    for name, entry_file in (("tagrelay-ingest", "ingest"), ("tagrelay-relay", "relay"), ("tagrelay-events", "events")):
        assert set(box.resources("functions")[name]["source_files"]) == expected
        assert staged_files(box, entry_file) == expected


def test_editing_the_runtime_package_redeploys_every_function(box: Sandbox) -> None:
    with (box.repo / "tagrelay/core/rewrite.py").open("a") as source:
        source.write("\n# an edit to the runtime package\n")
    again = box.run()
    assert again.code == 0, again.stderr
    assert [argv[:3] for argv in again.changes()] == [
        ["functions", "deploy", "tagrelay-ingest"],
        ["functions", "deploy", "tagrelay-relay"],
        ["functions", "deploy", "tagrelay-events"],
    ]
    assert staged_files(box, "ingest") >= {"tagrelay/core/rewrite.py"}
    assert (box.build / "ingest/tagrelay/core/rewrite.py").read_text().endswith("# an edit to the runtime package\n")


def test_editing_one_entry_point_redeploys_only_that_function(box: Sandbox) -> None:
    with (box.repo / "functions/relay/main.py").open("a") as source:
        source.write("\n# an edit to the relay's entry point\n")
    again = box.run()
    assert again.code == 0, again.stderr
    assert [argv[:3] for argv in again.changes()] == [["functions", "deploy", "tagrelay-relay"]]


def test_trigger_subscription_gets_dead_letter_and_backoff(first: FirstDeploy) -> None:
    box = first.box
    trigger = box.resources("functions")["tagrelay-relay"]["eventTrigger"]["trigger"]
    transport = box.resources("eventarc triggers")[trigger.rsplit("/", 1)[1]]["transport"]
    subscription = transport["pubsub"]["subscription"].rsplit("/", 1)[1]
    update = first.run.one("subscriptions", "update", subscription)
    assert flag(update, "dead-letter-topic") == "tagrelay-deadletter"
    assert flag(update, "max-delivery-attempts") == "20"
    assert flag(update, "min-retry-delay") == "10s"
    assert flag(update, "max-retry-delay") == "600s"
    stored = box.resources("pubsub subscriptions")[subscription]
    assert stored["deadLetterPolicy"]["maxDeliveryAttempts"] == 20
    assert stored["retryPolicy"] == {"minimumBackoff": "10s", "maximumBackoff": "600s"}


def test_each_identity_gets_exactly_the_roles_it_needs(first: FirstDeploy) -> None:
    box = first.box
    trigger_subscription = next(name for name in box.resources("pubsub subscriptions") if name.startswith("eventarc-"))
    policies = {key: value for key, value in box.state()["policies"].items() if any(value.values())}
    assert policies == {
        "pubsub topics/tagrelay-inbound": {"roles/pubsub.publisher": [INGEST_SA]},
        "secrets/tagrelay-webhook-signing-key": {"roles/secretmanager.secretAccessor": [INGEST_SA, EVENTS_SA]},
        f"secrets/{ROUTE_KEY_SECRET}": {"roles/secretmanager.secretAccessor": [INGEST_SA]},
        "secrets/tagrelay-mailgun-api-key": {"roles/secretmanager.secretAccessor": [RELAY_SA, EVENTS_SA]},
        "secrets/tagrelay-reply-key": {"roles/secretmanager.secretAccessor": [INGEST_SA, RELAY_SA]},
        f"projects/{PROJECT}": {"roles/datastore.user": [INGEST_SA, RELAY_SA, EVENTS_SA]},
        "pubsub topics/tagrelay-deadletter": {"roles/pubsub.publisher": [RELAY_SA, PUBSUB_AGENT, EVENTS_SA]},
        f"storage buckets/{PROJECT}-tagrelay-claims": {
            "roles/storage.objectUser": [INGEST_SA],  # writes claims (and rewrites them on a retry)
            "roles/storage.objectAdmin": [RELAY_SA, EVENTS_SA],  # read and delete them (events: kept originals)
        },
        "run services/tagrelay-relay": {"roles/run.invoker": [RELAY_SA]},
        f"pubsub subscriptions/{trigger_subscription}": {"roles/pubsub.subscriber": [PUBSUB_AGENT]},
    }


def test_mailgun_route_forwards_to_the_ingest_url_with_the_route_key(first: FirstDeploy) -> None:
    [key] = first.box.route_keys()
    [route] = first.mailgun_routes
    assert route["description"] == f"tagrelay: {DOMAIN}"
    assert route["expression"] == r'match_recipient(".*@example\.org")'
    assert route["actions"] == [f'forward("{INGEST_URL}?k={key}")', "stop()"]
    assert "mailgun route for example.org: created" in first.run.stdout


def test_the_route_key_is_generated_once_random_and_travels_on_stdin(first: FirstDeploy) -> None:
    run = first.run
    assert run.one("secrets", "create", ROUTE_KEY_SECRET)
    [add] = [e for e in run.entries if e["argv"][:4] == ["secrets", "versions", "add", ROUTE_KEY_SECRET]]
    assert "--data-file=-" in add["argv"]
    [key] = first.box.route_keys()
    assert add["stdin_len"] == len(key) == 43  # 32 random bytes, url-safe base64
    assert set(key) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert key not in json.dumps(run.entries) + run.stdout + run.stderr
    assert "TAGRELAY_ROUTE_KEY=... " in run.stdout  # the route command shows it only as a placeholder


def test_rotating_the_route_key_keeps_the_previous_one_accepted(box: Sandbox) -> None:
    [old] = box.route_keys()
    again = box.run("--rotate-route-key")
    assert again.code == 0, again.stderr
    old_again, new = box.route_keys()
    assert old_again == old and new != old and len(new) == 43
    assert [argv[:4] for argv in again.changes()] == [
        ["secrets", "versions", "add", ROUTE_KEY_SECRET],
        ["functions", "deploy", "tagrelay-ingest", "--gen2"],
    ]
    ingest = again.one("functions", "deploy", "tagrelay-ingest")
    variables = env_vars(ingest)
    assert variables["TAGRELAY_ROUTE_KEY_SECRET"] == f"projects/{PROJECT}/secrets/{ROUTE_KEY_SECRET}/versions/2"
    assert (
        variables["TAGRELAY_ROUTE_KEY_PREVIOUS_SECRET"] == f"projects/{PROJECT}/secrets/{ROUTE_KEY_SECRET}/versions/1"
    )
    # ingest accepts both before the route changes; then the route carries the new key
    [route] = box.standin.routes
    assert route["actions"] == [f'forward("{INGEST_URL}?k={new}")', "stop()"]
    assert "mailgun route for example.org: updated" in again.stdout
    steady = box.run()
    assert steady.code == 0, steady.stderr
    assert steady.changes() == []  # the previous key stays accepted until the next rotation


def test_an_unreadable_route_key_stops_with_what_to_do(box: Sandbox) -> None:
    box.edit_state(lambda state: state.update(access_denied=[ROUTE_KEY_SECRET]))
    again = box.run()
    assert again.code == 2
    assert f"secret {ROUTE_KEY_SECRET} exists but its value cannot be read" in again.stderr
    assert again.changes() == []


# -- running again -------------------------------------------------------------------


def test_second_run_changes_nothing_and_needs_no_secrets(box: Sandbox) -> None:
    resources_before = box.state()["resources"]
    again = box.run(env={"MAILGUN_API_KEY": None, "MAILGUN_WEBHOOK_SIGNING_KEY": None})
    assert again.code == 0, again.stderr
    assert again.changes() == []
    assert again.calls, "the second run should still look everything up"
    assert box.state()["resources"] == resources_before
    assert [r for r in box.standin.requests if r[0] != "GET"] == []
    assert len(box.standin.routes) == 1
    assert box.standin.webhooks == {DOMAIN: {name: [EVENTS_URL] for name in EVENT_WEBHOOKS}}
    assert f"mailgun webhook complained for {DOMAIN}: unchanged" in again.stdout
    assert f"alert policy '{POLICY}': exists, unchanged" in again.stdout
    assert "exists (kept; set MAILGUN_API_KEY to replace it)" in again.stdout
    assert "mailgun route for example.org: unchanged" in again.stdout  # its key came from Secret Manager
    assert "unchanged (--redeploy forces a deploy)" in again.stdout


def test_changed_source_redeploys_functions_but_creates_nothing(box: Sandbox) -> None:
    with box.routes.open("a") as routes:
        routes.write("\n# a new comment changes the staged routes.toml\n")
    again = box.run()
    assert again.code == 0, again.stderr
    assert [argv[:3] for argv in again.changes()] == [
        ["functions", "deploy", "tagrelay-ingest"],
        ["functions", "deploy", "tagrelay-relay"],
        ["functions", "deploy", "tagrelay-events"],
    ]
    assert box.resources("functions")["tagrelay-ingest"]["deploys"] == 2
    assert len(box.standin.routes) == 1


def test_redeploy_flag_deploys_every_function_and_keeps_equal_secrets(box: Sandbox) -> None:
    again = box.run("--redeploy")
    assert again.code == 0, again.stderr
    assert [argv[:3] for argv in again.changes()] == [
        ["functions", "deploy", "tagrelay-ingest"],
        ["functions", "deploy", "tagrelay-relay"],
        ["functions", "deploy", "tagrelay-events"],
    ]
    assert "secret tagrelay-mailgun-api-key: exists, same value" in again.stdout


def test_a_rotated_key_adds_one_secret_version(box: Sandbox) -> None:
    again = box.run(env={"MAILGUN_WEBHOOK_SIGNING_KEY": ROTATED_KEY})
    assert again.code == 0, again.stderr
    assert again.changes() == [again.one("secrets", "versions", "add", "tagrelay-webhook-signing-key")]
    assert box.state()["secret_payloads"]["tagrelay-webhook-signing-key"][-1] == ROTATED_KEY
    assert ROTATED_KEY not in again.stdout + again.stderr + box.log.read_text()


def test_secrets_that_cannot_be_read_are_kept_not_overwritten(box: Sandbox) -> None:
    box.edit_state(lambda state: state.update(access_denied=["tagrelay-webhook-signing-key"]))
    again = box.run(env={"MAILGUN_WEBHOOK_SIGNING_KEY": ROTATED_KEY})
    assert again.code == 0, again.stderr
    assert again.changes() == []
    assert "its value cannot be read with your account to compare; kept" in again.stdout


def test_a_missing_secret_without_a_terminal_is_a_clear_error(empty: Sandbox) -> None:
    run = empty.run(env={"MAILGUN_WEBHOOK_SIGNING_KEY": None})
    assert run.code == 2
    assert "MAILGUN_WEBHOOK_SIGNING_KEY is not set and there is no terminal to ask" in run.stderr
    assert not run.find("versions", "add", "tagrelay-webhook-signing-key")


def test_secret_values_never_appear_in_arguments_output_or_files(first: FirstDeploy) -> None:
    # Sandbox.run checks argv and output on every run of this module; here, the first run
    # in detail, and every file the deploy left behind (staged sources included).
    log = first.box.log.read_text()
    assert '"stdin_len": 18' in log  # the API key did travel, on stdin
    for value in (API_KEY, SIGNING_KEY):
        assert value not in log
        assert value not in first.run.stdout + first.run.stderr
    files = [p for p in first.box.tmp.rglob("*") if p.is_file() and p != first.box.state_file]
    assert any(p.parent.name == "ingest" for p in files)
    for path in files:  # the state file is the simulated Secret Manager, where the values belong
        data = path.read_bytes()
        assert API_KEY.encode() not in data and SIGNING_KEY.encode() not in data, path


def test_a_prompted_secret_is_read_without_echo(box: Sandbox) -> None:
    def forget_signing_key(state: dict[str, Any]) -> None:
        del state["resources"]["secrets"]["tagrelay-webhook-signing-key"]
        del state["secret_payloads"]["tagrelay-webhook-signing-key"]

    box.edit_state(forget_signing_key)
    master, slave = pty.openpty()
    environment = {k: v for k, v in box.env.items() if k != "MAILGUN_WEBHOOK_SIGNING_KEY"}
    settings = ["--project", PROJECT, "--region", REGION, "--domain", DOMAIN, "--routes", str(box.routes)]
    process = subprocess.Popen(
        ["bash", str(box.repo / "deploy.sh"), *settings],
        env=environment,
        stdin=slave,
        stdout=subprocess.PIPE,
        stderr=slave,
        text=True,
    )
    os.close(slave)
    seen = b""
    try:
        while b"(input hidden): " not in seen:
            chunk = os.read(master, 1024)
            assert chunk, "deploy.sh ended without prompting"
            seen += chunk
        deadline = time.monotonic() + 10  # type only once bash has switched echo off
        while termios.tcgetattr(master)[3] & termios.ECHO:
            assert time.monotonic() < deadline, "echo never turned off"
            time.sleep(0.01)
        os.write(master, TYPED_KEY.encode() + b"\n")
        stdout, _ = process.communicate(timeout=120)
        while True:
            try:
                chunk = os.read(master, 1024)
            except OSError:  # EIO: the other side is closed
                break
            if not chunk:
                break
            seen += chunk
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(master)
    assert process.returncode == 0, seen.decode(errors="replace")
    assert TYPED_KEY.encode() not in seen
    assert TYPED_KEY not in stdout
    assert TYPED_KEY not in box.log.read_text()
    assert box.state()["secret_payloads"]["tagrelay-webhook-signing-key"] == [TYPED_KEY]


# -- dry run, teardown, help -------------------------------------------------------------


def test_dry_run_runs_nothing_and_prints_every_command(empty: Sandbox) -> None:
    run = empty.run("--dry-run", env={"MAILGUN_API_KEY": None, "MAILGUN_WEBHOOK_SIGNING_KEY": None})
    assert run.code == 0, run.stderr
    assert not empty.log.exists()
    assert not empty.state_file.exists()
    assert not empty.build.exists()
    assert empty.standin.requests == []
    out = run.stdout
    for expected in (
        "gcloud services enable",
        "gcloud pubsub topics describe tagrelay-inbound",  # lookups are printed too
        "gcloud pubsub topics create tagrelay-inbound",
        'printf %s "$MAILGUN_API_KEY" | gcloud secrets versions add tagrelay-mailgun-api-key --data-file=-',
        "gcloud secrets create tagrelay-route-key",
        'printf %s "$TAGRELAY_ROUTE_KEY" | gcloud secrets versions add tagrelay-route-key --data-file=-',
        "TAGRELAY_ROUTE_KEY_SECRET=projects/tagrelay-test/secrets/tagrelay-route-key/versions/1",
        "TAGRELAY_ROUTE_KEY=... ",
        "gcloud functions deploy tagrelay-ingest --gen2",
        "--allow-unauthenticated",
        "gcloud functions deploy tagrelay-relay --gen2",
        "--trigger-topic=tagrelay-inbound --retry",
        "--dead-letter-topic=tagrelay-deadletter --max-delivery-attempts=20",
        "gcloud firestore fields ttls update expires_at --collection-group=tagrelay_tokens --enable-ttl",
        "mailgun ensure-route --domain=example.org",
        "gcloud functions deploy tagrelay-events --gen2",
        "--entry-point=events --trigger-http --allow-unauthenticated",
        "gcloud iam service-accounts create tagrelay-events",
        "mailgun ensure-webhooks '<events URL>' --domain=example.org",
        "gcloud firestore fields ttls update expires_at --collection-group=tagrelay_event_tokens --enable-ttl",
        f"gcloud logging metrics create {METRIC}",
        "gcloud beta monitoring channels create '--display-name=tagrelay alerts' --type=email "
        f"--channel-labels=email_address={ALERT_EMAIL}",
        "gcloud monitoring policies create --policy-from-file=",
        "Dry run: nothing was run.",
    ):
        assert expected in out, expected


def test_dry_run_of_a_deployed_project_also_runs_nothing(box: Sandbox) -> None:
    calls_before = box.entries()
    run = box.run("--dry-run")
    assert run.code == 0, run.stderr
    assert box.entries() == calls_before
    assert "gcloud functions deploy tagrelay-relay" in run.stdout


def test_eu_flag_selects_the_eu_api_everywhere(empty: Sandbox) -> None:
    run = empty.run("--dry-run", "--eu")
    assert run.code == 0, run.stderr
    assert "MAILGUN_API_BASE=https://api.eu.mailgun.net," in run.stdout
    assert "--api-base=https://api.eu.mailgun.net" in run.stdout
    [hooks] = [line for line in run.stdout.splitlines() if "mailgun ensure-webhooks" in line]
    assert hooks.endswith("--domain=example.org --api-base=https://api.eu.mailgun.net")


def test_teardown_yes_deletes_what_deploy_made(box: Sandbox) -> None:
    down = box.run("--teardown", "--yes")
    assert down.code == 0, down.stderr
    for kind in ("functions", "pubsub topics", "pubsub subscriptions", "secrets", "iam service-accounts"):
        assert box.resources(kind) == {}, kind
    assert box.resources("storage buckets") == {}
    assert box.resources("firestore databases"), "the Firestore database is kept"
    assert box.state()["policies"][f"projects/{PROJECT}"] == {"roles/datastore.user": []}
    assert box.standin.routes == []
    assert box.standin.webhooks == {DOMAIN: {}}
    for kind in ("logging metrics", "beta monitoring channels", "monitoring policies"):
        assert box.resources(kind) == {}, kind
    again = box.run("--teardown", "--yes")
    assert again.code == 0, again.stderr
    assert again.changes() == []


def test_teardown_asks_first(box: Sandbox) -> None:
    down = box.run("--teardown")
    assert down.code == 2
    assert "pass --yes" in down.stderr
    assert down.calls == []
    assert box.resources("functions")
    assert len(box.standin.routes) == 1


def test_help_explains_flags_and_environment(empty: Sandbox) -> None:
    run = empty.run("--help", settings=False)
    assert run.code == 0
    for expected in ("--project", "TAGRELAY_PROJECT", "GOOGLE_CLOUD_PROJECT", "--dry-run", "--teardown", "--eu"):
        assert expected in run.stdout
    assert run.calls == []


def test_settings_come_from_the_environment(empty: Sandbox) -> None:
    run = empty.run(
        "--dry-run",
        "--routes",
        empty.routes.name,  # relative to where the script is run, not to the clone
        settings=False,
        cwd=empty.routes.parent,
        env={
            "GOOGLE_CLOUD_PROJECT": "env-project-1",
            "TAGRELAY_REGION": "us-central1",
            "TAGRELAY_DOMAIN": "mail.example",
        },
    )
    assert run.code == 0, run.stderr
    assert "project env-project-1, region us-central1, for @mail.example" in run.stdout
    assert "gcloud pubsub topics create tagrelay-inbound --project=env-project-1" in run.stdout
    assert f"cp {empty.routes} {empty.build}/ingest/routes.toml" in run.stdout


def test_missing_settings_are_named(empty: Sandbox) -> None:
    run = empty.run("--region", REGION, "--domain", DOMAIN, settings=False)
    assert run.code == 2
    assert "no project: pass --project P or set TAGRELAY_PROJECT" in run.stderr
    assert run.calls == []


def test_a_missing_routes_file_stops_before_any_change(empty: Sandbox) -> None:
    run = empty.run("--routes", str(empty.tmp / "nope.toml"))
    assert run.code == 2
    assert "copy routes.example.toml to routes.toml" in run.stderr
    assert run.calls == []


def test_shellcheck_is_clean() -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed (make dev-tools installs it with apt-get)")
    done = subprocess.run([shellcheck, str(DEPLOY)], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


# -- the reply key (issue 13): made once at random, kept, rotated with a grace period ------

REPLY_SECRET = "tagrelay-reply-key"


def test_first_run_creates_a_random_reply_key_never_shown(first: FirstDeploy) -> None:
    run = first.run
    assert run.one("secrets", "create", REPLY_SECRET)
    [value] = first.box.state()["secret_payloads"][REPLY_SECRET]
    assert re.fullmatch(r"[0-9a-f]{64}", value)
    assert value not in run.stdout + run.stderr
    assert all(value not in " ".join(e["argv"]) for e in run.entries)


def test_second_run_keeps_the_reply_key(box: Sandbox) -> None:
    before = box.state()["secret_payloads"][REPLY_SECRET]
    again = box.run()
    assert again.code == 0, again.stderr
    assert box.state()["secret_payloads"][REPLY_SECRET] == before
    assert f"secret {REPLY_SECRET}: exists (kept; set TAGRELAY_REPLY_KEY to replace it)" in again.stdout


def test_rotation_keeps_the_previous_version_valid_on_both_functions(box: Sandbox) -> None:
    again = box.run("--redeploy", env={"TAGRELAY_REPLY_KEY": "r" * 64, "TAGRELAY_REPLY_KEY_PREVIOUS_VERSION": "1"})
    assert again.code == 0, again.stderr
    assert box.state()["secret_payloads"][REPLY_SECRET][-1] == "r" * 64
    for function in ("tagrelay-ingest", "tagrelay-relay"):
        variables = env_vars(again.one("functions", "deploy", function))
        previous = f"projects/{PROJECT}/secrets/{REPLY_SECRET}/versions/1"
        assert variables["TAGRELAY_REPLY_KEY_PREVIOUS_SECRET"] == previous


def test_a_previous_version_that_is_not_a_number_stops_the_deploy(box: Sandbox) -> None:
    again = box.run(env={"TAGRELAY_REPLY_KEY_PREVIOUS_VERSION": "latest"})
    assert again.code == 2
    assert "TAGRELAY_REPLY_KEY_PREVIOUS_VERSION 'latest' is not a version number" in again.stderr


# -- issue 12: the events function, its webhooks, and the alert ---------------------------


def test_events_is_a_public_http_function_with_its_own_account_and_settings(first: FirstDeploy) -> None:
    events = first.run.one("functions", "deploy", "tagrelay-events")
    for expected in ("--gen2", "--trigger-http", "--allow-unauthenticated", "--runtime=python312"):
        assert expected in events
    assert flag(events, "entry-point") == "events"
    assert flag(events, "service-account") == EVENTS_SA.split(":", 1)[1]
    assert env_vars(events) == {
        "GOOGLE_CLOUD_PROJECT": PROJECT,
        "TAGRELAY_ROUTES": "routes.toml",
        "MAILGUN_DOMAIN": DOMAIN,
        "MAILGUN_API_BASE": first.box.standin.url,
        "MAILGUN_API_KEY_SECRET": API_KEY_VERSION,
        "MAILGUN_WEBHOOK_SIGNING_KEY_SECRET": SIGNING_KEY_VERSION,
        "TAGRELAY_DEADLETTER_TOPIC": "tagrelay-deadletter",
        "TAGRELAY_CLAIM_BUCKET": f"{PROJECT}-tagrelay-claims",
    }
    staged = first.box.build / "events" / "main.py"
    assert staged.read_bytes() == (first.box.repo / "functions/events/main.py").read_bytes()


def test_the_events_account_has_exactly_its_four_grants(first: FirstDeploy) -> None:
    granted = sorted(
        (key, role)
        for key, roles in first.box.state()["policies"].items()
        for role, members in roles.items()
        if EVENTS_SA in members
    )
    assert granted == [
        (f"projects/{PROJECT}", "roles/datastore.user"),
        ("pubsub topics/tagrelay-deadletter", "roles/pubsub.publisher"),
        ("secrets/tagrelay-mailgun-api-key", "roles/secretmanager.secretAccessor"),
        ("secrets/tagrelay-webhook-signing-key", "roles/secretmanager.secretAccessor"),
        (f"storage buckets/{PROJECT}-tagrelay-claims", "roles/storage.objectAdmin"),
    ]


def test_the_webhooks_point_at_the_events_function(first: FirstDeploy) -> None:
    assert first.mailgun_webhooks == {DOMAIN: {name: [EVENTS_URL] for name in EVENT_WEBHOOKS}}
    for name in EVENT_WEBHOOKS:
        assert f"mailgun webhook {name} for {DOMAIN}: created" in first.run.stdout
    assert "MAILGUN_API_KEY=... " in first.run.stdout  # the key reached the command through its environment


def test_the_metric_counts_dead_letters_and_suppressed_targets(first: FirstDeploy) -> None:
    [metric] = first.box.resources("logging metrics").values()
    assert metric["name"] == METRIC
    assert metric["filter"] == (
        'resource.type="cloud_run_revision" AND resource.labels.service_name=("tagrelay-relay" OR "tagrelay-events")'
        ' AND severity>=ERROR AND jsonPayload.outcome=("dead-lettered" OR "failed" OR "suppressed")'
    )


def test_the_alert_policy_emails_the_operator_on_the_metric(first: FirstDeploy) -> None:
    [channel] = first.box.resources("beta monitoring channels").values()
    assert (channel["type"], channel["labels"], channel["userLabels"]) == (
        "email",
        {"email_address": ALERT_EMAIL},
        {"app": "tagrelay"},
    )
    [policy] = first.box.resources("monitoring policies").values()
    assert policy["displayName"] == POLICY
    assert policy["notificationChannels"] == [channel["name"]]
    [condition] = policy["conditions"]
    threshold = condition["conditionThreshold"]
    assert (
        threshold["filter"]
        == f'metric.type="logging.googleapis.com/user/{METRIC}" AND resource.type="cloud_run_revision"'
    )
    assert (threshold["comparison"], threshold["thresholdValue"], threshold["duration"]) == ("COMPARISON_GT", 0, "0s")
    assert "tagrelay suppressions clear ADDRESS" in policy["documentation"]["content"]
    assert policy["userLabels"]["app"] == "tagrelay" and len(policy["userLabels"]["tagrelay_fp"]) == 32


def test_a_new_alert_email_moves_the_policy_and_drops_the_old_channel(box: Sandbox) -> None:
    [old] = box.resources("beta monitoring channels")
    again = box.run("--alert-email", "oncall@example.com", env={"TAGRELAY_ALERT_EMAIL": None})
    assert again.code == 0, again.stderr
    assert [argv[:4] for argv in again.changes()] == [
        ["beta", "monitoring", "channels", "create"],
        ["monitoring", "policies", "update", next(iter(box.resources("monitoring policies")))],
        ["beta", "monitoring", "channels", "delete"],
    ]
    [channel] = box.resources("beta monitoring channels").values()
    assert channel["labels"] == {"email_address": "oncall@example.com"} and channel["name"] != old
    [policy] = box.resources("monitoring policies").values()
    assert policy["notificationChannels"] == [channel["name"]]


def test_without_an_alert_email_the_metric_is_made_and_the_policy_skipped_with_a_note(empty: Sandbox) -> None:
    run = empty.run("--dry-run", env={"TAGRELAY_ALERT_EMAIL": None})
    assert run.code == 0, run.stderr
    assert f"gcloud logging metrics create {METRIC}" in run.stdout
    assert "monitoring channels" not in run.stdout and "monitoring policies" not in run.stdout
    assert "no --alert-email (or TAGRELAY_ALERT_EMAIL): no alert policy" in run.stdout


def test_an_alert_email_that_is_not_an_address_stops_before_any_call(empty: Sandbox) -> None:
    run = empty.run("--alert-email", "ops@example.com --type=webhook")
    assert run.code == 2
    assert "is not an email address" in run.stderr
    assert run.calls == []


def test_a_clone_without_the_events_function_stops_before_any_call(empty: Sandbox) -> None:
    (empty.repo / "functions/events/main.py").unlink()
    run = empty.run()
    assert run.code == 2
    assert "functions/events/main.py is missing" in run.stderr
    assert run.calls == []


def test_teardown_dry_run_prints_the_new_deletions(box: Sandbox) -> None:
    calls_before = box.entries()
    down = box.run("--teardown", "--dry-run")
    assert down.code == 0, down.stderr
    assert box.entries() == calls_before
    for expected in (
        "mailgun delete-webhooks '<events URL>' --domain=example.org",
        "gcloud monitoring policies list '--filter=displayName=\"" + POLICY + "\"'",
        f"gcloud logging metrics describe {METRIC}",
        "gcloud functions describe tagrelay-events --gen2",
        f"gcloud iam service-accounts describe tagrelay-events@{PROJECT}.iam.gserviceaccount.com",
    ):
        assert expected in down.stdout, expected
