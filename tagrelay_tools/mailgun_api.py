"""The account side of Mailgun's API for the operator tools: one call with a timeout, one error.

Webhooks (``tagrelay mailgun ensure-webhooks``) and suppressions (``tagrelay suppressions``,
the check in ``tagrelay status``) go through :class:`MailgunApi`; the Routes API keeps its own
client in ``mailgun_setup``. Every call has a (connect, read) timeout; every failure becomes a
:class:`MailgunApiError` that names what to do (the usual 401 is an EU account on the US base).

Which Mailgun to talk to (:func:`target`): the real one from ``MAILGUN_API_KEY``, the domain
(``--domain``, else ``MAILGUN_DOMAIN``) and the base (``--api-base``, ``--eu``,
``MAILGUN_API_BASE``, else the US base), or with ``--local`` the Mailgun stand-in of a running
``tagrelay run`` (its URL, key and domain from the stack's state file).

Lists are paged the way Mailgun documents it (``{"items": [...], "paging": {"next": URL}}``;
an empty page ends the list). :meth:`MailgunApi.pages` follows ``next`` only to the same
scheme, host and path it started from (the API key goes with every request, so a ``next`` that
points elsewhere is refused, never followed) and stops after ``MAX_PAGES`` pages.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests

from tagrelay.adapters.mailgun import CONNECT_TIMEOUT_SECONDS
from tagrelay.core.config import DEFAULT_API_BASE, EU_API_BASE
from tagrelay.core.errors import TagrelayError

API_KEY_VARIABLE = "MAILGUN_API_KEY"
API_BASE_VARIABLE = "MAILGUN_API_BASE"
DOMAIN_VARIABLE = "MAILGUN_DOMAIN"
READ_TIMEOUT_SECONDS = 30.0
MAX_PAGES = 100  # 100 pages of up to 1,000 suppressions: far beyond a small domain; ends a list that never ends


class MailgunApiError(TagrelayError):
    """Mailgun refused or failed a call; ``status`` is the HTTP status (0 when there was no answer)."""

    def __init__(self, reason: str, status: int = 0) -> None:
        super().__init__(reason)
        self.status = status


class MailgunApi:
    """Basic-auth calls to one Mailgun API base, each with a timeout."""

    def __init__(
        self, session: requests.Session, base: str, api_key: str, timeout: float = READ_TIMEOUT_SECONDS
    ) -> None:
        self.session = session
        self.base = base.rstrip("/")
        self._auth = ("api", api_key)
        self._timeout = (CONNECT_TIMEOUT_SECONDS, timeout)

    def call(
        self,
        method: str,
        path: str,
        params: Mapping[str, Any] | None = None,
        data: list[tuple[str, str]] | None = None,
        absent_ok: bool = False,
    ) -> dict[str, Any] | None:
        """``method`` on ``path`` (under the base, or a full URL on it); None for a 404 when ``absent_ok``."""
        url = path if path.startswith(("http://", "https://")) else f"{self.base}{path}"
        what = f"{method} {urlsplit(url).path}"
        try:
            response = self.session.request(
                method, url, params=params, data=data, auth=self._auth, timeout=self._timeout
            )
        except requests.Timeout:
            raise MailgunApiError(f"Mailgun did not answer {what} in time") from None
        except requests.ConnectionError:
            raise MailgunApiError(f"cannot connect to {_host(url)}; check the network and the API base") from None
        except requests.RequestException as exc:
            raise MailgunApiError(f"{what} failed ({type(exc).__name__})") from None
        status = response.status_code
        if status == 404 and absent_ok:
            return None
        if status == 401:
            raise MailgunApiError(
                f"Mailgun refused the API key (401) at {_host(url)}: check {API_KEY_VARIABLE}, and that the "
                f"account is in this region (EU accounts need {EU_API_BASE}: --eu or {API_BASE_VARIABLE})",
                status,
            )
        if not 200 <= status < 300:
            hint = "; try again later" if status >= 500 or status == 429 else ""
            raise MailgunApiError(f"Mailgun answered {status} to {what}: {_message(response)}{hint}", status)
        try:
            body = response.json()
        except ValueError:
            raise MailgunApiError(f"Mailgun answered {what} with something that is not JSON") from None
        if not isinstance(body, dict):
            raise MailgunApiError(f"Mailgun answered {what} with unexpected JSON")
        return body

    def pages(self, path: str, params: Mapping[str, Any] | None = None) -> Iterator[list[dict[str, Any]]]:
        """The ``items`` of each page of a paged list, following ``paging.next`` (bounded, same origin)."""
        start = urlsplit(f"{self.base}{path}")
        url: str = path
        query: Mapping[str, Any] | None = params
        seen: set[str] = set()
        for _ in range(MAX_PAGES):
            body = self.call("GET", url, params=query) or {}
            items = body.get("items")
            if not isinstance(items, list):
                raise MailgunApiError(f"Mailgun's list at {path} has no 'items'")
            if not items:
                return
            yield [item for item in items if isinstance(item, dict)]
            paging = body.get("paging")
            following = paging.get("next") if isinstance(paging, dict) else None
            if not isinstance(following, str) or not following or following in seen:
                return
            there = urlsplit(following)
            if (there.scheme, there.netloc, there.path) != (start.scheme, start.netloc, start.path):
                raise MailgunApiError(f"Mailgun's list at {path} pointed its next page elsewhere; not followed")
            seen.add(following)
            url, query = following, None
        raise MailgunApiError(f"Mailgun's list at {path} did not end after {MAX_PAGES} pages")


@dataclass(frozen=True)
class Target:
    """Which Mailgun a command talks to."""

    base: str
    api_key: str
    domain: str
    local: bool = False


class TargetError(TagrelayError):
    """The command line or environment does not say which Mailgun to use; nothing was sent."""


def add_target_arguments(parser: argparse.ArgumentParser, domain: bool = True) -> None:
    """``--domain``, ``--api-base``, ``--eu`` and ``--local``, as every Mailgun command takes them."""
    if domain:
        parser.add_argument("--domain", default="", help=f"the Mailgun domain (default: ${DOMAIN_VARIABLE})")
    parser.add_argument("--api-base", default=None, help=f"default: ${API_BASE_VARIABLE}, else {DEFAULT_API_BASE}")
    parser.add_argument("--eu", action="store_true", help=f"use the EU base, {EU_API_BASE}")
    parser.add_argument(
        "--local", action="store_true", help="use a running 'tagrelay run' (its emulators and Mailgun stand-in)"
    )


def target(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> Target:
    """The Mailgun of ``args`` (see the module docstring); raises TargetError naming what is missing."""
    env = os.environ if env is None else env
    if getattr(args, "local", False):
        from tagrelay_tools.localstack import STATE_FILE, running_state

        state = running_state()
        if state is None:
            raise TargetError(f"no running local stack ({STATE_FILE} missing); start 'tagrelay run'")
        if not state.get("api_key") or not state.get("standin_url"):
            raise TargetError(f"{STATE_FILE} has no Mailgun stand-in key; restart 'tagrelay run'")
        return Target(str(state["standin_url"]), str(state["api_key"]), str(state.get("domain", "example.org")), True)
    key = env.get(API_KEY_VARIABLE, "").strip()
    if not key:
        raise TargetError(f"{API_KEY_VARIABLE} is not set: put the Mailgun API key there (or --local)")
    domain = (getattr(args, "domain", "") or env.get(DOMAIN_VARIABLE, "")).strip().rstrip(".").lower()
    if not domain:
        raise TargetError(f"no domain: pass --domain example.org or set {DOMAIN_VARIABLE}")
    return Target(api_base(getattr(args, "api_base", None), env, getattr(args, "eu", False)), key, domain)


def api_base(explicit: str | None, env: Mapping[str, str], eu: bool = False) -> str:
    """The API base: ``--api-base``, else ``--eu``, else ``MAILGUN_API_BASE``, else the US base."""
    base = (explicit or (EU_API_BASE if eu else "") or env.get(API_BASE_VARIABLE, "") or DEFAULT_API_BASE).strip()
    parsed = urlsplit(base)
    if parsed.scheme not in ("https", "http") or not parsed.netloc:
        raise TargetError(f"API base {base!r} is not a URL; put {DEFAULT_API_BASE} or {EU_API_BASE}")
    return base.rstrip("/")


def _host(url: str) -> str:
    return urlsplit(url).netloc or url


def _message(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return (response.text or response.reason or "").strip()[:200]
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return str(body["message"])[:200]
    return response.reason or ""
