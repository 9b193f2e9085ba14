"""Read crystal structures from the file formats users have.

`read_structures(path)` dispatches on the path:
- CSV or CSV.gz with a `cif` column (CDVAE / DiffCSP benchmark layout, `../shared/data`);
  ids from `material_id` (else the row number), every other column becomes a property;
- a folder of `.cif` files, subfolders included (id: the path below the folder without
  `.cif`, e.g. `NaCl` or `reference/NaCl`; hidden folders are skipped), or a single `.cif` file;
- extended XYZ (`.extxyz`, `.xyz`; read with ASE), one record per frame;
- matbench-format datasets (`.json` / `.json.gz` with a `structure` column, pandas
  "split" orient: `{"index", "columns", "data"}`). The `matbench` package itself pins
  scikit-learn 1.0.1 / scipy 1.7.3 and does not install on Python 3.11, so its file
  format is read directly here.

Reading is two steps so that parsing can run on all cores: `iter_raw(path)` yields
cheap `RawEntry`s (the CIF text, a structure dict, ...) and `parse_entry` turns one
into a `StructureRecord`. A bad entry gives a record with `error` set; a file that
cannot be read at all (missing, no `cif` column, broken JSON) raises `ReaderError`.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pymatgen.core import Structure

csv.field_size_limit(sys.maxsize)  # CIF strings of large cells exceed the 128 kB default

CIF_SUFFIXES = (".cif", ".mcif")
XYZ_SUFFIXES = (".extxyz", ".xyz")
ID_COLUMNS = ("material_id", "id", "mp_id")


class ReaderError(ValueError):
    """A whole file cannot be read (missing, unknown format, no `cif` column, broken JSON)."""


@dataclass
class StructureRecord:
    """One entry of an input file; `structure` is None and `error` says why when it could not be parsed."""

    id: str
    structure: Structure | None
    properties: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


@dataclass
class RawEntry:
    """An unparsed entry: `kind` says how to parse `payload` ("cif", "dict", "atoms")."""

    id: str
    kind: str
    payload: Any
    properties: dict[str, Any] = field(default_factory=dict)


def _open_text(path: Path) -> io.TextIOBase:
    if path.name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def _property_value(text: str) -> Any:
    """Numbers become floats (empty -> NaN); anything else stays a string."""
    if text is None or text.strip() == "":
        return math.nan
    try:
        return float(text)
    except ValueError:
        return text


def _file_kind(path: Path) -> str:
    name = path.name.lower()
    if path.is_dir():
        return "cif_dir"
    for suffix in (".gz", ""):
        if name.endswith(".csv" + suffix):
            return "csv"
        if name.endswith(".json" + suffix):
            return "matbench"
    if name.endswith(CIF_SUFFIXES):
        return "cif"
    if name.endswith(XYZ_SUFFIXES):
        return "extxyz"
    raise ReaderError(f"{path}: unknown format (expected .csv[.gz] with a cif column, .cif, a folder, .extxyz, .json[.gz])")


def _iter_csv(path: Path) -> Iterator[RawEntry]:
    try:
        with _open_text(path) as handle:
            reader = csv.DictReader(handle)
            columns = reader.fieldnames or []
            if "cif" not in columns:
                raise ReaderError(f"{path}: no 'cif' column (columns: {', '.join(columns) or 'none'})")
            id_col = next((c for c in ID_COLUMNS if c in columns), None)
            for i, row in enumerate(reader):
                rid = row.get(id_col) if id_col else None
                props = {k: _property_value(v) for k, v in row.items() if k not in ("cif", id_col) and k is not None}
                yield RawEntry(rid or f"{path.name}:{i}", "cif", row.get("cif") or "", props)
    except (OSError, UnicodeDecodeError, csv.Error, EOFError) as exc:
        raise ReaderError(f"{path}: cannot read CSV ({type(exc).__name__}: {exc})") from exc


def _iter_cif_file(path: Path) -> Iterator[RawEntry]:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise ReaderError(f"{path}: {exc}") from exc
    yield RawEntry(path.name.rsplit(".", 1)[0], "cif", text, {"source": str(path.parent.name)})


def _iter_cif_dir(path: Path) -> Iterator[RawEntry]:
    files = sorted(
        p for p in path.rglob("*")
        if p.is_file() and p.name.lower().endswith(CIF_SUFFIXES)
        and not any(part.startswith(".") for part in p.relative_to(path).parts)
    )
    for file in files:
        for entry in _iter_cif_file(file):
            entry.id = file.relative_to(path).as_posix().rsplit(".", 1)[0]
            yield entry


def _iter_extxyz(path: Path) -> Iterator[RawEntry]:
    from ase.io import read

    try:
        frames = read(str(path), index=":", format="extxyz")
    except Exception as exc:
        raise ReaderError(f"{path}: cannot read extxyz ({type(exc).__name__}: {exc})") from exc
    stem = path.name.rsplit(".", 1)[0]
    for i, atoms in enumerate(frames):
        info = dict(atoms.info)
        rid = str(info.pop("material_id", info.pop("id", f"{stem}:{i}")))
        if atoms.calc is not None:  # ASE moves energy/stress-like keys into a calculator
            info.update(atoms.calc.results)
        props = {k: float(v) for k, v in info.items() if isinstance(v, (int, float, np.floating)) and not isinstance(v, bool)}
        yield RawEntry(rid, "atoms", atoms, props)


def _iter_matbench(path: Path) -> Iterator[RawEntry]:
    try:
        with _open_text(path) as handle:
            table = json.load(handle)
    except (OSError, UnicodeDecodeError, EOFError, json.JSONDecodeError) as exc:
        raise ReaderError(f"{path}: cannot read matbench JSON ({type(exc).__name__}: {exc})") from exc
    if not isinstance(table, dict) or not {"columns", "data"} <= table.keys() or "structure" not in table["columns"]:
        raise ReaderError(f"{path}: not a matbench table (needs 'columns' with 'structure', and 'data')")
    columns = table["columns"]
    s_col = columns.index("structure")
    index = table.get("index") or [f"{path.name}:{i}" for i in range(len(table["data"]))]
    for rid, row in zip(index, table["data"]):
        props = {c: (float(v) if isinstance(v, (int, float)) else v) for c, v in zip(columns, row) if c != "structure"}
        yield RawEntry(str(rid), "dict", row[s_col], props)


_ITERATORS = {"csv": _iter_csv, "cif": _iter_cif_file, "cif_dir": _iter_cif_dir, "extxyz": _iter_extxyz, "matbench": _iter_matbench}


def iter_raw(path: str | Path) -> Iterator[RawEntry]:
    """Unparsed entries of `path` (cheap; parse each with `parse_entry`). Raises ReaderError for unreadable files."""
    path = Path(path)
    if not path.exists():
        raise ReaderError(f"{path}: no such file or folder")
    return _ITERATORS[_file_kind(path)](path)


def _parse_payload(entry: RawEntry) -> Structure:
    if entry.kind == "cif":
        if not entry.payload.strip():
            raise ValueError("empty CIF")
        from pymatgen.io.cif import CifParser

        parser = CifParser.from_str(entry.payload)
        structures = parser.parse_structures(primitive=False, on_error="raise")
        if not structures:
            raise ValueError("CIF holds no structure")
        return structures[0]
    if entry.kind == "dict":
        return Structure.from_dict(entry.payload)
    if entry.kind == "atoms":
        from pymatgen.io.ase import AseAtomsAdaptor

        return AseAtomsAdaptor.get_structure(entry.payload)
    raise ValueError(f"unknown entry kind {entry.kind!r}")


def parse_entry(entry: RawEntry) -> StructureRecord:
    """Parse one raw entry; any failure is returned as `error`, never raised."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            structure = _parse_payload(entry)
        if len(structure) == 0:
            raise ValueError("structure has no sites")
    except Exception as exc:  # pymatgen raises many types on malformed input
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return StructureRecord(entry.id, None, entry.properties, f"unparsable: {type(exc).__name__}: {message}"[:300])
    return StructureRecord(entry.id, structure, entry.properties, None)


def read_structures(path: str | Path) -> Iterator[StructureRecord]:
    """Every structure in `path` (CSV/CSV.gz with `cif`, CIF folder, CIF file, extxyz, matbench json[.gz])."""
    for entry in iter_raw(path):
        yield parse_entry(entry)


def read_structures_parallel(path: str | Path, workers: int | None = None, chunksize: int = 16) -> list[StructureRecord]:
    """`read_structures` with CIF parsing (~4 ms each) spread over `workers` processes; order kept.

    The file is read in this process first, so a `ReaderError` is raised here, before any parsing.
    """
    import multiprocessing as mp
    import os

    entries = list(iter_raw(path))
    workers = workers or os.cpu_count() or 1
    if workers <= 1 or len(entries) < 4 * chunksize:
        return [parse_entry(e) for e in entries]
    with mp.get_context("fork").Pool(workers) as pool:
        return list(pool.imap(parse_entry, entries, chunksize=chunksize))
