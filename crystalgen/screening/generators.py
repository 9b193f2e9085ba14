"""Turning the config's ``generator`` string into a :class:`~crystalgen.generation.protocol.Generator`.

Accepted values:
  "default"          the shipped model (``CrystalGenerator.from_pretrained()``)
  "pyxtal"           the PyXtal random-structure baseline (``crystalgen.evaluation.baseline``)
  "module:factory"   any importable callable returning a generator (plug-ins, tests)
  anything else      a model directory for ``CrystalGenerator.from_pretrained(path=...)``

Every generator is called through the protocol's ``sample`` keywords; one that has no use
for a sampling knob (a baseline has no temperature) ignores it.
"""

from __future__ import annotations

import importlib
import itertools
import json
import math
from typing import Any

import numpy as np
from pymatgen.core import Composition

from crystalgen.generation.protocol import Generator
from crystalgen.results import GenerationResult
from crystalgen.screening.config import SamplingConfig, Target

# One generator per process: loading a model is far slower than sampling a shard.
_CACHE: dict[str, Any] = {}


def import_object(spec: str) -> Any:
    """``"package.module:attr"`` -> the attribute."""
    module, sep, attr = spec.partition(":")
    if not sep or not module or not attr:
        raise ValueError(f"expected 'module:attribute', got {spec!r}")
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


class PyXtalTargets:
    """The PyXtal baseline behind the screening ``sample`` interface.

    ``crystalgen.evaluation.baseline.PyXtalBaseline`` generates for a given cell
    composition; this picks that composition for a target: a formula times a number of
    formula units, or, for a chemical system, a charge-balanced (SMACT) stoichiometry
    with every element present. Cells stay within ``max_atoms`` (or exactly
    ``num_atoms`` when the target sets it). A requested space group is not passed on
    (the baseline draws its own); the space-group filter applies afterwards.
    """

    def __init__(self, max_atoms: int = 20, max_count: int = 6) -> None:
        from crystalgen.evaluation.baseline import PyXtalBaseline

        self.baseline = PyXtalBaseline()
        self.max_atoms = max_atoms
        self.max_count = max_count

    def reduced_compositions(self, formula: str | None, chemsys: str | None) -> list[Composition]:
        """The reduced compositions a target allows, in a fixed order."""
        if formula is not None:
            return [Composition(Composition(formula).reduced_formula)]
        from crystalgen.validators import smact_validity

        elements = sorted(s.strip() for s in str(chemsys).split("-") if s.strip())
        out = []
        for counts in itertools.product(range(1, self.max_count + 1), repeat=len(elements)):
            if math.gcd(*counts) != 1 or sum(counts) > self.max_atoms:
                continue
            comp = Composition(dict(zip(elements, counts)))
            if smact_validity(comp):
                out.append(comp)
        if not out:
            raise ValueError(f"no charge-balanced composition in {chemsys} within {self.max_atoms} atoms")
        return out

    def _cells(self, formula: str | None, chemsys: str | None, num_atoms: int | None) -> list[Composition]:
        cells = []
        for comp in self.reduced_compositions(formula, chemsys):
            n = int(comp.num_atoms)
            if num_atoms is not None:
                if num_atoms % n == 0:
                    cells.append(comp * (num_atoms // n))
            else:
                cells.extend(comp * z for z in range(1, self.max_atoms // n + 1))
        if not cells:
            raise ValueError(f"no cell of {formula or chemsys} fits num_atoms={num_atoms} / max_atoms={self.max_atoms}")
        return cells

    name = "pyxtal"
    parallel_safe = True

    def predict_structure(self, composition: Composition | str, n: int = 1,
                          seed: int | None = None) -> list[GenerationResult]:
        return self.baseline.predict_structure(composition, n=n, seed=seed)

    def sample(
        self, n: int = 1, seed: int | None = None, formula: str | None = None, chemsys: str | None = None,
        spacegroup: int | None = None, num_atoms: int | None = None, temperature: float | None = None,
        batch_size: int | None = None, validate: bool | None = None,
    ) -> list[GenerationResult]:
        """``n`` random crystals; a composition pyxtal cannot place is skipped, not retried.
        ``spacegroup`` and the sampling knobs are not used (see the class docstring)."""
        rng = np.random.default_rng(seed)
        cells = self._cells(formula, chemsys, num_atoms)
        out = []
        for _ in range(n):
            cell = cells[int(rng.integers(len(cells)))]
            try:
                out.extend(self.baseline.predict_structure(cell, n=1, seed=int(rng.integers(2**62))))
            except RuntimeError:
                continue
        return out


def _build(spec: str, options: dict[str, Any]) -> Any:
    if spec == "pyxtal":
        return PyXtalTargets(**options)
    if ":" in spec and not spec.startswith(("/", ".")):
        return import_object(spec)(**options)
    from crystalgen.api import CrystalGenerator

    return CrystalGenerator.from_pretrained(path=None if spec == "default" else spec, **{"device": "cpu", **options})


def load_generator(spec: str, options: dict[str, Any] | None = None) -> Generator:
    """The generator named by ``spec`` (built with ``options``), built once per process."""
    options = dict(options or {})
    key = spec + json.dumps(options, sort_keys=True)
    if key not in _CACHE:
        _CACHE[key] = _build(spec, options)
    return _CACHE[key]


def sample_target(
    generator: Generator, target: Target, n: int, seed: int, sampling: SamplingConfig
) -> list[GenerationResult]:
    """``n`` candidates for ``target`` with a fixed seed."""
    return list(generator.sample(
        n=n, seed=seed, formula=target.formula, chemsys=target.chemsys, spacegroup=target.spacegroup,
        num_atoms=target.num_atoms, temperature=sampling.temperature, batch_size=sampling.batch_size,
        validate=False,  # the pipeline validates against the target's intent itself
    ))
