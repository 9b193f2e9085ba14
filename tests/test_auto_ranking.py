"""`strategy="auto"`: analogues and the model's own candidates merged on the model's plan log-prob."""

from __future__ import annotations

import json
import math

import pytest
from click.testing import CliRunner

from crystalgen.auto_ranking import AutoRanking, energy_scores, merge, needs_model, plan_log_prob
from crystalgen.generation.request import GenerationRequest
from crystalgen.representation import vocab as V
from crystalgen.results import GenerationResult


def _result(structure, source: str, lp: float | None) -> GenerationResult:
    key = "model" if source == "analogue" else "plan_search"
    trace = {"strategy": source, "text": source, key: None if lp is None else {"plan_log_prob": lp}}
    return GenerationResult(structure, trace=trace, metadata={"generator": source})


@pytest.fixture(scope="module")
def distinct_structures(pool_by_formula):
    """Six real crystals of different formulas (StructureMatcher never fits two of them)."""
    return list(pool_by_formula.values())[:6]


def test_the_model_displaces_an_analogue_only_by_more_than_the_margin(distinct_structures):
    a = [_result(s, "analogue", lp) for s, lp in zip(distinct_structures[:3], (-10.0, -12.0, -30.0))]
    m = [_result(s, "model", lp) for s, lp in zip(distinct_structures[3:], (-6.0, -20.0, None))]

    def sources(margin):
        return [(r.trace["strategy"], plan_log_prob(r)) for r in merge(a, m, 6, AutoRanking(margin))]
    assert sources(math.inf) == [("analogue", -10.0), ("analogue", -12.0), ("analogue", -30.0),
                                 ("model", -6.0), ("model", -20.0), ("model", None)]
    assert sources(3.0)[:2] == [("model", -6.0), ("analogue", -10.0)]  # 4 nats more than the analogue
    # 4 < 5 against the first analogue; then 6 > 5 against the second
    assert sources(5.0)[:3] == [("analogue", -10.0), ("model", -6.0), ("analogue", -12.0)]
    # an unscored candidate never displaces the other side's head; -inf puts every scored model candidate first
    assert sources(-math.inf) == [("model", -6.0), ("model", -20.0), ("analogue", -10.0), ("analogue", -12.0),
                                  ("analogue", -30.0), ("model", None)]
    first = merge(a, m, 1, AutoRanking(3.0))[0]
    assert first.trace["auto"] == {"source": "model", "plan_log_prob": -6.0, "rival_plan_log_prob": -10.0,
                                   "margin": 3.0}
    assert "auto: model chosen, plan log-prob -6.00 against the analogue's -10.00" in first.trace["text"]


def test_merge_keeps_distinct_structures_and_either_side_alone(distinct_structures):
    s = distinct_structures[0]
    a = [_result(s, "analogue", -10.0)]
    m = [_result(s.copy(), "model", -1.0), _result(distinct_structures[1], "model", -2.0)]
    merged = merge(a, m, 2, AutoRanking(0.0))
    assert [r.trace["strategy"] for r in merged] == ["model", "model"]  # the analogue repeats the first
    assert merge([], m, 1)[0] is m[0] and merge(a, [], 1)[0] is a[0]
    assert AutoRanking(math.inf).as_dict() == {"margin": None, "model_share": 0.0, "energy_top": 0,
                                               "energy_weight": None}


def test_cli_csp_auto_with_the_model_row_records_the_margin(mpts52_sample_path, mpts_corpus, tmp_path):
    from crystalgen.cli import main

    out = tmp_path / "csp.json"
    result = CliRunner().invoke(main, [
        "evaluate", "csp", "--test", str(mpts52_sample_path), "--limit", "2", "--strategy", "auto",
        "--baseline", "analogue", "--model-row", "--auto-margin", "2.5", "--auto-share", "0.5",
        "--reference", str(mpts_corpus),
        "--no-compare", "--workers", "1", "--json", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert list(report["rows"]) == ["model (auto)", "analogue", "model"]
    assert all(row["n_test"] == 2 for row in report["rows"].values())
    assert report["settings"]["strategy"] == "auto"
    assert report["settings"]["auto_ranking"] == {"margin": 2.5, "model_share": 0.5, "energy_top": 0,
                                                  "energy_weight": None}


def test_an_elemental_cell_that_pymatgen_reduces_to_a_diatomic_formula_is_a_request():
    """`auto` builds the model's request for every composition, analogues or not: O2 (pymatgen's
    reduced formula of oxygen) asks for one O per formula unit and two formula units, like O8 eight."""
    o2, o8 = (GenerationRequest.build(f, exact_cell=True) for f in ("O2", "O8"))
    assert list(o2.prefix[:-2]) == list(o8.prefix[:-2])  # the same composition tokens: O, count 1
    assert int(o2.prefix[3]) == V.CNT0 and int(o8.prefix[-2]) - int(o2.prefix[-2]) == 6  # 8 vs 2 formula units


def test_a_model_directory_carries_its_own_fitted_margin(tmp_path):
    assert AutoRanking.for_model(None) == AutoRanking() == AutoRanking.for_model(tmp_path)
    (tmp_path / "auto_ranking.json").write_text(json.dumps({"margin": -20.0, "fitted_on": ["perov_5_val"]}))
    assert AutoRanking.for_model(tmp_path).margin == -20.0
    (tmp_path / "auto_ranking.json").write_text(json.dumps({"margin": None, "model_share": 0.25}))
    assert AutoRanking.for_model(tmp_path) == AutoRanking(math.inf, model_share=0.25)
    assert AutoRanking.for_model(tmp_path, margin=3.0, model_share=None) == AutoRanking(3.0, model_share=0.25)


def test_the_model_is_sampled_only_where_it_can_change_the_answer():
    assert not needs_model(AutoRanking(), 3, 3)  # the default: analogues first, n of them found
    assert needs_model(AutoRanking(), 2, 3)  # too few analogues: the model fills up
    assert needs_model(AutoRanking(10.0), 3, 3) and needs_model(AutoRanking(-math.inf), 3, 3)
    assert needs_model(AutoRanking(energy_top=3), 3, 3)  # energy can put the model's candidate first
    assert needs_model(AutoRanking(model_share=0.5), 20, 20) and not needs_model(AutoRanking(model_share=0.5), 1, 1)


def test_energy_decides_between_the_sides_where_its_weight_outweighs_the_plan_scores(distinct_structures):
    a = [_result(s, "analogue", lp) for s, lp in zip(distinct_structures[:2], (-10.0, -11.0))]
    m = [_result(s, "model", lp) for s, lp in zip(distinct_structures[2:4], (-12.0, -13.0))]
    energy = dict(zip(map(id, distinct_structures[:4]), (-1.0, -1.5, -2.0, -1.2)))  # eV/atom

    def order(**kw):
        ranking = AutoRanking(**{"margin": 0.0, "energy_top": 2, **kw})
        merged = merge(a, m, 4, ranking, energy=lambda structures: [energy[id(s)] for s in structures])
        return [(r.trace["strategy"], plan_log_prob(r)) for r in merged]
    assert order(energy_weight=0.0) == [("analogue", -10.0), ("analogue", -11.0), ("model", -12.0), ("model", -13.0)]
    # 100 nats per eV/atom: the lowest energy first, whichever side
    assert order(energy_weight=100.0) == [("model", -12.0), ("analogue", -11.0), ("model", -13.0),
                                          ("analogue", -10.0)]
    # a margin of -5 nats is a bonus for the model's candidates: -12 + 5 beats -10
    assert order(energy_weight=0.0, margin=-5.0)[:2] == [("model", -12.0), ("model", -13.0)]
    # an infinite margin keeps the analogues first; energy orders each side
    assert order(energy_weight=100.0, margin=math.inf) == [("analogue", -11.0), ("analogue", -10.0),
                                                           ("model", -12.0), ("model", -13.0)]
    first = merge(a, m, 1, AutoRanking(0.0, energy_top=2, energy_weight=100.0),
                  energy=lambda structures: [energy[id(s)] for s in structures])[0]
    assert first.trace["auto"]["source"] == "model" and first.trace["auto"]["energy_per_atom"] == -2.0
    assert "CHGNet energy -2.000 eV/atom" in first.trace["text"]
    assert energy_scores([-1.0, None], [False, True], [0.0, 0.0], 0.0, 1.0)[1] == (0, -math.inf)


def test_a_share_of_the_k_slots_goes_to_the_models_own_candidates(distinct_structures):
    a = [_result(s, "analogue", -1.0) for s in distinct_structures[:3]]
    m = [_result(s, "model", -30.0) for s in distinct_structures[3:6]]
    sources = [r.trace["strategy"] for r in merge(a, m, 4, AutoRanking(model_share=0.5))]
    assert sources == ["analogue", "analogue", "model", "model"]
    assert [r.trace["strategy"] for r in merge(a, m, 4, AutoRanking())] == ["analogue"] * 3 + ["model"]
    assert merge(a, m, 1, AutoRanking(model_share=0.5))[0] is a[0]  # K = 1: the merged order's head
    # a model candidate that repeats a kept analogue gives its slot to the next one
    m_repeat = [_result(distinct_structures[0].copy(), "model", -1.0), *m[:2]]
    merged = merge(a, m_repeat, 4, AutoRanking(model_share=0.5))
    assert merged[2:] == m[:2] and merged[2].trace["auto"]["reserved_slot"] is True
    # fewer model candidates than reserved slots: the analogues fill the rest
    assert [r.trace["strategy"] for r in merge(a, m[:1], 4, AutoRanking(model_share=0.75))] == \
        ["analogue", "analogue", "analogue", "model"]


def test_cli_csp_auto_with_energy_scores_auto_without_it_beside(mpts52_sample_path, mpts_corpus, tmp_path):
    pytest.importorskip("chgnet")
    from crystalgen.cli import main

    out = tmp_path / "csp.json"
    result = CliRunner().invoke(main, [
        "evaluate", "csp", "--test", str(mpts52_sample_path), "--limit", "1", "--strategy", "auto",
        "--energy-top", "2", "--energy-weight", "30", "--auto-margin", "-20", "--baseline", "analogue",
        "--reference", str(mpts_corpus), "--no-compare", "--workers", "1", "--json", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert list(report["rows"]) == ["model (auto+chgnet)", "analogue", "model (auto)"]
    assert report["settings"]["auto_ranking"] == {"margin": -20.0, "model_share": 0.0, "energy_top": 2,
                                                  "energy_weight": 30.0}
