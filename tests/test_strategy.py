"""Structure prediction strategies of the API and CLI: analogues, the model, and both."""

from __future__ import annotations

import math

import pytest
from click.testing import CliRunner
from pymatgen.core import Composition
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

from crystalgen.api import CrystalGenerator, RequestError
from crystalgen.auto_ranking import AutoRanking, plan_log_prob
from crystalgen.cli import main

NO_ANALOGUE = "Li5Fe3P7O2Cl11"  # no structure of this anonymous formula in the shipped pool


@pytest.fixture(scope="module")
def gen():
    g = CrystalGenerator.from_pretrained(workers=0)
    yield g
    g.close()


def test_known_compound_comes_back_as_itself(gen):
    """The default ("auto") answers NaCl with rock salt from the reference pool, and says so."""
    [nacl] = gen.predict_structure("NaCl", n=1)
    assert SpacegroupAnalyzer(nacl.structure, symprec=0.1).get_space_group_number() == 225
    assert nacl.metadata["known_compound"] and nacl.metadata["reference_id"] == "mp-22862"
    assert "known compound: mp-22862" in nacl.trace["text"]
    assert nacl.report["pass"]


def test_auto_merges_analogues_and_the_models_candidates_by_plan_log_prob(gen):
    """Analogues first with an infinite margin; the model's top plan first with none; the default
    margin picks whichever side's top candidate the rule says."""
    def predict(margin: float):
        gen.auto_ranking = AutoRanking(margin)
        try:
            return gen.predict_structure("SrTiO3", n=3, seed=0)
        finally:
            gen.auto_ranking = AutoRanking()

    analogues_first, model_first = predict(math.inf), predict(-math.inf)
    assert all(r.metadata.get("generator") == "analogue" for r in analogues_first)
    assert model_first[0].metadata.get("generator") != "analogue" and model_first[0].log_likelihood is not None
    assert model_first[0].trace["auto"]["source"] == "model"
    results = gen.predict_structure("SrTiO3", n=3, seed=0)
    assert len(results) == 3 and all(r.structure.composition.reduced_formula == "SrTiO3" for r in results)
    gain = plan_log_prob(model_first[0]) - plan_log_prob(analogues_first[0])
    expected = model_first[0] if gain > AutoRanking().margin else analogues_first[0]
    assert results[0].metadata.get("generator") == expected.metadata.get("generator")
    assert plan_log_prob(results[0]) == pytest.approx(plan_log_prob(expected))
    only_model = gen.predict_structure("SrTiO3", n=2, seed=0, strategy="model")
    assert all(r.log_likelihood is not None and "reference_id" not in r.metadata for r in only_model)


def test_no_analogue_is_an_error_for_analogues_and_the_model_for_auto(gen):
    with pytest.raises(RequestError, match="no analogue"):
        gen.predict_structure(NO_ANALOGUE, n=1, strategy="analogue")
    results = gen.predict_structures(["NaCl", "Mg1Si1O3"], n=1, seed=0, strategy="analogue")
    assert len(results) == 2 and results[0]
    with pytest.raises(RequestError, match="strategy"):
        gen.predict_structure("NaCl", strategy="nearest")
    with pytest.raises(RequestError, match="unknown element"):
        gen.predict_structure("Xx2")


def test_auto_falls_back_to_the_model_where_no_analogue_exists(gen):
    comp = NO_ANALOGUE
    with pytest.raises(RequestError):
        gen.predict_structure(comp, n=1, strategy="analogue")
    results = gen.predict_structure(comp, n=2, seed=0)
    assert results and all(r.log_likelihood is not None for r in results)
    # a reduced formula lets the model choose the formula units: the reduced composition holds by construction
    assert all(r.structure.composition.reduced_composition.almost_equals(Composition(comp).reduced_composition)
               for r in results)


def test_cli_sample_strategy(tmp_path):
    out = tmp_path / "nacl"
    run = CliRunner().invoke(main, ["sample", "--formula", "NaCl", "-n", "1", "--strategy", "analogue",
                                    "--workers", "0", "--out", str(out), "--trace"])
    assert run.exit_code == 0, run.output
    assert "known compound: mp-22862" in run.output and len(list(out.glob("*.cif"))) == 1
    bad = CliRunner().invoke(main, ["sample", "--formula", NO_ANALOGUE, "-n", "1", "--strategy", "analogue",
                                    "--workers", "0", "--out", str(tmp_path / "none")])
    assert bad.exit_code != 0 and "no analogue" in bad.output and not (tmp_path / "none").exists()
