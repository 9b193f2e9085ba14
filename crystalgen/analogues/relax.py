"""Relax the top candidates with an ASE calculator and re-rank them by energy per atom.

A candidate built from an analogue (or sampled by the model) sits near, not at, a local
minimum; a short relax (FIRE on positions and cell, `FrechetCellFilter`, symmetry kept by
`FixSymmetry`) moves it there and gives an energy that compares candidates fairly. The
calculator is CHGNet's (weights ship in its wheel, offline) unless another ASE calculator
is given. A relax that diverges (non-finite energy or forces, exploding forces, volume
change beyond a bound, atoms moved further than a bound or closer than a floor, energy
rising) is abandoned: the unrelaxed candidate is kept and the trace says why.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from ase.constraints import FixSymmetry
from ase.filters import FrechetCellFilter
from ase.optimize import FIRE
from pymatgen.core import Structure
from pymatgen.io.ase import AseAtomsAdaptor

from crystalgen.analogues.energy import chgnet_model
from crystalgen.results import GenerationResult
from crystalgen.validators.pipeline import validate
from crystalgen.validators.result import Intent


@dataclass(frozen=True)
class RelaxConfig:
    """top: candidates relaxed (then ordered by final energy per atom); steps: FIRE step limit;
    fmax: force convergence (eV/Å); max_volume_change: |V/V0 - 1| bound; max_displacement:
    largest move of one atom relative to the strained cell (Å); min_distance: closest allowed pair (Å); max_force: forces
    beyond this (eV/Å) count as exploding; energy_rise: tolerated rise of the energy per atom
    (eV/atom) from start to end; fix_symmetry: keep the candidate's space group (spglib,
    symprec)."""

    top: int = 3
    steps: int = 100
    fmax: float = 0.1
    max_volume_change: float = 0.5
    max_displacement: float = 3.0
    min_distance: float = 0.5
    max_force: float = 1e3
    energy_rise: float = 1e-3
    fix_symmetry: bool = True
    symprec: float = 0.01


@dataclass
class RelaxOutcome:
    """structure: the relaxed crystal, or the input one when the relax was abandoned;
    energies per atom (eV/atom) before and after (after = before when abandoned or NaN)."""

    structure: Structure
    energy_before: float
    energy_after: float
    steps: int
    relaxed: bool
    reason: str | None = None

    def describe(self) -> str:
        if self.relaxed:
            return (f"relaxed: ΔE {self.energy_after - self.energy_before:+.3f} eV/atom, {self.steps} steps, "
                    f"E {self.energy_after:.3f} eV/atom")
        return f"relax abandoned: {self.reason}"

    def as_dict(self) -> dict[str, Any]:
        def num(x: float) -> float | None:
            return round(x, 5) if math.isfinite(x) else None

        return {"relaxed": self.relaxed, "energy_before": num(self.energy_before),
                "energy_after": num(self.energy_after), "steps": self.steps, "reason": self.reason}


class RelaxDiverged(RuntimeError):
    """The relax left the bounds of RelaxConfig; the message says which."""


def default_calculator():
    """CHGNet's ASE calculator on the CPU (the model loaded once per process)."""
    model = chgnet_model()  # ImportError with the install hint when CHGNet is missing
    from chgnet.model.dynamics import CHGNetCalculator  # optional dependency, imported only when used

    return CHGNetCalculator(model=model, use_device="cpu", on_isolated_atoms="ignore")


class Relaxer:
    """Relaxes structures with `calculator` (any ASE calculator; default: CHGNet's)."""

    def __init__(self, calculator=None, config: RelaxConfig | None = None):
        self.calculator = calculator if calculator is not None else default_calculator()
        self.config = config or RelaxConfig()

    def relax(self, structure: Structure) -> RelaxOutcome:
        """Relax one structure; never raises for a diverging relax (see RelaxOutcome)."""
        with warnings.catch_warnings():  # CHGNet warns on every step about constraints pymatgen cannot hold
            warnings.simplefilter("ignore")
            return self._relax(structure)

    def _relax(self, structure: Structure) -> RelaxOutcome:
        cfg = self.config
        atoms = AseAtomsAdaptor.get_atoms(structure)
        atoms.calc = self.calculator
        n = len(atoms)
        try:
            e0 = float(atoms.get_potential_energy()) / n
            self._check_forces(atoms.get_forces())
        except RelaxDiverged as err:
            return RelaxOutcome(structure, math.nan, math.nan, 0, False, str(err))
        except Exception as err:  # a calculator that cannot evaluate this cell
            return RelaxOutcome(structure, math.nan, math.nan, 0, False, f"calculator failed ({type(err).__name__})")
        if not math.isfinite(e0):
            return RelaxOutcome(structure, e0, e0, 0, False, "energy is not finite")
        start, v0 = atoms.get_scaled_positions(wrap=False).copy(), atoms.get_volume()
        steps = 0
        try:
            if cfg.fix_symmetry:
                try:
                    atoms.set_constraint(FixSymmetry(atoms, symprec=cfg.symprec))
                except Exception:  # spglib finds no symmetry to keep: relax unconstrained
                    atoms.set_constraint()
            optimizer = FIRE(FrechetCellFilter(atoms), logfile=None)
            for steps, _ in enumerate(optimizer.irun(fmax=cfg.fmax, steps=cfg.steps)):
                self._check_step(atoms, start, v0)
            e1 = float(atoms.get_potential_energy()) / n
            if not math.isfinite(e1):
                raise RelaxDiverged("energy is not finite")
            if e1 > e0 + cfg.energy_rise:
                raise RelaxDiverged(f"energy rose by {e1 - e0:.3f} eV/atom")
        except RelaxDiverged as err:
            return RelaxOutcome(structure, e0, e0, steps, False, f"{err} after {steps} steps")
        except Exception as err:
            return RelaxOutcome(structure, e0, e0, steps, False, f"calculator failed ({type(err).__name__})")
        atoms.set_constraint()
        return RelaxOutcome(AseAtomsAdaptor.get_structure(atoms), e0, e1, steps, True)

    def _check_forces(self, forces: np.ndarray) -> None:
        if not np.all(np.isfinite(forces)):
            raise RelaxDiverged("forces are not finite")
        if len(forces) and float(np.abs(forces).max()) > self.config.max_force:
            raise RelaxDiverged(f"forces exploded (max {float(np.abs(forces).max()):.3g} eV/Å)")

    def _check_step(self, atoms, start: np.ndarray, v0: float) -> None:
        cfg = self.config
        e = float(atoms.get_potential_energy())
        if not math.isfinite(e):
            raise RelaxDiverged("energy is not finite")
        self._check_forces(atoms.get_forces())
        change = atoms.get_volume() / v0 - 1.0
        if not math.isfinite(change) or abs(change) > cfg.max_volume_change:
            raise RelaxDiverged(f"volume changed by {change:+.0%}")
        shift = atoms.get_scaled_positions(wrap=False) - start  # in the current cell: the cell's own strain is not a move
        moved = float(np.linalg.norm((shift - np.round(shift)) @ atoms.cell[:], axis=1).max())
        if not math.isfinite(moved) or moved > cfg.max_displacement:
            raise RelaxDiverged(f"atoms flew apart (an atom moved {moved:.1f} Å)")
        if len(atoms) > 1:
            closest = float(atoms.get_all_distances(mic=True)[np.triu_indices(len(atoms), 1)].min())
            if closest < cfg.min_distance:
                raise RelaxDiverged(f"atoms collapsed ({closest:.2f} Å apart)")


def relax_results(results: Sequence[GenerationResult], relaxer: Relaxer, formula: str | None = None,
                  validate_again: bool = True) -> list[GenerationResult]:
    """The first `relaxer.config.top` results relaxed and ordered by energy per atom (lowest
    first; an abandoned relax ranks by its unrelaxed energy), then the rest unchanged.
    Each relaxed result's trace gains the relax line and `relax` record."""
    top = list(results[: relaxer.config.top])
    done = []
    for result in top:
        outcome = relaxer.relax(result.structure)
        done.append((outcome, _with_outcome(result, outcome, formula, validate_again)))
    done.sort(key=lambda item: _energy_key(item[0]))
    return [r for _, r in done] + list(results[relaxer.config.top:])


def _energy_key(outcome: RelaxOutcome) -> float:
    e = outcome.energy_after
    return e if math.isfinite(e) else math.inf


def _with_outcome(result: GenerationResult, outcome: RelaxOutcome, formula: str | None,
                  validate_again: bool) -> GenerationResult:
    trace = dict(result.trace or {})
    text = trace.get("text", "")
    trace["text"] = f"{text}\n{outcome.describe()}" if text else outcome.describe()
    trace["relax"] = outcome.as_dict()
    report = result.report
    if outcome.relaxed and validate_again and report is not None:
        intent = Intent(formula=formula or outcome.structure.composition.formula, exact=True)
        report = validate(outcome.structure, intent).as_dict()
    return replace(result, structure=outcome.structure, trace=trace, report=report,
                   metadata={**result.metadata, "relaxed": outcome.relaxed})


def as_relaxer(relax: "bool | Relaxer | Any", config: RelaxConfig | None = None) -> Relaxer | None:
    """What a `relax=` argument means: False/None: no relax; True: CHGNet; a Relaxer: itself;
    any other object: an ASE calculator to relax with."""
    if relax is None or relax is False:
        return None
    if isinstance(relax, Relaxer):
        return relax
    return Relaxer(None if relax is True else relax, config)
