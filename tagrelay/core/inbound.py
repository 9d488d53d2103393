"""Mailgun route POST → ``InboundMessage``; the webhook signature check.

Pure: no network, no clock (callers pass ``now``). The request body is decoded as
bytes, never as UTF-8 text, because ``body-mime`` carries the message's raw
octets and they need not be UTF-8 (8bit Latin-1 or Shift_JIS bodies arrive as
they are). Mailgun posts either form:

- route URL ending in ``mime``: ``body-mime`` holds the raw RFC 5322 message;
- otherwise the parsed form: ``body-plain``, ``body-html``, ``message-headers``
  (JSON list of [name, value]), ``attachment-N`` files and ``content-id-map``,
  which :func:`rebuild_mime` turns back into one MIME message.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import re
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from email.header import Header
from email.message import EmailMessage, Message
from email.parser import BytesParser
from email.policy import SMTP
from email.utils import formataddr, getaddresses
from typing import Any

from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.http import parse_options_header
from werkzeug.sansio.multipart import Data, Epilogue, Field, File, MultipartDecoder, NeedData

from tagrelay.core.errors import BadRequest, BadSignature, Undeliverable
from tagrelay.core.headers import (
    MAX_HEADER_BLOCK_BYTES,
    check_header_block,
    clean_text,
    fits_8bit,
    fold_field,
    has_control_chars,
    header_fields,
    is_field_name,
    mailgun_prepended,
    scrub_value,
    unfold,
)

SIGNATURE_FIELDS = ("timestamp", "token", "signature")
FUTURE_SKEW_SECONDS = 300
MAX_FORM_PARTS = 1000
CHUNK_BYTES = 1 << 20
URLENCODED_EXPANSION = 3  # a urlencoded body may be 3 times the message: every octet can become %XX
MAX_SIGNATURE_FIELD_BYTES = 512  # Mailgun's are 10, 50 and 64 characters
MAX_NAME_BYTES = 4096  # a field name, percent-encoded (Mailgun's are header names)
UNQUOTE_WINDOW = 1 << 16
EVENT_SNIFF_BYTES = 1 << 16  # event webhooks are small JSON documents
_REBUILD_POLICY = SMTP.clone(max_line_length=998)  # keep header lines as posted; fold only past 998
_PATH_SEPARATORS = re.compile(r"[/\\]+")
_URLENCODED_OCTETS = bytes(range(0x21, 0x7F))  # printable ASCII: all a urlencoded body may hold


@dataclass(frozen=True)
class Upload:
    """One file part of a multipart form."""

    filename: str | None
    content_type: str
    data: bytes


@dataclass(frozen=True)
class Form:
    """A POSTed form with every text field kept as bytes (first value per name)."""

    fields: dict[str, bytes] = field(default_factory=dict)
    files: dict[str, Upload] = field(default_factory=dict)
    repeated: dict[str, list[bytes]] = field(default_factory=dict)  # every value, for names given more than once

    def all(self, name: str) -> list[bytes]:
        """Every value of a field, in order."""
        return self.repeated.get(name) or ([self.fields[name]] if name in self.fields else [])

    def text(self, name: str) -> str:
        """A field decoded as UTF-8 (for envelope fields, which are ASCII by contract)."""
        return self.fields.get(name, b"").decode("utf-8", "replace").strip()


@dataclass(frozen=True)
class InboundMessage:
    """What ingest publishes: the raw message and its envelope, apart from its headers."""

    recipient: str
    sender: str
    mime: bytes
    token: str
    timestamp: int
    form_kind: str  # "mime" or "parsed"
    spam_flag: str = ""
    spam_score: str = ""


Body = bytes | Iterable[bytes]
Authenticate = Callable[[Mapping[str, str]], object]
"""Called once with the signature fields, before anything large is decoded; raises BadSignature to refuse."""


def parse_form(
    content_type: str, body: Body, max_bytes: int | None = None, authenticate: Authenticate | None = None
) -> Form:
    """Decode a ``multipart/form-data`` or urlencoded body into bytes fields.

    ``body`` is the whole body or an iterable of its chunks (the request stream):
    a multipart body is decoded as it arrives, so a 25 MB post is never held twice.
    ``max_bytes`` caps a multipart body; a urlencoded body may be URLENCODED_EXPANSION
    times as long (every octet of a message can become ``%XX``).

    ``authenticate`` (when given) is called exactly once with the signature fields
    (``timestamp``, ``token``, ``signature``; absent ones missing from the mapping)
    before any large value is decoded: in a urlencoded body first of all, in a
    multipart body as soon as the three have arrived (Mailgun may send them before
    or after ``body-mime``), else at the end. What an unauthenticated post costs is
    then its own bytes and a linear scan of them, never the decoding of its values.
    Raises BadRequest when the body is neither form, Undeliverable past the cap.
    """
    mimetype, options = parse_options_header(content_type)
    mimetype = mimetype.lower()
    if mimetype == "multipart/form-data":
        boundary = options.get("boundary", "")
        if not boundary:
            raise BadRequest("multipart/form-data without a boundary")
        return _parse_multipart(boundary.encode("latin-1", "replace"), _chunks(body, max_bytes), authenticate)
    if mimetype == "application/x-www-form-urlencoded":
        cap = None if max_bytes is None else max_bytes * URLENCODED_EXPANSION
        return _parse_urlencoded(_whole(body, cap), authenticate)
    raise BadRequest(f"expected a form post, got content type {mimetype or 'none'!r}")


def _parse_urlencoded(body: bytes, authenticate: Authenticate | None = None) -> Form:
    """Split and unquote as bytes (``parse_qsl`` on bytes goes through ASCII and refuses 8-bit octets).

    The body is scanned once for the ``&`` and ``=`` positions (no copies); names
    and the signature fields (all short) are decoded, ``authenticate`` runs, and
    only then are the values decoded, window by window, so that a value of
    millions of ``%41`` costs its decoded size, not a list of millions of pieces.
    """
    if not _is_urlencoded_text(body):
        raise BadRequest("urlencoded form with raw octets outside printable ASCII")
    if body.count(b"&") >= MAX_FORM_PARTS:
        raise BadRequest(f"more than {MAX_FORM_PARTS} form fields")
    spans: list[tuple[str, int, int]] = []  # (decoded name, value start, value end)
    start, size = 0, len(body)
    while start < size:
        end = body.find(b"&", start)
        end = size if end < 0 else end
        if end > start:
            equals = body.find(b"=", start, end)
            name_end = end if equals < 0 else equals
            if name_end - start > MAX_NAME_BYTES:
                raise BadRequest(f"a form field name longer than {MAX_NAME_BYTES} octets")
            name = _unquote(body, start, name_end).decode("utf-8", "replace")
            spans.append((name, min(name_end + 1, end), end))
        start = end + 1
    if authenticate is not None:
        problem = route_post_problem({name for name, _, _ in spans})
        if problem:
            raise BadRequest(problem)
        signature: dict[str, str] = {}
        for name, value_start, value_end in spans:
            if name in SIGNATURE_FIELDS and name not in signature:
                if value_end - value_start > 3 * MAX_SIGNATURE_FIELD_BYTES:
                    raise BadSignature(f"{name} longer than {MAX_SIGNATURE_FIELD_BYTES} octets")
                signature[name] = _unquote(body, value_start, value_end).decode("utf-8", "replace").strip()
        authenticate(signature)
    fields: dict[str, bytes] = {}
    repeated: dict[str, list[bytes]] = {}
    for name, value_start, value_end in spans:
        _add(name, _unquote(body, value_start, value_end), fields, repeated)
    return Form(fields=fields, repeated=repeated)


def _is_urlencoded_text(body: bytes) -> bool:
    """Only printable ASCII, checked a window at a time (``translate`` runs in C, ten times a regex)."""
    return not any(
        body[start : start + CHUNK_BYTES].translate(None, _URLENCODED_OCTETS)
        for start in range(0, len(body), CHUNK_BYTES)
    )


def _unquote(body: bytes, start: int, end: int) -> bytes:
    """``body[start:end]`` with ``+`` as space and ``%XX`` decoded, in windows of UNQUOTE_WINDOW octets.

    ``urllib.parse.unquote_to_bytes`` splits its whole input at every ``%``; on a
    window the transient pieces stay bounded (a window never ends inside ``%XX``).
    """
    window = max(UNQUOTE_WINDOW, 3)  # a window holds at least one whole escape, so each step advances
    if end - start <= window:
        return urllib.parse.unquote_to_bytes(body[start:end].replace(b"+", b" "))
    out = bytearray()
    while start < end:
        stop = min(start + window, end)
        if stop < end:
            percent = body.rfind(b"%", stop - 2, stop)
            if percent > start:
                stop = percent  # the escape starts the next window whole
        out += urllib.parse.unquote_to_bytes(body[start:stop].replace(b"+", b" "))
        start = stop
    return bytes(out)


def _chunks(body: Body, max_bytes: int | None) -> Iterator[bytes]:
    """The body in pieces of at most CHUNK_BYTES, refusing more than ``max_bytes`` in all."""
    pieces: Iterable[bytes]
    if isinstance(body, bytes):
        view = memoryview(body)
        pieces = (bytes(view[start : start + CHUNK_BYTES]) for start in range(0, len(body), CHUNK_BYTES))
    else:
        pieces = body
    total = 0
    for piece in pieces:
        total += len(piece)
        if max_bytes is not None and total > max_bytes:
            raise Undeliverable(f"post over the size limit of {max_bytes} bytes")
        yield piece


def _whole(body: Body, max_bytes: int | None) -> bytes:
    """The body in one piece (a urlencoded form is parsed whole), refusing more than ``max_bytes``."""
    if not isinstance(body, bytes):
        return b"".join(_chunks(body, max_bytes))
    if max_bytes is not None and len(body) > max_bytes:
        raise Undeliverable(f"post over the size limit of {max_bytes} bytes")
    return body


class _Parts:
    """Collects the parts the multipart decoder reports, field by field.

    A signature field is held to MAX_SIGNATURE_FIELD_BYTES while it arrives, and
    ``authenticate`` runs as soon as the three are in (or at the end).
    """

    def __init__(self, authenticate: Authenticate | None) -> None:
        self.fields: dict[str, bytes] = {}
        self.files: dict[str, Upload] = {}
        self.repeated: dict[str, list[bytes]] = {}
        self.current: Field | File | None = None
        # A part's bytes accumulate in a BytesIO: it grows in place and getvalue() hands over its
        # buffer without a copy, so a 25 MB part never exists twice (a list of chunks joined would).
        self.buffer = io.BytesIO()
        self.held = 0
        self._authenticate = authenticate

    def drain(self, decoder: MultipartDecoder) -> bool:
        """Take every event available; True once the epilogue is reached."""
        while True:
            event = decoder.next_event()
            if isinstance(event, (Field, File)):
                self.current, self.buffer, self.held = event, io.BytesIO(), 0
            elif isinstance(event, Data):
                self.buffer.write(event.data)
                self.held += len(event.data)
                name = self.current.name if self.current is not None else ""
                if self._authenticate and name in SIGNATURE_FIELDS and self.held > MAX_SIGNATURE_FIELD_BYTES:
                    raise BadSignature(f"{name} longer than {MAX_SIGNATURE_FIELD_BYTES} octets")
                if not event.more_data and self.current is not None:
                    data = self.buffer.getvalue()
                    self.buffer = io.BytesIO()
                    _store_part(self.current, data, self.fields, self.files, self.repeated)
                    if self.current.name in SIGNATURE_FIELDS and all(n in self.fields for n in SIGNATURE_FIELDS):
                        self.authenticate()
                    self.current = None
            elif isinstance(event, Epilogue):
                return True
            elif isinstance(event, NeedData):
                return False

    @property
    def pending(self) -> bool:
        """Whether the signature is still to be checked."""
        return self._authenticate is not None

    def authenticate(self) -> None:
        """Run the check once (a no-op after the first call)."""
        check, self._authenticate = self._authenticate, None
        if check is not None:
            check({name: self.text(name) for name in SIGNATURE_FIELDS if name in self.fields})

    def text(self, name: str) -> str:
        return self.fields[name].decode("utf-8", "replace").strip()


def _parse_multipart(boundary: bytes, chunks: Iterator[bytes], authenticate: Authenticate | None = None) -> Form:
    decoder = MultipartDecoder(boundary, max_parts=MAX_FORM_PARTS)
    parts = _Parts(authenticate)
    try:
        for chunk in chunks:
            decoder.receive_data(chunk)
            if parts.drain(decoder):
                break
        else:
            decoder.receive_data(None)
            parts.drain(decoder)
    except ValueError as exc:  # includes UnicodeDecodeError from part headers
        raise BadRequest(f"unreadable multipart form: {exc}") from None
    except RequestEntityTooLarge:
        raise BadRequest(f"more than {MAX_FORM_PARTS} form parts") from None
    if parts.pending:
        problem = route_post_problem(set(parts.fields) | set(parts.files))
        if problem:
            raise BadRequest(problem)
        parts.authenticate()
    return Form(fields=parts.fields, files=parts.files, repeated=parts.repeated)


def _store_part(
    part: Field | File,
    data: bytes,
    fields: dict[str, bytes],
    files: dict[str, Upload],
    repeated: dict[str, list[bytes]],
) -> None:
    if not part.name:
        return  # a part without a name carries nothing Mailgun sends; it is ignored
    if isinstance(part, File):
        content_type = part.headers.get("content-type", "application/octet-stream")
        files.setdefault(part.name, Upload(part.filename or None, content_type, data))
    else:
        _add(part.name, data, fields, repeated)


def _add(name: str, value: bytes, fields: dict[str, bytes], repeated: dict[str, list[bytes]]) -> None:
    if name in fields:
        repeated.setdefault(name, [fields[name]]).append(value)
    else:
        fields[name] = value


def form_digest(form: Form) -> str:
    """A hash of what the form says, independent of how it was encoded (boundaries, field order).

    Mailgun retries the same post with the same token; this tells a retry (same
    digest) from a token reused for other content. The signature fields are left
    out: they belong to the token, not to the message.
    """
    digest = hashlib.sha256()
    for name in sorted(set(form.fields) | set(form.repeated)):
        if name in SIGNATURE_FIELDS:
            continue
        for value in form.all(name):
            digest.update(b"F%d:%s%d:" % (len(name), name.encode(), len(value)))
            digest.update(value)
    for name in sorted(form.files):
        upload = form.files[name]
        label = f"{name}\0{upload.filename or ''}\0{upload.content_type}".encode()
        digest.update(b"U%d:%s%d:" % (len(label), label, len(upload.data)))
        digest.update(upload.data)
    return digest.hexdigest()


def sign(key: bytes, timestamp: str, token: str) -> str:
    """The Mailgun webhook signature: hex HMAC-SHA256 of timestamp + token."""
    return hmac.new(key, (timestamp + token).encode("utf-8"), hashlib.sha256).hexdigest()


def verify_signature(key: bytes, timestamp: str, token: str, signature: str) -> bool:
    """Constant-time check of a Mailgun webhook signature."""
    expected = sign(key, timestamp, token)
    return hmac.compare_digest(expected.encode("ascii"), signature.encode("utf-8", "replace"))


def check_signed(form: Form, key: bytes, now: float, max_age_seconds: float) -> int:
    """Verify a parsed form's signature and timestamp window; return the timestamp (see check_signature)."""
    return check_signature(
        {name: form.text(name) for name in SIGNATURE_FIELDS if form.fields.get(name)}, key, now, max_age_seconds
    )


def check_signature(fields: Mapping[str, str], key: bytes, now: float, max_age_seconds: float) -> int:
    """Verify the signature fields and the timestamp window; return the timestamp.

    Raises BadSignature (401): Mailgun retries a 401, so a rotated key loses
    nothing while it is fixed.
    """
    missing = [name for name in SIGNATURE_FIELDS if not fields.get(name)]
    if missing:
        raise BadSignature(f"missing {', '.join(missing)}")
    timestamp, token, signature = (fields[name] for name in SIGNATURE_FIELDS)
    if not verify_signature(key, timestamp, token, signature):
        raise BadSignature("signature does not match")
    try:
        stamp = int(timestamp)
    except ValueError:
        raise BadSignature("timestamp is not an integer") from None
    if stamp < now - max_age_seconds:
        raise BadSignature("timestamp older than the retry horizon")
    if stamp > now + FUTURE_SKEW_SECONDS:
        raise BadSignature("timestamp in the future")
    return stamp


def check_route_key(given: str | None, accepted: Iterable[str]) -> None:
    """The route URL's ``k`` against every accepted key (current and previous), each in constant time.

    Every accepted key is compared, match or not, so the time taken does not say
    which one matched. Raises BadSignature (401, retried by Mailgun) when none does.
    """
    if not given:
        raise BadSignature("missing route key (query parameter k)")
    offered = given.encode("utf-8", "replace")
    matched = False
    for key in accepted:
        if key:
            matched |= hmac.compare_digest(offered, key.encode("utf-8"))
    if not matched:
        raise BadSignature("wrong route key (query parameter k)")


def media_type(content_type: str) -> str:
    """The lower-case media type of a Content-Type header, without parameters."""
    return parse_options_header(content_type)[0].lower()


def looks_like_event_webhook(content_type: str, head: bytes) -> bool:
    """Whether a post is one of Mailgun's event (tracking) webhooks rather than a route forward.

    ``head`` is at most the first EVENT_SNIFF_BYTES of the body: event webhooks post
    JSON ``{"signature": {...}, "event-data": {...}}``, which are small.
    """
    if media_type(content_type) != "application/json" or len(head) >= EVENT_SNIFF_BYTES:
        return False
    try:
        decoded = json.loads(head)
    except (ValueError, RecursionError):
        return False
    return isinstance(decoded, dict) and "event-data" in decoded and "signature" in decoded


EVENT_WEBHOOK_HINT = (
    "this is a Mailgun event webhook, not a route post: ingest takes only route posts; "
    "point the domain's webhooks at the events function's URL instead (tagrelay mailgun ensure-webhooks)"
)
MESSAGE_FIELDS = frozenset({"body-mime", "body-plain", "body-html", "message-headers"})


def is_mailgun_form(form: Form) -> bool:
    """Whether the form looks like a Mailgun route post at all (else 400)."""
    return not route_post_problem(set(form.fields) | set(form.files))


def route_post_problem(names: set[str]) -> str:
    """Why a form with these field names is not a Mailgun route post ("" when it is one).

    Names only, so it can be answered before a value is decoded or the signature checked.
    """
    if "recipient" in names and names & MESSAGE_FIELDS:
        return ""
    if "event" in names or "event-data" in names:  # Mailgun's legacy form-encoded event webhooks
        return EVENT_WEBHOOK_HINT
    return "not a Mailgun route post (no recipient or message fields)"


def to_inbound(form: Form, timestamp: int) -> InboundMessage:
    """Turn a verified Mailgun form into an ``InboundMessage``.

    Raises Undeliverable (406) for a signed post whose envelope can never be
    delivered (control characters in an address, several recipients).
    """
    recipient = form.text("recipient")
    sender = form.text("sender")
    for name, value in (("recipient", recipient), ("sender", sender)):
        if has_control_chars(value):
            raise Undeliverable(f"control characters in {name}")
    if not recipient or "," in recipient or "@" not in recipient:
        raise Undeliverable("recipient is not one address")
    for name, value, limit in (
        ("recipient", recipient, 254),
        ("sender", sender, 512),
        ("token", form.text("token"), 256),
    ):
        if len(value.encode("utf-8")) > limit:
            raise Undeliverable(f"{name} longer than {limit} octets")
    if has_control_chars(form.text("token")):
        raise Undeliverable("control characters in token")
    if "body-mime" in form.fields or "body-mime" in form.files:
        upload = form.files.get("body-mime")
        mime = upload.data if upload is not None else form.fields["body-mime"]
        kind = "mime"
        check_header_block(mime)  # before anything parses it
        prepended = [(f.name, f.value) for f in mailgun_prepended(header_fields(mime))]
    else:
        mime = rebuild_mime(form)
        kind = "parsed"
        prepended = _prepended_pairs(form)
    return InboundMessage(
        recipient=recipient,
        sender=sender,
        mime=mime,
        token=form.text("token"),
        timestamp=timestamp,
        form_kind=kind,
        spam_flag=_verdict(prepended, "x-mailgun-sflag"),
        spam_score=_verdict(prepended, "x-mailgun-sscore"),
    )


def rebuild_mime(form: Form) -> bytes:
    """Rebuild one MIME message from Mailgun's parsed form (see _rebuild).

    Raises nothing but Undeliverable (406: Mailgun stops; never a bare 500 it retries for
    8 hours): an oversized header list, a part the email package cannot write, a count of
    attachments that does not add up.
    """
    raw = form.fields.get("message-headers", b"")
    if len(raw) > MAX_HEADER_BLOCK_BYTES:
        raise Undeliverable(f"message-headers over {MAX_HEADER_BLOCK_BYTES} bytes (real mail stays far below)")
    try:
        mime = _rebuild(form)
    except Undeliverable:
        raise
    except Exception as exc:  # any odd part may trip the email package: refuse, never crash
        raise Undeliverable(f"cannot rebuild the parsed form ({type(exc).__name__})") from None
    check_header_block(mime)
    return mime


def _verdict(prepended: list[tuple[str, str]], name: str) -> str:
    """Mailgun's verdict field, from the fields Mailgun prepended only ("" when it added none)."""
    value = next((v for n, v in prepended if n == name), "")
    return clean_text(value)[:64]


def _prepended_pairs(form: Form) -> list[tuple[str, str]]:
    """The parsed form's counterpart of headers.mailgun_prepended: the run of X-Mailgun-* and
    X-Envelope-From at the top of ``message-headers`` (which keeps the message's order)."""
    run: list[tuple[str, str]] = []
    for item in _header_list(form):
        name = item[0].lower() if isinstance(item, list) and len(item) == 2 and isinstance(item[0], str) else ""
        if not (name.startswith("x-mailgun-") or name == "x-envelope-from") or not isinstance(item[1], str):
            break
        run.append((name, item[1]))
    return run


def _header_list(form: Form) -> list[Any]:
    raw = form.fields.get("message-headers")
    if not raw or len(raw) > MAX_HEADER_BLOCK_BYTES:
        return []
    try:
        decoded = json.loads(raw)
    except (ValueError, RecursionError):
        return []
    return decoded if isinstance(decoded, list) else []


# Headers that describe the old body structure; the rebuilt message has its own.
_STRUCTURE_HEADERS = frozenset(
    {"content-type", "content-transfer-encoding", "mime-version", "content-disposition", "content-length"}
)


def _rebuild(form: Form) -> bytes:
    """Rebuild one MIME message from Mailgun's parsed form.

    Layout: text and HTML as multipart/alternative; attachments named in
    ``content-id-map`` go with the HTML in multipart/related (keeping their
    Content-ID); the other attachments make the message multipart/mixed.

    Every ``attachment-N`` part is kept, under a safe file name: one whose file name
    the form parser could not read (``path\\``) arrives as a plain field and is attached
    as ``attachment-N``. The parts are counted in and out (and against Mailgun's
    ``attachment-count``); a difference raises Undeliverable instead of losing a file.
    """
    headers = _message_headers(form)
    # Line endings are normalised here; the SMTP policy writes CRLF on output.
    text = form.fields.get("body-plain", b"").decode("utf-8", "replace").replace("\r\n", "\n")
    html = form.fields.get("body-html", b"").decode("utf-8", "replace").replace("\r\n", "\n")
    uploads = _attachments(form)
    cid_of = _content_ids(form)
    # Inline parts go with the HTML that shows them; without HTML they are attachments
    # that keep their Content-ID.
    inline = {name: cid for name, cid in cid_of.items() if name in uploads} if html else {}
    attachments = [name for name in uploads if name not in inline]

    msg = EmailMessage(policy=_REBUILD_POLICY)
    if html:
        msg.set_content(text or "", subtype="plain", charset="utf-8")
        msg.add_alternative(html, subtype="html", charset="utf-8")
        if inline:
            html_part = list(msg.iter_parts())[-1]
            assert isinstance(html_part, EmailMessage)
            for name, cid in inline.items():
                upload = uploads[name]
                html_part.add_related(upload.data, **_part_options(upload, name, cid), disposition="inline")
    else:
        msg.set_content(text, subtype="plain", charset="utf-8")
    for name in attachments:
        upload = uploads[name]
        options = _part_options(upload, name, cid_of.get(name, ""))
        if options["maintype"] == "message" and options["subtype"] != "rfc822":
            _attach_parsed(msg, upload.data, options)  # e.g. message/delivery-status in a bounce
        else:
            msg.add_attachment(upload.data, **options)
    # Boundaries derived from the content: the same form always rebuilds to the same bytes.
    seed = form_digest(form)[:24]
    for number, part in enumerate(p for p in msg.walk() if p.is_multipart()):
        part.set_boundary(f"tagrelay-{seed}-{number}")
    _check_counts(form, len(uploads), msg)
    # The message's own headers are written here, not by the email package: its folder takes
    # seconds for a few hundred non-ASCII characters in an address field (quadratic, or worse).
    return _header_block(headers) + msg.as_bytes(policy=_REBUILD_POLICY)


_ADDRESS_FIELDS = frozenset(
    {"from", "to", "cc", "bcc", "reply-to", "sender", "resent-from", "resent-to", "resent-cc", "resent-sender"}
)


def _header_block(headers: list[tuple[str, str]]) -> bytes:
    """The message headers as CRLF lines, in order, in linear time.

    A field that may appear once (Subject, Date, From...) keeps its first value. ASCII values
    are written as posted and folded at a blank past 998 octets; other values as RFC 2047
    words (in address fields, only the names), or as UTF-8 (RFC 6532) when that cannot be done.
    """
    seen: dict[str, int] = {}
    lines: list[bytes] = []
    for name, value in headers:
        key = name.lower()
        limit = SMTP.header_max_count(key)
        if limit is not None and seen.get(key, 0) >= limit:
            continue
        seen[key] = seen.get(key, 0) + 1
        line = f"{name}: {_encoded(key, value.strip())}".encode("utf-8", "surrogateescape") + b"\r\n"
        lines.append(fold_field(line, b"\r\n") or line)  # an unfoldable line is the rewrite's to drop and record
    return b"".join(lines)


def _encoded(key: str, value: str) -> str:
    if value.isascii():
        return value
    try:
        if key in _ADDRESS_FIELDS:
            return _encoded_addresses(value) or value
        return Header(value, "utf-8", header_name=key).encode(linesep="\r\n")
    except Exception:  # any odd value: keep it as UTF-8 rather than lose the field
        return value


def _encoded_addresses(value: str) -> str:
    """``Jürgen <j@x>, b@y`` with the names as RFC 2047 words; "" when the value is not a plain address list."""
    if ";" in value:  # a group: keep it as it is
        return ""
    pairs = [(n, a) for n, a in getaddresses([value]) if n or a]
    if not pairs or any(not a or not a.isascii() for _, a in pairs):
        return ""
    out = []
    for name, address in pairs:
        if not name:
            out.append(address)
        elif name.isascii():
            out.append(formataddr((name, address)))
        else:
            out.append(Header(name, "utf-8").encode(linesep="\r\n") + f" <{address}>")
    return ", ".join(out)


def _leaves(part: Message) -> Iterator[Message]:
    """The leaf parts of the MIME tree (not descending into attached messages)."""
    payload = part.get_payload()
    if part.get_content_maintype() == "multipart" and isinstance(payload, list):
        for sub in payload:
            if isinstance(sub, Message):
                yield from _leaves(sub)
    else:
        yield part


def _attachments(form: Form) -> dict[str, Upload]:
    """Every ``attachment-N`` part, in order: files, and fields the form parser took for text
    because their file name was unreadable (they are attached as application/octet-stream)."""
    found = {name: upload for name, upload in form.files.items() if name.startswith("attachment-")}
    for name, value in form.fields.items():
        if name.startswith("attachment-") and name != "attachment-count" and name not in found:
            found[name] = Upload(None, "application/octet-stream", value)

    def number(name: str) -> int:
        suffix = name.removeprefix("attachment-")
        return int(suffix) if suffix.isdigit() else 1 << 30

    return {name: found[name] for name in sorted(found, key=number)}


def _check_counts(form: Form, posted: int, msg: EmailMessage) -> None:
    """Parts in = parts out, and as many as Mailgun said it sent: never lose an attachment silently."""
    built = sum(1 for part in _leaves(msg) if part.get_content_disposition() in ("attachment", "inline"))
    if built != posted:
        raise Undeliverable(f"rebuilt {built} attachment(s) from {posted} posted")
    stated = form.text("attachment-count")
    if stated.isdigit() and int(stated) != posted:
        raise Undeliverable(f"attachment-count says {stated}, the post carries {posted}")


def _part_options(upload: Upload, name: str, cid: str) -> dict[str, Any]:
    """How to attach one uploaded file so the email package can always write it.

    message/rfc822 may not be base64-encoded (RFC 2046), so it travels 8bit when it
    can and as a plain file otherwise; other message/* and multipart/* types cannot
    be built from bytes and become application/octet-stream. File names are made safe
    (safe_filename).
    """
    maintype, _, subtype = upload.content_type.lower().partition("/")
    maintype, subtype = maintype.strip() or "application", subtype.split(";")[0].strip() or "octet-stream"
    options: dict[str, Any] = {"filename": safe_filename(upload.filename or "", name)}
    if maintype == "message" and fits_8bit(upload.data):
        options["cte"] = "8bit"
    elif maintype in ("message", "multipart"):
        maintype, subtype = "application", "octet-stream"
    if cid:
        options["cid"] = f"<{cid}>"
    return {"maintype": maintype, "subtype": subtype, **options}


def safe_filename(filename: str, fallback: str) -> str:
    """The sender's file name without control characters, or ``fallback`` (``attachment-N``) when
    it names no file: empty, or its last path component empty or only dots (``path/.``, ``..``).
    Path separators stay, as they do on the raw MIME path: mail clients keep the last component."""
    name = clean_text(filename)[:255]
    last = _PATH_SEPARATORS.split(name)[-1]
    return name if last.strip(". ") else fallback


def _attach_parsed(msg: EmailMessage, data: bytes, options: dict[str, Any]) -> None:
    """Attach a message/* part other than rfc822: the email package only writes those from parsed parts."""
    head = f"Content-Type: {options['maintype']}/{options['subtype']}\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
    part = BytesParser(policy=_REBUILD_POLICY).parsebytes(head.encode("ascii") + data)
    part.add_header("Content-Disposition", "attachment", filename=options["filename"])
    if "cid" in options:
        part["Content-ID"] = options["cid"]
    if msg.get_content_type() != "multipart/mixed":
        msg.make_mixed()
    msg.attach(part)


def _message_headers(form: Form) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    for item in _header_list(form):
        if (
            isinstance(item, list)
            and len(item) == 2
            and all(isinstance(part, str) for part in item)
            and item[0].lower() not in _STRUCTURE_HEADERS
            and is_field_name(item[0])
        ):
            pairs.append((item[0], scrub_value(unfold(item[1]))))  # a bare CR or NUL cannot split a field
    if not pairs:  # no usable header list: take the single fields Mailgun also posts
        for name in ("From", "To", "Cc", "Subject", "Date", "Message-Id", "Reply-To"):
            value = scrub_value(form.text(name) or form.text(name.lower())).strip()
            if value:
                pairs.append((name, value))
    return pairs


def _content_ids(form: Form) -> dict[str, str]:
    raw = form.fields.get("content-id-map")
    if not raw:
        return {}
    try:
        decoded = json.loads(raw)
    except (ValueError, RecursionError):
        return {}
    if not isinstance(decoded, dict):
        return {}
    return {
        str(name): str(cid).strip("<>")
        for cid, name in decoded.items()
        if isinstance(name, str) and not has_control_chars(str(cid))
    }
