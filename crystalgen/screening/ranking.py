"""Scoring candidates for ranking; a lower score ranks first.

Two scores:
  log-likelihood  the generator's own ``log_likelihood`` (score = -log-likelihood): free,
                  and what a model-only funnel ranks by.
  energy          energy per atom (eV) from any ASE calculator named "module:factory",
                  e.g. "chgnet.model.dynamics:CHGNetCalculator" (a machine-learned
                  potential, optional extra ``crystalgen[chgnet]``), optionally after a
                  FIRE relaxation of positions and cell (``FrechetCellFilter``).
  formation_energy  the same energy minus the elements' energies (eV/atom), so that
                  candidates of different compositions (a chemical-system target) compare.
                  Elemental references are the lowest-energy elemental structures of the
                  novelty reference corpus, evaluated (static) with the same calculator.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from typing import Any

from pymatgen.core import Composition, Structure
from pymatgen.io.ase import AseAtomsAdaptor

from crystalgen.data.reference_index import ReferenceIndex
from crystalgen.results import GenerationResult
from crystalgen.screening.config import RankConfig
from crystalgen.screening.generators import import_object

_CALCULATORS: dict[str, Any] = {}


@dataclass
class Score:
    """A candidate's score and, for energy ranking, what the calculator found."""

    score: float | None
    energy_per_atom: float | None = None
    formation_energy_per_atom: float | None = None
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


_ELEMENT_ENERGIES: dict[str, dict[str, float]] = {}


def elemental_energies(reference: ReferenceIndex, calculator: Any, key: str) -> dict[str, float]:
    """Lowest energy per atom of each element's structures in ``reference`` (static), cached."""
    if key not in _ELEMENT_ENERGIES:
        best: dict[str, float] = {}
        for formula in sorted(reference):
            comp = Composition(formula)
            if len(comp.elements) != 1:
                continue
            symbol = comp.elements[0].symbol
            for _, cif in reference[formula]:
                atoms = AseAtomsAdaptor.get_atoms(Structure.from_str(cif, fmt="cif"))
                atoms.calc = calculator
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    e = float(atoms.get_potential_energy()) / len(atoms)
                if math.isfinite(e) and e < best.get(symbol, math.inf):
                    best[symbol] = e
        _ELEMENT_ENERGIES[key] = best
    return _ELEMENT_ENERGIES[key]


def formation_energy(structure: Structure, energy_per_atom: float, mu: dict[str, float]) -> float:
    """Energy per atom relative to the elements (``mu``: eV/atom per element)."""
    comp = structure.composition.fractional_composition
    return energy_per_atom - sum(x * mu[el.symbol] for el, x in comp.items())


def score_result(result: GenerationResult, rank: RankConfig, reference: ReferenceIndex | None = None) -> Score:
    """The score ``rank.by`` asks for (``reference`` holds the elements for formation energies)."""
    if rank.by == "log_likelihood":
        return log_likelihood_score(result)
    calculator = load_calculator(str(rank.calculator), rank.calculator_kwargs)
    score = energy_score(result.structure, calculator, rank)
    if rank.by == "energy" or score.energy_per_atom is None:
        return score
    key = f"{rank.calculator}{json.dumps(rank.calculator_kwargs, sort_keys=True)}{sorted(reference or {})}"
    mu = elemental_energies(reference or {}, calculator, key)
    missing = sorted({el.symbol for el in result.structure.composition.elements} - set(mu))
    if missing:
        return Score(None, score.energy_per_atom, relaxed=score.relaxed, relax_steps=score.relax_steps,
                     error=f"no elemental reference structure for {', '.join(missing)}")
    ef = formation_energy(score.relaxed or result.structure, score.energy_per_atom, mu)
    return Score(ef, score.energy_per_atom, ef, score.relaxed, score.relax_steps)
