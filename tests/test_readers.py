"""Every reader on small files the tests write from real structures, plus bad inputs."""

from __future__ import annotations

import csv
import gzip
import json
import math

import numpy as np
import pytest
from ase.io import write as ase_write
from pymatgen.io.ase import AseAtomsAdaptor
from pymatgen.io.cif import CifWriter

from crystalgen.data.readers import ReaderError, StructureRecord, read_structures, read_structures_parallel


def _same(a, b) -> bool:
    return a.composition == b.composition and np.allclose(a.lattice.matrix, b.lattice.matrix, atol=1e-4)


def _rows(path):
    with gzip.open(path, "rt", newline="") as handle:
        reader = csv.DictReader(handle)
        return reader.fieldnames, list(reader)


def test_csv_gz_fixture(pool_sample_path, pool_records):
    assert len(pool_records) == 60
    assert all(isinstance(r, StructureRecord) and r.error is None for r in pool_records)
    first = pool_records[0]
    assert first.id == "mp-1183799"
    assert first.structure.composition.reduced_formula == "DyHoZn2"
    assert first.properties["source"] == "mp_20_biternary/val"
    assert isinstance(first.properties["formation_energy_per_atom"], float)
    # lemat rows have no band gap: missing numbers become NaN
    assert any(math.isnan(r.properties["band_gap"]) for r in pool_records)
    assert len({r.id for r in pool_records}) == 60


def test_plain_csv_with_a_broken_row(tmp_path, mpts52_sample_path):
    columns, rows = _rows(mpts52_sample_path)
    rows = rows[:5]
    rows[2]["cif"] = "data_broken\n_cell_length_a 3\n"
    path = tmp_path / "small.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    records = list(read_structures(path))
    assert [r.id for r in records] == [r["material_id"] for r in rows]
    assert [r.error is None for r in records] == [True, True, False, True, True]
    assert records[2].structure is None and records[2].error.startswith("unparsable")


def test_csv_without_cif_column(tmp_path):
    path = tmp_path / "nocif.csv"
    path.write_text("material_id,formula\nmp-1,NaCl\n")
    with pytest.raises(ReaderError, match="no 'cif' column"):
        list(read_structures(path))


def test_truncated_gzip_is_a_file_error(tmp_path, pool_sample_path):
    path = tmp_path / "cut.csv.gz"
    path.write_bytes(pool_sample_path.read_bytes()[:3000])
    with pytest.raises(ReaderError):
        list(read_structures(path))


def test_cif_folder_and_single_file(tmp_path, pool_records):
    for record in pool_records[:3]:
        CifWriter(record.structure).write_file(tmp_path / f"{record.id}.cif")
    (tmp_path / "garbage.cif").write_text("this is not a CIF")
    (tmp_path / "notes.txt").write_text("ignored: not a .cif")
    records = {r.id: r for r in read_structures(tmp_path)}
    assert set(records) == {r.id for r in pool_records[:3]} | {"garbage"}
    assert records["garbage"].error is not None
    for original in pool_records[:3]:
        assert _same(records[original.id].structure, original.structure)
    single = list(read_structures(tmp_path / f"{pool_records[0].id}.cif"))
    assert len(single) == 1 and _same(single[0].structure, pool_records[0].structure)


@pytest.mark.filterwarnings("ignore:Site labels are not unique")
def test_disordered_cif_is_read_as_disordered(tmp_path, pool_records):
    structure = pool_records[0].structure.copy()
    structure.replace(0, {"Dy": 0.5, "Ho": 0.5})
    CifWriter(structure).write_file(tmp_path / "dis.cif")
    (record,) = read_structures(tmp_path / "dis.cif")
    assert record.error is None and not record.structure.is_ordered


def test_extxyz(tmp_path, pool_records):
    frames = []
    for record in pool_records[:4]:
        atoms = AseAtomsAdaptor.get_atoms(record.structure)
        atoms.info["material_id"] = record.id
        atoms.info["energy"] = -1.5
        frames.append(atoms)
    path = tmp_path / "frames.extxyz"
    ase_write(path, frames, format="extxyz")
    records = list(read_structures(path))
    assert [r.id for r in records] == [r.id for r in pool_records[:4]]
    assert all(r.properties["energy"] == -1.5 for r in records)
    for got, want in zip(records, pool_records[:4]):
        assert _same(got.structure, want.structure)


def test_broken_extxyz(tmp_path):
    path = tmp_path / "bad.extxyz"
    path.write_text("3\nnot a header\nNa 0 0\n")
    with pytest.raises(ReaderError):
        list(read_structures(path))


def _matbench_table(records) -> dict:
    return {
        "index": [f"mb-{i}" for i in range(len(records))],
        "columns": ["structure", "e_form"],
        "data": [[r.structure.as_dict(), -0.5 * i] for i, r in enumerate(records)],
    }


def test_matbench_json_gz(tmp_path, pool_records):
    table = _matbench_table(pool_records[:5])
    table["data"][1][0] = {"not": "a structure"}
    path = tmp_path / "matbench_mp_e_form.json.gz"
    with gzip.open(path, "wt") as handle:
        json.dump(table, handle)
    records = list(read_structures(path))
    assert [r.id for r in records] == [f"mb-{i}" for i in range(5)]
    assert records[1].error is not None
    assert records[3].properties["e_form"] == -1.5
    assert _same(records[4].structure, pool_records[4].structure)


@pytest.mark.parametrize(
    "content",
    ['{"index": [0], "columns": ["composition"], "data": [["NaCl"]]}', "{not json", "[1, 2, 3]"],
)
def test_bad_matbench_files(tmp_path, content):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ReaderError):
        list(read_structures(path))


def test_missing_path_and_unknown_format(tmp_path):
    with pytest.raises(ReaderError, match="no such file"):
        list(read_structures(tmp_path / "nothing.csv"))
    other = tmp_path / "data.parquet"
    other.write_bytes(b"PAR1")
    with pytest.raises(ReaderError, match="unknown format"):
        list(read_structures(other))


def test_parallel_reading_matches_serial(pool_sample_path, pool_records):
    parallel = read_structures_parallel(pool_sample_path, workers=2, chunksize=4)
    assert [r.id for r in parallel] == [r.id for r in pool_records]
    assert all(_same(a.structure, b.structure) for a, b in zip(parallel, pool_records))
    with pytest.raises(ReaderError):
        read_structures_parallel(pool_sample_path.parent / "missing.csv.gz", workers=2)
