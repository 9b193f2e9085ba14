"""The model scores, refines and re-ranks analogue candidates (tiny random model, fixture corpus)."""

from __future__ import annotations

import math
import shutil

import pytest
import torch
from pymatgen.core import Lattice, Structure
from training_data import fixture_corpus_path, fixture_sequences, one_thread

from crystalgen.analogues.candidates import Candidate
from crystalgen.analogues.exclusion import exclude_test_crystals
from crystalgen.analogues.generator import AnalogueConfig, AnalogueGenerator
from crystalgen.analogues.index import load_index
from crystalgen.analogues.model_score import encode_candidate, plan_tokens, score_sequences, score_structures
from crystalgen.analogues.ranking import RankWeights, combined_order, combined_scores, features
from crystalgen.analogues.refine import prefer_refined, refine
from crystalgen.analogues.substitution import Mapping
from crystalgen.data.corpus import read_corpus
from crystalgen.data.readers import read_structures
from crystalgen.evaluation.datasets import load_structures
from crystalgen.evaluation.metrics import MATCHER_KWARGS
from crystalgen.generation.plan_search import best_by_plan
from crystalgen.model import HEAD_NAMES, CrystalModel, CrystalModelConfig, collate
from crystalgen.representation.sequence import decode_plan
from crystalgen.results import GenerationResult

_one_thread = pytest.fixture(scope="module", autouse=True)(one_thread)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return CrystalModel(CrystalModelConfig()).eval()


@pytest.fixture(scope="module")
def pool_structures(pool_sample_path):
    return [r.structure for r in read_structures(pool_sample_path)][:12]


def test_a_candidate_is_encoded_as_training_encodes_it(pool_sample_path):
    """The sequence scored is the training sequence of that structure (the `csp` prompt)."""
    corpus, data = read_corpus(fixture_corpus_path()), fixture_sequences()
    records = {r.id: r.structure for r in read_structures(pool_sample_path)}
    checked = 0
    for material, seqs in list(zip(data.ids, data.sequences))[:8]:
        encoded = encode_candidate(records[material])
        assert encoded is not None
        assert encoded.tokens.tolist() == seqs["csp"].tokens.tolist()
        assert encoded.loss_mask.tolist() == seqs["csp"].loss_mask.tolist()
        assert encoded.values == pytest.approx(seqs["csp"].values, abs=1e-4)
        checked += 1
    assert checked == 8 and len(corpus) >= 8


def test_scores_are_minus_the_training_loss_and_do_not_depend_on_the_batch(model, pool_structures):
    encoded = [e for e in (encode_candidate(s) for s in pool_structures) if e is not None]
    assert len(encoded) >= 10
    together = score_sequences(model, encoded)
    for seq, score in zip(encoded, together):
        with torch.no_grad():
            loss = model.nll_sums(collate([seq]))
        assert score.plan_log_prob == pytest.approx(-float(loss["token"][0]), rel=1e-4, abs=1e-3)
        values = sum(float(loss[name][0]) for name in HEAD_NAMES if name != "token")
        assert score.value_log_lik == pytest.approx(-values, rel=1e-4, abs=1e-3)
        assert score.n_plan_tokens == int(loss["token"][1])
        assert score.n_values == sum(int(loss[name][1]) for name in HEAD_NAMES if name != "token")
        [alone] = score_sequences(model, [seq])
        assert alone.plan_log_prob == pytest.approx(score.plan_log_prob, rel=1e-4, abs=1e-3)
        assert alone.value_log_lik == pytest.approx(score.value_log_lik, rel=1e-4, abs=1e-3)
        assert score.plan_log_prob < 0 and score.n_plan_tokens > 0


def test_a_structure_the_format_cannot_express_scores_none_and_keeps_its_place(model, pool_structures):
    americium = Structure(Lattice.cubic(3.5), ["Am", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])  # beyond the vocabulary
    assert encode_candidate(americium) is None
    scores = score_structures(model, [pool_structures[0], americium, pool_structures[1]])
    assert scores[1] is None and scores[0] is not None and scores[2] is not None
    direct = score_sequences(model, [encode_candidate(pool_structures[0]), encode_candidate(pool_structures[1])])
    assert scores[0].plan_log_prob == pytest.approx(direct[0].plan_log_prob, rel=1e-4, abs=1e-3)
    assert scores[2].value_log_lik == pytest.approx(direct[1].value_log_lik, rel=1e-4, abs=1e-3)


def test_refinement_writes_a_crystal_of_the_plan(model, pool_structures):
    encoded = [e for e in (encode_candidate(s) for s in pool_structures) if e is not None][:6]
    refined = refine(model, encoded)
    assert len(refined) == len(encoded) and sum(r is not None for r in refined) >= 4
    for seq, structure, r in zip(encoded, pool_structures, refined):
        if r is None:
            continue
        plan = decode_plan(plan_tokens(seq)[1])
        assert r.spacegroup == plan.spacegroup
        assert r.structure.composition.reduced_composition == structure.composition.reduced_composition
        assert len(r.structure) == plan.num_atoms and math.isfinite(r.value_log_lik)
    again = refine(model, encoded)  # temperature 0: the mode, the same every time
    assert [None if r is None else r.value_log_lik for r in again] == [None if r is None else r.value_log_lik
                                                                      for r in refined]
    own = score_sequences(model, encoded[:1])[0]
    assert prefer_refined(own, refined[0]) == (refined[0].value_log_lik > own.value_log_lik)
    assert not prefer_refined(own, None)


def _candidate(log_prob: float, known: bool = False, z_ratio: int = 1) -> Candidate:
    return Candidate(0, "x", "X", 1, Mapping((("A", "A"),), log_prob, "pymatgen"), known, 0.0, z_ratio)


def test_ranking_uses_the_documented_formula():
    weights = RankWeights(plan=0.5, values=0.1, same_cell=2.0, energy=10.0)
    cands = [
        features(_candidate(-1.0), None, -5.0),  # no model score: keeps its place
        {**features(_candidate(-2.0, z_ratio=2), None, -5.2), "plan_log_prob": -10.0, "value_log_lik": 3.0},
        {**features(_candidate(-3.0), None, -5.0), "plan_log_prob": -4.0, "value_log_lik": 1.0},
        {**features(_candidate(-6.0, known=True), None, -4.0), "plan_log_prob": -20.0, "value_log_lik": 0.0},
        {**features(_candidate(-1.5), None, None), "plan_log_prob": -1.0, "value_log_lik": 0.0},
    ]
    scores = combined_scores(cands, weights)
    assert scores[0] is None
    assert scores[1] == pytest.approx(-2.0 + 0.5 * -10.0 + 0.1 * 3.0 + 0 - 10.0 * (-5.2 + 5.2))
    assert scores[2] == pytest.approx(-3.0 + 0.5 * -4.0 + 0.1 * 1.0 + 2.0 - 10.0 * (-5.0 + 5.2))
    assert scores[4] == -math.inf  # no energy while energy counts: last
    # the known compound first; then slot 0 stays; slots 1, 2, 4 re-sorted by score
    assert combined_order(cands, weights) == [3, 0, 2, 1, 4]
    no_energy = RankWeights(plan=0.5, values=0.1, same_cell=2.0, energy=0.0)
    assert combined_order(cands, no_energy) == [3, 0, 4, 2, 1]


@pytest.fixture(scope="module")
def held_out(tmp_path_factory, mpts52_sample_path):
    corpus = tmp_path_factory.mktemp("corpus") / "mpts.csv.gz"
    shutil.copy(mpts52_sample_path, corpus)
    test = load_structures(str(mpts52_sample_path))
    i = test.ids.index("mp-31117")  # NdScO3, with LaScO3, TbScO3, DyScO3, HoScO3 in the corpus
    index, _ = exclude_test_crystals(load_index(corpus, workers=1), ["mp-31117"], [test.structures[i]],
                                     MATCHER_KWARGS)
    return index, test.structures[i]


def test_the_generator_ranks_by_the_combined_score_and_says_so(held_out, model):
    index, truth = held_out
    config = AnalogueConfig(refine=True, rank_weights=RankWeights(plan=1.0, values=0.0, same_cell=0.0))
    results = AnalogueGenerator(index, config, model=model).predict_structure(truth.composition, n=3)
    assert len(results) >= 2
    notes = [r.trace["model"] for r in results]
    assert all(note is not None for note in notes)
    known = [r.metadata["known_compound"] for r in results]
    assert not any(known)
    combined = [note["combined_score"] for note in notes]
    assert combined == sorted(combined, reverse=True)
    for r, note in zip(results, notes):
        assert r.structure.composition == truth.composition
        assert "model plan score" in r.trace["text"]
        assert ("refined by the model" in r.trace["text"]) == note["refined"]
    plain = AnalogueGenerator(index).predict_structure(truth.composition, n=1)[0]
    assert plain.trace["model"] is None and "model plan score" not in plain.trace["text"]


def test_plan_search_keeps_the_samples_of_highest_plan_log_prob(model, pool_structures):
    americium = Structure(Lattice.cubic(3.5), ["Am", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    samples = [GenerationResult(s, trace={"text": "plan"}) for s in [americium, *pool_structures[:5]]]
    scores = score_structures(model, [r.structure for r in samples])
    kept = best_by_plan(model, samples, 3)
    expected = sorted(range(1, 6), key=lambda i: -scores[i].plan_log_prob)[:3]
    assert [r.structure for r in kept] == [samples[i].structure for i in expected]
    assert [r.trace["plan_search"]["rank"] for r in kept] == [1, 2, 3]
    assert "plan search: best 1 of 6" in kept[0].trace["text"]
    assert best_by_plan(model, samples, 6)[-1].structure is americium  # no score: last
