"""The structure-prediction table (README, docs/evaluation.md) from `crystalgen evaluate csp` result files.

Each cell is read from the JSON a run wrote, never typed by hand, so the table and the files agree:

    python benchmarks/csp_table.py docs/evaluation/csp_table.json

The spec file lists the rows; each row names, per column, a result file and optionally which of its
rows (``rows`` key of a run with ``--baseline analogue`` or ``--relax``) to read. A missing file
prints "not run".
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def cell(root: Path, entry: dict | None) -> str:
    if not entry:
        return "not run"
    path = root / entry["file"]
    if not path.exists():
        return "not run"
    result = json.loads(path.read_text())
    if entry.get("row"):
        result = {**result, **result["rows"][entry["row"]]}
    rate, rmse = result["match_rate"], result["rmse"]
    text = f"{100 * rate:.1f}%" + (f" / {rmse:.3f}" if rmse is not None else "")
    text += f" (n={result['n_test']})"
    return text + (f", {entry['note']}" if entry.get("note") else "")


def table(spec: dict, root: Path) -> str:
    columns = spec["columns"]
    lines = ["| | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for row in spec["rows"]:
        cells = [cell(root, row.get(c)) if not isinstance(row.get(c), str) else row[c] for c in columns]
        lines.append(f"| {row['label']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    spec_path = Path(argv[0])
    spec = json.loads(spec_path.read_text())
    print(table(spec, spec_path.parent))


if __name__ == "__main__":
    main(sys.argv[1:])
