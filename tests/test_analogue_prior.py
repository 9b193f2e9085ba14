"""The prototype prior: prototype keys in the index, their popularity, and the prior's order (fixtures only)."""

from __future__ import annotations

import json
import shutil
from collections import Counter

import numpy as np
import pytest
from click.testing import CliRunner
from pymatgen.core import Lattice, Structure

from crystalgen.analogues.candidates import find_candidates
from crystalgen.analogues.exclusion import exclude_test_crystals
from crystalgen.analogues.generator import AnalogueConfig, AnalogueGenerator
from crystalgen.analogues.index import AnalogueIndex, corpus_fingerprint, load_index, prototype_key, sidecar_paths
from crystalgen.analogues.prior import PriorWeights, prior_order, prototype_votes
from crystalgen.evaluation.datasets import load_structures
from crystalgen.evaluation.metrics import MATCHER_KWARGS


def _key(s: Structure) -> str:
    return prototype_key(s.lattice.matrix, [site.specie.Z for site in s], s.frac_coords)


def test_prototype_key_ignores_element_identity_and_cell_choice_but_not_structure_type(mpts52_sample_path):
    s = load_structures(str(mpts52_sample_path)).structures[0]
    key = _key(s)
    swapped = s.copy()
    swapped.replace_species({el: new for el, new in zip(s.composition.elements, ("Ba", "Sr", "Ca", "Mg", "Be"))})
    supercell = s.copy()
    supercell.make_supercell([2, 1, 1])
    assert _key(swapped) == key and _key(supercell) == key
    rocksalt = Structure.from_spacegroup(225, Lattice.cubic(5.6), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    zincblende = Structure.from_spacegroup(216, Lattice.cubic(5.6), ["Na", "Cl"], [[0, 0, 0], [0.25, 0.25, 0.25]])
    assert _key(rocksalt).startswith("1,1|225|") and _key(zincblende).startswith("1,1|216|")
    assert _key(rocksalt.get_primitive_structure()) == _key(rocksalt)


def test_popularity_counts_entries_of_the_same_prototype_in_the_kept_corpus(mpts_index, mpts52_sample_path):
    counts = Counter(mpts_index.prototype)
    assert all(mpts_index.popularity(i) == counts[mpts_index.prototype[i]] for i in range(len(mpts_index)))
    test = load_structures(str(mpts52_sample_path))
    popular = max(range(len(mpts_index)), key=mpts_index.popularity)
    same = [i for i in range(len(mpts_index)) if mpts_index.prototype[i] == mpts_index.prototype[popular]]
    assert len(same) >= 2
    dropped = str(mpts_index.ids[same[0]])
    kept, _ = exclude_test_crystals(mpts_index, [dropped], [test.structures[test.ids.index(dropped)]], MATCHER_KWARGS)
    j = list(kept.ids).index(str(mpts_index.ids[same[1]]))
    assert kept.popularity(j) == mpts_index.popularity(same[1]) - 1  # excluded crystals are not counted


def test_a_sidecar_without_prototype_keys_gains_them_on_load(mpts_corpus, mpts_index, tmp_path):
    copy = tmp_path / mpts_corpus.name
    shutil.copy(mpts_corpus, copy)
    sidecar = sidecar_paths(copy, corpus_fingerprint(copy))[0]
    shutil.copy(sidecar_paths(mpts_corpus, corpus_fingerprint(mpts_corpus))[0], sidecar)
    with np.load(sidecar) as data:
        arrays = {k: data[k] for k in data.files if k != "prototype"}
    np.savez_compressed(sidecar, **arrays)
    assert not AnalogueIndex.has_prototypes(sidecar)
    again = load_index(copy, workers=1)
    assert list(again.prototype) == list(mpts_index.prototype)
    assert AnalogueIndex.has_prototypes(sidecar)


def _cand(log_prob, prototype, popularity, known=False, same_cell=True):
    return {"log_prob": log_prob, "prototype": prototype, "popularity": popularity, "known": known,
            "same_cell": same_cell}


def test_prior_order_keeps_the_plain_order_without_weights_and_known_and_same_cell_first():
    cands = [_cand(-1.0, "A", 1, known=True), _cand(-2.4, "B", 1), _cand(-2.5, "C", 50), _cand(-2.6, "C", 50),
             _cand(-0.5, "D", 90, same_cell=False)]
    votes = prototype_votes(cands)
    assert votes["C"][0] == 2 and votes["C"][1] == pytest.approx(np.log(np.exp(-2.5) + np.exp(-2.6)))
    for c in cands:
        c["votes"], c["vote_mass"] = votes[c["prototype"]]
    assert prior_order(cands, PriorWeights()) == [0, 1, 2, 3, 4]
    popular = prior_order(cands, PriorWeights(popularity=1.0))
    assert popular == [0, 2, 1, 3, 4]  # the popular prototype's best candidate overtakes B, its other one does not;
    # the known compound and the cell order stay
    assert prior_order(cands, PriorWeights(votes=1.0))[:2] == [0, 2]
    assert prior_order(cands, PriorWeights(vote_mass=1.0))[:2] == [0, 2]


def test_find_candidates_with_the_prior_reorders_the_same_candidates(mpts_index):
    formula = "Nd4Sc4O12"
    plain = find_candidates(mpts_index, formula)
    weighted = find_candidates(mpts_index, formula, prior=PriorWeights(popularity=1.0, votes=1.0, vote_mass=1.0))
    assert sorted(c.entry for c in plain) == sorted(c.entry for c in weighted)
    assert [c.entry for c in find_candidates(mpts_index, formula, prior=PriorWeights())] == [c.entry for c in plain]
    scores = [c.score for c in weighted if not c.known and c.z_ratio == 1]
    assert scores == sorted(scores, reverse=True)
    result = AnalogueGenerator(mpts_index, AnalogueConfig(prior=PriorWeights(popularity=1.0))).predict_structure(formula)[0]
    assert result.trace["chosen"]["prototype_popularity"] >= 1 and "|" in result.trace["chosen"]["prototype"]


def test_cli_csp_records_plan_search_and_the_prior(mpts52_sample_path, mpts_corpus, tmp_path):
    from crystalgen.cli import main

    out = tmp_path / "csp.json"
    result = CliRunner().invoke(main, [
        "evaluate", "csp", "--test", str(mpts52_sample_path), "--limit", "2", "--plan-search", "2",
        "--baseline", "analogue", "--no-prototype-prior", "--reference", str(mpts_corpus), "--no-compare",
        "--workers", "1", "--json", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["settings"]["plan_search"] == 2
    assert report["settings"]["analogues"]["prior"] == PriorWeights().as_dict()
    assert list(report["rows"]) == ["model + plan search 2", "analogue"]
    assert report["rows"]["model + plan search 2"]["n_test"] == 2
