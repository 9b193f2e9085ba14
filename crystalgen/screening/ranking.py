"""Scoring candidates for ranking; a lower score ranks first.

Two scores:
  log-likelihood  the generator's own ``log_likelihood`` (score = -log-likelihood): free,
                  and what a model-only funnel ranks by.
  energy          energy per atom (eV) from any ASE calculator named "module:factory",
                  e.g. "chgnet.model.dynamics:CHGNetCalculator" (a machine-learned
                  potential, optional extra ``crystalgen[chgnet]``), optionally after a
                  FIRE relaxation of positions and cell (``FrechetCellFilter``).
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from typing import Any

from pymatgen.core import Structure
from pymatgen.io.ase import AseAtomsAdaptor

from crystalgen.results import GenerationResult
from crystalgen.screening.config import RankConfig
from crystalgen.screening.generators import import_object

_CALCULATORS: dict[str, Any] = {}


@dataclass
class Score:
    """A candidate's score and, for energy ranking, what the calculator found."""

    score: float | None
    energy_per_atom: float | None = None
    relaxed: Structure | None = None
    relax_steps: int | None = None
    error: str | None = None


def load_calculator(spec: str, kwargs: dict[str, Any]) -> Any:
    """The ASE calculator from ``spec`` ("module:factory"), built once per process."""
    key = spec + json.dumps(kwargs, sort_keys=True)
    if key not in _CALCULATORS:
        _CALCULATORS[key] = import_object(spec)(**kwargs)
    return _CALCULATORS[key]


def log_likelihood_score(result: GenerationResult) -> Score:
    ll = result.log_likelihood
    if ll is None or not math.isfinite(ll):
        return Score(None, error="generator gave no log-likelihood")
    return Score(-float(ll))


def energy_score(structure: Structure, calculator: Any, rank: RankConfig) -> Score:
    """Energy per atom, after relaxation when ``rank.relax``; failures give score None."""
    from ase.filters import FrechetCellFilter
    from ase.optimize import FIRE

    atoms = AseAtomsAdaptor.get_atoms(structure)
    atoms.calc = calculator
    steps = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if rank.relax:
                opt = FIRE(FrechetCellFilter(atoms), logfile=None)
                opt.run(fmax=rank.fmax, steps=rank.steps)
                steps = int(opt.nsteps)
            energy = float(atoms.get_potential_energy()) / len(atoms)
    except Exception as exc:  # a calculator blowing up on one candidate must not stop the run
        return Score(None, error=f"{type(exc).__name__}: {exc}")
    if not math.isfinite(energy):
        return Score(None, error="non-finite energy")
    relaxed = None
    if rank.relax:  # positions and cell only: calculator results (float32 magmoms, ...) stay behind
        relaxed = Structure(atoms.cell[:], atoms.get_chemical_symbols(), atoms.get_scaled_positions(wrap=True),
                            coords_are_cartesian=False)
    return Score(energy, energy_per_atom=energy, relaxed=relaxed, relax_steps=steps)


def score_result(result: GenerationResult, rank: RankConfig) -> Score:
    """The score ``rank.by`` asks for."""
    if rank.by == "log_likelihood":
        return log_likelihood_score(result)
    calculator = load_calculator(str(rank.calculator), rank.calculator_kwargs)
    return energy_score(result.structure, calculator, rank)
