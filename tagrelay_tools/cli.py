"""The ``tagrelay`` command.

tagrelay run                          the whole pipeline locally (Ctrl-C stops it)
tagrelay send FILE --to ADDRESS       sign and post a real .eml to the local ingest
tagrelay route ADDRESS                which rule matches and where the mail goes
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, cast

import requests

from tagrelay.core.envelope import message_id_of
from tagrelay.core.errors import RoutesError
from tagrelay.core.events import FINAL
from tagrelay.core.ports import DELIVERY_VARIABLE
from tagrelay.core.routes import Forward, load_file
from tagrelay_tools import mailgun_posts
from tagrelay_tools.localstack import STATE_FILE, running_state
from tagrelay_tools.mailgun_posts import ROUTE_KEY_VARIABLE
from tagrelay_tools.terminal import say, warn

if TYPE_CHECKING:
    from tagrelay_tools.localstack import Stack
    from tagrelay_tools.standin import Accepted

EVENT_SECONDS = 20.0  # how long 'tagrelay run' waits for the sample's delivered event
SAMPLE = Path(__file__).resolve().parent.parent / "examples" / "hello.eml"
ARRIVAL_SECONDS = 60.0

# Modules that add subcommands: each has ``register(commands)``, which adds its
# parsers and sets ``func`` on them.
COMMAND_MODULES: tuple[str, ...] = (
    "tagrelay_tools.mailgun_setup",
    "tagrelay_tools.ops",
    "tagrelay_tools.contacts",
    "tagrelay_tools.refusals",
    "tagrelay_tools.control",
    "tagrelay_tools.aliases",
    "tagrelay_tools.suppressions",
    "tagrelay_tools.trace",
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tagrelay", description="Dynamic email routing for a small domain.")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run the whole pipeline locally on the real emulators")
    run.add_argument("--routes", type=Path, default=Path("routes.example.toml"))
    run.add_argument("--outbox", type=Path, default=Path("outbox"))
    run.add_argument("--workdir", type=Path, default=STATE_FILE.parent)
    run.add_argument("--sample", type=Path, default=SAMPLE, help="message posted once the stack is up")
    run.add_argument("--to", default="github@example.org", help="recipient of the sample message")
    run.add_argument("--once", action="store_true", help="stop after the sample arrived (no waiting)")

    send = commands.add_parser("send", help="sign and post an .eml to the local ingest as Mailgun would")
    send.add_argument("file", type=Path)
    send.add_argument("--to", required=True, help="envelope recipient, e.g. github@example.org")
    send.add_argument("--sender", default="", help="envelope sender (default: the message's From)")
    send.add_argument("--form", choices=("mime", "parsed"), default="mime", help="Mailgun's raw or parsed form")
    send.add_argument("--url", default="", help="ingest URL (default: the running local stack)")
    send.add_argument("--key", default="", help="signing key (default: the running local stack's)")
    # The route key (?k=) comes from $TAGRELAY_ROUTE_KEY, else the running local stack: never an argument.

    route = commands.add_parser("route", help="show which rule matches an address and where its mail goes")
    route.add_argument("address")
    route.add_argument("--routes", type=Path, default=None, help="rules file (default: $TAGRELAY_ROUTES)")

    route.set_defaults(func=cmd_route)
    run.set_defaults(func=cmd_run)
    send.set_defaults(func=cmd_send)
    for module in COMMAND_MODULES:
        importlib.import_module(module).register(commands)

    args = parser.parse_args(argv)
    return int(args.func(args))


def cmd_route(args: argparse.Namespace) -> int:
    path = args.routes or Path(os.environ.get("TAGRELAY_ROUTES", "routes.example.toml"))
    try:
        routes = load_file(str(path))
    except RoutesError as exc:
        warn(f"error: {exc.reason}")
        return 2
    result = routes.resolve(args.address)
    if isinstance(result, Forward):
        say(f"{args.address}: {result.rule.describe()}", *(f"  → {target}" for target in result.targets))
        if result.fallback_used:
            say("  (fallback: the forward address would not be a valid address)")
        return 0
    say(f"{args.address}: refused (406): {result.reason}")
    return 1


def cmd_send(args: argparse.Namespace) -> int:
    url, key = args.url, args.key
    route_key = os.environ.get(ROUTE_KEY_VARIABLE, "").strip()  # never an argument: it is a secret
    if not url or not key:
        state = running_state()
        if state is None:
            warn(f"error: no running local stack ({STATE_FILE} missing); start 'tagrelay run' or pass --url and --key")
            return 2
        url, key = url or state["ingest_url"], key or state["signing_key"]
        route_key = route_key or state.get("route_key", "")
    try:
        raw = args.file.read_bytes()
    except OSError as exc:
        warn(f"error: cannot read {args.file}: {exc.strerror}")
        return 2
    try:
        sender = args.sender or _from_address(raw)
        answer = mailgun_posts.sign_and_post(url, raw, args.to, sender, key, args.form, route_key=route_key)
    except requests.RequestException as exc:
        warn(f"error: cannot post to {url}: {type(exc).__name__}")
        return 1
    say(f"ingest answered {answer.status_code}: {answer.text.strip()}")
    return 0 if answer.status_code == 200 else 1


def _from_address(raw: bytes) -> str:
    from email.parser import BytesHeaderParser
    from email.utils import parseaddr

    return parseaddr(str(BytesHeaderParser().parsebytes(raw).get("From", "")))[1]


def _delivery_state(stack: Stack, arrived: Accepted) -> str:
    """The sample's delivery record once Mailgun's events reached it (issue 12): delivered, or where it stands."""
    options = cast(dict[str, list[str]], arrived.get("options", {}))
    key = (options.get(f"v:{DELIVERY_VARIABLE}") or [""])[-1]
    if not key:
        return "delivery record: the forward carried no delivery key"
    record: dict[str, Any] | None = None
    deadline = time.monotonic() + EVENT_SECONDS
    while time.monotonic() < deadline:
        record = stack.delivery_record(key)
        if record is not None and record.get("state") in FINAL:
            break
        time.sleep(0.2)
    if record is None:
        return f"delivery record {key[:12]}…: not found"
    return f"delivery record {key[:12]}…: {record.get('state')} (Mailgun id {record.get('mailgun_id', '')})"


def cmd_run(args: argparse.Namespace) -> int:
    from tagrelay_tools.localstack import Stack, StackError

    stack = Stack(workdir=args.workdir.resolve(), routes=args.routes.resolve(), outbox=args.outbox.resolve())

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    # Both stop everything: SIGINT too, since a shell may start a background job with it ignored.
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    say("starting the local stack (Pub/Sub and Firestore emulators, ingest, relay, events, Mailgun stand-in)…")
    try:
        stack.start()
    except StackError as exc:
        warn(*f"error: {exc}".splitlines())
        return 2
    except KeyboardInterrupt:
        return 130
    try:
        for name, child in stack.children.items():
            say(f"  {name:<10} {child.url}  (pid {child.process.pid}, log {child.log})")
        raw = args.sample.read_bytes()
        answer = mailgun_posts.sign_and_post(
            stack.ingest_url, raw, args.to, _from_address(raw), stack.signing_key, route_key=stack.route_key
        )
        say(f"posted {args.sample.name} to {args.to}: ingest answered {answer.status_code} {answer.text.strip()}")
        sample_id = message_id_of(raw)
        arrived = stack.standin.wait_for(lambda r: r["message_id"] == sample_id or not sample_id, ARRIVAL_SECONDS)
        if arrived is None:
            warn(f"error: nothing arrived at the stand-in within {ARRIVAL_SECONDS:g}s; see {stack.workdir}/logs")
            return 1
        say(f"forwarded copy (to {', '.join(arrived['to'])}): {arrived['path']}")
        say(_delivery_state(stack, arrived))
        if args.once:
            return 0
        say(
            "",
            "running. Send more with: tagrelay send message.eml --to github@example.org",
            "Answer the last one as its owner from Gmail (reply as the alias): tagrelay reply",
            f"forwarded copies land in {stack.outbox}/. Ctrl-C stops everything.",
        )
        while all(child.process.poll() is None for child in stack.children.values()):
            time.sleep(1)
        warn("error: a child process exited; see the logs")
        return 1
    except KeyboardInterrupt:
        say("", "stopping…")
        return 0
    finally:
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())
