"""tagrelay.adapters.firestore.call: answers pass through, outages (credentials included) become LedgerUnavailable."""

from __future__ import annotations

from typing import Any

import pytest
from google.api_core.exceptions import AlreadyExists, ServiceUnavailable
from google.auth.exceptions import RefreshError

from tagrelay.adapters import firestore
from tagrelay.core.errors import LedgerUnavailable


def raising(error: BaseException) -> Any:
    def operation(**kwargs: Any) -> Any:
        assert kwargs["timeout"] == 2.0 and kwargs["retry"] is not None  # every call bounded
        raise error

    return operation


def test_an_expected_answer_passes_through() -> None:
    with pytest.raises(AlreadyExists):
        firestore.call(raising(AlreadyExists("exists")), timeout=2.0, answers=("AlreadyExists",))  # type: ignore[no-untyped-call]


@pytest.mark.parametrize(
    "error",
    [ServiceUnavailable("down"), RefreshError("metadata server")],  # type: ignore[no-untyped-call]
    ids=["service-unavailable", "credentials-refresh"],
)
def test_outages_become_ledger_unavailable_naming_only_the_class(error: BaseException) -> None:
    with pytest.raises(LedgerUnavailable) as raised:
        firestore.call(raising(error), timeout=2.0, what="Firestore (contacts)")
    assert raised.value.reason == f"Firestore (contacts) failed ({type(error).__name__})"
