"""Baseline: a hello-world HTTP function under the same functions-framework and server settings.

It reads the request body (as ingest does), so both pay the same transport.
"""

import flask
import functions_framework


@functions_framework.http
def hello(request: flask.Request) -> flask.Response:
    request.get_data(cache=False)
    return flask.Response("Hello World!\n", status=200, mimetype="text/plain")
