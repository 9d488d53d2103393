"""Structured logs in Cloud Logging's JSON format: one line per message per stage.

Every line has ``severity`` and ``message`` and the same set of fields where
known: ``stage``, ``alias``, ``message_id``, ``pubsub_id``, ``mailgun_id``,
``outcome``, ``reason``. ``gcloud logging read 'jsonPayload.message_id="<…>"'``
follows one message from receipt to delivery. Values passed here must never
be secrets; the callers pass reasons built by tagrelay, not raw exceptions.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

LOGGER_NAME = "tagrelay"
FIELDS = ("stage", "alias", "message_id", "pubsub_id", "mailgun_id", "outcome", "reason", "targets")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {"severity": record.levelname, "message": record.getMessage()}
        for name in FIELDS:
            value = getattr(record, name, None)
            if value not in (None, ""):
                payload[name] = value
        return json.dumps(payload, ensure_ascii=False, default=str)


def logger() -> logging.Logger:
    """The tagrelay logger, writing JSON lines to stdout (set up once)."""
    log = logging.getLogger(LOGGER_NAME)
    if not any(isinstance(h.formatter, JsonFormatter) for h in log.handlers):
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(JsonFormatter())
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
    return log


def event(severity: int, message: str, **fields: Any) -> None:
    logger().log(severity, message, extra={k: v for k, v in fields.items() if k in FIELDS})
