"""Block or lock an alias without a redeploy (issue 14).

tagrelay block ALIAS                 refuse its mail (406: Mailgun stops), and its +detail addresses
tagrelay unblock ALIAS               deliver it again
tagrelay lock ALIAS [--hold|--refuse] [--allow DOMAIN ...]
                                     only the sender organisations already seen pass; the others are
                                     held for review (default) or refused
tagrelay unlock ALIAS                every sender passes again
tagrelay block-link ALIAS            the signed one-click link that blocks ALIAS (7 days)

The state is a field of the alias's document in Firestore (``tagrelay_aliases``); every
ingest instance reads it through a cache of ``TAGRELAY_ALIAS_CACHE_SECONDS`` (30 by default),
so a change takes effect within that time, with no redeploy and no restart. Against the real
project (``--project`` or ``$GOOGLE_CLOUD_PROJECT``, Application Default Credentials), or with
``--local`` against the emulators of a running ``tagrelay run``. The alias is checked against
the routes file (``--routes``, ``$TAGRELAY_ROUTES``, or the local stack's) when there is one.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tagrelay.core import control
from tagrelay.core.aliases import alias_key
from tagrelay.core.errors import RoutesError, TransientError
from tagrelay.core.ports import AliasRecords
from tagrelay.core.routes import Forward, Reject, Routes, load_file
from tagrelay_tools.localstack import running_state
from tagrelay_tools.terminal import printable, say, warn

DEFAULT_CACHE_SECONDS = control.DEFAULT_CACHE_SECONDS


class ControlError(Exception):
    """An alias or a setting the command cannot use; the message says what to do."""


def register(commands: Any) -> None:
    parsers = {
        "block": commands.add_parser("block", help="refuse an alias's mail (406) within a minute, no redeploy"),
        "unblock": commands.add_parser("unblock", help="deliver a blocked alias's mail again"),
        "lock": commands.add_parser("lock", help="let only the sender domains seen so far write to an alias"),
        "unlock": commands.add_parser("unlock", help="let every sender write to a locked alias again"),
        "block-link": commands.add_parser("block-link", help="print the signed one-click link that blocks an alias"),
    }
    for name, parser in parsers.items():
        parser.add_argument("alias", help="the alias, e.g. shop@example.org (covers shop+anything@example.org)")
        parser.add_argument("--routes", type=Path, default=None, help="rules file to check the alias against")
        if name != "block-link":
            parser.add_argument("--project", default="", help="default: $GOOGLE_CLOUD_PROJECT")
            parser.add_argument("--local", action="store_true", help="use the emulators of a running 'tagrelay run'")
        parser.set_defaults(func=cmd_change, change=name)
    mode = parsers["lock"].add_mutually_exclusive_group()
    mode.add_argument(
        "--hold", dest="mode", action="store_const", const="hold", help="hold others for review (default)"
    )
    mode.add_argument("--refuse", dest="mode", action="store_const", const="refuse", help="refuse others with 406")
    parsers["lock"].add_argument(
        "--allow", action="append", default=[], metavar="DOMAIN", help="also let this sender domain through"
    )
    parsers["lock"].set_defaults(mode=control.DEFAULT_LOCK_MODE)
    link = parsers["block-link"]
    link.add_argument(
        "--url", default="", help="ingest's public URL (default: $TAGRELAY_PUBLIC_URL or the local stack)"
    )
    link.set_defaults(func=cmd_block_link)


def routes_for(path: Path | None) -> Routes | None:
    """The routes to check an alias against: ``path``, ``$TAGRELAY_ROUTES``, the local stack's, else none."""
    state = running_state() or {}
    given = path or os.environ.get("TAGRELAY_ROUTES", "") or state.get("routes", "")
    if not given:
        return None
    try:
        return load_file(str(given))
    except RoutesError as exc:
        raise ControlError(exc.reason) from None


def checked_alias(given: str, routes: Routes | None) -> str:
    """The alias key of ``given``; ControlError when it is not an address, or not one of our aliases."""
    alias = alias_key(given)
    if alias is None:
        raise ControlError(f"{given!r} is not an address")
    if routes is not None:
        domain = alias.rpartition("@")[2]
        if domain not in routes.domains:
            raise ControlError(f"{alias} is not in our domains ({', '.join(sorted(routes.domains))})")
        resolved = routes.resolve(alias)
        if not isinstance(resolved, Forward) and "blocked" not in resolved.reason:
            raise ControlError(f"{alias}: {resolved.reason}; it receives no mail to control")
    return alias


def changes(
    name: str, args: argparse.Namespace
) -> Callable[[dict[str, Any] | None, str, float], dict[str, Any] | None]:
    if name == "block":
        return control.block_change
    if name == "unblock":
        return control.unblock_change
    if name == "unlock":
        return control.unlock_change
    return lambda record, alias, now: control.lock_change(record, alias, args.mode, now, args.allow)


def apply(store: AliasRecords, name: str, alias: str, now: float, args: argparse.Namespace) -> list[str]:
    """Make the change; the lines that say what changed (or why nothing did) and when it takes effect."""
    change = changes(name, args)
    before, written = store.change_alias(alias, lambda record: change(record, alias, now))
    was = str((before or {}).get("state", "active"))
    if written is None:
        if name == "lock" and was == "locked":
            return [f"{alias} is already locked ({(before or {}).get('lock_mode', '')}) to the same domains"]
        return [f"{alias} is {was}: nothing to {name}"]
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(now))
    lines = [f"{alias}: {was} → {written['state']} at {when}"]
    if name == "lock":
        allowed = list(written.get("allowed", []))
        mode = "held for review ('tagrelay refusals list --held')" if args.mode == "hold" else "refused (406)"
        lines.append(f"  allowed sender domains ({len(allowed)}): {', '.join(allowed) or '(none)'}")
        left_out = [d for d in control.suspect_domains(before) if d not in allowed]
        if left_out:
            lines.append(
                f"  not allowed: flagged as a leak or first seen since one: {', '.join(left_out)} (add with --allow)"
            )
        lines.append(f"  mail from any other domain, or not authenticated by SPF/DKIM as its From, is {mode}")
        if not allowed:
            lines.append("  warning: no sender domains recorded yet: every message will be " + mode.split(" (")[0])
    if name == "block":
        lines.append(f"  mail to {alias} and {alias.replace('@', '+…@', 1)} is refused with 406")
    cache = os.environ.get("TAGRELAY_ALIAS_CACHE_SECONDS", "") or f"{DEFAULT_CACHE_SECONDS:g}"
    lines.append(f"  takes effect within {cache} s (each ingest instance's cache; no redeploy, no restart)")
    return lines


def _store(args: argparse.Namespace) -> AliasRecords:
    from tagrelay.adapters.aliases import FirestoreAliases
    from tagrelay.adapters.ledger import default_firestore
    from tagrelay_tools.ops import _project

    return FirestoreAliases(default_firestore(_project(args)), timeout=10.0)


def cmd_change(args: argparse.Namespace) -> int:
    try:
        routes = routes_for(args.routes)
        alias = checked_alias(args.alias, routes)
        lines = apply(_store(args), args.change, alias, time.time(), args)
        if routes is not None and routes.resolve(alias) == Reject(alias, "blocked alias"):
            lines.append(f"  note: {alias} is also in the routes file's blocked list; that one stays until edited")
    except ControlError as exc:
        warn(f"error: {exc}")
        return 2
    except TransientError as exc:
        warn(f"error: {exc.reason}")
        return 1
    say(*lines)
    return 0


def block_link(alias: str, now: float, base_url: str = "", reply_key: str = "") -> str:
    """The one-click link that blocks ``alias`` (for the leak notice and ``tagrelay aliases``).

    ``base_url``: ingest's public URL (default ``$TAGRELAY_PUBLIC_URL``, else the running local
    stack's ingest); ``reply_key``: the current reply key (default ``$TAGRELAY_REPLY_KEY``, else
    the local stack's). ControlError when either is unknown.
    """
    from tagrelay.core.config import load_public_url
    from tagrelay.core.errors import ConfigError

    state = running_state() or {}
    try:
        base = base_url or load_public_url(os.environ) or str(state.get("ingest_url", ""))
    except ConfigError as exc:
        raise ControlError(exc.problems[0]) from None
    key = reply_key or os.environ.get("TAGRELAY_REPLY_KEY", "") or str(state.get("reply_key", ""))
    if not base:
        raise ControlError("no ingest URL: set TAGRELAY_PUBLIC_URL (or pass --url), or start 'tagrelay run'")
    if not key:
        raise ControlError("no reply key (block links are signed with a key derived from it): set TAGRELAY_REPLY_KEY")
    return control.block_link(base, alias, now, control.link_key(key))


def cmd_block_link(args: argparse.Namespace) -> int:
    try:
        routes = routes_for(args.routes)
        alias = checked_alias(args.alias, routes)
        if routes is not None:
            resolved = routes.resolve(alias)
            if not isinstance(resolved, Forward) or not resolved.rule.block_link:
                raise ControlError(f"{alias}: its route has no 'block_link = true': the link would do nothing")
        link = block_link(alias, time.time(), base_url=args.url)
    except ControlError as exc:
        warn(f"error: {exc}")
        return 2
    days = control.LINK_SECONDS // 86400
    say(link, f"  opens a confirmation page; its button blocks {printable(alias)}. Valid {days} days.")
    return 0
