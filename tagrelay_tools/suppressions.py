"""``tagrelay suppressions list|clear``: Mailgun's bounce, complaint and unsubscribe lists.

Once an address is on one of them, Mailgun accepts every send to it and then drops it
(``failed``, reason ``suppress-bounce`` / ``suppress-complaint`` / ``suppress-unsubscribe``):
for a forward target that is all of the alias's mail, lost until the address is cleared.

    GET    /v3/<domain>/<list>             {"items": [...], "paging": {"next": URL, ...}}
    DELETE /v3/<domain>/<list>/<address>   removed, or 404 (not on that list)

(https://documentation.mailgun.com/docs/mailgun/api-reference/send/mailgun/bounces, .../complaints,
.../unsubscribe). ``list`` walks each list page by page (bounded, see ``mailgun_api``); ``clear``
deletes the address from each list it is on, says which, and prints the command that sends again
what was lost meanwhile. What Mailgun returns (addresses, SMTP errors) is printed escaped.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import quote

import requests

from tagrelay.core.routes import Routes
from tagrelay_tools.mailgun_api import MailgunApi, MailgunApiError, Target, TargetError, add_target_arguments, target
from tagrelay_tools.terminal import say, warn

LISTS = ("bounces", "complaints", "unsubscribes")
PAGE_LIMIT = 1000  # Mailgun's maximum page size for the suppression lists
REASONS = {"bounces": "suppress-bounce", "complaints": "suppress-complaint", "unsubscribes": "suppress-unsubscribe"}


@dataclass(frozen=True)
class Suppression:
    """One entry: which list, the address, and what Mailgun recorded about it."""

    list: str
    address: str
    created_at: str = ""
    code: str = ""
    error: str = ""

    @classmethod
    def from_json(cls, name: str, item: dict[str, Any]) -> Suppression:
        return cls(
            list=name,
            address=str(item.get("address", "")),
            created_at=str(item.get("created_at", "")),
            code=str(item.get("code", "") or ""),
            error=str(item.get("error", "") or ""),
        )

    def describe(self) -> str:
        detail = " ".join(part for part in (self.code, self.error) if part)
        return f"{self.list[:-1]} since {self.created_at or '?'}" + (f": {detail}" if detail else "")


class SuppressionsClient:
    def __init__(self, api: MailgunApi, domain: str) -> None:
        self._api = api
        self._domain = domain.strip().rstrip(".").lower()

    def _path(self, name: str, address: str = "") -> str:
        path = f"/v3/{self._domain}/{name}"
        # safe="@": an address can never turn into another path ("../", "?", "#" are escaped)
        return f"{path}/{quote(address.strip().lower(), safe='@')}" if address else path

    def entries(self, name: str) -> list[Suppression]:
        """Every entry of one list, page by page."""
        return [
            Suppression.from_json(name, item)
            for page in self._api.pages(self._path(name), {"limit": PAGE_LIMIT})
            for item in page
        ]

    def all(self) -> dict[str, list[Suppression]]:
        return {name: self.entries(name) for name in LISTS}

    def clear(self, address: str) -> list[str]:
        """Delete ``address`` from each list; the names of the lists it was on."""
        removed = []
        for name in LISTS:
            if self._api.call("DELETE", self._path(name, address), absent_ok=True) is not None:
                removed.append(name)
        return removed


# Which suppressed addresses are forward targets (``tagrelay status``) --------------------

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True)
class Watched:
    """An address the routes file can send to: literal, or a template (``owner+{tag}@gmail.com``)."""

    template: str
    why: str  # "route #2 forward", "route #2 fallback", "route #2 notify"

    @property
    def templated(self) -> bool:
        return bool(_PLACEHOLDER.search(self.template))

    def matches(self, address: str) -> bool:
        """Could this target be ``address``? A placeholder stands for any non-empty text without "@"
        ({detail} may be empty): Mailgun suppresses exact addresses, so every tag is its own entry."""
        pattern = "".join(
            (r"[^@]*" if piece == "detail" else r"[^@]+") if i % 2 else re.escape(piece)
            for i, piece in enumerate(_PLACEHOLDER.split(self.template))
        )
        if "{detail}" in self.template:  # "+{detail}" with an empty detail leaves no "+" behind
            pattern = pattern.replace(re.escape("+") + r"[^@]*", r"(?:\+[^@]*)?")
        return re.fullmatch(pattern, address.strip(), re.IGNORECASE) is not None


def watched_targets(routes: Routes) -> list[Watched]:
    """Every address the rules can forward to or notify: forward templates, fallbacks, notify addresses."""
    found: dict[str, Watched] = {}
    for rule in routes.rules:
        where = f"route #{rule.index} ({rule.match})"
        for template in rule.forward:
            found.setdefault(template.lower(), Watched(template.lower(), f"{where} forward"))
        found.setdefault(rule.fallback.lower(), Watched(rule.fallback.lower(), f"{where} fallback"))
        if rule.notify:
            found.setdefault(rule.notify.lower(), Watched(rule.notify.lower(), f"{where} notify"))
    return list(found.values())


def suppressed_targets(
    watched: list[Watched], lists: dict[str, list[Suppression]]
) -> list[tuple[Suppression, list[Watched]]]:
    """Each suppression entry that a watched target can be, with the targets it can be."""
    hits = []
    for name in LISTS:
        for entry in lists.get(name, []):
            why = [target for target in watched if target.matches(entry.address)]
            if why:
                hits.append((entry, why))
    return hits


# The command line ------------------------------------------------------------


def register(commands: Any) -> None:
    parser = commands.add_parser("suppressions", help="Mailgun's bounce, complaint and unsubscribe lists")
    actions = parser.add_subparsers(dest="suppressions_command", required=True)
    listing = actions.add_parser("list", help="every suppressed address, from all three lists")
    listing.add_argument("--json", action="store_true", help="one JSON document instead of lines")
    add_target_arguments(listing)
    listing.set_defaults(func=cmd_list)
    clear = actions.add_parser(
        "clear",
        help="take ADDRESS off every suppression list, so Mailgun delivers to it again",
        description="Then replay what was lost meanwhile: tagrelay deadletters replay.",
    )
    clear.add_argument("address")
    add_target_arguments(clear)
    clear.set_defaults(func=cmd_clear)


def _with_client(args: argparse.Namespace, action: Callable[[SuppressionsClient, Target], int]) -> int:
    try:
        where = target(args)
        with requests.Session() as session:
            return action(SuppressionsClient(MailgunApi(session, where.base, where.api_key), where.domain), where)
    except TargetError as exc:
        warn(f"error: {exc.reason}")
        return 2
    except MailgunApiError as exc:
        warn(f"error: {exc.reason}")
        return 1


def cmd_list(args: argparse.Namespace) -> int:
    def show(client: SuppressionsClient, where: Target) -> int:
        lists = client.all()
        if args.json:
            # json.dumps escapes every control character; say() escapes the rest
            say(json.dumps({name: [asdict(e) for e in entries] for name, entries in lists.items()}, sort_keys=True))
        else:
            show_lists(where.domain, lists)
        return 0

    return _with_client(args, show)


def show_lists(domain: str, lists: dict[str, list[Suppression]]) -> None:
    total = sum(len(entries) for entries in lists.values())
    if not total:
        say(f"no suppressed addresses for {domain}")
        return
    say(f"{total} suppressed address(es) for {domain}; mail to them is accepted by Mailgun and dropped:")
    for name in LISTS:
        for entry in lists.get(name, []):
            say(f"  {entry.address:<40} {entry.describe()}")
    say("clear one with: tagrelay suppressions clear ADDRESS")


def cmd_clear(args: argparse.Namespace) -> int:
    def clear(client: SuppressionsClient, where: Target) -> int:
        local = " --local" if where.local else ""
        removed = client.clear(args.address)
        if not removed:
            say(f"{args.address} is on none of {where.domain}'s suppression lists; nothing to clear")
            return 0
        say(
            f"{args.address}: removed from {', '.join(removed)}; Mailgun delivers to it again",
            "next: send again what was dead-lettered while it was suppressed (see them: tagrelay deadletters"
            f" list{local}):",
            f"  tagrelay deadletters replay{local}",
            "  (add --recipient ALIAS to replay one alias only)",
        )
        return 0

    return _with_client(args, clear)
