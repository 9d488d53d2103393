"""HTTP entry point: a Mailgun event webhook is verified, recorded, then answered (never a 500)."""

import flask
import functions_framework

from tagrelay.app import build_events, cold_start, read_capped
from tagrelay.core.events import MAX_BODY_BYTES

_service = cold_start(build_events)


@functions_framework.http
def events(request: flask.Request) -> flask.Response:
    # At most one byte over the cap is read before anything is parsed (the service refuses more).
    result = _service.handle(request.content_type or "", read_capped(request, MAX_BODY_BYTES + 1))
    return flask.Response(result.text + "\n", status=result.status, mimetype="text/plain")
