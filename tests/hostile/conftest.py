"""The hostile tier (issue 15): one regression test per class of hostile or unusual mail.

Tests here run in-process against the pure core, the services with in-memory twins,
and the Mailgun client against the real local stand-in; their expected values come
from the stdlib ``email`` parser (tests/hostile/oracle.py) or are written out by hand.

The tests that need the real local stack use ``hostile_stack``: the session's one local stack
(tests/conftest.py), started only when a test asks for it.
"""
from __future__ import annotations

import pytest

from tagrelay_tools.localstack import Stack


@pytest.fixture(scope="session")
def hostile_stack(stack: Stack) -> Stack:
    return stack
