"""The one-click block link (issue 14), served by the ingest function at ``/block``.

``GET /block?a=ALIAS&x=EXPIRY&s=MAC`` answers a confirmation page and changes nothing: mail
scanners, link previews and prefetchers fetch links on their own. ``POST /block`` (the page's
button, the same three fields) blocks the alias:

- 200 "blocked": the alias is now blocked (ingest refuses it with 406 within its cache period);
- 200 "already blocked": a second click, or it was blocked meanwhile: nothing changes;
- 409: the owner unblocked the alias after this link was made: the later decision stands;
- 403: forged, altered, expired or malformed link, or a route without ``block_link = true``:
  nothing is read or written;
- 405 for other methods; 503 when the key or the alias store does not answer (click again).

The link carries its own MAC (``tagrelay.core.control``); the route key ``k`` is for Mailgun's
posts, not for links. Every value on a page is escaped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from tagrelay.core import control
from tagrelay.core.errors import TransientError
from tagrelay.core.log import event
from tagrelay.core.ports import AliasRecords, KeySource
from tagrelay.core.routes import Forward, Routes

TITLE = "tagrelay"


@dataclass(frozen=True)
class Page:
    status: int
    html: str
    headers: Mapping[str, str] = field(default_factory=lambda: dict(control.PAGE_HEADERS))


class BlockLinks:
    def __init__(
        self,
        routes: Routes,
        reply_keys: Sequence[KeySource],
        aliases: AliasRecords,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._routes = routes
        self._keys = tuple(reply_keys)  # current first, then the previous one during a rotation
        self._aliases = aliases
        self._clock = clock

    def handle(self, method: str, params: Mapping[str, str]) -> Page:
        if method not in ("GET", "HEAD", "POST"):
            return Page(405, control.page(TITLE, "This link is opened in a browser."), {**control.PAGE_HEADERS})
        now = self._clock()
        try:
            link = control.check_link(params, now, self._link_keys())
        except control.BadLink as exc:
            event(logging.INFO, f"block link refused: {exc}", stage="ingest", outcome="http 403")
            return Page(403, control.page(TITLE, f"Nothing was changed: {exc}."))
        except TransientError as exc:
            return self._unavailable(exc)
        resolved = self._routes.resolve(link.alias)
        if not isinstance(resolved, Forward) or not resolved.rule.block_link:
            event(logging.INFO, "block link for a route without block_link", stage="ingest", alias=link.alias,
                  outcome="http 403")  # fmt: skip
            return Page(403, control.page(TITLE, "Nothing was changed: block links are off for this alias."))
        if method != "POST":
            fields = {"a": link.alias, "x": str(link.expiry), "s": params.get("s", "").lower()}
            text = f"Block {link.alias}? Mail to it will be refused from about a minute after you confirm."
            return Page(200, control.page(TITLE, text, form=fields))
        try:
            before, written = self._aliases.change_alias(link.alias, lambda r: control.link_change(r, link, now))
        except TransientError as exc:
            return self._unavailable(exc)
        if written is not None:
            event(logging.WARNING, "alias blocked by its block link", stage="ingest", alias=link.alias,
                  outcome="blocked")  # fmt: skip
            return Page(200, control.page(TITLE, f"{link.alias} is blocked. Mail to it is refused from now on."))
        if control.link_answer(before, link) == "already":
            return Page(200, control.page(TITLE, f"{link.alias} is already blocked. Nothing was changed."))
        text = f"{link.alias} was unblocked after this link was made. Nothing was changed."
        return Page(409, control.page(TITLE, text))

    def _link_keys(self) -> list[bytes]:
        keys = [control.link_key(self._keys[0].get())]  # SecretUnavailable: 503
        for source in self._keys[1:]:
            try:
                keys.append(control.link_key(source.get()))
            except TransientError:
                continue  # a missing previous key only narrows what verifies
        return keys

    def _unavailable(self, exc: TransientError) -> Page:
        event(logging.ERROR, f"block link: {exc.reason}", stage="ingest", outcome="http 503")
        return Page(503, control.page(TITLE, "Temporarily unavailable: nothing was changed. Try again in a minute."))
