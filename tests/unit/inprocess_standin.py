"""The Mailgun stand-in served in this process on a free 127.0.0.1 port, for the operator-tool tests."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import ThreadingHTTPServer
from pathlib import Path

from tagrelay_tools.standin import Standin, make_handler

DOMAIN = "example.org"
API_KEY = "key-ops-tools-0123456789"
WEBHOOK_KEY = "webhook-signing-key-ops"


@contextmanager
def serving(outbox: Path, domain: str = DOMAIN) -> Iterator[Standin]:
    """A stand-in whose ``url`` is set; stopped (and its thread joined) on exit."""
    state = Standin(outbox, domain, API_KEY, WEBHOOK_KEY)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(state))
    httpd.daemon_threads = True
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
