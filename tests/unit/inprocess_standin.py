"""HTTP servers in this process on a free 127.0.0.1 port: the Mailgun stand-in, or any handler.

One way to start and stop them for the unit tier (the Mailgun client's, the stand-in's and the
operator tools' tests): each is stopped, and its thread joined, when the ``with`` block ends.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tagrelay_tools.standin import Standin, make_handler

DOMAIN = "example.org"
API_KEY = "key-ops-tools-0123456789"
WEBHOOK_KEY = "webhook-signing-key-ops"


@contextmanager
def serving_handler(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """``handler`` served on a free port; yields its base URL."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True  # a 'hang' or 'hold' fault must not keep teardown waiting
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@contextmanager
def serving(
    outbox: Path, domain: str = DOMAIN, api_key: str = API_KEY, webhook_key: str = WEBHOOK_KEY
) -> Iterator[Standin]:
    """A stand-in whose ``url`` is set."""
    state = Standin(outbox, domain, api_key, webhook_key)
    with serving_handler(make_handler(state)) as url:
        state.url = url
        yield state
