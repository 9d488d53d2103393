"""The short notice an owner gets when a message could not be delivered (opt-in per route).

Pure: builds the MIME bytes; the relay sends them through the same Mailgun client.
The original message is attached unchanged (message/rfc822), so nothing is lost
even if the owner never looks at the dead-letter topic.
"""

from __future__ import annotations

from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formatdate, make_msgid

from tagrelay.core.headers import first, fits_8bit, header_fields


def build_notice(original: bytes, alias: str, reason: str, to: str) -> bytes:
    domain = alias.rpartition("@")[2] or "localhost"
    fields = header_fields(original)
    subject = first(fields, "subject")
    sender = first(fields, "from")
    shown_subject = subject.value if subject is not None else "(no subject)"
    notice = EmailMessage(policy=SMTP)
    notice["From"] = f"tagrelay <tagrelay@{domain}>"
    notice["To"] = to
    notice["Subject"] = f"Undeliverable: {shown_subject}"[:200]
    notice["Date"] = formatdate(usegmt=True)
    notice["Message-ID"] = make_msgid(domain=domain)
    notice["Auto-Submitted"] = "auto-generated"
    notice["X-Tagrelay-Loop"] = domain
    notice.set_content(
        "A message sent to your alias could not be forwarded.\n\n"
        f"  alias:   {alias}\n"
        f"  from:    {sender.value if sender is not None else '(none)'}\n"
        f"  subject: {shown_subject}\n"
        f"  reason:  {reason}\n\n"
        "The original is attached, and kept in the dead-letter topic:\n"
        "'tagrelay deadletters replay' sends it again once the cause is fixed.\n"
    )
    if fits_8bit(original):
        notice.add_attachment(original, maintype="message", subtype="rfc822", cte="8bit", filename="original.eml")
    else:  # message/rfc822 may not be base64-encoded (RFC 2046): send binary mail as a file
        notice.add_attachment(original, maintype="application", subtype="octet-stream", filename="original.eml")
    return notice.as_bytes()
