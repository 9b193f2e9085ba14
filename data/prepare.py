"""Turn input files into one corpus HDF5 (`crystalgen data prepare`).

Every entry is parsed, checked and analysed in a worker process
(`process_entry`); what cannot be used is dropped with a reason, counted in a
drop report written next to the output (`<out>.report.json`). A structure whose
Wyckoff conversion fails is kept (`wyckoff/ok` False) and counted as
"wyckoff conversion failed". The schema is in `crystalgen.data.corpus`.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import spglib
from pymatgen.core import Composition, Element, Structure
from crystalgen.progress import progress_bar

from crystalgen.data.corpus import build_corpus, write_corpus
from crystalgen.data.readers import RawEntry, ReaderError, iter_raw, parse_entry
from crystalgen.validators.charge import guess_oxidation_states
from crystalgen.validators.lattice import lattice_parameters

SYMPREC = 0.01
WYCKOFF_FAILED = "wyckoff conversion failed"
EXAMPLES_PER_REASON = 5
# Search cap for pymatgen's oxidation-state guess (see crystalgen.validators.charge): prepare runs
# once, so it affords a larger search than the validators; formulas above it get oxidation 0.
OXIDATION_MAX_SEARCH = 1000


@dataclass
class PrepareConfig:
    """Options of `prepare`; `workers` defaults to all cores."""

    workers: int | None = None
    chunksize: int = 8
    progress: bool = True


@dataclass
class DropReport:
    """What came in, what was kept, and per reason what was dropped (with a few example ids)."""

    inputs: list[str]
    read: int = 0
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)
    warnings: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    file_errors: list[str] = field(default_factory=list)
    wall_s: float = 0.0

    def note(self, counter: Counter, reason: str, rid: str) -> None:
        counter[reason] += 1
        self.examples.setdefault(reason, [])
        if len(self.examples[reason]) < EXAMPLES_PER_REASON:
            self.examples[reason].append(rid)

    def as_dict(self) -> dict[str, Any]:
        return {
            "inputs": self.inputs,
            "read": self.read,
            "kept": self.kept,
            "dropped": dict(self.dropped),
            "warnings": dict(self.warnings),
            "examples": self.examples,
            "file_errors": self.file_errors,
            "wall_s": round(self.wall_s, 1),
        }

    def text(self) -> str:
        lines = [f"read {self.read} entries from {len(self.inputs)} input(s); kept {self.kept}"]
        lines += [f"  dropped {n:6d}  {reason}" for reason, n in self.dropped.most_common()]
        lines += [f"  kept,   {n:6d}  {reason}" for reason, n in self.warnings.most_common()]
        lines += [f"  file error: {e}" for e in self.file_errors]
        return "\n".join(lines)


@lru_cache(maxsize=65536)
def _oxidation_by_element(reduced_formula: str) -> dict[str, int]:
    guess = guess_oxidation_states(reduced_formula, OXIDATION_MAX_SEARCH) or {}
    return {el: int(round(q)) for el, q in guess.items()}


def symmetry_arrays(structure: Structure, symprec: float = SYMPREC) -> dict[str, Any] | None:
    """spglib's space group, standardised cell with Wyckoff letters, and one representative per orbit."""
    cell = (structure.lattice.matrix, structure.frac_coords, np.array(structure.atomic_numbers))
    data = spglib.get_symmetry_dataset(cell, symprec=symprec)
    if data is None:
        return None
    # An input atom for each primitive atom: standardised-cell atoms inherit its orbit and letter.
    input_of_primitive = {}
    for i, p in enumerate(data.mapping_to_primitive):
        input_of_primitive.setdefault(int(p), i)
    source = np.array([input_of_primitive[int(p)] for p in data.std_mapping_to_primitive])
    orbit = np.asarray(data.equivalent_atoms)[source]
    _, first, counts = np.unique(orbit, return_index=True, return_counts=True)
    order = np.argsort(first)
    return {
        "spacegroup": int(data.number),
        "std_lattice": np.asarray(data.std_lattice),
        "std_species": np.asarray(data.std_types),
        "std_frac_coords": np.asarray(data.std_positions),
        "std_wyckoff": np.array([data.wyckoffs[i] for i in source], dtype="S1"),
        "asym_index": first[order],
        "asym_multiplicity": counts[order],
    }


def wyckoff_arrays(structure: Structure) -> dict[str, Any]:
    """The `WyckoffCrystal` form as arrays; `wyckoff_ok` False (and `wyckoff_error`) when it fails."""
    from crystalgen.representation.wyckoff import WyckoffCrystal

    try:
        crystal = WyckoffCrystal.from_structure(structure)
    except Exception as exc:  # WyckoffError, or anything pyxtal raises on odd input
        return {
            "wyckoff_ok": False,
            "wyckoff_error": f"{type(exc).__name__}: {exc}"[:200],
            "wyckoff_spacegroup": 0,
            "wyckoff_lattice": np.zeros(6),
            "wyckoff_element": np.zeros(0, int),
            "wyckoff_letter": np.zeros(0, "S1"),
            "wyckoff_multiplicity": np.zeros(0, int),
            "wyckoff_xyz": np.zeros((0, 3)),
            "wyckoff_oxidation": np.zeros(0, int),
        }
    oxidation = _oxidation_by_element(structure.composition.reduced_formula)
    sites = crystal.sites
    return {
        "wyckoff_ok": True,
        "wyckoff_spacegroup": crystal.spacegroup,
        "wyckoff_lattice": np.asarray(crystal.lattice, dtype=float),
        "wyckoff_element": np.array([Element(s.element).Z for s in sites], dtype=int),
        "wyckoff_letter": np.array([s.letter for s in sites], dtype="S1"),
        "wyckoff_multiplicity": np.array([s.multiplicity for s in sites], dtype=int),
        "wyckoff_xyz": np.array([s.xyz for s in sites], dtype=float).reshape(-1, 3),
        "wyckoff_oxidation": np.array([oxidation.get(s.element, 0) for s in sites], dtype=int),
    }


def process_entry(entry: RawEntry) -> dict[str, Any]:
    """Parse and analyse one entry: the corpus row, or {"id", "drop": reason}. Never raises."""
    record = parse_entry(entry)
    if record.structure is None:
        return {"id": entry.id, "drop": "unparsable", "error": record.error}
    structure = record.structure
    if not structure.is_ordered:
        return {"id": entry.id, "drop": "disordered sites"}
    try:
        symmetry = symmetry_arrays(structure)
    except Exception as exc:
        symmetry, error = None, f"{type(exc).__name__}: {exc}"
    else:
        error = "spglib returned no dataset"
    if symmetry is None:
        return {"id": entry.id, "drop": "symmetry analysis failed", "error": error}
    matrix = np.asarray(structure.lattice.matrix)
    return {
        "id": entry.id,
        "source": str(entry.properties.get("source", "")),
        "properties": {k: v for k, v in entry.properties.items() if k != "source"},
        "lattice": matrix,
        "lattice_params": np.array(lattice_parameters(matrix)),
        "species": np.array(structure.atomic_numbers),
        "frac_coords": np.asarray(structure.frac_coords),
        **symmetry,
        **wyckoff_arrays(structure),
    }


def _entries(sources: list[Path], report: DropReport) -> list[RawEntry]:
    """All raw entries, with the source tag defaulting to the input file name."""
    entries = []
    for path in sources:
        try:
            for entry in iter_raw(path):
                if not isinstance(entry.properties.get("source"), str):
                    entry.properties["source"] = path.name
                entries.append(entry)
        except ReaderError as exc:
            report.file_errors.append(str(exc))
    return entries


def prepare(sources: list[str | Path], out: str | Path, config: PrepareConfig | None = None) -> DropReport:
    """Build the corpus at `out` from `sources`; writes `<out>.report.json` and returns the report."""
    config = config or PrepareConfig()
    start = time.perf_counter()
    paths = [Path(s) for s in sources]
    report = DropReport(inputs=[str(p) for p in paths])
    entries = _entries(paths, report)
    report.read = len(entries)
    workers = config.workers or os.cpu_count() or 1

    rows, seen = [], set()
    bar = progress_bar(total=len(entries), desc="preparing", unit="struct", enabled=config.progress)
    with mp.get_context("fork").Pool(workers) if workers > 1 else _Serial() as pool:
        for row in pool.imap(process_entry, entries, chunksize=config.chunksize):
            bar.update()
            if "drop" in row:
                report.note(report.dropped, row["drop"], row["id"])
            elif row["id"] in seen:
                report.note(report.dropped, "duplicate id", row["id"])
            else:
                seen.add(row["id"])
                if not row["wyckoff_ok"]:
                    report.note(report.warnings, WYCKOFF_FAILED, row["id"])
                rows.append(row)
    bar.close()

    report.kept = len(rows)
    corpus = build_corpus(rows, {"symprec": SYMPREC, "sources": report.inputs})
    write_corpus(out, corpus)
    report.wall_s = time.perf_counter() - start
    Path(f"{out}.report.json").write_text(json.dumps(report.as_dict(), indent=2))
    return report


class _Serial:
    """Stand-in for a process pool when one worker is asked for (tests, debugging)."""

    def __enter__(self) -> "_Serial":
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    @staticmethod
    def imap(func, iterable, chunksize: int = 1):
        return map(func, iterable)
