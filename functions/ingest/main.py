"""HTTP entry point: a Mailgun route POST is verified, published, then answered."""

import flask
import functions_framework

from tagrelay.app import build_ingest, cold_start, request_chunks

_service = cold_start(build_ingest)


@functions_framework.http
def ingest(request: flask.Request) -> flask.Response:
    # k, the route key, comes from the route URL's query string (the body is not read for it).
    result = _service.handle(request.content_type or "", request_chunks(request), request.args.get("k"))
    return flask.Response(result.text + "\n", status=result.status, mimetype="text/plain")
