"""The one-page PNG summary of an evaluation run (matplotlib, Agg backend).

Three panels, one colour per generator: pass rate per validator check, space-group
histogram, density histogram against the test set's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np


def summary_png(
    path: str | Path,
    summaries: Mapping[str, Mapping[str, Any]],
    densities: Mapping[str, Sequence[float]],
    reference_densities: Sequence[float] | None = None,
    title: str = "",
) -> Path:
    """Write the summary figure for `summaries` (generator -> summary dict) to `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(summaries)
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    _check_bars(axes[0], summaries)
    _spacegroups(axes[1], summaries)
    _densities(axes[2], names, densities, reference_densities)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _check_bars(ax, summaries: Mapping[str, Mapping[str, Any]]) -> None:
    checks = sorted({c for s in summaries.values() for c in (s.get("check_pass_rates") or {})})
    labels = checks + ["struct. valid", "comp. valid", "all checks"]
    width = 0.8 / max(len(summaries), 1)
    x = np.arange(len(labels))
    for k, (name, s) in enumerate(summaries.items()):
        rates = [(s.get("check_pass_rates") or {}).get(c, np.nan) for c in checks]
        rates += [s.get("structural_validity"), s.get("compositional_validity"), s.get("pass_rate")]
        ax.bar(x + k * width, [np.nan if r is None else r for r in rates], width, label=name)
    ax.set_xticks(x + width * (len(summaries) - 1) / 2, labels, rotation=30, ha="right")
    ax.set_ylim(0, 1.2)
    ax.set_ylabel("pass rate")
    ax.set_title("pass rate per check")
    ax.legend(fontsize=8, loc="upper center", ncol=max(len(summaries), 1))


def _spacegroups(ax, summaries: Mapping[str, Mapping[str, Any]]) -> None:
    bins = np.arange(0.5, 231.5, 5)
    for name, s in summaries.items():
        counts = s.get("spacegroup_counts") or {}
        values = [int(sg) for sg, c in counts.items() for _ in range(int(c))]
        if values:
            ax.hist(values, bins=bins, alpha=0.6, label=name)
    ax.set_xlabel("space group number")
    ax.set_ylabel("crystals")
    ax.set_title("space groups (symmetry check)")
    ax.legend(fontsize=8)


def _densities(ax, names: Sequence[str], densities, reference) -> None:
    everything = [d for n in names for d in densities.get(n, [])] + list(reference or [])
    if not everything:
        ax.set_title("density (none)")
        return
    hi = float(np.percentile(everything, 99.5))
    bins = np.linspace(0, max(hi, 1.0), 40)
    if reference is not None and len(reference):
        ax.hist(reference, bins=bins, density=True, histtype="step", color="black", lw=2, label="test set")
    for name in names:
        if len(densities.get(name, [])):
            ax.hist(densities[name], bins=bins, density=True, alpha=0.5, label=name)
    ax.set_xlabel("density (g/cm³)")
    ax.set_ylabel("fraction")
    ax.set_title("density vs test set")
    ax.legend(fontsize=8)
