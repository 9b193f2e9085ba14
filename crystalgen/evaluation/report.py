"""Writing an evaluation run: JSON with every figure and setting, and a text table.

The JSON's top level holds the primary generator's figures (e.g. `match_rate`, `rmse`,
`n_test`, `n_samples` for CSP; `structural_validity`, `compositional_validity`,
`pass_rate` for DNG) next to `settings`, and `rows` holds every generator's summary,
so each report carries its baseline row side by side.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from crystalgen import __version__


def build_report(settings: Mapping[str, Any], rows: Mapping[str, Mapping[str, Any]], primary: str) -> dict[str, Any]:
    """The JSON document: primary row's figures at top level, all rows under `rows`."""
    report: dict[str, Any] = dict(rows[primary])
    report["primary"] = primary
    report["settings"] = dict(settings)
    report["rows"] = {name: dict(row) for name, row in rows.items()}
    report["environment"] = {
        "crystalgen": __version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    return report


def cpu_name() -> str:
    """The CPU model as the kernel names it (``platform.processor()`` is empty on Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def provenance(benchmark: str) -> dict[str, Any]:
    """Where a benchmark figure comes from: its script, the exact command, the UTC date, and the
    hardware it ran on, with the load average at the start (other jobs sharing the cores show here)."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "benchmark": benchmark,
        "command": "python " + " ".join(sys.argv),
        "date": datetime.now(timezone.utc).date().isoformat(),
        "hardware": {"cpu": cpu_name(), "cores": os.cpu_count(),
                     "load_average_at_start": [round(x, 2) for x in load] if load else None},
        "crystalgen": __version__,
    }


def write_json(path: str | Path, report: Mapping[str, Any]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_plain(report), indent=2, sort_keys=False) + "\n")
    return path


def _plain(value: Any) -> Any:
    """JSON-safe copy: numpy scalars to Python, NaN to null."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def format_table(rows: Mapping[str, Mapping[str, Any]], keys: Sequence[str]) -> str:
    """A plain-text table, one line per generator, for the terminal."""
    header = ["generator", *keys]
    lines = [header] + [[name, *(_fmt(row.get(k)) for k in keys)] for name, row in rows.items()]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)) for line in lines)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)
