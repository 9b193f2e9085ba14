"""Which element of an analogue becomes which element of the target, and how likely that is.

Elements are paired only within groups of equal reduced count (an ABX3 analogue maps its
single-count elements onto the target's single-count elements). Within a group the best
pairing maximises the summed log conditional substitution probability of pymatgen's
data-mined table (Hautier et al. 2011, `SubstitutionProbability.cond_prob(target species,
analogue species)`) between oxidation-state-decorated species; the states are pymatgen's
best guess for each formula (`validators.charge.guess_oxidation_states`). When either
formula has no guess (intermetallics, bounded search exceeded) the pairing minimises the
Mendeleev-number difference instead, scored as -|ΔM| / MENDELEEV_SCALE per element, minus
FALLBACK_PENALTY per element when the target itself had states (an analogue that pymatgen
cannot assign charges to is a weaker match for a compound that it can).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from pymatgen.core import Element, Species
from scipy.optimize import linear_sum_assignment

from crystalgen.validators.charge import guess_oxidation_states

MENDELEEV_SCALE = 5.0
FALLBACK_PENALTY = 2.0


@dataclass(frozen=True)
class Mapping:
    """pairs: (analogue element, target element) for every element; log_prob: the ranking score
    (nats); method: "pymatgen" (substitution probabilities) or "mendeleev" (the fallback)."""

    pairs: tuple[tuple[str, str], ...]
    log_prob: float
    method: str

    @property
    def substitutions(self) -> tuple[tuple[str, str], ...]:
        """The pairs that change the element."""
        return tuple((a, b) for a, b in self.pairs if a != b)

    def describe(self) -> str:
        subs = ", ".join(f"{a}->{b}" for a, b in self.substitutions)
        return subs or "none"


@lru_cache(maxsize=1)
def substitution_table():
    """pymatgen's substitution-probability model (~2 s to load, so loaded once)."""
    from pymatgen.analysis.structure_prediction.substitution_probability import SubstitutionProbability

    return SubstitutionProbability()


@lru_cache(maxsize=65536)
def oxidation_species(reduced_formula: str) -> dict[str, Species] | None:
    """Element -> decorated species from pymatgen's best oxidation-state guess; None if none
    (or a mixed valence, which the substitution table has no entry for)."""
    guess = guess_oxidation_states(reduced_formula)
    if not guess:
        return None
    if any(abs(q - round(q)) > 1e-6 for q in guess.values()):
        return None
    return {el: Species(el, int(round(q))) for el, q in guess.items()}


@lru_cache(maxsize=1 << 18)
def _log_cond_prob(target: Species, analogue: Species) -> float:
    """NaN for a species the table has never seen (pymatgen divides by its zero frequency)."""
    try:
        return math.log(max(substitution_table().cond_prob(target, analogue), 1e-12))
    except ZeroDivisionError:
        return math.nan


def _table_scores(a_els, t_els, a_species, t_species) -> np.ndarray | None:
    score = np.array([[_log_cond_prob(t_species[t], a_species[a]) for t in t_els] for a in a_els])
    return None if np.isnan(score).any() else score


def _mendeleev(symbol: str) -> int:
    return int(Element(symbol).mendeleev_no)


def _formula(counts: tuple[tuple[str, int], ...]) -> str:
    """A formula string of reduced counts (cheaper than pymatgen's reduced_formula; same cache key)."""
    return "".join(f"{el}{n}" for el, n in counts)


@lru_cache(maxsize=1 << 18)
def best_mapping(
    analogue: tuple[tuple[str, int], ...], target: tuple[tuple[str, int], ...]
) -> Mapping | None:
    """The best element pairing of two reduced formulas given as ((element, count), ...);
    None when their anonymous formulas differ."""
    if sorted(c for _, c in analogue) != sorted(c for _, c in target):
        return None
    a_species = oxidation_species(_formula(analogue))
    t_species = oxidation_species(_formula(target))
    use_table = a_species is not None and t_species is not None
    groups = [([e for e, c in analogue if c == count], [e for e, c in target if c == count])
              for count in sorted({c for _, c in target})]
    tables = [_table_scores(a, t, a_species, t_species) for a, t in groups] if use_table else []
    use_table = use_table and all(s is not None for s in tables)  # a species outside the table: fallback
    pairs: list[tuple[str, str]] = []
    total = 0.0
    for k, (a_els, t_els) in enumerate(groups):
        if use_table:
            score = tables[k]
        else:
            score = np.array([[-abs(_mendeleev(a) - _mendeleev(t)) / MENDELEEV_SCALE for t in t_els] for a in a_els])
        rows, cols = linear_sum_assignment(score, maximize=True)
        total += float(score[rows, cols].sum())
        pairs += [(a_els[r], t_els[c]) for r, c in zip(rows, cols)]
    if not use_table and t_species is not None:
        total -= FALLBACK_PENALTY * len(pairs)
    return Mapping(tuple(sorted(pairs)), total, "pymatgen" if use_table else "mendeleev")
