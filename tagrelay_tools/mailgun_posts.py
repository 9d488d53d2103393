"""What Mailgun posts to a route URL: signed posts built from a real ``.eml``, and the post itself.

Used by ``tagrelay send``, the tests and the benchmarks, so that all of them
exercise ingest exactly as Mailgun does: the raw form (``body-mime``, route URL
ending in ``mime``) or the parsed form (``body-plain``, ``body-html``,
``message-headers``, ``attachment-N``, ``content-id-map``). :func:`sign_and_post`
builds one and posts it; :func:`deliver` posts one already built (a retry of the
same post, as Mailgun makes).
"""

from __future__ import annotations

import email
import email.policy
import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage, Message
from typing import Literal
from urllib.parse import urlencode

import requests
from urllib3 import encode_multipart_formdata

from tagrelay.core.headers import header_fields
from tagrelay.core.inbound import sign

FieldValue = str | bytes | tuple[str, bytes, str]
Form = Literal["mime", "parsed"]
POST_TIMEOUT_SECONDS = 30.0
ROUTE_KEY_VARIABLE = "TAGRELAY_ROUTE_KEY"  # where tooling finds the route key: the environment, never argv
ROUTE_KEY_PARAMETER = "k"  # the route URL's query parameter that carries it


@dataclass(frozen=True)
class Post:
    content_type: str
    body: bytes
    token: str
    path: str = "/mime"  # where on the ingest URL Mailgun posts this form: /mime for body-mime, / for parsed


def build(
    raw: bytes,
    recipient: str,
    sender: str,
    key: str,
    form: Form = "mime",
    timestamp: int | None = None,
    token: str | None = None,
) -> Post:
    """The signed post of either form."""
    make = mime_post if form == "mime" else parsed_post
    return make(raw, recipient, sender, key, timestamp, token)


def target(ingest_url: str, path: str, route_key: str = "") -> str:
    """Where Mailgun's route posts: the ingest URL, the form's path, and the route key as ``?k=``
    (the second factor deploy.sh writes into the route; "" for none)."""
    url = ingest_url.rstrip("/") + path
    return f"{url}?{urlencode({ROUTE_KEY_PARAMETER: route_key})}" if route_key else url


def deliver(
    ingest_url: str, post: Post, timeout: float = POST_TIMEOUT_SECONDS, route_key: str = ""
) -> requests.Response:
    """Post ``post`` to ingest as Mailgun does (to ``/mime`` for the raw form); the answer, whatever its status."""
    return requests.post(
        target(ingest_url, post.path, route_key),
        data=post.body,
        headers={"Content-Type": post.content_type},
        timeout=timeout,
    )


def sign_and_post(
    ingest_url: str,
    raw: bytes,
    recipient: str,
    sender: str,
    key: str,
    form: Form = "mime",
    timestamp: int | None = None,
    token: str | None = None,
    timeout: float = POST_TIMEOUT_SECONDS,
    route_key: str = "",
) -> requests.Response:
    """Sign ``raw`` for ``recipient`` as Mailgun would and post it to ingest (with the route key, if any)."""
    return deliver(ingest_url, build(raw, recipient, sender, key, form, timestamp, token), timeout, route_key)


def signature_fields(key: str, timestamp: int | None = None, token: str | None = None) -> dict[str, str]:
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    token = token or secrets.token_hex(25)
    return {"timestamp": stamp, "token": token, "signature": sign(key.encode("utf-8"), stamp, token)}


def mime_post(
    raw: bytes, recipient: str, sender: str, key: str, timestamp: int | None = None, token: str | None = None
) -> Post:
    """The form Mailgun posts when the route URL ends in ``mime``."""
    signed = signature_fields(key, timestamp, token)
    headers = _header_fields(raw)
    fields: list[tuple[str, FieldValue]] = [
        ("recipient", recipient),
        ("sender", sender),
        ("from", headers.get("From", "")),
        ("subject", headers.get("Subject", "")),
        *signed.items(),
        ("body-mime", raw),
    ]
    return _encode(fields, signed["token"], "/mime")


def parsed_post(
    raw: bytes, recipient: str, sender: str, key: str, timestamp: int | None = None, token: str | None = None
) -> Post:
    """The parsed form Mailgun posts when the route URL does not end in ``mime``."""
    signed = signature_fields(key, timestamp, token)
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    headers = _header_fields(raw)
    fields: list[tuple[str, FieldValue]] = [
        ("recipient", recipient),
        ("sender", sender),
        ("from", headers.get("From", "")),
        ("subject", headers.get("Subject", "")),
        ("message-headers", json.dumps([[k, v] for k, v in _raw_headers(raw)])),
        ("body-plain", _text_of(text)),
        ("body-html", _text_of(html)),
        *signed.items(),
    ]
    fields.extend(_raw_headers(raw))
    cid_map: dict[str, str] = {}
    attachments = [p for p in _leaves(message) if _is_attachment(p, (text, html))]
    fields.append(("attachment-count", str(len(attachments))))
    for number, part in enumerate(attachments, 1):
        name = f"attachment-{number}"
        fields.append((name, (part.get_filename() or name, _attachment_bytes(part), part.get_content_type())))
        if part["Content-ID"]:
            cid_map[str(part["Content-ID"]).strip()] = name
    if cid_map:
        fields.append(("content-id-map", json.dumps(cid_map)))
    return _encode(fields, signed["token"], "/")


def _leaves(part: Message) -> Iterator[Message]:
    """The parts that are not multipart containers; a message/* part is one leaf, not walked into."""
    if part.get_content_maintype() == "multipart" and isinstance(part.get_payload(), list):
        for child in part.get_payload():
            if isinstance(child, Message):
                yield from _leaves(child)
    else:
        yield part


def _is_attachment(part: Message, bodies: tuple[Message | None, ...]) -> bool:
    if any(part is body for body in bodies):
        return False
    return bool(part.get_filename() or part["Content-ID"] or part.get_content_disposition() == "attachment")


def _raw_headers(raw: bytes) -> list[tuple[str, str]]:
    """(Name, value) pairs as written, values on one line and raw UTF-8 decoded."""
    return [
        (field.raw.partition(b":")[0].decode("ascii", "replace").strip(), field.unfolded)
        for field in header_fields(raw)
        if field.name
    ]


def _header_fields(raw: bytes) -> dict[str, str]:
    return dict(_raw_headers(raw))


def _attachment_bytes(part: Message) -> bytes:
    """A file as Mailgun posts it: decoded bytes, or for a message/* part the message it holds."""
    payload = part.get_payload(decode=True)
    if isinstance(payload, bytes):
        return payload
    inner = part.get_payload()
    if isinstance(inner, list):  # message/rfc822 and friends: the email package parsed the message inside
        crlf = email.policy.compat32.clone(linesep="\r\n")
        return b"".join(m.as_bytes(policy=crlf) for m in inner if isinstance(m, Message))
    return b""


def _text_of(part: Message | None) -> str:
    """A text part's content; an unknown charset is read as UTF-8 rather than failing."""
    if part is None:
        return ""
    try:
        return str(part.get_content())  # type: ignore[attr-defined]
    except (LookupError, KeyError, UnicodeError):
        payload = part.get_payload(decode=True)
        return payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""


def _encode(fields: list[tuple[str, FieldValue]], token: str, path: str) -> Post:
    body, content_type = encode_multipart_formdata(fields)
    return Post(content_type=content_type, body=body, token=token, path=path)
