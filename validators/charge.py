"""Charge-neutrality check: the CDVAE `smact_validity` rule, plus pymatgen's guess as a second opinion.

`smact_validity` reproduces CDVAE's `scripts/eval_utils.py` (Xie et al. 2022),
which DiffCSP and later CSP papers reuse, so that our compositional-validity
figures compare with theirs. Two adaptations to the installed SMACT (4.x) keep
the old behaviour:
- oxidation states come from `Element.oxidation_states_smact14` (the list that
  `Element.oxidation_states` returned in the SMACT 2.x CDVAE used; 4.x switched
  that attribute to the ICSD-24 list);
- the Pauling test is applied pair by pair as old SMACT did: where an element has
  no electronegativity, old SMACT raised TypeError at that comparison and CDVAE
  then counted the combination as passing; SMACT 4.x returns False instead.
`neutral_ratios` now returns the list of ratios instead of (exists, ratios).
"""

from __future__ import annotations

import itertools
import math
from functools import lru_cache
from math import gcd

import smact
from pymatgen.core import Composition, Element, Structure

from crystalgen.representation.charge import metals, pauling, smact_states
from crystalgen.validators.cell import Cell, as_cell
from crystalgen.validators.result import CheckResult


def _smact_element(symbol: str) -> tuple[tuple[int, ...], float | None]:
    """(oxidation states as in SMACT 1.4 / CDVAE, Pauling electronegativity): the same
    lists the sampler's charge-aware plans draw from (``crystalgen.representation.charge``)."""
    return smact_states(symbol), pauling(symbol)


def _pauling_ok(ox_states: tuple[int, ...], enegs: tuple[float | None, ...]) -> bool:
    """Old SMACT `eneg_states_test`, with CDVAE's 'missing electronegativity passes' fallback."""
    for (ox1, en1), (ox2, en2) in itertools.combinations(zip(ox_states, enegs), 2):
        opposite = (ox1 > 0 and ox2 < 0) or (ox1 < 0 and ox2 > 0)
        if opposite and (en1 is None or en2 is None):
            return True  # old SMACT raised TypeError here; CDVAE caught it as "electronegativity OK"
        if ox1 > 0 and ox2 < 0 and en1 >= en2:
            return False
        if ox1 < 0 and ox2 > 0 and en1 <= en2:
            return False
    return True


@lru_cache(maxsize=65536)
def _smact_valid_reduced(symbols: tuple[str, ...], counts: tuple[int, ...]) -> bool:
    """The CDVAE rule on a gcd-reduced composition (cached: compositions repeat a lot)."""
    if len(set(symbols)) == 1:
        return True
    if all(s in metals() for s in symbols):  # alloys count as valid (include_alloys=True)
        return True
    data = [_smact_element(s) for s in symbols]
    enegs = tuple(d[1] for d in data)
    threshold = max(counts)
    stoichs = [(c,) for c in counts]
    for ox_states in itertools.product(*(d[0] for d in data)):
        if smact.neutral_ratios(ox_states, stoichs=stoichs, threshold=threshold) and _pauling_ok(ox_states, enegs):
            return True
    return False


def reduced_counts(composition: Composition) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """Element symbols sorted by atomic number and integer counts divided by their gcd."""
    items = sorted(composition.element_composition.items(), key=lambda kv: kv[0].Z)
    symbols = tuple(el.symbol for el, _ in items)
    counts = [int(round(n)) for _, n in items]
    g = 0
    for c in counts:
        g = gcd(g, c)
    return symbols, tuple(c // max(g, 1) for c in counts)


def smact_validity(composition: Composition | str) -> bool:
    """CDVAE compositional validity: some SMACT charge-neutral oxidation-state assignment passes Pauling."""
    symbols, counts = reduced_counts(Composition(composition))
    return _smact_valid_reduced(symbols, counts)


# pymatgen's guess enumerates oxidation-state combinations per element and then the
# product of their sums; a few formulas (e.g. CsK5Zn4Sn5S17) take seconds. Above this
# estimated search size the guess is skipped and reported as such (keeps the full
# validator set at >= 500 structures/s on 2 cores; see docs/foundation.md for the share of
# MPTS-52 formulas that get a guess).
PYMATGEN_MAX_SEARCH = 300


@lru_cache(maxsize=None)
def _pymatgen_states(symbol: str) -> tuple[int, ...]:
    el = Element(symbol)
    return tuple(el.icsd_oxidation_states or el.common_oxidation_states)


def pymatgen_search_size(composition: Composition) -> float:
    """Estimated work of `Composition.oxi_state_guesses` (oxidation-state combinations it scores)."""
    combos, sums = 0.0, 1.0
    for symbol, amount in composition.get_el_amt_dict().items():
        states, n = _pymatgen_states(symbol), int(round(amount))
        if not states:
            continue
        combos += math.comb(n + len(states) - 1, n) * n
        sums *= n * (max(states) - min(states)) + 1  # upper bound on distinct sums
        if combos + sums > 10 * PYMATGEN_MAX_SEARCH:
            break
    return combos + sums


@lru_cache(maxsize=65536)
def guess_oxidation_states(reduced_formula: str, max_search: float = PYMATGEN_MAX_SEARCH) -> dict[str, float] | None:
    """pymatgen's most likely oxidation state per element; None if it finds none or the search exceeds `max_search`.

    Cached per reduced formula; `max_sites=-1` makes pymatgen work on the reduced formula.
    """
    try:
        comp = Composition(reduced_formula)
        if pymatgen_search_size(comp) > max_search:
            return None
        guesses = comp.oxi_state_guesses(max_sites=-1)
    except Exception:
        return None
    return dict(guesses[0]) if guesses else None


def check_charge(structure: Structure | Cell) -> CheckResult:
    """Pass by the SMACT rule; pymatgen's oxidation-state guess is reported alongside."""
    try:
        comp = as_cell(structure).composition
        valid = smact_validity(comp)
        formula = comp.reduced_formula
        skipped = pymatgen_search_size(Composition(formula)) > PYMATGEN_MAX_SEARCH
        guess = None if skipped else guess_oxidation_states(formula)
    except Exception as exc:
        return CheckResult(False, None, {"error": f"{type(exc).__name__}: {exc}"})
    opinion = "skipped (search too large)" if skipped else guess is not None
    return CheckResult(valid, valid, {"pymatgen_neutral": opinion, "pymatgen_oxidation_states": guess})

