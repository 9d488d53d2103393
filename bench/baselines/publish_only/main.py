"""Baseline: the physical floor for ingest.

Read the post, publish a payload of the same size with ingest's own publisher and
client settings (and attributes of the same shape), wait for Pub/Sub's
acknowledgement, answer 200. No form decoding, no signature, no routing: what is
left of ingest when everything but the one publish is taken away.
"""

import os
import time

import flask
import functions_framework

from tagrelay.adapters.bus import Publisher
from tagrelay.core.envelope import MAX_DATA_BYTES

_publisher = Publisher(
    os.environ["GOOGLE_CLOUD_PROJECT"],
    os.environ.get("TAGRELAY_TOPIC", "tagrelay-inbound"),
    float(os.environ.get("TAGRELAY_PUBLISH_TIMEOUT", "10")),
)
_ATTRIBUTES = {
    "schema": "bench.floor",
    "recipient": "bench@example.org",
    "sender": "alice@bank.example",
    "token": "0" * 50,
    "message_id": "<floor@bench.example>",
    "digest": "0" * 64,
}


@functions_framework.http
def publish_only(request: flask.Request) -> flask.Response:
    body = request.get_data(cache=False)
    attributes = {**_ATTRIBUTES, "received_at": str(time.time())}
    _publisher.publish(body[:MAX_DATA_BYTES], attributes)
    return flask.Response("published\n", status=200, mimetype="text/plain")
