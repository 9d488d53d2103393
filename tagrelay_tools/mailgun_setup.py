"""Mailgun's Routes API: one route that hands a domain's mail to ingest.

Routes belong to the Mailgun account, not to a domain, so ours is recognised by
its description, ``tagrelay: <domain>``. :meth:`RoutesClient.ensure_route`
creates it, updates it in place when its expression, actions or priority
differ, and otherwise leaves it alone: running it twice never makes two routes.

    GET    /v3/routes?skip=N&limit=M   {"total_count": N, "items": [route, ...]}
    POST   /v3/routes                  {"message": "...", "route": route}
    PUT    /v3/routes/<id>             {"message": "...", ...}
    DELETE /v3/routes/<id>             {"message": "...", "id": "<id>"}

A route is ``{"id", "priority", "description", "expression", "actions", "created_at"}``.
Requests are form-encoded, ``action`` is repeated once per action, and the
account's API key goes in basic auth as ``api:KEY``. Every call has a timeout.

The command ``tagrelay mailgun ensure-route --domain D --url URL`` reads the key
from ``MAILGUN_API_KEY`` (never from the command line) and prints the outcome.
With ``TAGRELAY_ROUTE_KEY`` in its environment the route forwards to ``URL?k=KEY``:
ingest refuses posts without that key, a second factor besides Mailgun's
signature. The key is never printed; a changed key updates the route in place.

Event webhooks (issue 12) belong to a domain: ``tagrelay mailgun ensure-webhooks URL``
points ``delivered``, ``permanent_fail``, ``temporary_fail`` and ``complained`` at the
events function through ``/v3/domains/<domain>/webhooks`` (:class:`WebhooksClient`):

    GET    /v3/domains/<d>/webhooks        {"webhooks": {"delivered": {"urls": [URL, ...]}, ...}}
    POST   /v3/domains/<d>/webhooks        form id=<webhook id>, url=URL   (the id is absent)
    PUT    /v3/domains/<d>/webhooks/<id>   form url=URL                    (its URLs differ)
    DELETE /v3/domains/<d>/webhooks/<id>

(https://documentation.mailgun.com/docs/mailgun/api-reference/send/mailgun/domain-webhooks).
A webhook id that already posts exactly to URL is left alone; one that posts elsewhere is
replaced with URL and the command says which URLs it replaced; other webhook ids (``opened``,
``clicked``, ...) are never touched. ``--dry-run`` reads and says what it would do.
``tagrelay mailgun delete-webhooks URL`` takes URL off those four ids again (teardown).
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlencode, urlparse

import requests

from tagrelay.core.config import DEFAULT_API_BASE
from tagrelay.core.config import EU_API_BASE as EU_API_BASE
from tagrelay.core.errors import TagrelayError
from tagrelay_tools import mailgun_api
from tagrelay_tools.mailgun_api import (
    API_BASE_VARIABLE,
    API_KEY_VARIABLE,
    READ_TIMEOUT_SECONDS,
    MailgunApi,
    MailgunApiError,
    TargetError,
    add_target_arguments,
    target,
)
from tagrelay_tools.mailgun_posts import ROUTE_KEY_PARAMETER, ROUTE_KEY_VARIABLE
from tagrelay_tools.terminal import say, warn

US_API_BASE = DEFAULT_API_BASE  # the relay's default; one definition, in tagrelay.core.config
PAGE_SIZE = 100  # Mailgun caps list pages at 100
MAX_PAGES = 100  # 10,000 routes: far beyond any account; stops a server that never ends the list
DESCRIPTION_PREFIX = "tagrelay: "
_DOMAIN = re.compile(r"(?=.{1,253}\Z)([A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}")

Outcome = Literal["created", "updated", "unchanged"]


class RoutesApiError(MailgunApiError):
    """The Routes API refused or failed; ``status`` is the HTTP status (0 when there was no answer)."""

    def __init__(self, reason: str, status: int = 0) -> None:
        super().__init__(reason, status)
        self.status = status


class InvalidRoute(TagrelayError):
    """The domain or URL cannot make a valid route; nothing was sent."""


@dataclass(frozen=True)
class RouteSpec:
    """What our route should look like."""

    description: str
    expression: str
    actions: tuple[str, ...]
    priority: int = 0


@dataclass(frozen=True)
class Route:
    """A route as Mailgun reports it."""

    id: str
    description: str
    expression: str
    actions: tuple[str, ...]
    priority: int
    created_at: str = ""

    @classmethod
    def from_json(cls, item: object) -> Route:
        if not isinstance(item, Mapping) or not isinstance(item.get("id"), str):
            raise RoutesApiError("Mailgun returned a route without an id")
        actions = item.get("actions") or []
        if not isinstance(actions, list):
            raise RoutesApiError(f"Mailgun returned route {item['id']} with malformed actions")
        try:
            priority = int(item.get("priority") or 0)
        except (TypeError, ValueError):
            raise RoutesApiError(f"Mailgun returned route {item['id']} with a malformed priority") from None
        return cls(
            id=item["id"],
            description=str(item.get("description") or ""),
            expression=str(item.get("expression") or ""),
            actions=tuple(str(action) for action in actions),
            priority=priority,
            created_at=str(item.get("created_at") or ""),
        )

    def matches(self, spec: RouteSpec) -> bool:
        return (
            _normal(self.expression) == _normal(spec.expression)
            and [_normal(a) for a in self.actions] == [_normal(a) for a in spec.actions]
            and self.priority == spec.priority
        )


def description_for(domain: str) -> str:
    return f"{DESCRIPTION_PREFIX}{domain.lower()}"


def route_spec(domain: str, url: str, priority: int = 0, route_key: str = "") -> RouteSpec:
    """Every recipient at ``domain`` is forwarded to ``url`` (with ``?k=route_key``), and no later route runs."""
    domain = domain.strip().rstrip(".").lower()
    if not _DOMAIN.fullmatch(domain):
        raise InvalidRoute(
            f"--domain {domain!r} is not a domain name; put the Mailgun receiving domain, e.g. example.org"
        )
    parsed = urlparse(url)
    if parsed.scheme not in ("https", "http") or not parsed.netloc or re.search(r'[\s"\\]', url):
        raise InvalidRoute(f"--url {url!r} is not an http(s) URL; put the ingest URL ending in /mime")
    if route_key:
        if parsed.query or parsed.fragment:
            raise InvalidRoute(f"--url {url!r} already has a query or fragment; put the bare ingest URL")
        url = f"{url}?{urlencode({ROUTE_KEY_PARAMETER: route_key})}"
    pattern = ".*@" + re.escape(domain)
    return RouteSpec(
        description=description_for(domain),
        expression=f'match_recipient("{pattern}")',
        actions=(f'forward("{url}")', "stop()"),
        priority=priority,
    )


def api_base(explicit: str | None, env: Mapping[str, str], eu: bool = False) -> str:
    """The API base: ``--api-base``, else ``--eu``, else ``MAILGUN_API_BASE``, else the US base."""
    try:
        return mailgun_api.api_base(explicit, env, eu)
    except TargetError as exc:
        raise InvalidRoute(exc.reason) from None


class RoutesClient:
    def __init__(
        self, session: requests.Session, base: str, api_key: str, timeout: float = READ_TIMEOUT_SECONDS
    ) -> None:
        self._api = MailgunApi(session, base, api_key, timeout)
        self._url = f"{self._api.base}/v3/routes"

    def list_routes(self) -> list[Route]:
        """Every route of the account, page by page."""
        return list(self._iter_routes())

    def _iter_routes(self) -> Iterator[Route]:
        skip = 0
        for _ in range(MAX_PAGES):
            body = self._call("GET", self._url, params={"skip": skip, "limit": PAGE_SIZE})
            items = body.get("items")
            if not isinstance(items, list):
                raise RoutesApiError("Mailgun's route list has no 'items'")
            for item in items:
                yield Route.from_json(item)
            skip += len(items)
            total = body.get("total_count")
            if not items or len(items) < PAGE_SIZE or (isinstance(total, int) and skip >= total):
                return
        raise RoutesApiError(f"Mailgun's route list did not end after {MAX_PAGES} pages")

    def create(self, spec: RouteSpec) -> Route:
        body = self._call("POST", self._url, data=_form(spec))
        return Route.from_json(body.get("route"))

    def update(self, route_id: str, spec: RouteSpec) -> None:
        self._call("PUT", f"{self._url}/{route_id}", data=_form(spec))

    def delete(self, route_id: str) -> None:
        self._call("DELETE", f"{self._url}/{route_id}")

    def find(self, domain: str) -> list[Route]:
        """Our routes for ``domain`` (normally one), oldest listing first."""
        wanted = description_for(domain.strip().rstrip("."))
        return [route for route in self._iter_routes() if route.description.strip().lower() == wanted]

    def ensure_route(self, domain: str, url: str, priority: int = 0, route_key: str = "") -> Outcome:
        """Make the account hold exactly one tagrelay route for ``domain``, forwarding to ``url`` (and its key)."""
        spec = route_spec(domain, url, priority, route_key)
        ours = self.find(domain)
        if not ours:
            self.create(spec)
            return "created"
        keep, extras = ours[0], ours[1:]
        for extra in extras:  # a duplicate made by hand or by an interrupted run
            self.delete(extra.id)
        if keep.matches(spec):
            return "updated" if extras else "unchanged"
        self.update(keep.id, spec)
        return "updated"

    def delete_route(self, domain: str) -> Literal["deleted", "absent"]:
        ours = self.find(domain)
        for route in ours:
            self.delete(route.id)
        return "deleted" if ours else "absent"

    def _call(
        self,
        method: str,
        url: str,
        params: Mapping[str, Any] | None = None,
        data: list[tuple[str, str]] | None = None,
    ) -> dict[str, Any]:
        """One call through the tools' Mailgun client (timeouts, error wording), its errors as RoutesApiError."""
        try:
            return self._api.call(method, url, params=params, data=data) or {}
        except RoutesApiError:
            raise
        except MailgunApiError as exc:
            raise RoutesApiError(exc.reason, exc.status) from None


def _form(spec: RouteSpec) -> list[tuple[str, str]]:
    fields = [
        ("priority", str(spec.priority)),
        ("description", spec.description),
        ("expression", spec.expression),
    ]
    return fields + [("action", action) for action in spec.actions]


def _normal(text: str) -> str:
    """Mailgun echoes what it was given; tolerate its quote style and spacing when comparing."""
    return re.sub(r"\s+", "", text.replace("'", '"'))


def _redact(text: str, secret: str) -> str:
    """An error text without the route key (Mailgun may echo the action it refused)."""
    return text.replace(secret, "<route key>") if secret else text


# Event webhooks (issue 12) ----------------------------------------------------

EVENT_WEBHOOKS = ("delivered", "permanent_fail", "temporary_fail", "complained")
WebhookOutcome = Literal["created", "updated", "unchanged", "deleted", "absent"]


@dataclass(frozen=True)
class WebhookChange:
    """What ensure/remove did (or, in a dry run, would do) to one webhook id."""

    webhook: str
    outcome: WebhookOutcome
    before: tuple[str, ...] = ()


def webhook_url(url: str) -> str:
    """The events function's URL, checked: an http(s) URL without whitespace or quotes."""
    parsed = urlparse(url)
    if parsed.scheme not in ("https", "http") or not parsed.netloc or re.search(r'[\s"\\]', url):
        raise InvalidRoute(f"URL {url!r} is not an http(s) URL; put the events function's URL")
    return url


class WebhooksClient:
    """A domain's event webhooks through Mailgun's domain webhooks API."""

    def __init__(self, api: MailgunApi, domain: str) -> None:
        self._api = api
        self._path = f"/v3/domains/{domain.strip().rstrip('.').lower()}/webhooks"

    def current(self) -> dict[str, tuple[str, ...]]:
        """Every webhook id of the domain and its URLs (Mailgun's older ``url`` field read as well)."""
        body = self._api.call("GET", self._path) or {}
        hooks = body.get("webhooks")
        if not isinstance(hooks, dict):
            raise MailgunApiError("Mailgun's webhook list has no 'webhooks'")
        found: dict[str, tuple[str, ...]] = {}
        for name, hook in hooks.items():
            if not isinstance(hook, dict):
                continue
            urls = hook.get("urls")
            if isinstance(urls, list):
                found[str(name)] = tuple(str(u) for u in urls)
            elif isinstance(hook.get("url"), str):
                found[str(name)] = (str(hook["url"]),)
        return found

    def ensure(self, url: str, dry_run: bool = False) -> list[WebhookChange]:
        """Each of EVENT_WEBHOOKS posts exactly to ``url``: created, replaced or left alone."""
        url = webhook_url(url)
        current = self.current()
        changes = []
        for name in EVENT_WEBHOOKS:
            before = current.get(name)
            if before is None or not before:
                if not dry_run:
                    self._api.call("POST", self._path, data=[("id", name), ("url", url)])
                changes.append(WebhookChange(name, "created"))
            elif before == (url,):
                changes.append(WebhookChange(name, "unchanged", before))
            else:
                if not dry_run:
                    self._api.call("PUT", f"{self._path}/{name}", data=[("url", url)])
                changes.append(WebhookChange(name, "updated", before))
        return changes

    def remove(self, url: str, dry_run: bool = False) -> list[WebhookChange]:
        """``url`` off each of EVENT_WEBHOOKS: the id deleted when it was its only URL, else the rest kept."""
        url = webhook_url(url)
        current = self.current()
        changes = []
        for name in EVENT_WEBHOOKS:
            before = current.get(name, ())
            if url not in before:
                changes.append(WebhookChange(name, "absent", before))
                continue
            rest = [u for u in before if u != url]
            if not dry_run:
                if rest:
                    self._api.call("PUT", f"{self._path}/{name}", data=[("url", u) for u in rest])
                else:
                    self._api.call("DELETE", f"{self._path}/{name}")
            changes.append(WebhookChange(name, "updated" if rest else "deleted", before))
        return changes


# The command line ------------------------------------------------------------


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    mailgun = commands.add_parser("mailgun", help="manage the Mailgun side (the inbound route)")
    actions = mailgun.add_subparsers(dest="mailgun_command", required=True)
    key_note = f"The API key is read from {API_KEY_VARIABLE}, never from the command line."

    ensure = actions.add_parser(
        "ensure-route",
        help="create or update the route forwarding DOMAIN's mail to URL",
        description=(
            f'Make one route: match_recipient(".*@DOMAIN") → forward("URL?k=ROUTE_KEY") + stop(). {key_note} '
            f"The route key is read from {ROUTE_KEY_VARIABLE} (deploy.sh keeps it in Secret Manager)."
        ),
    )
    ensure.add_argument("--domain", required=True, help="the Mailgun receiving domain, e.g. example.org")
    ensure.add_argument("--url", required=True, help="the ingest URL, ending in /mime")
    ensure.add_argument("--priority", type=int, default=0, help="route priority (lower runs first; default 0)")
    _base_arguments(ensure)
    ensure.set_defaults(func=cmd_ensure_route)

    delete = actions.add_parser(
        "delete-route", help="delete tagrelay's route for DOMAIN", description=f"Delete the route. {key_note}"
    )
    delete.add_argument("--domain", required=True)
    _base_arguments(delete)
    delete.set_defaults(func=cmd_delete_route)

    hooks = actions.add_parser(
        "ensure-webhooks",
        help="point the delivered/failed/complained event webhooks at URL (the events function)",
        description=(
            f"Register URL for the webhook ids {', '.join(EVENT_WEBHOOKS)} of the domain: created when absent, "
            f"replaced when they post elsewhere, left alone when they already post to URL; other webhook ids are "
            f"never touched. {key_note}"
        ),
    )
    hooks.add_argument("url", help="the events function's URL")
    hooks.add_argument("--dry-run", action="store_true", help="read the webhooks and say what would change")
    add_target_arguments(hooks)
    hooks.set_defaults(func=cmd_ensure_webhooks)

    unhook = actions.add_parser(
        "delete-webhooks", help="take URL off the event webhooks (teardown)", description=f"{key_note}"
    )
    unhook.add_argument("url", help="the events function's URL")
    unhook.add_argument("--dry-run", action="store_true", help="read the webhooks and say what would change")
    add_target_arguments(unhook)
    unhook.set_defaults(func=cmd_delete_webhooks)


def _base_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--api-base", default=None, help=f"default: ${API_BASE_VARIABLE}, else {US_API_BASE}")
    parser.add_argument("--eu", action="store_true", help=f"use the EU base, {EU_API_BASE}")


def cmd_ensure_route(args: argparse.Namespace) -> int:
    route_key = os.environ.get(ROUTE_KEY_VARIABLE, "").strip()
    if not route_key:
        warn(f"warning: {ROUTE_KEY_VARIABLE} is not set: the route URL has no route key (deploy.sh always sets one)")
    return _with_client(
        args, lambda client: client.ensure_route(args.domain, args.url, args.priority, route_key), route_key
    )


def cmd_delete_route(args: argparse.Namespace) -> int:
    return _with_client(args, lambda client: client.delete_route(args.domain))


def _with_client(args: argparse.Namespace, action: Callable[[RoutesClient], str], route_key: str = "") -> int:
    key = os.environ.get(API_KEY_VARIABLE, "").strip()
    if not key:
        warn(f"error: {API_KEY_VARIABLE} is not set: put the Mailgun API key there")
        return 2
    try:
        base = api_base(args.api_base, os.environ, args.eu)
        with requests.Session() as session:
            outcome = action(RoutesClient(session, base, key))
    except InvalidRoute as exc:
        warn(f"error: {_redact(exc.reason, route_key)}")
        return 2
    except RoutesApiError as exc:  # may quote Mailgun's answer: escaped by warn()
        warn(f"error: {_redact(exc.reason, route_key)}")
        return 1
    say(f"mailgun route for {args.domain.lower()}: {outcome}")
    return 0


def cmd_ensure_webhooks(args: argparse.Namespace) -> int:
    return _with_webhooks(args, lambda client: client.ensure(args.url, args.dry_run))


def cmd_delete_webhooks(args: argparse.Namespace) -> int:
    return _with_webhooks(args, lambda client: client.remove(args.url, args.dry_run))


def _with_webhooks(args: argparse.Namespace, action: Callable[[WebhooksClient], list[WebhookChange]]) -> int:
    try:
        where = target(args)
        with requests.Session() as session:
            changes = action(WebhooksClient(MailgunApi(session, where.base, where.api_key), where.domain))
    except (TargetError, InvalidRoute) as exc:
        warn(f"error: {exc.reason}")
        return 2
    except MailgunApiError as exc:  # may quote Mailgun's answer: escaped by warn()
        warn(f"error: {exc.reason}")
        return 1
    would = "would be " if args.dry_run else ""
    for change in changes:
        line = f"mailgun webhook {change.webhook} for {where.domain}: {would}{change.outcome}"
        if change.outcome in ("updated", "deleted") and change.before:
            line += f" (was {', '.join(change.before)})"
        say(line)
    return 0
