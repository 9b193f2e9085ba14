"""`--out` never destroys user files: checked before generating, written beside, moved in file by file."""

from __future__ import annotations

import os
import stat

import pytest
from click.testing import CliRunner

from crystalgen.cli import main
from crystalgen.io import write_results
from crystalgen.output_paths import OutputError
from crystalgen.results import GenerationResult


@pytest.fixture(scope="module")
def results(pool_records):
    return [GenerationResult(r.structure) for r in pool_records[:3]]


def _sample(*args: str):
    return CliRunner().invoke(main, ["sample", "--formula", "NaCl", "-n", "2", "--seed", "0", *args])


def test_out_dot_in_a_folder_with_user_files_is_refused_then_added_to(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "thesis.tex").write_text("years of work")
    res = _sample("--out", ".")
    assert res.exit_code != 0 and "already holds files" in res.output and "--overwrite" in res.output
    assert len(res.output.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thesis.tex"]

    res = _sample("--out", ".", "--overwrite")
    assert res.exit_code == 0, res.output
    assert (tmp_path / "thesis.tex").read_text() == "years of work"
    assert len(list(tmp_path.glob("*.cif"))) == 2
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_existing_folder_keeps_user_files_and_only_same_names_are_replaced(tmp_path, results):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="already holds files"):
        write_results(results, out)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]

    write_results(results, out, overwrite=True)
    names = sorted(p.name for p in out.iterdir())
    assert "notes.txt" in names and len(names) == 4 and (out / "notes.txt").read_text() == "mine"
    first = next(n for n in names if n.endswith(".cif"))
    (out / first).write_text("stale")
    write_results(results, out, overwrite=True)
    assert (out / first).read_text().startswith("# generated using pymatgen")
    assert (out / "notes.txt").read_text() == "mine"


def test_existing_file_is_replaced_only_with_overwrite(tmp_path, results):
    out = tmp_path / "x.json"
    out.write_text("user data")
    with pytest.raises(OutputError, match="already exists"):
        write_results(results, out)
    assert out.read_text() == "user data"
    write_results(results, out, overwrite=True)
    assert out.read_text().startswith("[")


@pytest.mark.parametrize(
    "make, out, extra, message",
    [
        (lambda p: (p / "lfp").write_text("a file"), "lfp", [], "a folder is expected"),
        (lambda p: (p / "x.json").mkdir(), "x.json", [], "a file is expected"),
        (lambda p: (p / "notes").write_text("a file"), "notes/run/out.json", [], "is a file, not a folder"),
        (lambda p: None, "x.json", ["--format", "h5"], "does not match the extension"),
        (lambda p: None, "x.cif", ["--format", "extxyz"], "does not match the extension"),
    ],
)
def test_unwritable_out_fails_in_one_line_before_generating(tmp_path, monkeypatch, make, out, extra, message):
    monkeypatch.chdir(tmp_path)
    make(tmp_path)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    res = _sample("--out", out, *extra)
    assert res.exit_code != 0 and message in res.output
    assert len(res.output.strip().splitlines()) == 1
    assert "Traceback" not in res.output and "wrote" not in res.output
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_missing_folders_above_the_target_are_made(tmp_path, results):
    write_results(results, tmp_path / "runs" / "a" / "cifs")
    write_results(results, tmp_path / "runs" / "b" / "x.json")
    assert len(list((tmp_path / "runs" / "a" / "cifs").glob("*.cif"))) == 3 and (tmp_path / "runs" / "b" / "x.json").exists()


def test_outputs_follow_the_umask(tmp_path, results):
    old = os.umask(0o022)
    try:
        write_results(results, tmp_path / "cifs")
        write_results(results, tmp_path / "all.h5")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "cifs").stat().st_mode) == 0o755
    assert {stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "cifs").iterdir()} == {0o644}
    assert stat.S_IMODE((tmp_path / "all.h5").stat().st_mode) == 0o644


def test_suffix_sets_the_format(tmp_path, results):
    from crystalgen.io import read_h5

    write_results(results, tmp_path / "a.h5", fmt="h5")
    assert len(read_h5(tmp_path / "a.h5")) == 3
    write_results(results, tmp_path / "plain", fmt="json")
    assert (tmp_path / "plain").read_text().startswith("[")


def test_screen_and_evaluate_refuse_to_clobber(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('[[targets]]\nformula = "NaCl"\ncandidates = 2\n')
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("mine")
    res = CliRunner().invoke(main, ["screen", str(config), "--out", str(run), "--quiet"])
    assert res.exit_code != 0 and "already holds files" in res.output
    assert [p.name for p in run.iterdir()] == ["notes.txt"]

    report = tmp_path / "csp.json"
    report.write_text("earlier figures")
    res = CliRunner().invoke(main, ["evaluate", "dng", "-n", "1", "--json", str(report)])
    assert res.exit_code != 0 and "already exists" in res.output and report.read_text() == "earlier figures"



@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o027, 0o640)])
def test_screening_files_follow_the_umask(tmp_path, mask, mode):
    from crystalgen.screening.shards import atomic_write_bytes

    old = os.umask(mask)
    try:
        atomic_write_bytes(tmp_path / "shards" / "a.json", b"{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "shards" / "a.json").stat().st_mode) == mode
    assert stat.S_IMODE((tmp_path / "shards").stat().st_mode) == 0o777 & ~mask
