"""A local stand-in for Mailgun's Routes API, for the unit and deploy tests.

``GET/POST /v3/routes``, ``PUT/DELETE /v3/routes/<id>`` with in-memory state, and a domain's
event webhooks (``GET/POST /v3/domains/<domain>/webhooks``, ``PUT/DELETE .../webhooks/<id>``,
``{"webhooks": {"<id>": {"urls": [...]}}}``, in ``webhooks[domain]``),
form-encoded bodies (``action`` repeated) and basic auth ``api:KEY``, answering
with the shapes Mailgun documents. ``fail_next(status)`` forces the next answers;
``hang_next()`` makes the next request wait until the stand-in stops (for timeouts).
It listens on 127.0.0.1 on a free port, in a thread.
"""

from __future__ import annotations

import base64
import hmac
import json
import secrets
import threading
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


class RoutesStandin:
    def __init__(self, api_key: str) -> None:
        self.api_key = api_key
        self.lock = threading.Lock()
        self.routes: list[dict[str, Any]] = []
        self.webhooks: dict[str, dict[str, list[str]]] = {}  # domain -> webhook id -> URLs
        self.requests: list[tuple[str, str]] = []  # (method, path with query)
        self.forced: list[int] = []
        self.hangs = 0
        self.released = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "start() first"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> str:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="routes-standin", daemon=True
        )
        self._thread.start()
        return self.url

    def stop(self) -> None:
        self.released.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def fail_next(self, status: int, times: int = 1) -> None:
        with self.lock:
            self.forced.extend([status] * times)

    def hang_next(self) -> None:
        with self.lock:
            self.hangs += 1

    def add_route(self, description: str, expression: str, actions: list[str], priority: int = 0) -> str:
        with self.lock:
            return str(self._create(description, expression, actions, priority)["id"])

    def _create(self, description: str, expression: str, actions: list[str], priority: int) -> dict[str, Any]:
        route = {
            "id": secrets.token_hex(12),
            "priority": priority,
            "description": description,
            "expression": expression,
            "actions": actions,
            "created_at": formatdate(usegmt=True),
        }
        self.routes.append(route)
        return route

    def authorized(self, header: str | None) -> bool:
        expected = "Basic " + base64.b64encode(f"api:{self.api_key}".encode()).decode()
        return header is not None and hmac.compare_digest(header.encode(), expected.encode())

    def handle(self, method: str, target: str, auth: str | None, body: bytes) -> tuple[int, Any]:
        with self.lock:
            self.requests.append((method, target))
            if self.forced:
                status = self.forced.pop(0)
                return status, {"message": f"forced {status}"}
        if not self.authorized(auth):
            return 401, "Forbidden"
        parts = urlsplit(target)
        path = parts.path.rstrip("/")
        form = parse_qs(body.decode("ascii"), keep_blank_values=True)
        with self.lock:
            if path.startswith("/v3/domains/") and "/webhooks" in path:
                return self._webhooks(method, path, form)
            if path == "/v3/routes" and method == "GET":
                query = parse_qs(parts.query)
                skip = int(query.get("skip", ["0"])[0])
                limit = min(int(query.get("limit", ["100"])[0]), 1000)
                return 200, {"total_count": len(self.routes), "items": self.routes[skip : skip + limit]}
            if path == "/v3/routes" and method == "POST":
                if not form.get("expression"):
                    return 400, {"message": "'expression' parameter is missing"}
                route = self._create(
                    form.get("description", [""])[0],
                    form["expression"][0],
                    form.get("action", []),
                    int(form.get("priority", ["0"])[0]),
                )
                return 200, {"message": "Route has been created", "route": route}
            if path.startswith("/v3/routes/") and method in ("PUT", "DELETE"):
                route_id = path.rsplit("/", 1)[1]
                found = [r for r in self.routes if r["id"] == route_id]
                if not found:
                    return 404, {"message": "Route not found"}
                route = found[0]
                if method == "DELETE":
                    self.routes.remove(route)
                    return 200, {"message": "Route has been deleted", "id": route_id}
                for field in ("description", "expression"):
                    if field in form:
                        route[field] = form[field][0]
                if "priority" in form:
                    route["priority"] = int(form["priority"][0])
                if "action" in form:
                    route["actions"] = form["action"]
                return 200, {"message": "Route has been updated", **route}
        return 404, {"message": "not found"}

    def _webhooks(self, method: str, path: str, form: dict[str, list[str]]) -> tuple[int, Any]:
        domain, _, rest = path[len("/v3/domains/") :].partition("/webhooks")
        hooks = self.webhooks.setdefault(domain, {})
        name = rest.strip("/")
        if not name and method == "GET":
            return 200, {"webhooks": {n: {"urls": list(u)} for n, u in hooks.items()}}
        if not name and method == "POST":
            hook, urls = form.get("id", [""])[0], form.get("url", [])
            if not hook or not urls or hook in hooks:
                return 400, {"message": "id and url are required, and the webhook must not exist"}
            hooks[hook] = urls
            return 200, {"message": "Webhook has been created", "webhook": {"urls": urls}}
        if name and name in hooks and method == "PUT" and form.get("url"):
            hooks[name] = form["url"]
            return 200, {"message": "Webhook has been updated", "webhook": {"urls": hooks[name]}}
        if name and name in hooks and method == "DELETE":
            del hooks[name]
            return 200, {"message": "Webhook has been deleted", "webhook": {"urls": []}}
        return 404, {"message": "Webhook not found"}


def _make_handler(standin: RoutesStandin) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            with standin.lock:
                hang = standin.hangs > 0
                standin.hangs -= 1 if hang else 0
            if hang:
                standin.released.wait(60)
                return
            status, payload = standin.handle(self.command, self.path, self.headers.get("Authorization"), body)
            data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain" if isinstance(payload, str) else "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler
