"""A generator whose top candidates are relaxed and re-ranked by energy, for `evaluate csp --relax`.

It asks the wrapped generator for max(K, top) candidates per composition, relaxes the top
ones (`analogues.relax.relax_results`) and keeps K, so that with K=1 the relax can still
change which candidate is returned. The harness scores it like any generator.
"""

from __future__ import annotations

from collections.abc import Sequence

from pymatgen.core import Composition

from crystalgen.analogues.relax import Relaxer, relax_results
from crystalgen.evaluation.generation import generate_csp
from crystalgen.generation.protocol import Generator
from crystalgen.results import GenerationResult


class RelaxedGenerator:
    """`inner`'s candidates, the top `relaxer.config.top` relaxed and ordered by energy per atom."""

    parallel_safe = False  # the calculator holds a model; relaxes run in this process

    def __init__(self, inner: Generator, relaxer: Relaxer, seed: int = 0):
        self.inner = inner
        self.relaxer = relaxer
        self.seed = seed
        self.name = f"{getattr(inner, 'name', 'generator')}+relax"

    def predict_structures(self, compositions: Sequence[Composition | str], n: int = 1, seed: int | None = None,
                           validate: bool | None = None) -> list[list[GenerationResult]]:
        found = generate_csp(self.inner, [Composition(c) for c in compositions], max(n, self.relaxer.config.top),
                             self.seed if seed is None else seed)
        return [relax_results([r for r in results if r is not None], self.relaxer, Composition(c).formula,
                              validate_again=validate is not False)[:n]
                for c, results in zip(compositions, found)]

    def predict_structure(self, composition: Composition | str, n: int = 1, seed: int | None = None
                          ) -> list[GenerationResult]:
        return self.predict_structures([composition], n=n, seed=seed)[0]

    def sample(self, n: int = 1, seed: int | None = None, **_) -> list[GenerationResult]:
        raise NotImplementedError("relaxed candidates are for structure prediction (evaluate csp)")
