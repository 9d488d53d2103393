"""The latency distributions of (1) and (3) as histograms, to bench/latency.png."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import FuncFormatter, NullFormatter

Panel = tuple[str, Mapping[str, Sequence[float]]]  # title, label -> samples in ms


def draw(panels: Sequence[Panel], path: Path, title: str) -> None:
    figure, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.5), squeeze=False)
    for axis, (name, series) in zip(axes[0], panels, strict=True):
        values = [v for samples in series.values() for v in samples if v > 0]
        if not values:
            axis.set_title(f"{name}\n(no samples)")
            continue
        bins = np.geomspace(min(values) * 0.9, max(values) * 1.1, 40)
        for label, samples in series.items():
            shown = [v for v in samples if v > 0]
            if shown:
                p50, p99 = (float(v) for v in np.percentile(shown, [50, 99]))
                label = f"{label}: n={len(shown)}, p50 {p50:.0f} ms, p99 {p99:.0f} ms"
                axis.hist(shown, bins=bins, alpha=0.55, label=label)
        axis.set_xscale("log")
        axis.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        axis.xaxis.set_minor_formatter(NullFormatter())
        axis.set_xlabel("latency (ms, log scale)")
        axis.set_ylabel("requests")
        axis.set_title(name)
        axis.legend(fontsize=8)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
