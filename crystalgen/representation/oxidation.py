"""Per-element oxidation states for the plan (pymatgen's most likely guess)."""
from __future__ import annotations

from crystalgen.representation.vocab import OX_MAX, OX_MIN


def guess_oxidation(composition) -> dict[str, int]:
    """Most likely integer oxidation state per element; 0 for all when pymatgen has no guess.

    Mixed valences (e.g. Fe in Fe3O4, guessed 2.67) are rounded; states are clipped to the
    vocabulary's range.
    """
    from pymatgen.core import Composition

    comp = Composition(composition)
    try:
        guesses = comp.oxi_state_guesses(max_sites=-50)
    except Exception:  # pymatgen raises on unusual species
        guesses = ()
    if not guesses:
        return {el.symbol: 0 for el in comp.elements}
    return {str(el): max(OX_MIN, min(OX_MAX, int(round(q)))) for el, q in guesses[0].items()}
