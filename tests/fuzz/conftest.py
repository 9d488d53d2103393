"""Fuzz-suite fixtures: keep tagrelay's JSON log lines (formatted, so formatting is exercised) off stdout."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from tagrelay.core.log import JsonFormatter, logger


class _Discard(io.StringIO):
    def write(self, text: str) -> int:
        return len(text)


@pytest.fixture(autouse=True, scope="session")
def quiet_logs() -> Iterator[None]:
    handlers = [h for h in logger().handlers if isinstance(h, logging.StreamHandler)]
    handlers = [h for h in handlers if isinstance(h.formatter, JsonFormatter)]
    streams = [h.setStream(_Discard()) for h in handlers]
    yield
    for handler, stream in zip(handlers, streams, strict=True):
        if stream is not None:
            handler.setStream(stream)
