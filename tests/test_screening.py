"""Tests of the screening pipeline (`crystalgen screen`), on real structures.

Candidates come from the PyXtal baseline, the novelty reference is a 29-row slice of
the training pool shipped in tests/fixtures, and energy ranking uses ASE's Lennard-Jones
calculator (any ASE calculator works; CHGNet has its own test in test_screening_extras.py).
"""

from __future__ import annotations

import csv
import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from pymatgen.core import Structure

from crystalgen.data.reference_index import known_match, load_reference
from crystalgen.evaluation.baseline import PyXtalBaseline
from crystalgen.results import GenerationResult
from crystalgen.screening.config import FilterConfig, SamplingConfig, ScreenConfig, Target
from crystalgen.screening.generators import sample_target
from crystalgen.screening.pipeline import merge_shards, run_screen
from crystalgen.screening.ranking import log_likelihood_score
from crystalgen.screening.shards import atomic_write_bytes, plan_shards, shard_seed
from crystalgen.screening.stages import (
    DedupEntry,
    deduplicate,
    filter_reason,
    make_matcher,
    required_checks_pass,
    space_group_number,
)
from crystalgen.validators import validate

FIXTURE = Path(__file__).parent / "fixtures" / "screening_reference.csv.gz"
REPO = Path(__file__).resolve().parents[1]


def reference_structures() -> dict[str, Structure]:
    csv.field_size_limit(1 << 30)
    with gzip.open(FIXTURE, "rt", newline="") as fh:
        return {r["material_id"]: Structure.from_str(r["cif"], fmt="cif") for r in csv.DictReader(fh)}


def write_config(path: Path, shard_size: int = 3, nacl: int = 6, lio: int = 3, workers: int = 1,
                 rank: str = 'by = "energy"\ncalculator = "ase.calculators.lj:LennardJones"',
                 generator: str = 'generator = "pyxtal"') -> Path:
    path.write_text(f"""
[run]
{generator}
seed = 11
shard_size = {shard_size}
workers = {workers}

[[targets]]
formula = "NaCl"
candidates = {nacl}

[[targets]]
chemsys = "Li-O"
candidates = {lio}
num_atoms = 6

[filters]
checks = ["distance", "lattice"]
max_atoms = 12

[novelty]
reference = "{FIXTURE}"

[rank]
{rank}

[export]
top_k = 4
""")
    return path


def h5_contents(path: Path) -> dict[str, np.ndarray]:
    """Every dataset of a run's HDF5 except the timings (which differ from run to run)."""
    out: dict[str, np.ndarray] = {}
    with h5py.File(path) as h5:
        h5.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset)
                      and not name.startswith("timings") else None)
    return out


def children_of(pid: int) -> list[int]:
    """Process ids whose parent is ``pid`` (Linux /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def wait_until_gone(pids: list[int], seconds: float = 20.0) -> bool:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if not any(Path(f"/proc/{p}").exists() for p in pids):
            return True
        time.sleep(0.1)
    return False


def assert_same_run(a: Path, b: Path) -> None:
    ha, hb = h5_contents(a / "screen.h5"), h5_contents(b / "screen.h5")
    assert ha.keys() == hb.keys()
    for name in ha:
        if ha[name].dtype.kind == "f":
            np.testing.assert_array_equal(ha[name], hb[name], err_msg=name)  # NaN == NaN here
        else:
            assert (ha[name] == hb[name]).all(), name
    for name in ("summary.csv", "funnel.csv"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    cifs_a, cifs_b = sorted((a / "cifs").iterdir()), sorted((b / "cifs").iterdir())
    assert [p.name for p in cifs_a] == [p.name for p in cifs_b]
    assert all(x.read_bytes() == y.read_bytes() for x, y in zip(cifs_a, cifs_b))


# --- config and shards -----------------------------------------------------------------

def test_example_configs_parse():
    examples = sorted((REPO / "examples").glob("screen_*.toml"))
    assert examples, "examples/screen_*.toml missing"
    for path in examples:
        cfg = ScreenConfig.from_toml(path)
        assert cfg.targets and all(t.candidates > 0 for t in cfg.targets)


def test_config_rejects_mistakes(tmp_path):
    with pytest.raises(ValueError, match="exactly one"):
        Target(formula="NaCl", chemsys="Na-Cl")
    with pytest.raises(ValueError, match="calculator"):
        ScreenConfig.from_dict({"targets": [{"formula": "NaCl"}], "rank": {"by": "energy"}})
    with pytest.raises(ValueError, match="unique"):
        ScreenConfig([Target("NaCl", num_atoms=2), Target("NaCl", num_atoms=8)])
    assert len(ScreenConfig([Target("NaCl"), Target("NaCl", num_atoms=8, label="NaCl-8")]).targets) == 2
    with pytest.raises(ValueError, match="elements"):
        ScreenConfig.from_dict({"targets": [{"formula": "NaCl"}],
                                "rank": {"by": "formation_energy", "calculator": "ase.calculators.lj:LennardJones"}})
    with pytest.raises(ValueError, match="unknown config sections"):
        ScreenConfig.from_dict({"targets": [{"formula": "NaCl"}], "rnak": {}})


def test_shard_seeds_are_stable_across_processes():
    code = "from crystalgen.screening.shards import shard_seed; print(shard_seed(11, 'NaCl', 2))"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert int(other.stdout) == shard_seed(11, "NaCl", 2)
    assert len({shard_seed(11, "NaCl", i) for i in range(50)} | {shard_seed(12, "NaCl", 0)}) == 51


def test_plan_shards_covers_every_candidate(tmp_path):
    cfg = ScreenConfig.from_toml(write_config(tmp_path / "c.toml", shard_size=4, nacl=10, lio=3))
    specs = plan_shards(cfg)
    assert [s.count for s in specs] == [4, 4, 2, 3]
    assert [s.key for s in specs] == ["t000-s0000", "t000-s0001", "t000-s0002", "t001-s0000"]


def test_atomic_write_leaves_no_temporary_files(tmp_path):
    atomic_write_bytes(tmp_path / "a" / "x.json", b"{}")
    atomic_write_bytes(tmp_path / "a" / "x.json", b"[1]")
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["x.json"]
    assert (tmp_path / "a" / "x.json").read_bytes() == b"[1]"


# --- stages on real structures -----------------------------------------------------------

def test_required_checks_follow_real_validator_reports():
    structures = reference_structures()
    good = validate(structures["mp-22862"]).as_dict()  # rock-salt NaCl
    assert required_checks_pass(good, ["all"]) and required_checks_pass(good, ["distance", "charge"])
    assert not required_checks_pass(good, ["distnace"])  # a misspelt check never passes
    squashed = structures["mp-22862"].copy()
    squashed.scale_lattice(squashed.volume * 0.003)  # Na-Cl 2.8 A -> 0.4 A
    bad = validate(squashed).as_dict()
    assert not required_checks_pass(bad, ["distance"])
    assert required_checks_pass(bad, ["charge"])


def test_deduplicate_keeps_first_copy_only():
    s = reference_structures()
    nacl = s["mp-22862"]
    supercell = nacl.copy()
    supercell.make_supercell([2, 1, 1])
    shaken = nacl.copy()
    shaken.perturb(0.02, min_distance=0.01)
    entries = [DedupEntry(k, st.composition.reduced_formula, st) for k, st in
               [("a", nacl), ("b", s["mp-23289"]), ("c", supercell), ("d", shaken), ("e", s["mp-23193"])]]
    dups = deduplicate(entries, make_matcher(ScreenConfig([Target("NaCl")]).novelty))
    assert dups["a"] is None and dups["c"] == "a" and dups["d"] == "a"
    assert dups["b"] is None  # KCl is another formula
    assert dups["e"] is None  # the second KCl polymorph is another structure


def test_novelty_finds_known_structure_in_reference():
    ref = load_reference(FIXTURE, [frozenset({"Na", "Cl"}), frozenset({"K", "Cl"})])
    assert set(ref) == {"NaCl", "KCl", "KCl3", "K"}
    matcher = make_matcher(ScreenConfig([Target("NaCl")]).novelty)
    nacl = reference_structures()["mp-22862"].copy()
    nacl.make_supercell([1, 1, 2])
    assert known_match(nacl, ref, matcher) == "mp-22862"
    cscl_type = Structure.from_spacegroup(221, [[3.0, 0, 0], [0, 3.0, 0], [0, 0, 3.0]], ["Na", "Cl"],
                                          [[0, 0, 0], [0.5, 0.5, 0.5]])
    assert known_match(cscl_type, ref, matcher) is None


def test_filters_on_atoms_and_space_group():
    nacl = reference_structures()["mp-22862"]  # rock salt, Fm-3m (225), 2 atoms
    r = GenerationResult(nacl)
    assert filter_reason(r, 225, FilterConfig()) is None
    assert "max_atoms" in filter_reason(r, 225, FilterConfig(max_atoms=1))
    assert filter_reason(r, 225, FilterConfig(spacegroups=[221, 225])) is None
    assert "not allowed" in filter_reason(r, 225, FilterConfig(spacegroups=[221]))
    assert "min_spacegroup" in filter_reason(r, 12, FilterConfig(min_spacegroup=16))
    assert space_group_number(nacl) == 225


def test_reference_reads_cif_folders_and_prepared_corpora(tmp_path):
    from crystalgen.data.prepare import PrepareConfig, prepare

    elements = [frozenset({"Na", "Cl"}), frozenset({"Li", "O"}), frozenset({"Mg", "O"})]
    from_csv = load_reference(FIXTURE, elements)
    folder = tmp_path / "cifs"
    folder.mkdir()
    for ident, structure in reference_structures().items():
        structure.to(filename=str(folder / f"{ident}.cif"))
    from_folder = load_reference(folder, elements)
    prepare([FIXTURE], tmp_path / "ref.h5", PrepareConfig(workers=1, progress=False))
    from_h5 = load_reference(tmp_path / "ref.h5", elements)
    assert set(from_csv) == set(from_folder) == set(from_h5) == {"NaCl", "Li", "O2", "MgO", "MgO2"}
    assert sorted(i for e in from_folder.values() for i, _ in e) == sorted(i for e in from_csv.values() for i, _ in e)
    matcher = make_matcher(ScreenConfig([Target("NaCl")]).novelty)
    rock_salt = reference_structures()["mp-22862"]
    assert known_match(rock_salt, from_h5, matcher) == known_match(rock_salt, from_folder, matcher) == "mp-22862"


def test_log_likelihood_score_prefers_likelier():
    s = reference_structures()["mp-22862"]
    assert log_likelihood_score(GenerationResult(s, log_likelihood=-3.5)).score == 3.5
    assert log_likelihood_score(GenerationResult(s)).score is None


# --- whole runs --------------------------------------------------------------------------

def test_run_writes_consistent_outputs(tmp_path):
    cfg = ScreenConfig.from_toml(write_config(tmp_path / "c.toml"))
    result = run_screen(cfg, tmp_path / "run", progress=False)
    run = tmp_path / "run"
    for name in ("screen.h5", "summary.csv", "funnel.csv", "funnel.png", "scores.png", "spacegroups.png"):
        assert (run / name).stat().st_size > 0, name
    assert (run / "funnel.png").read_bytes()[:4] == b"\x89PNG"

    total = result.funnel["total"]
    counts = [total[s] for s in ("sampled", "valid", "filtered", "unique", "novel", "ranked")]
    assert counts == sorted(counts, reverse=True) and counts[0] == 9
    assert result.funnel["NaCl"]["sampled"] + result.funnel["Li-O"]["sampled"] == 9

    ranked = result.ranked()
    assert len(ranked) == total["ranked"] > 0
    for name in ("NaCl", "Li-O"):  # ranks are per target, by score
        mine = [c for c in ranked if c["target"] == name]
        assert [c["rank"] for c in mine] == list(range(1, len(mine) + 1))
        assert [c["score"] for c in mine] == sorted(c["score"] for c in mine)
        assert len(list((run / "cifs").glob(f"{name}_*.cif"))) == min(4, len(mine))
    for c in ranked:  # Li-O candidates were asked for 6 atoms; the LJ energy is the score
        assert c["valid"] and c["duplicate_of"] is None and c["known_match"] is None
        assert c["energy_per_atom"] == c["score"] and c["num_atoms"] <= 12
        if c["target"] == "Li-O":
            assert c["num_atoms"] == 6
    best_nacl = next(c for c in ranked if c["target"] == "NaCl")
    top = Structure.from_file(run / "cifs" / f"NaCl_001_{best_nacl['formula']}.cif")
    assert top.composition.reduced_formula == "NaCl" and len(top) <= best_nacl["num_atoms"]

    with h5py.File(run / "screen.h5") as h5:
        keys = [k.decode() for k in h5["candidates/key"][()]]
        assert keys == [c["key"] for c in result.candidates]
        reports = [json.loads(r) for r in h5["candidates/report_json"][()]]
        assert all(set(r["checks"]) >= {"distance", "lattice", "charge"} for r in reports)
        assert h5["funnel/counts"][()][-1].tolist() == counts
        first = Structure.from_dict(json.loads(h5["candidates/structure_json"][0]))
        assert first == Structure.from_dict(result.candidates[0]["result"]["structure"])
    with open(run / "summary.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 9 and [r["key"] for r in rows[: len(ranked)]] == [c["key"] for c in ranked]
    assert all(r["filter_reason"] for r in rows if r["stage"] == "valid")

    # a second call finds every shard finished and reproduces the same outputs
    again = run_screen(cfg, run, progress=False)
    assert again.shards_run == 0 and again.candidates == result.candidates


def test_cross_shard_duplicates_are_removed(tmp_path):
    cfg = ScreenConfig.from_toml(write_config(tmp_path / "c.toml", shard_size=3, nacl=3, lio=1))
    result = run_screen(cfg, tmp_path / "run", progress=False, write_outputs=False)
    shards = sorted((tmp_path / "run" / "shards").glob("t000-*.json"))
    first = json.loads(shards[0].read_text())
    copy = json.loads(json.dumps(first))
    copy["shard_index"] = 1
    for c in copy["candidates"]:
        c["key"] = c["key"].replace("-s0000-", "-s0001-")
    candidates, funnel = merge_shards(cfg, [first, copy])
    originals = [c for c in candidates if c["shard_index"] == 0 and c["passed_filters"] and c["duplicate_of"] is None]
    copies = [c for c in candidates if c["shard_index"] == 1 and c["passed_filters"]]
    assert copies and all(c["duplicate_of"] is not None and "-s0000-" in c["duplicate_of"] for c in copies)
    assert funnel["NaCl"]["unique"] == len(originals) == result.funnel["NaCl"]["unique"]


def test_log_likelihood_ranking_without_likelihoods_ranks_nothing(tmp_path):
    # the generator named as "module:factory" with options: small cells only
    plugin = ('generator = "crystalgen.screening.generators:PyXtalTargets"\n'
              'generator_options = { max_atoms = 4 }')
    config = write_config(tmp_path / "c.toml", nacl=3, lio=1, rank='by = "log_likelihood"', generator=plugin)
    cfg = ScreenConfig.from_toml(config)
    result = run_screen(cfg, tmp_path / "run", progress=False, write_outputs=False)
    assert all(c["num_atoms"] <= 4 for c in result.candidates if c["target"] == "NaCl")
    assert result.funnel["total"]["ranked"] == 0 and result.funnel["total"]["novel"] > 0
    assert all(c["score_error"] == "generator gave no log-likelihood" for c in result.candidates
               if c["stage"] == "novel")


def test_formation_energy_ranking_uses_reference_elements(tmp_path):
    from ase.calculators.lj import LennardJones

    rank = 'by = "formation_energy"\ncalculator = "ase.calculators.lj:LennardJones"'
    result = run_screen(ScreenConfig.from_toml(write_config(tmp_path / "c.toml", nacl=2, lio=6, rank=rank)),
                        tmp_path / "run", progress=False)

    def lj_energy(s: Structure) -> float:
        atoms = s.to_ase_atoms()
        atoms.calc = LennardJones()
        return atoms.get_potential_energy() / len(atoms)

    refs = reference_structures()  # the fixture's elemental Li (1 structure) and O2 (3 polymorphs)
    mu = {"Li": lj_energy(refs["mp-567337"]),
          "O": min(lj_energy(refs[i]) for i in ("mp-1058623", "mp-560602", "mp-1087546"))}
    li_o = [c for c in result.candidates if c["target"] == "Li-O" and c["stage"] == "ranked"]
    assert li_o
    for c in li_o:
        x = Structure.from_dict(c["result"]["structure"]).composition.fractional_composition
        expected = c["energy_per_atom"] - x["Li"] * mu["Li"] - x["O"] * mu["O"]
        assert c["score"] == c["formation_energy_per_atom"] == pytest.approx(expected, rel=1e-9, abs=1e-12)
    # the fixture holds no elemental Na or Cl: NaCl candidates get an energy but no rank
    nacl = [c for c in result.candidates if c["target"] == "NaCl" and c["stage"] == "novel"]
    assert nacl and all(c["rank"] is None and c["energy_per_atom"] is not None for c in nacl)
    assert all(c["score_error"] == "no elemental reference structure for Cl, Na" for c in nacl)


def test_low_pass_rate_is_reported(tmp_path):
    cfg = ScreenConfig.from_toml(write_config(tmp_path / "c.toml", nacl=2, lio=1))
    cfg.filters.checks = ["distance", "distnace"]  # misspelt: nothing can pass
    cfg.filters.min_pass_rate = 0.5
    result = run_screen(cfg, tmp_path / "run", progress=False)
    assert result.funnel["total"]["sampled"] == 3 and result.funnel["total"]["valid"] == 0
    assert len(result.warnings) == 2 and "below min_pass_rate" in result.warnings[0]
    with h5py.File(tmp_path / "run" / "screen.h5") as h5:
        assert json.loads(h5.attrs["warnings_json"]) == result.warnings
    assert not list((tmp_path / "run" / "cifs").iterdir())


def test_generator_without_target_arguments_is_refused():
    # the evaluation baseline samples from its own composition pool: sample(n, seed), no formula
    with pytest.raises(TypeError, match="unexpected keyword argument 'formula'"):
        sample_target(PyXtalBaseline(["NaCl"]), Target(formula="NaCl"), 1, 0, SamplingConfig())


def test_resume_refuses_a_different_config(tmp_path):
    run_screen(ScreenConfig.from_toml(write_config(tmp_path / "a.toml", nacl=1, lio=1)), tmp_path / "run",
               progress=False, write_outputs=False)
    with pytest.raises(ValueError, match="different config"):
        run_screen(ScreenConfig.from_toml(write_config(tmp_path / "b.toml", nacl=2, lio=1)), tmp_path / "run",
                   progress=False)


def test_killed_run_resumes_to_identical_results(tmp_path):
    config = write_config(tmp_path / "c.toml", shard_size=2, nacl=6, lio=4)
    # Uninterrupted, in two worker processes.
    run_screen(ScreenConfig.from_toml(config), tmp_path / "whole", workers=2, progress=False)

    # Interrupted: kill the CLI (two worker processes) as soon as its first shard file
    # appears, then start it again (in-process this time).
    cmd = [sys.executable, "-c", "from crystalgen.cli import main; main()", "screen", str(config),
           "--out", str(tmp_path / "killed"), "--quiet", "--workers"]
    proc = subprocess.Popen(cmd + ["2"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    shards = tmp_path / "killed" / "shards"
    deadline = time.time() + 300
    while not (shards.exists() and list(shards.glob("*.json"))) and time.time() < deadline:
        assert proc.poll() is None, "the run ended before writing a shard"
        time.sleep(0.02)
    workers = children_of(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = {p.name: p.stat().st_mtime_ns for p in shards.glob("*.json")}
    assert 0 < len(done_before) < 5, "the kill must land midway"
    assert not (tmp_path / "killed" / "screen.h5").exists()
    assert workers and wait_until_gone(workers), "worker processes outlived the killed driver"

    restart = subprocess.run(cmd + ["1"], capture_output=True, text=True)
    assert restart.returncode == 0, restart.stderr
    assert f"{5 - len(done_before)} shards run" in restart.stdout
    assert all((shards / n).stat().st_mtime_ns == t for n, t in done_before.items())  # skipped, not redone
    assert_same_run(tmp_path / "whole", tmp_path / "killed")


def test_cli_help_and_dry_run(tmp_path):
    runner = CliRunner()
    from crystalgen.cli import main

    out = runner.invoke(main, ["screen", "--help"])
    assert out.exit_code == 0 and "--executor" in out.output
    out = runner.invoke(main, ["screen", str(write_config(tmp_path / "c.toml")), "--out", str(tmp_path / "r"),
                               "--dry-run"])
    assert out.exit_code == 0, out.output
    assert out.output.count("todo") == 3 and f"seed={shard_seed(11, 'NaCl', 0)}" in out.output
