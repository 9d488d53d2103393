"""One benchmark figure, the statistics behind it, and the ways results are written out.

Every entry compares a measured ``value`` with a ``baseline`` measured side by side in
the same run; ``ratio`` is the figure held against ``target``. For "faster than" and
"rate" figures the ratio is ``baseline / value`` or ``value / baseline`` as named in
``ratio_of``, so that a reader never has to guess the direction.
"""

from __future__ import annotations

import json
import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

Comparison = Literal["<=", ">="]
_COMPARE: dict[Comparison, Callable[[float, float], bool]] = {"<=": operator.le, ">=": operator.ge}


@dataclass(frozen=True)
class Result:
    name: str
    value: float
    baseline: float
    ratio: float
    unit: str
    target: str  # e.g. "<= 0.1": the ratio compared with a bound
    ok: bool
    ratio_of: str = "value/baseline"
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def compare(
    name: str,
    value: float,
    baseline: float,
    unit: str,
    op: Comparison,
    bound: float,
    note: str = "",
    inverse: bool = False,
    extra: dict[str, Any] | None = None,
) -> Result:
    """A result whose ratio is ``value / baseline`` (or ``baseline / value`` when ``inverse``)."""
    numerator, denominator = (baseline, value) if inverse else (value, baseline)
    ratio = numerator / denominator if denominator > 0 else math.inf
    ok = math.isfinite(ratio) and _COMPARE[op](ratio, bound)
    return Result(
        name=name,
        value=value,
        baseline=baseline,
        ratio=ratio,
        unit=unit,
        target=f"{op} {bound:g}",
        ok=ok,
        ratio_of="baseline/value" if inverse else "value/baseline",
        note=note,
        extra=extra or {},
    )


def within(
    name: str,
    value: float,
    baseline: float,
    unit: str,
    bound: float,
    note: str = "",
    extra: dict[str, Any] | None = None,
) -> Result:
    """A result held against an absolute bound on ``value - baseline`` (an overhead in ``unit``).

    The ratio ``value / baseline`` is reported beside it, so a reader sees both.
    """
    overhead = value - baseline
    note = f"overhead {overhead:+.2f} {unit} (target: at most {bound:g} {unit} over the baseline). {note}".strip()
    ok = math.isfinite(overhead) and overhead <= bound
    extra = {"overhead": overhead, **(extra or {})}
    return _absolute(name, value, baseline, unit, f"+{bound:g} {unit}", ok, note, extra)


def at_most(
    name: str,
    value: float,
    baseline: float,
    unit: str,
    bound: float,
    note: str = "",
    extra: dict[str, Any] | None = None,
) -> Result:
    """A result held against an absolute bound on ``value``; the baseline measured beside it is context."""
    ok = math.isfinite(value) and value <= bound
    return _absolute(name, value, baseline, unit, f"value <= {bound:g} {unit}", ok, note, extra or {})


def _absolute(
    name: str, value: float, baseline: float, unit: str, target: str, ok: bool, note: str, extra: dict[str, Any]
) -> Result:
    ratio = value / baseline if baseline > 0 else math.inf
    return Result(name, value, baseline, ratio, unit, target, ok, note=note, extra=extra)


def failed(name: str, unit: str, target: str, reason: str) -> Result:
    """A figure that could not be measured: reported as a miss with the reason."""
    return Result(name, math.nan, math.nan, math.nan, unit, target, False, note=f"not measured: {reason}")


def percentile(samples: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), linear between the closest ranks."""
    if not samples:
        return math.nan
    ordered = sorted(samples)
    position = (len(ordered) - 1) * q / 100.0
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def median(samples: Sequence[float]) -> float:
    return percentile(samples, 50.0)


def _number(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    if math.isinf(value):
        return "inf"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 0.01 or magnitude == 0:
        return f"{value:.3g}" if magnitude < 1 else f"{value:.2f}"
    return f"{value:.2g}"


COLUMNS = ("name", "value", "baseline", "unit", "ratio", "target", "ok")


def rows(results: Sequence[Result]) -> list[tuple[str, ...]]:
    return [
        (r.name, _number(r.value), _number(r.baseline), r.unit, _number(r.ratio), r.target, "ok" if r.ok else "MISS")
        for r in results
    ]


def table(results: Sequence[Result]) -> str:
    """A plain-text table for the terminal."""
    body = rows(results)
    widths = [max(len(c), *(len(row[i]) for row in body)) if body else len(c) for i, c in enumerate(COLUMNS)]
    numeric = {1, 2, 4}

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in numeric else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    return "\n".join([line(COLUMNS), line(["-" * w for w in widths]), *(line(row) for row in body)])


def markdown(results: Sequence[Result], machine: dict[str, Any], mode: str, seconds: float) -> str:
    """The table as Markdown, with the machine it ran on (for the README)."""
    head = "| " + " | ".join(COLUMNS) + " |"
    rule = "|" + "|".join("---:" if c in ("value", "baseline", "ratio") else "---" for c in COLUMNS) + "|"
    lines = [
        f"`make bench{'-quick' if mode == 'quick' else ''}` on {machine.get('summary', 'this machine')}, "
        f"{seconds:.0f} s in all.",
        "",
        head,
        rule,
        *("| " + " | ".join(row) + " |" for row in rows(results)),
        "",
        "Notes:",
        "",
        *(f"- `{r.name}`: {r.note}" for r in results if r.note),
    ]
    return "\n".join(lines) + "\n"


def write_json(path: Path, results: Sequence[Result], meta: dict[str, Any]) -> None:
    def clean(value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            return None  # JSON has no NaN or infinity
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    document = {**meta, "results": [clean(asdict(r)) for r in results]}
    path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
