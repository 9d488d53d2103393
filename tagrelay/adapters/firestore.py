"""One Firestore call with a bounded retry and a timeout, for every adapter that keeps records there.

Outages become LedgerUnavailable (transient: ingest answers 503, the relay is redelivered);
the answers a caller expects (the record exists, someone changed it first, it is not there)
pass through, named by their google.api_core.exceptions class.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tagrelay.core.errors import LedgerUnavailable


def call(
    operation: Callable[..., Any],
    *args: Any,
    timeout: float,
    answers: tuple[str, ...] = (),
    what: str = "Firestore",
    **kwargs: Any,
) -> Any:
    from google.api_core import exceptions
    from google.api_core.retry import Retry
    from google.auth.exceptions import GoogleAuthError

    passing = tuple(getattr(exceptions, name) for name in answers)
    retry = Retry(initial=0.1, maximum=1.0, timeout=timeout)
    try:
        return operation(*args, retry=retry, timeout=timeout, **kwargs)
    except passing:
        raise
    except (exceptions.GoogleAPIError, GoogleAuthError) as exc:  # a credentials refresh failing is an outage too
        raise LedgerUnavailable(f"{what} failed ({type(exc).__name__})") from None
