"""Running a generator over many queries: seeded, fault-tolerant, parallel when safe.

A generator that raises for one query costs that query's samples (counted as failures,
scored as invalid), never the whole run. Generators that declare `parallel_safe = True`
(the PyXtal baseline) are fanned out over processes; the model runs here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pymatgen.core import Composition

from crystalgen.parallel import parallel_map
from crystalgen.generation.protocol import BatchGenerator, Generator
from crystalgen.results import GenerationResult


def derived_seed(seed: int, index: int) -> int:
    """An independent, reproducible seed for query `index` of a run seeded with `seed`."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def _predict_task(task: tuple[Generator, Composition, int, int]) -> list[GenerationResult | None]:
    generator, composition, n, seed = task
    try:
        results = list(generator.predict_structure(composition, n=n, seed=seed))
    except Exception:
        return [None] * n
    return (results + [None] * n)[:n]


def _sample_task(task: tuple[Generator, int, int]) -> list[GenerationResult | None]:
    generator, n, seed = task
    try:
        return (list(generator.sample(n=n, seed=seed)) + [None] * n)[:n]
    except Exception:
        return [None] * n


def generate_csp(
    generator: Generator,
    compositions: Sequence[Composition],
    n_samples: int,
    seed: int,
    workers: int = 1,
) -> list[list[GenerationResult | None]]:
    """`n_samples` candidates per composition; None where the generator failed.

    A generator with a batched ``predict_structures`` (the model) gets every composition
    in one call, so that sequences of different compositions share batches; it skips its
    own validation, since the harness scores every candidate itself.
    """
    if _batched(generator):
        batched = generator.predict_structures(list(compositions), n=n_samples, seed=seed, validate=False)
        return [(list(r) + [None] * n_samples)[:n_samples] for r in batched]
    tasks = [(generator, c, n_samples, derived_seed(seed, i)) for i, c in enumerate(compositions)]
    return parallel_map(
        _predict_task, tasks, workers=_workers_for(generator, workers), desc="generate (csp)", chunksize=8
    )


def generate_dng(
    generator: Generator, n: int, seed: int, workers: int = 1, batch: int = 50
) -> list[GenerationResult | None]:
    """`n` de novo crystals, asked for in seeded batches; None where a batch failed.

    A batched generator (the model) gets all ``n`` in one call instead: it fills its own
    batches and worker processes (each crystal has its own random stream), which is ~10x
    faster than 50 at a time, and it skips its own validation like in :func:`generate_csp`.
    """
    if _batched(generator):
        try:
            results = list(generator.sample(n=n, seed=seed, validate=False))
        except Exception:
            results = []
        return (results + [None] * n)[:n]
    sizes = [min(batch, n - start) for start in range(0, n, batch)]
    tasks = [(generator, size, derived_seed(seed, i)) for i, size in enumerate(sizes)]
    batches = parallel_map(
        _sample_task, tasks, workers=_workers_for(generator, workers), desc="generate (dng)", chunksize=1
    )
    return [r for b in batches for r in b]


def _batched(generator: Generator) -> bool:
    """Does the generator batch many requests itself (the model's ``predict_structures``)?"""
    return isinstance(generator, BatchGenerator)


def _workers_for(generator: Generator, workers: int) -> int:
    return workers if generator.parallel_safe else 1
