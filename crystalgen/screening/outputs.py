"""Writing a finished run: HDF5 with everything, CIFs of the best, CSV summaries, plots.

RUN_DIR/
  screen.h5        /candidates (one row per candidate: structure, trace, report, flags,
                   scores, rank), /funnel (counts per target and stage), /timings
                   (seconds per stage of this invocation; the only part that differs
                   between an interrupted and an uninterrupted run), attrs: config
  summary.csv      one row per candidate (no structures), ranked ones first, by target
  funnel.csv       candidates left after each stage, per target
  cifs/            each target's top_k candidates (relaxed if relaxed), symmetrised CIF
  funnel.png, scores.png, spacegroups.png
  shards/          the finished shard files (what a restart resumes from)

Every file is written atomically, so a killed run never leaves a half-written output.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from pymatgen.core import Structure
from pymatgen.io.cif import CifWriter

from crystalgen.output_paths import umask_mode
from crystalgen.screening.config import ScreenConfig
from crystalgen.screening.result import ScreenResult
from crystalgen.screening.shards import atomic_write_bytes
from crystalgen.screening.stages import STAGES

#: the files of RUN_DIR itself that :func:`write_outputs` writes (besides ``cifs/``)
OUTPUT_FILES = ("screen.h5", "summary.csv", "funnel.csv", "funnel.png", "scores.png", "spacegroups.png")

SUMMARY_COLUMNS = [
    "rank", "key", "target", "formula", "num_atoms", "spacegroup", "stage", "score", "energy_per_atom",
    "formation_energy_per_atom", "log_likelihood", "relax_steps", "filter_reason", "duplicate_of", "known_match", "score_error",
]


def _num(x: Any) -> float:
    return float("nan") if x is None else float(x)


def _text(x: Any) -> str:
    return "" if x is None else str(x)


def candidate_columns(candidates: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """The candidate table as columns of plain values (None -> "" or NaN or -1)."""
    cols: dict[str, list[Any]] = {k: [] for k in (
        "key", "target", "target_index", "shard_index", "formula", "num_atoms", "spacegroup", "stage",
        "valid", "passed_filters", "filter_reason", "duplicate_of", "known_match", "log_likelihood",
        "score", "energy_per_atom", "formation_energy_per_atom", "relax_steps", "rank", "score_error", "structure_json",
        "relaxed_structure_json", "trace_json", "report_json", "metadata_json",
    )}
    for c in candidates:
        res = c["result"]
        for k in ("key", "target", "formula", "stage", "filter_reason", "duplicate_of", "known_match",
                  "score_error"):
            cols[k].append(_text(c.get(k)))
        for k in ("target_index", "shard_index", "num_atoms", "spacegroup"):
            cols[k].append(int(c[k]))
        cols["valid"].append(bool(c["valid"]))
        cols["passed_filters"].append(bool(c["passed_filters"]))
        cols["log_likelihood"].append(_num(res.get("log_likelihood")))
        cols["score"].append(_num(c.get("score")))
        cols["energy_per_atom"].append(_num(c.get("energy_per_atom")))
        cols["formation_energy_per_atom"].append(_num(c.get("formation_energy_per_atom")))
        cols["relax_steps"].append(-1 if c.get("relax_steps") is None else int(c["relax_steps"]))
        cols["rank"].append(0 if c["rank"] is None else int(c["rank"]))
        cols["structure_json"].append(json.dumps(res["structure"]))
        cols["relaxed_structure_json"].append(json.dumps(c["relaxed"]) if c.get("relaxed") else "")
        cols["trace_json"].append(json.dumps(res.get("trace")))
        cols["report_json"].append(json.dumps(res.get("report")))
        cols["metadata_json"].append(json.dumps(res.get("metadata"), sort_keys=True))
    return cols


def _atomic_path(final: Path):
    """A temporary path next to ``final``; the caller ``os.replace``s it into place."""
    fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp")
    os.close(fd)
    os.chmod(tmp, umask_mode(folder=False))
    return Path(tmp)


def write_hdf5(result: ScreenResult, path: Path) -> None:
    tmp = _atomic_path(path)
    try:
        with h5py.File(tmp, "w") as h5:
            h5.attrs["config_json"] = json.dumps(result.config.as_dict(), sort_keys=True)
            h5.attrs["stages"] = json.dumps(list(STAGES))
            h5.attrs["warnings_json"] = json.dumps(result.warnings)
            g = h5.create_group("candidates")
            for name, values in candidate_columns(result.candidates).items():
                if values and isinstance(values[0], str):
                    g.create_dataset(name, data=np.array(values, dtype=object), dtype=h5py.string_dtype())
                else:
                    g.create_dataset(name, data=np.asarray(values))
            f = h5.create_group("funnel")
            names = list(result.funnel)
            f.create_dataset("targets", data=np.array(names, dtype=object), dtype=h5py.string_dtype())
            f.create_dataset("stages", data=np.array(STAGES, dtype=object), dtype=h5py.string_dtype())
            f.create_dataset("counts", data=np.array([[result.funnel[n][s] for s in STAGES] for n in names]))
            t = h5.create_group("timings")
            for stage, seconds in result.seconds.items():
                t.attrs[stage] = seconds
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _csv_bytes(header: list[str], rows: list[list[Any]]) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue().encode()


def write_csvs(result: ScreenResult, run_dir: Path) -> None:
    ordered = result.ranked() + [c for c in result.candidates if c["rank"] is None]
    rows = []
    for c in ordered:
        row = {**c, "log_likelihood": c["result"].get("log_likelihood")}
        rows.append([_text(row.get(k)) for k in SUMMARY_COLUMNS])
    atomic_write_bytes(run_dir / "summary.csv", _csv_bytes(SUMMARY_COLUMNS, rows))
    funnel_rows = [[name] + [counts[s] for s in STAGES] for name, counts in result.funnel.items()]
    atomic_write_bytes(run_dir / "funnel.csv", _csv_bytes(["target", *STAGES], funnel_rows))


def _file_stem(target: str) -> str:
    return re.sub(r"[^A-Za-z0-9-]", "_", target)


def _cif_names(config: ScreenConfig) -> re.Pattern:
    """The names :func:`write_top_cifs` gives: ``{target}_{rank:03d}_{formula}.cif``."""
    stems = "|".join(re.escape(_file_stem(t.name)) for t in config.targets)
    return re.compile(rf"(?:{stems})_\d{{3}}_\w+\.cif")


def is_output(config: ScreenConfig, run_dir: Path, path: Path) -> bool:
    """Is ``path`` one of the files :func:`write_outputs` writes for this run?"""
    return ((path.parent == run_dir and path.name in OUTPUT_FILES)
            or (path.parent == run_dir / "cifs" and _cif_names(config).fullmatch(path.name) is not None))


def write_top_cifs(result: ScreenResult, run_dir: Path) -> list[Path]:
    """Symmetrised CIFs of each target's top_k, named ``{target}_{rank:03d}_{formula}.cif``."""
    out_dir = run_dir / "cifs"
    out_dir.mkdir(exist_ok=True)
    ours = _cif_names(result.config)
    for old in out_dir.glob("*.cif"):  # a rerun with other ranks must not leave stale files; others' files stay
        if ours.fullmatch(old.name):
            old.unlink()
    paths = []
    for c in (c for c in result.ranked() if c["rank"] <= result.config.export.top_k):
        s = Structure.from_dict(c["relaxed"] or c["result"]["structure"])
        try:
            text = str(CifWriter(s, symprec=result.config.export.cif_symprec))
        except Exception:  # symmetry search failed on an odd cell: write it in P1
            text = str(CifWriter(s))
        path = out_dir / f"{_file_stem(c['target'])}_{c['rank']:03d}_{c['formula']}.cif"
        atomic_write_bytes(path, text.encode())
        paths.append(path)
    return paths


def _save_png(fig, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())


def write_plots(result: ScreenResult, run_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in result.funnel if n != "total"]
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / max(1, len(names))
    x = np.arange(len(STAGES))
    for i, name in enumerate(names):
        ax.bar(x + i * width, [result.funnel[name][s] for s in STAGES], width, label=name)
    ax.set_xticks(x + width * (len(names) - 1) / 2, STAGES)
    ax.set_ylabel("candidates left")
    ax.set_title("Screening funnel")
    ax.legend(fontsize="small")
    _save_png(fig, run_dir / "funnel.png")
    plt.close(fig)

    by = result.config.rank.by
    # one stacked series per target: energies of different compositions are not comparable
    scored = [c for c in result.candidates if c.get("score") is not None and math.isfinite(c["score"])]
    series = [[c["score"] for c in scored if c["target"] == name] for name in names]
    fig, ax = plt.subplots(figsize=(6, 4))
    if scored:
        ax.hist(series, bins=min(30, max(5, len(scored) // 3)), stacked=True, label=names)
        ax.legend(fontsize="small")
    ax.set_xlabel({"energy": "energy per atom (eV)", "formation_energy": "formation energy per atom (eV)"}
                  .get(by, "-log-likelihood (nats)"))
    ax.set_ylabel("candidates")
    ax.set_title(f"Scores of {len(scored)} scored candidates")
    _save_png(fig, run_dir / "scores.png")
    plt.close(fig)

    valid = [c["spacegroup"] for c in result.candidates if c["valid"]]
    ranked = [c["spacegroup"] for c in result.candidates if c["rank"] is not None]
    groups = sorted(set(valid))
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(groups)), 4))
    xs = np.arange(len(groups))
    ax.bar(xs - 0.2, [valid.count(g) for g in groups], 0.4, label="valid")
    ax.bar(xs + 0.2, [ranked.count(g) for g in groups], 0.4, label="ranked")
    ax.set_xticks(xs, [str(g) for g in groups], rotation=90, fontsize="small")
    ax.set_xlabel("space group")
    ax.set_ylabel("candidates")
    ax.legend()
    _save_png(fig, run_dir / "spacegroups.png")
    plt.close(fig)


def funnel_markdown(funnel: dict[str, dict[str, int]]) -> str:
    """The funnel as a Markdown table (for the README and the CLI's output)."""
    lines = ["| target | " + " | ".join(STAGES) + " |", "|---" * (len(STAGES) + 1) + "|"]
    for name, counts in funnel.items():
        label = f"**{name}**" if name == "total" else name
        lines.append(f"| {label} | " + " | ".join(str(counts[s]) for s in STAGES) + " |")
    return "\n".join(lines)


def write_outputs(result: ScreenResult, run_dir: str | Path) -> None:
    run_dir = Path(run_dir)
    write_hdf5(result, run_dir / "screen.h5")
    write_csvs(result, run_dir)
    write_top_cifs(result, run_dir)
    write_plots(result, run_dir)
