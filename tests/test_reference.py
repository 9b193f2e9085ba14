"""The shipped training-pool reference corpus and its use as a novelty reference."""

from __future__ import annotations

import csv
import gzip
from pathlib import Path

from pymatgen.core import Structure

from crystalgen.data.reference import REFERENCE_POOL, build_reference, read_reference
from crystalgen.data.reference_index import load_reference

FIXTURE = Path(__file__).parent / "fixtures" / "pool_sample.csv.gz"


def test_build_and_read_back_a_reference(tmp_path):
    out = build_reference(FIXTURE, tmp_path / "ref.h5")
    ids, formulas, cifs = read_reference(out)
    csv.field_size_limit(1 << 30)
    with gzip.open(FIXTURE, "rt", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert ids == [r["material_id"] for r in rows]
    assert cifs == [r["cif"] for r in rows]
    assert formulas[0] == Structure.from_str(cifs[0], fmt="cif").composition.reduced_formula


def test_shipped_pool_serves_as_novelty_reference():
    assert REFERENCE_POOL.is_file()
    ids, formulas, _ = read_reference(REFERENCE_POOL)
    assert len(ids) == 37357 and len(set(ids)) == len(ids)
    index = load_reference("training-pool", [frozenset({"Li", "Fe", "O"})])
    assert {"Fe2O3", "Li5FeO4"} <= set(index)
    from pymatgen.core import Composition

    for formula in index:  # nothing outside the Li-Fe-O system is kept
        assert {el.symbol for el in Composition(formula).elements} <= {"Li", "Fe", "O"}
    known = Structure.from_str(index["Fe2O3"][0][1], fmt="cif")
    assert known.composition.reduced_formula == "Fe2O3"


def test_reference_keeps_source_and_e_above_hull(tmp_path):
    from crystalgen.data.reference import read_reference_extras

    out = build_reference(FIXTURE, tmp_path / "ref.h5")
    extras = read_reference_extras(out)
    with gzip.open(FIXTURE, "rt", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert extras["source"] == [r["source"] for r in rows]
    for value, row in zip(extras["e_above_hull"], rows):
        assert (value != value) if not row["e_above_hull"] else abs(value - float(row["e_above_hull"])) < 1e-6
