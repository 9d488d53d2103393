"""Spam policy: Mailgun's verdict (``X-Mailgun-Sflag``, ``X-Mailgun-Sscore``) → forward, tag or refuse.

Per route (``spam``, ``spam_threshold``), with a file-wide default. The default is
``tag`` at a score of 5.0 (SpamAssassin's own threshold): Mailgun's filter has false
positives, so refusing by default would lose wanted mail, while forwarding spam
untouched teaches Gmail to distrust our domain. Tagging keeps the message, marks
its Subject with ``[SPAM]`` and adds ``X-Tagrelay-Spam``, so a Gmail filter can
file it. ``refuse`` answers 406 at ingest, so Mailgun stops. Pure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Action = Literal["forward", "tag", "refuse"]
ACTIONS: tuple[Action, ...] = ("forward", "tag", "refuse")
DEFAULT_THRESHOLD = 5.0


@dataclass(frozen=True)
class SpamPolicy:
    action: Action = "tag"
    threshold: float = DEFAULT_THRESHOLD


@dataclass(frozen=True)
class Verdict:
    flagged: bool
    score: float | None

    def describe(self) -> str:
        score = "none" if self.score is None else f"{self.score:g}"
        return f"flag={'yes' if self.flagged else 'no'} score={score}"


def verdict(flag: str, score: str) -> Verdict:
    try:
        value: float | None = float(score) if score.strip() else None
    except ValueError:
        value = None
    return Verdict(flag.strip().lower() == "yes", value)


def decide(policy: SpamPolicy, seen: Verdict) -> Action:
    """What to do with a message: ``forward`` when it is not spam, else the policy's action."""
    is_spam = seen.flagged or (seen.score is not None and seen.score >= policy.threshold)
    return policy.action if is_spam else "forward"
