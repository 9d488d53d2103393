"""HTTP entry point: a Mailgun route POST is verified, published, then answered; /block serves block links."""

import flask
import functions_framework

from tagrelay.app import build_block_links, build_ingest, cold_start, request_chunks

_service = cold_start(build_ingest)
_links = cold_start(build_block_links)
LINK_BODY_BYTES = 4096  # a block link's form is three short fields


@functions_framework.http
def ingest(request: flask.Request) -> flask.Response:
    # The one-click block link (issue 14): its own MAC, no route key. The path a function sees differs
    # between Cloud Functions generations ("/block" or "/ingest/block"): match its end.
    if request.path.rstrip("/").endswith("/block"):
        return block_link(request)
    # k, the route key, comes from the route URL's query string (the body is not read for it).
    result = _service.handle(request.content_type or "", request_chunks(request), request.args.get("k"))
    return flask.Response(result.text + "\n", status=result.status, mimetype="text/plain")


def block_link(request: flask.Request) -> flask.Response:
    if _links is None:
        return flask.Response("block links are off (no reply key)\n", status=404, mimetype="text/plain")
    params = {k: v[:300] for k, v in request.args.items()}
    if request.method == "POST":
        if (request.content_length or 0) > LINK_BODY_BYTES:
            return flask.Response("too large\n", status=413, mimetype="text/plain")
        body = request.stream.read(LINK_BODY_BYTES + 1)
        if len(body) > LINK_BODY_BYTES:
            return flask.Response("too large\n", status=413, mimetype="text/plain")
        params.update(_form_fields(body))
    page = _links.handle(request.method, params)
    return flask.Response(page.html, status=page.status, mimetype="text/html", headers=dict(page.headers))


def _form_fields(body: bytes) -> dict[str, str]:
    from urllib.parse import parse_qsl

    try:
        pairs = parse_qsl(body.decode("utf-8"), max_num_fields=10)
    except (UnicodeDecodeError, ValueError):
        return {}
    return {k: v[:300] for k, v in pairs if k in ("a", "x", "s")}
