"""The PyXtal baseline: random symmetric crystals, no model.

For each query it draws a space group compatible with the exact atom counts (pyxtal's
Wyckoff bookkeeping), asks `pyxtal.from_random` for a random structure in it, and falls
back to other groups and finally P1 when pyxtal cannot place the atoms. This is the
"chance level" that every generator's CSP and de novo figures are shown beside.
"""

from __future__ import annotations

from collections.abc import Sequence
import signal
import threading
from dataclasses import dataclass
from functools import lru_cache
from itertools import chain

import numpy as np
from pymatgen.core import Composition

from crystalgen.results import GenerationResult


@dataclass
class PyXtalConfig:
    """max_groups: space groups tried per structure before P1; factor: pyxtal's volume factor."""

    max_groups: int = 5
    factor: float = 1.1
    seconds_per_group: float = 5.0  # pyxtal occasionally searches for minutes; move on


class _TimeLimit:
    """Raise TimeoutError in the block after `seconds` (SIGALRM: main thread only,
    which is where the harness's worker processes run tasks; elsewhere, no limit)."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.active = seconds > 0 and threading.current_thread() is threading.main_thread()

    def _expire(self, signum, frame):
        raise TimeoutError(f"gave up after {self.seconds} s")

    def __enter__(self):
        if self.active:
            self.previous = signal.signal(signal.SIGALRM, self._expire)
            signal.setitimer(signal.ITIMER_REAL, self.seconds)
        return self

    def __exit__(self, *exc):
        if self.active:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self.previous)
        return False


@lru_cache(maxsize=None)
def _group(number: int):
    from pyxtal.symmetry import Group

    return Group(number)


def is_compatible(spacegroup: int, counts: tuple[int, ...]) -> bool:
    """Whether the group's Wyckoff positions can hold exactly these atom counts."""
    return bool(_group(spacegroup).check_compatible(list(counts))[0])


class PyXtalBaseline:
    """Random symmetric structures via pyxtal, reproducible from a seed.

    compositions: the pool de novo `sample` draws from (exact cell compositions); CSP
        (`predict_structure`) uses the composition it is asked for.
    """

    name = "pyxtal"
    parallel_safe = True  # picklable and stateless per call: the harness may fan it out

    def __init__(
        self,
        compositions: Sequence[Composition | str] | None = None,
        config: PyXtalConfig | None = None,
    ):
        self.compositions = [Composition(c) for c in (compositions or [])]
        self.config = config or PyXtalConfig()

    def predict_structure(
        self, composition: Composition | str, n: int = 1, seed: int | None = None
    ) -> list[GenerationResult]:
        rng = np.random.default_rng(seed)
        return [self._one(Composition(composition), rng) for _ in range(n)]

    def sample(self, n: int = 1, seed: int | None = None) -> list[GenerationResult]:
        if not self.compositions:
            raise ValueError("PyXtalBaseline.sample needs a pool of compositions")
        rng = np.random.default_rng(seed)
        picks = rng.integers(len(self.compositions), size=n)
        return [self._one(self.compositions[int(i)], rng) for i in picks]

    def _one(self, composition: Composition, rng: np.random.Generator) -> GenerationResult:
        from pyxtal import pyxtal

        amounts = composition.get_el_amt_dict()
        species = list(amounts)
        counts = [int(round(amounts[el])) for el in species]
        # Rejection sampling over a random order of all 230 groups is uniform over the
        # compatible ones, and checks far fewer groups than listing them all (slow for
        # large cells).
        order = [int(g) for g in rng.permutation(np.arange(1, 231))]
        tries = chain(
            _first_compatible(order, tuple(counts), self.config.max_groups, self.config.seconds_per_group), [1]
        )
        last_error = "no space group tried"
        for sg in tries:
            crystal = pyxtal()
            try:
                with _TimeLimit(self.config.seconds_per_group):
                    crystal.from_random(
                        3, sg, species, counts, factor=self.config.factor,
                        random_state=int(rng.integers(2**31 - 1)),
                    )
            except Exception as err:  # pyxtal raises assorted errors when placement fails
                last_error = f"sg {sg}: {err}"
                continue
            if crystal.valid:
                return GenerationResult(
                    crystal.to_pymatgen(),
                    metadata={"generator": self.name, "spacegroup": sg, "formula": composition.formula},
                )
            last_error = f"sg {sg}: pyxtal could not place the atoms"
        raise RuntimeError(f"pyxtal failed for {composition.formula}: {last_error}")


def _first_compatible(order: list[int], counts: tuple[int, ...], k: int, seconds: float):
    """The first `k` groups of `order` compatible with `counts`, checked lazily (a check
    slower than `seconds` counts as incompatible)."""
    found = 0
    for sg in order:
        if found >= k:
            return
        try:
            with _TimeLimit(seconds):
                ok = is_compatible(sg, counts)
        except TimeoutError:
            ok = False
        if ok:
            found += 1
            yield sg
