"""Baseline: the synchronous design ingest replaces.

Verify the Mailgun post, route it, rewrite it and resend it through the Mailgun
API, and only then answer: Mailgun waits for the whole delivery. Built from
tagrelay's own library pieces, so the only difference from ingest is the design.
"""

import os
import time

import flask
import functions_framework
import requests

from tagrelay.adapters.mailgun import MailgunClient
from tagrelay.adapters.secrets import Secret
from tagrelay.core.config import load_relay
from tagrelay.core.errors import BadRequest, PermanentError, RejectedInput, TransientError, Undeliverable
from tagrelay.core.inbound import check_signed, is_mailgun_form, parse_form, to_inbound
from tagrelay.core.rewrite import rewrite
from tagrelay.core.routes import Reject, normalize

MAX_AGE_SECONDS = 9 * 3600

_config = load_relay(os.environ)
_signing_key = os.environ["MAILGUN_WEBHOOK_SIGNING_KEY"].encode("utf-8")
_mailgun = MailgunClient(
    requests.Session(), _config.api_base, _config.mailgun_domain, Secret(_config.api_key), _config.mailgun_timeout
)


@functions_framework.http
def sync_ingest(request: flask.Request) -> flask.Response:
    try:
        form = parse_form(request.content_type or "", request.get_data(cache=False))
        if not is_mailgun_form(form):
            raise BadRequest("not a Mailgun route post")
        stamp = check_signed(form, _signing_key, time.time(), MAX_AGE_SECONDS)
        message = to_inbound(form, stamp)
        resolved = _config.routes.resolve(message.recipient)
        if isinstance(resolved, Reject):
            raise Undeliverable(resolved.reason)
        rewritten = rewrite(message.mime, normalize(message.recipient) or message.recipient, message.sender)
        _mailgun.send_mime(resolved.targets, rewritten.mime)
    except RejectedInput as exc:
        return flask.Response(exc.reason + "\n", status=exc.status, mimetype="text/plain")
    except (TransientError, PermanentError, ValueError):
        return flask.Response("temporarily unavailable, retry later\n", status=503, mimetype="text/plain")
    return flask.Response("sent\n", status=200, mimetype="text/plain")
