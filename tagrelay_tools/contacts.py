"""Reply as the alias from the command line (issue 13).

tagrelay contact ALIAS ADDRESS     the reverse address to write to ADDRESS as ALIAS (records the contact)
tagrelay contacts ALIAS            who has written to ALIAS (and been answered), newest first
tagrelay reply                     on the local stack: answer the last forwarded copy as its owner would
                                   from Gmail (Mailgun's verdict headers on top), and show where it went

``tagrelay contact`` takes the reply key from ``--key``, ``$TAGRELAY_REPLY_KEY`` or the
running local stack, and writes the contact record (so the address resolves) to the
local stack's Firestore emulator, or with ``--project`` (or ``$GOOGLE_CLOUD_PROJECT``)
to that project's Firestore with your gcloud credentials.
"""

from __future__ import annotations

import argparse
import email.utils
import os
import secrets
import time
from email.parser import BytesHeaderParser
from pathlib import Path
from typing import Any

from tagrelay.core import reverse
from tagrelay.core.reply import mailbox
from tagrelay.core.routes import is_valid_address, normalize
from tagrelay_tools.localstack import STATE_FILE, running_state
from tagrelay_tools.mailgun_posts import sign_and_post
from tagrelay_tools.standin import Accepted, StandinClient
from tagrelay_tools.terminal import say, warn

ARRIVAL_SECONDS = 60.0


def register(commands: Any) -> None:
    contact = commands.add_parser("contact", help="print the reverse address for writing to ADDRESS as ALIAS")
    contact.add_argument("alias", help="your alias, e.g. github@example.org")
    contact.add_argument("address", help="the correspondent, e.g. someone@example.com")
    contact.add_argument("--key", default="", help="reply key (default: $TAGRELAY_REPLY_KEY or the local stack's)")
    contact.add_argument("--project", default="", help="write the contact record to this project's Firestore")
    contact.add_argument("--no-save", action="store_true", help="only print the address; record nothing")
    blocking = contact.add_mutually_exclusive_group()
    blocking.add_argument("--block", action="store_true", help="block the contact: its reverse address answers 406")
    blocking.add_argument("--unblock", action="store_true", help="lift a block")
    contact.set_defaults(func=cmd_contact)

    listing = commands.add_parser("contacts", help="list who has written to an alias, newest first")
    listing.add_argument("alias")
    listing.add_argument("--project", default="", help="read this project's Firestore (default: the local stack)")
    listing.add_argument("--limit", type=int, default=50)
    listing.set_defaults(func=cmd_contacts)

    reply = commands.add_parser("reply", help="local stack: answer the last forwarded copy as its owner from Gmail")
    reply.add_argument("--as", dest="sender", default="", help="send as someone else (to see a forged reply)")
    reply.add_argument("--spf", default="Pass", help="Mailgun's SPF verdict on the reply (default Pass)")
    reply.add_argument("--dkim", default="Pass", help="Mailgun's DKIM verdict on the reply (default Pass)")
    reply.add_argument("--text", default="Thanks, that works for me.", help="the reply's text")
    reply.set_defaults(func=cmd_reply)


def cmd_contact(args: argparse.Namespace) -> int:
    alias, correspondent = normalize(args.alias), normalize(args.address)
    if alias is None or not is_valid_address(alias):
        warn(f"error: {args.alias!r} is not an address")
        return 2
    if correspondent is None or not is_valid_address(correspondent):
        warn(f"error: {args.address!r} is not an address")
        return 2
    state = running_state()
    key = args.key or os.environ.get("TAGRELAY_REPLY_KEY", "") or (state or {}).get("reply_key", "")
    if not key:
        warn("error: no reply key: pass --key, set TAGRELAY_REPLY_KEY, or start 'tagrelay run'")
        return 2
    address = reverse.make(alias, correspondent, key)
    if not args.no_save:
        contacts = _contacts(args.project, state)
        if contacts is None:
            warn(
                "error: nowhere to record the contact: pass --project, set GOOGLE_CLOUD_PROJECT, start "
                "'tagrelay run', or pass --no-save")
            return 2
        from tagrelay.core.errors import LedgerUnavailable

        cid = reverse.contact_id(alias, correspondent)
        try:
            contacts.remember(cid, alias, correspondent)
            if args.block or args.unblock:
                contacts.block(cid, blocked=bool(args.block))
        except LedgerUnavailable as exc:
            warn(f"error: {exc.reason}")
            return 1
    say(address)
    return 0


def cmd_contacts(args: argparse.Namespace) -> int:
    from tagrelay.core.errors import LedgerUnavailable

    alias = normalize(args.alias)
    if alias is None:
        warn(f"error: {args.alias!r} is not an address")
        return 2
    contacts = _contacts(args.project, running_state())
    if contacts is None:
        warn("error: pass --project, set GOOGLE_CLOUD_PROJECT, or start 'tagrelay run'")
        return 2
    try:
        found = contacts.list_alias(alias, max(1, args.limit))
    except LedgerUnavailable as exc:
        warn(f"error: {exc.reason}")
        return 1
    for c in found:
        seen = time.strftime("%Y-%m-%d %H:%M", time.gmtime(c.last_seen))
        flag = "  BLOCKED" if c.blocked else ""
        say(f"{c.correspondent:<40} in {c.received:>4}  out {c.replied:>4}  last {seen} UTC{flag}")
    if not found:
        say(f"nobody has written to {alias} yet")
    return 0


def _contacts(project: str, state: dict[str, Any] | None) -> Any:
    from tagrelay.adapters.contacts import FirestoreContacts
    from tagrelay.adapters.ledger import default_firestore

    if not project and state and state.get("firestore_host"):
        os.environ["FIRESTORE_EMULATOR_HOST"] = str(state["firestore_host"])
        project = str(state.get("project", ""))
    project = project or os.environ.get("GOOGLE_CLOUD_PROJECT", "")
    return FirestoreContacts(default_firestore(project)) if project else None


def gmail_reply(
    *,
    reverse_address: str,
    owner: str,
    correspondent_name: str,
    subject: str,
    in_reply_to: str,
    references: str = "",
    text: str = "Thanks, that works for me.",
    spf: str = "Pass",
    dkim: str = "Pass",
    envelope_sender: str = "",
    message_id: str = "",
) -> bytes:
    """A reply as Gmail sends it and Mailgun posts it: Mailgun's verdicts and trace on top, then Gmail's headers."""
    envelope_sender = envelope_sender or owner
    message_id = message_id or f"<CAJ{secrets.token_hex(12)}@mail.gmail.com>"
    date = email.utils.formatdate(time.time())
    refs = f"{references} {in_reply_to}".strip() if in_reply_to not in references else references
    boundary = "000000000000" + secrets.token_hex(8)
    subject = subject if subject.lower().startswith("re:") else f"Re: {subject}"
    top = (
        "X-Mailgun-Spam-Rules: DKIM_SIGNED, DKIM_VALID, DKIM_VALID_AU, FREEMAIL_FROM, HTML_MESSAGE\r\n"
        + (f"X-Mailgun-Dkim-Check-Result: {dkim}\r\n" if dkim else "")
        + (f"X-Mailgun-Spf: {spf}\r\n" if spf else "")
        + "X-Mailgun-Sscore: -0.1\r\n"
        "X-Mailgun-Sflag: No\r\n"
        "X-Mailgun-Incoming: Yes\r\n"
        f"X-Envelope-From: <{envelope_sender}>\r\n"
        "Received: from mail-lj1-f181.google.com (mail-lj1-f181.google.com [209.85.208.181])"
        f" by mxa.mailgun.org with ESMTP id 656a1b2c.7f3e; {date}\r\n"
    )
    gmail = (
        f"Received: by mail-lj1-f181.google.com with SMTP id 38308e7fff4ca-2c9b8e2e7d1so123456fa.2 "
        f"for <{reverse_address}>; {date}\r\n"
        "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=gmail.com; s=20230601; t=1701471234;"
        " x=1702076034; darn=example.org;\r\n"
        "        h=to:subject:message-id:date:from:in-reply-to:references:mime-version\r\n"
        "         :from:to:cc:subject:date:message-id:reply-to;\r\n"
        "        bh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=;\r\n"
        "        b=Q2hlY2tpbmcgdGhhdCB0aGUgb3duZXIncyBzaWduYXR1cmUgbmV2ZXIgbGVhdmVz\r\n"
        "X-Google-DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=1e100.net; s=20230601; t=1701471234;"
        " bh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=; b=Zm9yZ2V0IG1l\r\n"
        "X-Gm-Message-State: AOJu0YzQ0b3duZXIgbWFpbGJveCBzdGF0ZQ==\r\n"
        "X-Google-Smtp-Source: AGHT+IHb3duZXIgc210cCBzb3VyY2U=\r\n"
        f"X-Received: by 2002:a2e:9d8e:0:b0:2c9:f1a2:3b4c with SMTP id t14mr1234567lji.5.1701471234567; {date}\r\n"
        f"Return-Path: <{envelope_sender}>\r\n"
        "ARC-Seal: i=1; a=rsa-sha256; t=1701471234; cv=none; d=google.com; s=arc-20160816; b=YXJjIHNlYWw=\r\n"
        "ARC-Authentication-Results: i=1; mx.google.com; dkim=pass header.i=@gmail.com;"
        f" spf=pass smtp.mailfrom={envelope_sender}\r\n"
        f"X-Originating-IP: [198.51.100.23]\r\n"
        "MIME-Version: 1.0\r\n"
        + (f"References: {refs}\r\nIn-Reply-To: {in_reply_to}\r\n" if in_reply_to else "")
        + f"From: Owner Name <{owner}>\r\n"
        f"Date: {date}\r\n"
        f"Message-ID: {message_id}\r\n"
        f"Subject: {subject}\r\n"
        f"To: {email.utils.formataddr((correspondent_name, reverse_address), charset='utf-8')}\r\n"
        f"Cc: Owner Name <{owner}>\r\n"
        f'Content-Type: multipart/alternative; boundary="{boundary}"\r\n'
    )
    body = (
        f"\r\n--{boundary}\r\n"
        'Content-Type: text/plain; charset="UTF-8"\r\n\r\n'
        f"{text}\r\n\r\n"
        f"--{boundary}\r\n"
        'Content-Type: text/html; charset="UTF-8"\r\n\r\n'
        f'<div dir="ltr">{text}</div>\r\n\r\n'
        f"--{boundary}--\r\n"
    )
    return (top + gmail + body).encode("utf-8")


def cmd_reply(args: argparse.Namespace) -> int:
    state = running_state()
    if state is None:
        warn(f"error: no running local stack ({STATE_FILE} missing); start 'tagrelay run'")
        return 2
    standin = StandinClient(str(state["standin_url"]))
    accepted = standin.accepted()
    original = next((r for r in reversed(accepted) if _reply_to(r)[1].startswith(reverse.PREFIX)), None)
    if original is None:
        warn("error: no forwarded copy with a reply address yet: send a message first")
        return 1
    headers = BytesHeaderParser().parsebytes(Path(original["path"]).read_bytes())
    name, reverse_address = _reply_to(original)
    target = str(original["to"][0])
    owner = mailbox(target) or target  # Gmail sends from the mailbox, not the +detail
    sender = args.sender or owner
    raw = gmail_reply(
        reverse_address=reverse_address,
        owner=sender,
        correspondent_name=name,
        subject=str(headers.get("Subject", "")),
        in_reply_to=str(headers.get("Message-ID", "")).strip(),
        references=str(headers.get("References", "")).strip(),
        text=args.text,
        spf=args.spf,
        dkim=args.dkim,
    )
    message_id = str(BytesHeaderParser().parsebytes(raw).get("Message-ID", "")).strip()
    answer = sign_and_post(
        str(state["ingest_url"]),
        raw,
        reverse_address,
        sender,
        str(state["signing_key"]),
        route_key=str(state.get("route_key", "")),
    )
    say(
        f"posted a Gmail-style reply from {sender} to {reverse_address}: "
        f"ingest answered {answer.status_code} {answer.text.strip()}"
    )
    if answer.status_code != 200:
        return 1
    record = standin.wait_for(lambda r: r.get("message_id") == message_id, ARRIVAL_SECONDS)
    if record is None:
        warn(f"error: nothing arrived within {ARRIVAL_SECONDS:g}s")
        return 1
    say(f"sent to {', '.join(record['to'])}: {record['path']}")
    return 0


def _reply_to(record: Accepted) -> tuple[str, str]:
    try:
        headers = BytesHeaderParser().parsebytes(Path(record["path"]).read_bytes())
    except (OSError, KeyError):
        return "", ""
    name, address = email.utils.parseaddr(str(headers.get("Reply-To", "")))
    return name, address.lower()
