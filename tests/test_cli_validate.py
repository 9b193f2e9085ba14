"""`crystalgen validate`: pass-rate table, stable JSON shape, per-file errors and exit status."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from crystalgen.cli import main
from crystalgen.validators import CHECK_NAMES

EXAMPLES = Path(__file__).parents[1] / "examples"


def test_validate_csv_and_cif_folder(tmp_path, mpts52_sample_path, mpts52_records):
    out = tmp_path / "report.json"
    result = CliRunner().invoke(main, ["validate", str(mpts52_sample_path), str(EXAMPLES), "--json", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "overall" in result.output and "distance" in result.output
    doc = json.loads(out.read_text())
    assert set(doc["summary"]) == {*CHECK_NAMES, "pass", "n", "structural_validity", "physical_validity"}
    assert doc["summary"]["n"] == 40 + 5
    assert doc["summary"]["structural_validity"] == doc["summary"]["physical_validity"] == 1.0
    assert doc["summary"]["distance"] == 1.0
    ids = [s["id"] for s in doc["structures"]]
    assert ids[:40] == [r.id for r in mpts52_records]
    assert sorted(ids[40:]) == ["other_polymorphs/LiFePO4_Cmcm_mp-18951", "other_polymorphs/SrTiO3_I4mcm_mp-4651",
                                "reference/LiFePO4", "reference/NaCl", "reference/SrTiO3"]
    first = doc["structures"][0]
    assert set(first) == {"id", "pass", "checks"}
    assert set(first["checks"]) == set(CHECK_NAMES)
    assert isinstance(first["checks"]["symmetry"]["spacegroup"], int)
    assert isinstance(first["checks"]["distance"]["value"], float)
    assert first["pass"] == all(c["pass"] for c in first["checks"].values() if c["pass"] is not None)
    assert doc["summary"]["pass"] == sum(s["pass"] for s in doc["structures"]) / 45


def test_unreadable_inputs_are_reported_and_the_rest_validated(tmp_path):
    bad_cif = tmp_path / "broken.cif"
    bad_cif.write_text("data_broken\nnothing useful here\n")
    no_cif_column = tmp_path / "table.csv"
    no_cif_column.write_text("material_id,formula\nx,NaCl\n")
    out = tmp_path / "r.json"
    args = ["validate", str(EXAMPLES / "reference" / "NaCl.cif"), str(bad_cif), str(no_cif_column), str(tmp_path / "missing.cif")]
    result = CliRunner().invoke(main, [*args, "--json", str(out), "--quiet"])
    assert result.exit_code == 1
    assert "broken.cif" in result.output and "no 'cif' column" in result.output and "no such file" in result.output
    doc = json.loads(out.read_text())
    assert doc["summary"]["n"] == 1
    assert doc["structures"][0]["id"] == "NaCl" and doc["structures"][0]["pass"] is True
    assert len(doc["errors"]) == 3


def test_folders_are_read_with_their_subfolders_and_empty_input_fails(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no crystals here")
    result = CliRunner().invoke(main, ["validate", str(tmp_path / "empty"), "--quiet"])
    assert result.exit_code == 1 and "no structures found" in result.output

    nested = tmp_path / "runs" / "a" / "b"
    nested.mkdir(parents=True)
    (nested / "NaCl.cif").write_bytes((EXAMPLES / "reference" / "NaCl.cif").read_bytes())
    out = tmp_path / "r.json"
    result = CliRunner().invoke(main, ["validate", str(tmp_path / "runs"), "--json", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    assert [s["id"] for s in doc["structures"]] == ["a/b/NaCl"] and doc["summary"]["pass"] == 1.0


def test_existing_json_report_is_kept_unless_overwrite(tmp_path):
    out = tmp_path / "report.json"
    out.write_text("an earlier report")
    nacl = str(EXAMPLES / "reference" / "NaCl.cif")
    result = CliRunner().invoke(main, ["validate", nacl, "--json", str(out), "--quiet"])
    assert result.exit_code == 1 and "already exists" in result.output and out.read_text() == "an earlier report"
    result = CliRunner().invoke(main, ["validate", nacl, "--json", str(out), "--quiet", "--overwrite"])
    assert result.exit_code == 0 and json.loads(out.read_text())["summary"]["n"] == 1


def test_help():
    result = CliRunner().invoke(main, ["validate", "--help"])
    assert result.exit_code == 0 and "--json" in result.output
