"""A fake ``gcloud`` for the deploy tests: records every call and keeps a small cloud in a JSON file.

Put first on PATH through a wrapper named ``gcloud`` (see test_deploy.py). Environment:

    FAKE_GCLOUD_LOG    file that gets one JSON line per call: {"argv": [...], "stdin_len": N}
    FAKE_GCLOUD_STATE  JSON file holding the simulated project (created when missing)

It understands exactly the commands deploy.sh uses, in their ``--flag=value`` form,
and fails loudly (exit 2) on anything else, so a typo in deploy.sh fails a test.
``describe``/``get-iam-policy``/``list`` answer from the state; ``create``/``deploy``/
``add-iam-policy-binding``/``update``/``delete`` change it. Like the real service it
refuses to create what exists, to bind a service account that does not exist, or
to deploy from a folder without ``main.py``. With ``--data-file=-`` it reads stdin:
the log keeps only its length; the payload goes into the simulated Secret Manager.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

GROUPS = (
    ("beta", "monitoring", "channels"),
    ("monitoring", "policies"),
    ("logging", "metrics"),
    ("firestore", "fields", "ttls"),
    ("firestore", "databases"),
    ("secrets", "versions"),
    ("iam", "service-accounts"),
    ("pubsub", "topics"),
    ("pubsub", "subscriptions"),
    ("storage", "buckets"),
    ("eventarc", "triggers"),
    ("run", "services"),
    ("services",),
    ("projects",),
    ("functions",),
    ("secrets",),
    ("storage",),
)
GLOBAL_FLAGS = {"project", "format", "quiet"}


class Fail(Exception):
    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


class Call:
    def __init__(self, argv: list[str], state: dict[str, Any]) -> None:
        self.argv = argv
        self.state = state
        self.positionals: list[str] = []
        self.flags: dict[str, str] = {}
        for arg in argv:
            if arg.startswith("--"):
                name, sep, value = arg[2:].partition("=")
                self.flags[name] = value if sep else "true"
            else:
                self.positionals.append(arg)
        group = next((g for g in GROUPS if tuple(self.positionals[: len(g)]) == g), None)
        if group is None or len(self.positionals) <= len(group):
            raise Fail(f"fake gcloud: unsupported command {argv}", 2)
        self.group = " ".join(group)
        self.verb = self.positionals[len(group)]
        self.args = self.positionals[len(group) + 1 :]
        self.used: set[str] = set(GLOBAL_FLAGS)
        self.stdin_len: int | None = None

    @property
    def project(self) -> str:
        project = self.flags.get("project", "")
        if not project:
            raise Fail("fake gcloud: every call must name --project", 2)
        return project

    def flag(self, name: str, default: str | None = None) -> str:
        self.used.add(name)
        if name in self.flags:
            return self.flags[name]
        if default is None:
            raise Fail(f"fake gcloud: {self.group} {self.verb} needs --{name}", 2)
        return default

    def has(self, name: str) -> bool:
        self.used.add(name)
        return name in self.flags

    def arg(self, index: int = 0) -> str:
        if len(self.args) <= index:
            raise Fail(f"fake gcloud: {self.group} {self.verb} needs a positional argument", 2)
        return self.args[index]

    def unused_flags(self) -> list[str]:
        return sorted(set(self.flags) - self.used)

    # -- state ----------------------------------------------------------------

    def table(self, kind: str | None = None) -> dict[str, Any]:
        tables: dict[str, dict[str, Any]] = self.state.setdefault("resources", {})
        return tables.setdefault(kind or self.group, {})

    def get(self, name: str, kind: str | None = None) -> dict[str, Any]:
        item = self.table(kind).get(name)
        if item is None:
            raise Fail(f"ERROR: (gcloud.{self.group.replace(' ', '.')}.{self.verb}) NOT_FOUND: {name} was not found")
        return dict(item)

    def put(self, name: str, item: dict[str, Any], kind: str | None = None, create: bool = True) -> None:
        if create and name in self.table(kind):
            raise Fail(f"ERROR: (gcloud.{self.group.replace(' ', '.')}.{self.verb}) ALREADY_EXISTS: {name}")
        self.table(kind)[name] = item

    def remove(self, name: str, kind: str | None = None) -> None:
        self.get(name, kind)
        del self.table(kind)[name]
        self.state.setdefault("policies", {}).pop(f"{kind or self.group}/{name}", None)

    def policy(self, key: str) -> dict[str, list[str]]:
        policies: dict[str, dict[str, list[str]]] = self.state.setdefault("policies", {})
        return policies.setdefault(key, {})


def short(name: str) -> str:
    return name.rstrip("/").rsplit("/", 1)[-1]


def bucket(name: str) -> str:
    if not name.startswith("gs://"):
        raise Fail(f"fake gcloud: bucket {name!r} must be written gs://NAME", 2)
    return name[len("gs://") :].rstrip("/")


def lookup(obj: Any, path: str) -> Any:
    for key in path.split("."):
        if not isinstance(obj, dict) or key not in obj:
            return ""
        obj = obj[key]
    return obj


def render(call: Call, result: Any) -> str:
    fmt = call.flags.get("format", "")
    if result is None or fmt == "none":
        return ""
    if fmt.startswith("value(") and fmt.endswith(")"):
        keys = [k.strip() for k in fmt[len("value(") : -1].split(",")]
        items = result if isinstance(result, list) else [result]

        def cell(value: Any) -> str:
            return ";".join(map(str, value)) if isinstance(value, list) else str(value)

        return "".join("\t".join(cell(lookup(item, key)) for key in keys) + "\n" for item in items)
    if fmt not in ("", "json"):
        raise Fail(f"fake gcloud: unsupported --format={fmt}", 2)
    return json.dumps(result, indent=2, sort_keys=True) + "\n"


# -- commands -------------------------------------------------------------------

Handler = Callable[[Call], Any]


def iam_handlers(key_of: Callable[[Call], str], must_exist: Callable[[Call], None]) -> dict[str, Handler]:
    def get_policy(call: Call) -> Any:
        must_exist(call)
        bindings = [{"role": r, "members": sorted(m)} for r, m in sorted(call.policy(key_of(call)).items())]
        if call.flags.get("flatten") == "bindings[].members" and call.verb == "get-iam-policy":
            call.used.add("flatten")  # one row per member, as gcloud's --flatten does
            return [{"bindings": {"role": b["role"], "members": m}} for b in bindings for m in b["members"]]
        return {"bindings": bindings, "etag": "BwYfake=", "version": 1}

    def add_binding(call: Call) -> Any:
        must_exist(call)
        member, role = call.flag("member"), call.flag("role")
        if call.group == "projects":
            call.flag("condition")  # non-interactive on projects that have conditional bindings
        if not role.startswith("roles/"):
            raise Fail(f"INVALID_ARGUMENT: role {role}")
        kind, _, email = member.partition(":")
        if kind != "serviceAccount" or "@" not in email:
            raise Fail(f"INVALID_ARGUMENT: member {member}")
        ours = email.endswith(f"@{call.project}.iam.gserviceaccount.com")
        if ours and email not in call.table("iam service-accounts"):
            raise Fail(f"INVALID_ARGUMENT: Service account {email} does not exist.")
        members = call.policy(key_of(call)).setdefault(role, [])
        if member not in members:
            members.append(member)
        return get_policy(call)

    def remove_binding(call: Call) -> Any:
        member, role = call.flag("member"), call.flag("role")
        if call.group == "projects":
            call.flag("condition")
        members = call.policy(key_of(call)).get(role, [])
        if member not in members:
            raise Fail(f"ERROR: Policy binding with the specified principal, role, and condition not found! ({role})")
        members.remove(member)
        return get_policy(call)

    return {
        "get-iam-policy": get_policy,
        "add-iam-policy-binding": add_binding,
        "remove-iam-policy-binding": remove_binding,
    }


def exists(kind: str, name_of: Callable[[Call], str]) -> Callable[[Call], None]:
    def check(call: Call) -> None:
        call.get(name_of(call), kind)

    return check


def positional_key(call: Call) -> str:
    return f"{call.group}/{short(call.arg())}"


def projects(call: Call) -> Any:
    handlers = iam_handlers(lambda c: f"projects/{c.arg()}", lambda c: None)
    if call.verb == "describe":
        return {"projectId": call.arg(), "projectNumber": call.state.setdefault("project_number", "123456789012")}
    return handlers[call.verb](call)


def services(call: Call) -> Any:
    enabled: list[str] = call.state.setdefault("services", [])
    if call.verb == "list":
        if not call.has("enabled"):
            raise Fail("fake gcloud: services list needs --enabled", 2)
        return [{"config": {"name": name}} for name in enabled]
    if call.verb == "enable":
        for name in call.args:
            if name not in enabled:
                enabled.append(name)
        return None
    raise KeyError(call.verb)


def topics(call: Call) -> Any:
    name = short(call.arg())
    if call.verb == "describe":
        return call.get(name)
    if call.verb == "create":
        call.put(name, {"name": f"projects/{call.project}/topics/{name}"})
        return None
    if call.verb == "delete":
        call.remove(name)
        return None
    return iam_handlers(positional_key, exists("pubsub topics", lambda c: short(c.arg())))[call.verb](call)


def subscriptions(call: Call) -> Any:
    name = short(call.arg())
    if call.verb == "describe":
        return call.get(name)
    if call.verb == "create":
        topic = short(call.flag("topic"))
        call.get(topic, "pubsub topics")
        item: dict[str, Any] = {
            "name": f"projects/{call.project}/subscriptions/{name}",
            "topic": f"projects/{call.project}/topics/{topic}",
            "ackDeadlineSeconds": int(call.flag("ack-deadline", "10")),
            "messageRetentionDuration": call.flag("message-retention-duration", "604800s"),
            "expirationPolicy": {} if call.flag("expiration-period", "31d") == "never" else {"ttl": "2678400s"},
        }
        call.put(name, item)
        return None
    if call.verb == "update":
        item = call.get(name)
        if call.has("dead-letter-topic"):
            dead = short(call.flag("dead-letter-topic"))
            call.get(dead, "pubsub topics")
            item["deadLetterPolicy"] = {
                "deadLetterTopic": f"projects/{call.project}/topics/{dead}",
                "maxDeliveryAttempts": int(call.flag("max-delivery-attempts", "5")),
            }
        if call.has("expiration-period"):
            item["expirationPolicy"] = {} if call.flag("expiration-period") == "never" else {"ttl": "2678400s"}
        if call.has("message-retention-duration"):
            item["messageRetentionDuration"] = call.flag("message-retention-duration")
        if call.has("min-retry-delay") or call.has("max-retry-delay"):
            item["retryPolicy"] = {
                "minimumBackoff": call.flag("min-retry-delay", "10s"),
                "maximumBackoff": call.flag("max-retry-delay", "600s"),
            }
        call.put(name, item, create=False)
        return None
    if call.verb == "delete":
        call.remove(name)
        return None
    return iam_handlers(positional_key, exists("pubsub subscriptions", lambda c: short(c.arg())))[call.verb](call)


def secrets(call: Call) -> Any:
    name = call.arg()
    if call.verb == "describe":
        return call.get(name)
    if call.verb == "create":
        call.flag("replication-policy")
        labels = dict(pair.partition("=")[::2] for pair in call.flag("labels", "").split(",") if pair)
        number = call.state.get("project_number", "123456789012")
        call.put(name, {"name": f"projects/{number}/secrets/{name}", "labels": labels})
        call.state.setdefault("secret_payloads", {})[name] = []
        return None
    if call.verb == "delete":
        call.remove(name)
        call.state.setdefault("secret_payloads", {}).pop(name, None)
        return None
    return iam_handlers(lambda c: f"secrets/{c.arg()}", exists("secrets", lambda c: c.arg()))[call.verb](call)


def secret_versions(call: Call) -> Any:
    payloads: dict[str, list[str]] = call.state.setdefault("secret_payloads", {})
    if call.verb == "add":
        name = call.arg()
        call.get(name, "secrets")
        if call.flag("data-file") != "-":
            raise Fail("fake gcloud: secrets must arrive on stdin (--data-file=-)", 2)
        data = sys.stdin.buffer.read()
        call.stdin_len = len(data)
        payloads.setdefault(name, []).append(data.decode("utf-8"))
        return {"name": f"projects/x/secrets/{name}/versions/{len(payloads[name])}"}
    if call.verb == "list":
        name = call.arg()
        call.get(name, "secrets")
        if call.flag("filter") != "state:ENABLED":
            raise Fail("fake gcloud: secrets versions list is simulated with --filter=state:ENABLED only", 2)
        limit = int(call.flag("limit", "1000"))
        # Like Secret Manager: the newest version first.
        numbers = range(len(payloads[name]), 0, -1)
        return [{"name": f"projects/x/secrets/{name}/versions/{n}"} for n in numbers][:limit]
    if call.verb == "access":
        name = call.flag("secret")
        call.get(name, "secrets")
        if name in call.state.get("access_denied", []):  # like an Editor: may manage, may not read
            raise Fail(f"ERROR: (gcloud.secrets.versions.access) PERMISSION_DENIED: {name}")
        if call.arg() != "latest" or not payloads.get(name):
            raise Fail(f"ERROR: (gcloud.secrets.versions.access) NOT_FOUND: {name} has no version {call.arg()}")
        sys.stdout.write(payloads[name][-1])
        return None
    raise KeyError(call.verb)


def service_accounts(call: Call) -> Any:
    if call.verb == "create":
        account = call.arg()
        email = f"{account}@{call.project}.iam.gserviceaccount.com"
        call.put(email, {"email": email, "displayName": call.flag("display-name", "")})
        return None
    email = call.arg()
    if call.verb == "describe":
        return call.get(email)
    if call.verb == "delete":
        call.remove(email)
        return None
    return iam_handlers(lambda c: f"iam service-accounts/{c.arg()}", exists("iam service-accounts", lambda c: c.arg()))[
        call.verb
    ](call)


def databases(call: Call) -> Any:
    name = call.flag("database")
    if call.verb == "describe":
        return call.get(name)
    if call.verb == "create":
        kinds = {"firestore-native": "FIRESTORE_NATIVE", "datastore-mode": "DATASTORE_MODE"}
        item = {
            "name": f"projects/{call.project}/databases/{name}",
            "type": kinds[call.flag("type")],
            "locationId": call.flag("location"),
        }
        call.put(name, item)
        return None
    raise KeyError(call.verb)


def ttls(call: Call) -> Any:
    group = call.flag("collection-group")
    prefix = f"projects/{call.project}/databases/(default)/collectionGroups/{group}/fields/"
    if call.verb == "list":
        call.get("(default)", "firestore databases")
        return [item for key, item in sorted(call.table().items()) if key.startswith(prefix)]
    if call.verb == "update":
        call.get("(default)", "firestore databases")
        if not call.has("enable-ttl"):
            raise Fail("fake gcloud: only --enable-ttl is simulated", 2)
        call.has("async")
        field = call.arg()
        call.put(prefix + field, {"name": prefix + field, "ttlConfig": {"state": "ACTIVE"}}, create=False)
        return None
    raise KeyError(call.verb)


def buckets(call: Call) -> Any:
    name = bucket(call.arg())

    def lifecycle() -> Any:
        return json.loads(Path(call.flag("lifecycle-file")).read_text())

    if call.verb == "describe":
        return call.get(name)
    if call.verb == "create":
        item = {
            "name": name,
            "location": call.flag("location").upper(),
            "uniform_bucket_level_access": call.has("uniform-bucket-level-access"),
            "public_access_prevention": "enforced" if call.has("public-access-prevention") else "inherited",
            "lifecycle_config": lifecycle() if call.has("lifecycle-file") else None,
        }
        call.put(name, item)
        return None
    if call.verb == "update":
        item = call.get(name)
        item["lifecycle_config"] = lifecycle()
        call.put(name, item, create=False)
        return None
    return iam_handlers(lambda c: f"storage buckets/{bucket(c.arg())}", exists("storage buckets", lambda c: name))[
        call.verb
    ](call)


def storage(call: Call) -> Any:
    if call.verb == "rm" and call.has("recursive"):
        call.remove(bucket(call.arg()), "storage buckets")
        return None
    raise KeyError(call.verb)


def functions(call: Call) -> Any:
    name = call.arg()
    if not call.has("gen2"):
        raise Fail("fake gcloud: functions commands must say --gen2", 2)
    region = call.flag("region")
    if call.verb == "describe":
        return call.get(name)
    if call.verb == "delete":
        trigger = lookup(call.get(name), "eventTrigger.trigger")
        if trigger:
            subscription = lookup(call.get(short(trigger), "eventarc triggers"), "transport.pubsub.subscription")
            call.remove(short(trigger), "eventarc triggers")
            call.remove(short(subscription), "pubsub subscriptions")
        call.remove(name)
        call.state.setdefault("policies", {}).pop(f"run services/{name}", None)
        return None
    if call.verb != "deploy":
        raise KeyError(call.verb)
    source = Path(call.flag("source"))
    if not (source / "main.py").is_file():
        raise Fail(f"ERROR: (gcloud.functions.deploy) no main.py in --source={source}")
    account = call.flag("service-account")
    call.get(account, "iam service-accounts")
    previous = call.table().get(name)
    labels = dict(previous.get("labels", {})) if previous else {}
    for pair in call.flag("update-labels", "").split(","):
        if pair:
            key, _, value = pair.partition("=")
            labels[key] = value
    item: dict[str, Any] = {
        "name": f"projects/{call.project}/locations/{region}/functions/{name}",
        "state": "ACTIVE",
        "url": f"https://{region}-{call.project}.cloudfunctions.net/{name}",
        "labels": labels,
        "deploy_argv": call.argv,
        "source_files": sorted(str(p.relative_to(source)) for p in source.rglob("*") if p.is_file()),
        "deploys": (previous or {}).get("deploys", 0) + 1,
        "serviceConfig": {"serviceAccountEmail": account, "uri": f"https://{name}-fake-ew.a.run.app"},
    }
    for flag in ("runtime", "entry-point", "memory", "cpu", "concurrency", "timeout", "max-instances"):
        call.flag(flag, "")
    for flag in ("set-env-vars", "set-secrets", "trigger-http", "allow-unauthenticated", "no-allow-unauthenticated"):
        call.has(flag)
    if call.has("trigger-topic"):
        topic = short(call.flag("trigger-topic"))
        call.get(topic, "pubsub topics")
        call.has("retry")
        call.get(call.flag("trigger-service-account"), "iam service-accounts")
        trigger = (previous or {}).get("eventTrigger", {}).get("trigger") or (
            f"projects/{call.project}/locations/{region}/triggers/{name}-{len(call.table('eventarc triggers')) + 1:06d}"
        )
        subscription = f"eventarc-{region}-{short(trigger)}-sub-417"
        item["eventTrigger"] = {"trigger": trigger, "pubsubTopic": f"projects/{call.project}/topics/{topic}"}
        if short(trigger) not in call.table("eventarc triggers"):
            call.put(
                short(trigger),
                {
                    "name": trigger,
                    "transport": {"pubsub": {"subscription": f"projects/{call.project}/subscriptions/{subscription}"}},
                },
                "eventarc triggers",
            )
            call.put(
                subscription,
                {
                    "name": f"projects/{call.project}/subscriptions/{subscription}",
                    "topic": f"projects/{call.project}/topics/{topic}",
                },
                "pubsub subscriptions",
            )
    call.put(name, item, create=False)
    return None


def triggers(call: Call) -> Any:
    if call.verb == "describe":
        call.flag("location")
        return call.get(short(call.arg()))
    raise KeyError(call.verb)


def run_services(call: Call) -> Any:
    call.flag("region")
    return iam_handlers(positional_key, exists("functions", lambda c: c.arg()))[call.verb](call)


def metrics(call: Call) -> Any:
    name = call.arg()
    if call.verb == "describe":
        return call.get(name)
    if call.verb == "create":
        call.put(name, {"name": name, "description": call.flag("description", ""), "filter": call.flag("log-filter")})
        return None
    if call.verb == "update":
        item = call.get(name)
        item["filter"] = call.flag("log-filter")
        call.put(name, item, create=False)
        return None
    if call.verb == "delete":
        call.remove(name)
        return None
    raise KeyError(call.verb)


def channels(call: Call) -> Any:
    if call.verb == "list":
        return [item for _, item in sorted(call.table().items())]
    if call.verb == "create":
        if call.flag("type") != "email":
            raise Fail("fake gcloud: only email channels are simulated", 2)
        key, _, address = call.flag("channel-labels").partition("=")
        if key != "email_address" or "@" not in address:
            raise Fail(f"INVALID_ARGUMENT: channel labels {call.flags['channel-labels']}")
        labels = dict(pair.partition("=")[::2] for pair in call.flag("user-labels", "").split(",") if pair)
        number = call.state["next_channel"] = call.state.get("next_channel", 0) + 1
        name = f"projects/{call.project}/notificationChannels/{1000 + number}"
        item = {"name": name, "type": "email", "displayName": call.flag("display-name", ""),
                "labels": {"email_address": address}, "userLabels": labels}  # fmt: skip
        call.put(name, item)
        return item
    if call.verb == "delete":
        name = call.arg()
        if not call.has("force"):
            used = [p for p in call.table("monitoring policies").values() if name in p.get("notificationChannels", [])]
            if used:
                raise Fail(f"FAILED_PRECONDITION: channel {name} is used by a policy; pass --force")
        call.remove(name)
        return None
    raise KeyError(call.verb)


def alert_policies(call: Call) -> Any:
    def read_policy() -> dict[str, Any]:
        policy = json.loads(Path(call.flag("policy-from-file")).read_text())
        for channel in policy.get("notificationChannels", []):
            call.get(channel, "beta monitoring channels")  # like the API: the channel must exist
        return dict(policy)

    if call.verb == "list":
        wanted = call.flag("filter", "")
        prefix, quote = 'displayName="', '"'
        if wanted and not (wanted.startswith(prefix) and wanted.endswith(quote)):
            raise Fail(f"fake gcloud: only --filter='displayName=\"...\"' is simulated, not {wanted}", 2)
        name = wanted[len(prefix) : -1] if wanted else None
        return [p for _, p in sorted(call.table().items()) if name is None or p.get("displayName") == name]
    if call.verb == "create":
        policy = read_policy()
        number = call.state["next_policy"] = call.state.get("next_policy", 0) + 1
        policy["name"] = f"projects/{call.project}/alertPolicies/{9000 + number}"
        call.put(policy["name"], policy)
        return None
    if call.verb == "update":
        name = call.arg()
        call.get(name)
        policy = read_policy()
        policy["name"] = name
        call.put(name, policy, create=False)
        return None
    if call.verb == "delete":
        call.remove(call.arg())
        return None
    raise KeyError(call.verb)


DISPATCH: dict[str, Handler] = {
    "logging metrics": metrics,
    "beta monitoring channels": channels,
    "monitoring policies": alert_policies,
    "projects": projects,
    "services": services,
    "pubsub topics": topics,
    "pubsub subscriptions": subscriptions,
    "secrets": secrets,
    "secrets versions": secret_versions,
    "iam service-accounts": service_accounts,
    "firestore databases": databases,
    "firestore fields ttls": ttls,
    "storage buckets": buckets,
    "storage": storage,
    "functions": functions,
    "eventarc triggers": triggers,
    "run services": run_services,
}


def main(argv: list[str]) -> int:
    log_path = Path(os.environ["FAKE_GCLOUD_LOG"])
    state_path = Path(os.environ["FAKE_GCLOUD_STATE"])
    before = state_path.read_text() if state_path.exists() else "{}"
    state: dict[str, Any] = json.loads(before)
    entry: dict[str, Any] = {"argv": argv}
    code = 0
    try:
        call = Call(argv, state)
        try:
            call.project  # noqa: B018 - every call must name the project explicitly
            result = DISPATCH[call.group](call)
        except KeyError as exc:
            raise Fail(f"fake gcloud: unsupported command {argv} ({exc})", 2) from None
        finally:
            entry["stdin_len"] = call.stdin_len
        unused = call.unused_flags()
        if unused:
            raise Fail(f"fake gcloud: flags not understood for {call.group} {call.verb}: {unused}", 2)
        sys.stdout.write(render(call, result))
        after = json.dumps(state, indent=1, sort_keys=True)
        if after != before:
            state_path.write_text(after)
    except Fail as exc:
        print(str(exc), file=sys.stderr)
        code = exc.code
    entry["exit"] = code
    with log_path.open("a") as log:
        log.write(json.dumps(entry) + "\n")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
