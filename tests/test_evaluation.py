"""The evaluation harness on real MPTS-52 / pool rows (tests/fixtures).

The central self-check: the ground truth scored against itself matches every valid test
crystal (RMSE ~ 0) and reproduces the validators' own validity figures.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from pymatgen.core import Structure

from crystalgen.cli import main
from crystalgen.data.reference_index import index_structures, load_reference
from crystalgen.evaluation.baseline import PyXtalBaseline
from crystalgen.evaluation.consistency import consistency_rates, plan_consistency
from crystalgen.evaluation.csp import CSPConfig, evaluate_csp
from crystalgen.evaluation.datasets import load_structures
from crystalgen.evaluation.dng import DNGConfig, evaluate_dng
from crystalgen.evaluation.metrics import coverage, novel_mask, rms_dist, unique_mask
from crystalgen.evaluation.oracle import OracleGenerator
from crystalgen.evaluation.protocol import Generator
from crystalgen.evaluation.report import provenance
from crystalgen.results import GenerationResult
from crystalgen.validators import smact_validity, structural_validity


@pytest.fixture(scope="module")
def mpts(mpts52_sample_path):
    return load_structures(str(mpts52_sample_path))


def test_oracle_csp_matches_every_valid_ground_truth(mpts):
    truths = mpts.structures
    run = evaluate_csp(OracleGenerator(truths), truths, CSPConfig(n_samples=1, workers=1))
    s = run.summary
    comp = [smact_validity(t.composition) for t in truths]
    struct = [structural_validity(t) for t in truths]
    both = [c and v for c, v in zip(comp, struct)]
    # some real MPTS-52 crystals (e.g. Co3Se4) fail SMACT: DiffCSP's K=1 rule excludes them
    assert 0 < sum(both) < len(truths)
    assert s["n_test"] == len(truths) and s["n_samples"] == 1
    assert s["n_matched"] == sum(both)
    assert s["match_rate"] == pytest.approx(sum(both) / len(truths))
    assert s["ground_truth_validity"] == pytest.approx(sum(both) / len(truths))
    assert s["rmse"] < 1e-3
    assert s["compositional_validity"] == pytest.approx(np.mean(comp))
    assert s["structural_validity"] == pytest.approx(np.mean(struct))
    assert s["fraction_p1"] < 0.5  # real crystals are symmetric
    assert s["spacegroup_agreement"] == pytest.approx(1.0)  # each candidate is its own truth


def test_spacegroup_agreement_counts_first_candidates_with_the_truths_group(mpts):
    """Candidates that are other test crystals agree only where the two share a space group."""
    truths = mpts.structures[:6]
    shifted = truths[1:] + truths[:1]

    class Shifted:
        name, parallel_safe = "shifted", False

        def predict_structure(self, composition, n=1, seed=None):
            i = [t.composition for t in truths].index(composition)
            return [GenerationResult(shifted[i])]

        def sample(self, n=1, seed=None):
            raise NotImplementedError

    run = evaluate_csp(Shifted(), truths, CSPConfig(n_samples=1, workers=1))
    groups = [t.get_space_group_info(symprec=0.1)[1] for t in truths]
    expected = sum(a == b for a, b in zip(groups, groups[1:] + groups[:1])) / len(truths)
    assert expected < 1.0
    assert run.summary["spacegroup_agreement"] == pytest.approx(expected)


def test_invalid_predictions_never_match(mpts):
    """An identical but SMACT-invalid prediction is not a match, for K = 1 and K = 2."""
    invalid = [t for t in mpts.structures if not smact_validity(t.composition)][:2]
    oracle = OracleGenerator(invalid)
    one = evaluate_csp(oracle, invalid, CSPConfig(n_samples=1, workers=1, with_report=False)).summary
    assert one["match_rate"] == 0.0 and one["rmse"] is None
    two = evaluate_csp(oracle, invalid, CSPConfig(n_samples=2, workers=1, with_report=False)).summary
    assert two["match_rate"] == 0.0


def test_k_sample_best_of_k_uses_smallest_rms(mpts):
    truth = next(t for t in mpts.structures if smact_validity(t.composition) and len(t) <= 12)
    near, far = truth.copy(), truth.copy()
    near.perturb(0.02, min_distance=0.01)
    far.perturb(0.25, min_distance=0.2)

    class Fixed:
        name = "fixed"
        parallel_safe = False

        def predict_structure(self, composition, n=1, seed=None):
            return [GenerationResult(far), GenerationResult(near)][:n]

        def sample(self, n=1, seed=None):
            raise NotImplementedError

    run = evaluate_csp(Fixed(), [truth], CSPConfig(n_samples=2, workers=1, with_report=False))
    rms_near, rms_far = rms_dist(near, truth), rms_dist(far, truth)
    assert rms_near is not None and rms_far is not None and rms_near < rms_far
    assert run.summary["rmse"] == pytest.approx(rms_near)
    assert run.items[0].rms == pytest.approx([rms_far, rms_near])


def test_failing_generator_counts_as_failures_not_crash(mpts):
    class Broken:
        name = "broken"
        parallel_safe = False

        def predict_structure(self, composition, n=1, seed=None):
            raise RuntimeError("no luck")

        def sample(self, n=1, seed=None):
            raise RuntimeError("no luck")

    truths = mpts.structures[:3]
    s = evaluate_csp(Broken(), truths, CSPConfig(n_samples=2, workers=1)).summary
    assert s["generation_failures"] == 6 and s["match_rate"] == 0.0 and s["validity"] == 0.0


def test_pyxtal_baseline_is_seeded_and_keeps_exact_composition(mpts):
    baseline = PyXtalBaseline()
    assert isinstance(baseline, Generator) and isinstance(OracleGenerator([]), Generator)
    for truth in mpts.structures[:4]:
        a = baseline.predict_structure(truth.composition, n=2, seed=7)
        b = baseline.predict_structure(truth.composition, n=1, seed=7)
        assert [r.structure.composition for r in a] == [truth.composition] * 2
        assert np.allclose(a[0].structure.frac_coords, b[0].structure.frac_coords)
        assert a[0].structure.lattice == b[0].structure.lattice
        assert 1 <= a[0].metadata["spacegroup"] <= 230
    sampled = PyXtalBaseline([t.composition for t in mpts.structures]).sample(n=3, seed=1)
    known = {t.composition.formula for t in mpts.structures}
    assert all(r.structure.composition.formula in known for r in sampled)


def test_uniqueness_and_novelty_use_structure_matching(mpts):
    a, b = mpts.structures[0], mpts.structures[1]
    supercell = a.copy()
    supercell.make_supercell([2, 1, 1])  # the same crystal in a bigger cell
    crystals = [a, supercell, b]
    assert unique_mask(crystals) == [True, False, True]
    assert novel_mask(crystals, index_structures([a])) == [False, False, True]


def test_dng_novelty_is_the_share_of_valid_unique_crystals_not_in_the_training_corpus(pool_sample_path):
    """A generated copy of a training crystal (another cell of it) is not novel; the same
    frame with a new composition is. Novelty counts valid unique crystals only."""
    train = load_structures(str(pool_sample_path)).structures
    known = next(s for s in train if s.composition.reduced_formula == "EuClF")
    copy = known.copy()
    copy.make_supercell([1, 1, 2])
    source = next(s for s in train if s.composition.reduced_formula == "NaErSe2")
    new = source.copy()
    new.replace_species({"Na": "K"})
    new.perturb(0.05)
    assert smact_validity(new.composition) and structural_validity(new) and structural_validity(copy)

    class Fixed:
        name = "fixed"
        parallel_safe = False

        def sample(self, n=1, seed=None):
            return [GenerationResult(s) for s in (copy, new, known)][:n]

        def predict_structure(self, composition, n=1, seed=None):
            raise NotImplementedError

    reference = load_reference(pool_sample_path)
    assert "KErSe2" not in reference and "EuClF" in reference
    s = evaluate_dng(Fixed(), DNGConfig(n=3, workers=1, coverage=False), train=reference).summary
    assert s["n_valid_unique"] == 2  # the third crystal repeats the first
    assert s["novelty"] == 0.5 and s["unique_and_novel"] == pytest.approx(1 / 3)
    assert evaluate_dng(Fixed(), DNGConfig(n=3, workers=1, coverage=False)).summary["novelty"] is None


def test_coverage_follows_cdvae_cutoffs():
    rng = np.random.default_rng(0)
    ref_s, ref_c = rng.random((5, 8)), rng.normal(size=(5, 4)) * 20
    same = coverage(list(ref_s), list(ref_c), ref_s, ref_c)
    assert same["cov_recall"] == 1.0 and same["cov_precision"] == 1.0
    # half the generated crystals moved 0.5 away in structure space (> 0.4 cutoff),
    # one more crystal whose fingerprint failed (None) counts as a miss for precision
    moved = ref_s.copy()
    moved[:2, 0] += 0.5
    cov = coverage(list(moved) + [None], list(ref_c) + [None], ref_s, ref_c)
    assert cov["cov_recall"] == pytest.approx(3 / 5)
    assert cov["cov_precision"] == pytest.approx(3 / 6)


def test_plan_consistency(mpts):
    """On real traces: a crystal's own plan (read back from its encoding) agrees with it on
    every aspect; another crystal's plan does not agree on the composition."""
    from crystalgen.representation.sequence import decode_plan, encode
    from crystalgen.representation.wyckoff import WyckoffCrystal
    from crystalgen.trace import build_trace
    from crystalgen.validators.symmetry import SYMPRECS, spacegroup_number

    s, other = mpts.structures[0], mpts.structures[1]
    assert s.composition.reduced_formula != other.composition.reduced_formula
    trace = build_trace(decode_plan(encode(WyckoffCrystal.from_structure(s)).tokens), s)
    sg = spacegroup_number(s, SYMPRECS[0])
    plan_only = {"plan": trace["plan"]}
    assert plan_consistency(plan_only, s, sg) == trace["consistency"]
    assert plan_consistency(plan_only, s, sg) == {"spacegroup": True, "composition": True, "density": True}
    assert plan_consistency(plan_only, other, sg)["composition"] is False
    assert plan_consistency({"consistency": {"spacegroup": True}}, s, None) == {"spacegroup": True}
    assert plan_consistency(None, s, 62) is None
    rates = consistency_rates([plan_consistency(plan_only, s, sg), plan_consistency(plan_only, other, sg), None])
    assert rates["composition"] == 0.5 and rates["all"] == 0.5


def test_cli_csp_writes_json_and_png_with_baseline_row(mpts52_sample_path, tmp_path):
    out, png = tmp_path / "csp.json", tmp_path / "csp.png"
    result = CliRunner().invoke(main, [
        "evaluate", "csp", "--test", str(mpts52_sample_path), "--baseline", "oracle", "--limit", "8",
        "--samples", "1", "--workers", "1", "--json", str(out), "--png", str(png),
    ])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert set(report["rows"]) == {"oracle", "pyxtal"}
    assert report["n_test"] == 8 and report["n_samples"] == 1
    assert report["match_rate"] == report["rows"]["oracle"]["match_rate"] == report["ground_truth_validity"]
    assert 0 <= report["rows"]["pyxtal"]["match_rate"] <= 1
    assert report["settings"]["matcher"] == {"stol": 0.5, "angle_tol": 10, "ltol": 0.3}
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_dng_reports_validity_uniqueness_novelty(mpts52_sample_path, pool_sample_path, tmp_path):
    out, png = tmp_path / "dng.json", tmp_path / "dng.png"
    result = CliRunner().invoke(main, [
        "evaluate", "dng", "-n", "10", "--baseline", "pyxtal", "--test", str(mpts52_sample_path),
        "--train", str(pool_sample_path), "--no-coverage", "--workers", "1", "--json", str(out), "--png", str(png),
    ])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    for key in ("structural_validity", "compositional_validity", "pass_rate", "uniqueness", "novelty"):
        assert 0.0 <= report[key] <= 1.0, key
    assert report["n_generated"] == 10 and report["generation_failures"] == 0
    assert report["wdist_density"] > 0
    assert report["cov_recall"] is None and "coverage" in report["unavailable"]
    assert report["settings"]["pyxtal_compositions"] == "training set"
    assert report["settings"]["train_corpus"] == str(pool_sample_path) and report["settings"]["n_train_corpus"] == 60
    assert png.stat().st_size > 1000


def test_cli_csp_scores_the_model_with_and_without_the_distance_guard(mpts52_sample_path, tmp_path):
    for guard in ("0.5", "0"):
        out = tmp_path / f"csp_{guard}.json"
        result = CliRunner().invoke(main, [
            "evaluate", "csp", "--test", str(mpts52_sample_path), "--limit", "6", "--samples", "1",
            "--no-compare", "--workers", "1", "--min-distance", guard, "--json", str(out),
        ])
        assert result.exit_code == 0, result.output
        report = json.loads(out.read_text())
        assert report["settings"]["min_distance"] == float(guard)
        assert set(report["rows"]) == {"model"} and report["n_test"] == 6
        assert 0.0 <= report["structural_validity"] <= 1.0


def test_cli_help_lists_options():
    for sub in ("csp", "dng"):
        result = CliRunner().invoke(main, ["evaluate", sub, "--help"])
        assert result.exit_code == 0
        for option in ("--json", "--png", "--model", "--baseline", "--workers", "--seed", "--min-distance"):
            assert option in result.output


def test_fingerprint_coverage_of_test_set_against_itself(mpts):
    pytest.importorskip("matminer")
    from crystalgen.evaluation.fingerprints import fingerprints

    fps = [fingerprints(s) for s in mpts.structures[:6]]
    struc = [f[0] for f in fps if f[0] is not None]
    comp = [f[1] for f in fps if f[0] is not None]
    assert len(struc) >= 5 and all(np.isfinite(c).all() and c.shape == (132,) for c in comp)
    cov = coverage(struc, comp, struc, comp)
    assert cov["cov_recall"] == 1.0 and cov["amsd_recall"] == 0.0


def test_oracle_returns_each_polymorph_in_turn(mpts):
    a = mpts.structures[0]
    polymorph = a.copy()
    polymorph.perturb(0.3, min_distance=0.3)  # same cell formula, another structure
    oracle = OracleGenerator([a, polymorph])
    first = oracle.predict_structure(a.composition)[0].structure
    second = oracle.predict_structure(a.composition)[0].structure
    assert np.allclose(first.cart_coords, a.cart_coords)
    assert np.allclose(second.cart_coords, polymorph.cart_coords)


def test_dng_asks_the_model_for_all_crystals_in_one_seeded_call():
    from crystalgen.api import CrystalGenerator
    from crystalgen.evaluation.generation import generate_dng

    class Counting(CrystalGenerator):
        calls = 0

        def sample(self, *args, **kwargs):
            Counting.calls += 1
            return super().sample(*args, **kwargs)

    base = CrystalGenerator.from_pretrained(workers=0)
    model = Counting(base.model, workers=0)
    first = generate_dng(model, n=12, seed=4)
    again = generate_dng(model, n=12, seed=4)
    assert Counting.calls == 2 and len(first) == 12 and all(r is not None for r in first)
    assert [r.structure.composition for r in first] == [r.structure.composition for r in again]
    assert all(r.report is None for r in first)  # the harness scores them itself


def test_a_flat_generated_cell_is_scored_invalid_instead_of_crashing():
    """A weak model can emit a cell of zero volume; scoring (and the plan check) must not divide by it."""
    from pymatgen.core import Lattice, Structure

    from crystalgen.evaluation.consistency import plan_consistency
    from crystalgen.evaluation.scoring import score_crystal

    flat = Structure(Lattice([[3, 0, 0], [0, 3, 0], [3, 3, 0]]), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    assert flat.volume == 0
    score = score_crystal(flat, with_report=False)
    assert not score.struct_valid and not score.valid and math.isnan(score.density)
    plan = {"spacegroup": 225, "formula": "NaCl", "density": (2.0, 2.3)}  # as a trace plans it
    assert plan_consistency({"plan": plan}, flat, None) == {"spacegroup": False, "composition": True, "density": False}


def test_cli_dng_novelty_defaults_to_the_shipped_training_pool(mpts52_sample_path, tmp_path):
    out = tmp_path / "dng.json"
    result = CliRunner().invoke(main, [
        "evaluate", "dng", "-n", "3", "--baseline", "pyxtal", "--no-compare", "--test", str(mpts52_sample_path),
        "--no-coverage", "--workers", "1", "--json", str(out),
    ])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["settings"]["train_corpus"] == "training-pool" and report["settings"]["n_train_corpus"] == 37357
    assert "novelty" not in report["unavailable"]
    assert report["novelty"] is None or 0.0 <= report["novelty"] <= 1.0


def test_provenance_says_which_command_ran_when_and_on_what():
    record = provenance("bench_x")
    assert record["benchmark"] == "bench_x"
    assert record["command"] == "python " + " ".join(sys.argv)
    assert datetime.date.fromisoformat(record["date"])
    assert record["hardware"]["cores"] == os.cpu_count() and record["hardware"]["cpu"]
    load = record["hardware"]["load_average_at_start"]
    assert load is None or (len(load) == 3 and min(load) >= 0)
