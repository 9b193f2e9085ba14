"""The distance guard measures what the validators measure: the shortest distance from a
new Wyckoff orbit to the atoms already placed (and within the orbit), on real crystals."""

from __future__ import annotations

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from crystalgen.generation.guard import Clearance
from crystalgen.representation.grammar import Grammar, ValueSlot
from crystalgen.representation.sequence import encode
from crystalgen.representation.tables import SPACE_GROUPS
from crystalgen.representation.vocab import PLAN
from crystalgen.representation.wyckoff import WyckoffCrystal
from crystalgen.validators.distance import MIN_DISTANCE_A

SP = Structure.from_spacegroup
CRYSTALS = {
    "rutile": SP(136, Lattice.tetragonal(4.59, 2.96), ["Ti", "O"], [[0, 0, 0], [0.305, 0.305, 0]]),
    "wurtzite": SP(186, Lattice.hexagonal(3.25, 5.21), ["Zn", "O"], [[1 / 3, 2 / 3, 0], [1 / 3, 2 / 3, 0.382]]),
    "spinel": SP(227, Lattice.cubic(8.08), ["Mg", "Al", "O"], [[0, 0, 0], [0.625] * 3, [0.3874] * 3]),
    "corundum": SP(167, Lattice.hexagonal(4.76, 12.99), ["Al", "O"], [[0, 0, 0.352], [0.306, 0, 0.25]]),
    "monoclinic": SP(12, Lattice.monoclinic(9.1, 4.2, 7.3, 103.0), ["Li", "O"], [[0.11, 0, 0.31], [0.29, 0.21, 0.43]]),
    "triclinic": SP(2, Lattice.from_parameters(5.1, 6.2, 7.3, 82, 86, 97), ["Si", "O", "O"],
                    [[0.1, 0.2, 0.3], [0.3, 0.1, 0.6], [0.7, 0.8, 0.15]]),
}


def _reference_nearest(crystal: WyckoffCrystal, site: int, value: float, state: Grammar) -> float:
    """pymatgen's answer: the placed sites plus the new orbit through ``value``."""
    table = SPACE_GROUPS[crystal.spacegroup]
    matrix = crystal.to_arrays()[0]
    placed = [table.orbit(table.index(s.letter), table.derive_xyz(table.index(s.letter), s.xyz))
              for s in crystal.sites[:site]]
    w = table.index(crystal.sites[site].letter)
    xyz = list(state.partial_crystal().current) + [value]
    xyz += [0.0] * (3 - len(xyz))  # the remaining coordinates are derived by derive_xyz
    new = table.orbit(w, table.derive_xyz(w, xyz))
    frac = np.concatenate(placed + [new])
    dist = Lattice(matrix).get_all_distances(new, frac)
    dist[:, len(frac) - len(new):][np.diag_indices(len(new))] = np.inf  # an atom and itself
    return float(dist.min())


@pytest.mark.parametrize("name", sorted(CRYSTALS))
def test_guard_measures_what_pymatgen_measures(name):
    crystal = WyckoffCrystal.from_structure(CRYSTALS[name])
    enc = encode(crystal)
    k = int(np.flatnonzero(enc.tokens == PLAN)[0]) + 1
    state = Grammar.start(enc.tokens[:k], max_atoms=200)
    clearance, checked = Clearance(), 0
    rng = np.random.default_rng(0)
    for tok, val in zip(enc.tokens[k:], enc.values[k:]):
        allowed = state.next_allowed()
        if isinstance(allowed, ValueSlot) and allowed.free and state.last_free_coordinate_next():
            site = state.partial_crystal().site_index
            # the real crystal's own value keeps its atoms apart
            assert clearance.first_clear(state.partial_crystal(), [float(val)], MIN_DISTANCE_A) == 0
            assert clearance.nearest(state.partial_crystal(), float(val)) > MIN_DISTANCE_A
            for v in [float(val), *rng.random(4)]:
                assert clearance.nearest(state.partial_crystal(), v) == pytest.approx(_reference_nearest(crystal, site, v, state), abs=1e-6)
            checked += 1
        state.advance(int(tok), float(val))
    assert state.done and checked >= 1


def _rutile_at_guarded_coordinate() -> Grammar:
    """Rutile's sequence up to O's x on 4f (x, x, 0), its last free coordinate."""
    crystal = WyckoffCrystal.from_structure(CRYSTALS["rutile"])  # O on 4f (x, x, 0): x is guarded
    enc = encode(crystal)
    k = int(np.flatnonzero(enc.tokens == PLAN)[0]) + 1
    state = Grammar.start(enc.tokens[:k], max_atoms=200)
    for tok, val in zip(enc.tokens[k:], enc.values[k:]):
        if isinstance(state.next_allowed(), ValueSlot) and state.last_free_coordinate_next():
            break
        state.advance(int(tok), float(val))
    return state


def test_first_clear_picks_the_first_clear_candidate_or_the_farthest():
    state = _rutile_at_guarded_coordinate()
    clearance = Clearance()
    # x = 0 puts O on top of Ti at the origin; x = 0.01 still within 0.5 Å; 0.305 is rutile's
    assert clearance.nearest(state.partial_crystal(), 0.0) < 1e-9
    assert clearance.first_clear(state.partial_crystal(), [0.0, 0.01, 0.305, 0.3], MIN_DISTANCE_A) == 2
    assert clearance.first_clear(state.partial_crystal(), [0.0, 0.01, 0.02], MIN_DISTANCE_A) == 2  # none clear: the farthest


def test_per_pair_minimum_distances():
    """A matrix of per-element-pair minimum distances: rutile's O at x = 0.2 sits closer
    than 1.5 Å to Ti: clear under a flat 0.5 Å rule, not under a Ti-O minimum of 1.5 Å."""
    state = _rutile_at_guarded_coordinate()
    crystal_so_far = state.partial_crystal()
    d = Clearance().nearest(crystal_so_far, 0.2)
    assert 0.5 < d < 1.5
    limits = np.full((100, 100), 0.5)
    limits[22, 8] = limits[8, 22] = 1.5  # Ti-O
    assert Clearance().first_clear(crystal_so_far, [0.2, 0.305], MIN_DISTANCE_A) == 0
    assert Clearance().first_clear(crystal_so_far, [0.2, 0.305], limits) == 1
    assert Clearance().margin(crystal_so_far, 0.2, limits) == pytest.approx(d / 1.5, rel=1e-9)
