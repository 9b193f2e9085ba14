"""K>1 answers hold structurally distinct candidates (analogues and the model can repeat each other)."""

from __future__ import annotations

from crystalgen.distinct import distinct_results
from crystalgen.evaluation.datasets import load_structures
from crystalgen.results import GenerationResult


def test_a_repeated_crystal_is_dropped_and_the_next_distinct_one_kept(mpts52_sample_path):
    structures = load_structures(str(mpts52_sample_path)).structures
    a, b, c = structures[0], structures[1], structures[2]
    repeat = a.copy()
    repeat.make_supercell([1, 1, 2])  # the same crystal in another cell, slightly strained
    repeat.apply_strain(0.01)
    ranked = [GenerationResult(s, metadata={"k": k}) for k, s in enumerate([a, repeat, b, c])]
    kept = distinct_results(ranked, 3)
    assert [r.metadata["k"] for r in kept] == [0, 2, 3]
    assert [r.metadata["k"] for r in distinct_results(ranked, 1)] == [0]
