"""The training pool as a compact reference corpus shipped with the package.

Novelty ("is this candidate already known?") needs the structures the model was trained
on, and a user's machine has no copy of the training data. `reference_pool.h5` holds
every training-pool structure as its CIF text (one gzip-compressed byte array with
offsets), with ids and reduced formulas, so novelty checks work offline; where the CSV
has them, also each entry's `source` and `e_above_hull` (analogue search ranks known
compounds by it; `read_reference_extras`). Build it with

    python -m crystalgen.data.reference ../shared/data/train/pool.csv.gz

Attribution: see `data/README.md` (Materials Project, Alexandria, OQMD: CC BY 4.0;
AFLOW via LeMat-GenBench: Apache-2.0).
"""

from __future__ import annotations

import csv
import gzip
import sys
from pathlib import Path

import h5py
import numpy as np

FORMAT = "crystalgen-reference-v1"
#: The shipped file (package data of crystalgen.data).
REFERENCE_POOL = Path(__file__).resolve().parent / "reference_pool.h5"
#: The name configs use for it (e.g. `[novelty] reference = "training-pool"`).
ALIAS = "training-pool"


def resolve(path: str | Path) -> Path:
    """The shipped pool for the alias ``training-pool``, else the path itself."""
    return REFERENCE_POOL if str(path) == ALIAS else Path(path)


def is_reference_file(path: Path) -> bool:
    if path.suffix not in (".h5", ".hdf5") or not path.is_file():
        return False
    with h5py.File(path, "r") as f:
        return f.attrs.get("format") == FORMAT


def read_reference(path: str | Path = REFERENCE_POOL) -> tuple[list[str], list[str], list[str]]:
    """(ids, reduced formulas, CIF texts) of a reference file."""
    with h5py.File(resolve(path), "r") as f:
        if f.attrs.get("format") != FORMAT:
            raise ValueError(f"{path} is not a {FORMAT} file")
        blob = f["cif_bytes"][...].tobytes()
        offsets = f["cif_offsets"][...]
        cifs = [blob[a:b].decode() for a, b in zip(offsets[:-1], offsets[1:])]
        return list(f["id"].asstr()[...]), list(f["formula"].asstr()[...]), cifs


def read_reference_extras(path: str | Path = REFERENCE_POOL) -> dict[str, list]:
    """Optional per-entry columns of a reference file (`source`, `e_above_hull`); {} for older files."""
    out: dict[str, list] = {}
    with h5py.File(resolve(path), "r") as f:
        if "source" in f:
            out["source"] = list(f["source"].asstr()[...])
        if "e_above_hull" in f:
            out["e_above_hull"] = [float(v) for v in f["e_above_hull"][...]]
    return out


def _float(text: str | None) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return float("nan")


def build_reference(csv_path: str | Path, out: str | Path = REFERENCE_POOL) -> Path:
    """Write the reference file from a CSV(.gz) with `material_id` and `cif` columns."""
    from pymatgen.core import Structure

    csv.field_size_limit(1 << 30)
    opener = gzip.open if str(csv_path).endswith(".gz") else open
    ids, formulas, cifs, sources, e_hull = [], [], [], [], []
    with opener(csv_path, "rt", newline="") as fh:
        for i, row in enumerate(csv.DictReader(fh)):
            cif = row["cif"]
            ids.append(row.get("material_id") or f"row{i}")
            sources.append(row.get("source") or Path(csv_path).name)
            e_hull.append(_float(row.get("e_above_hull")))
            formulas.append(Structure.from_str(cif, fmt="cif").composition.reduced_formula)
            cifs.append(cif)
    text = h5py.string_dtype()
    with h5py.File(out, "w") as f:
        f.attrs["format"] = FORMAT
        f.attrs["source"] = str(Path(csv_path).name)
        f.create_dataset("id", data=np.array(ids, dtype=object), dtype=text)
        f.create_dataset("formula", data=np.array(formulas, dtype=object), dtype=text)
        f.create_dataset("source", data=np.array(sources, dtype=object), dtype=text, compression="gzip")
        f.create_dataset("e_above_hull", data=np.array(e_hull, dtype=np.float32), compression="gzip")
        # one byte array, so that gzip sees the text (HDF5 does not compress variable-length strings)
        encoded = [c.encode() for c in cifs]
        f.create_dataset("cif_offsets", data=np.concatenate([[0], np.cumsum([len(c) for c in encoded])]))
        f.create_dataset("cif_bytes", data=np.frombuffer(b"".join(encoded), np.uint8), compression="gzip",
                         compression_opts=9, shuffle=True)
    return Path(out)


if __name__ == "__main__":
    print(build_reference(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else REFERENCE_POOL))
