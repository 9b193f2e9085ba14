"""The distance guard measures what the validators measure: the shortest distance from a
new Wyckoff orbit to the atoms already placed (and within the orbit), on real crystals."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from ase.data import covalent_radii
from pymatgen.core import Lattice, Structure

from crystalgen.generation.decoder import Batch, Row, _draw_clear_coordinates, _draw_lengths
from crystalgen.generation.guard import Clearance, lattice_room
from crystalgen.generation.rng import streams_at
from crystalgen.generation.volume import lattice_params
from crystalgen.heads.gaussian_mixture import GaussianMixture
from crystalgen.heads.von_mises import VonMisesMixture
from crystalgen.representation.grammar import Grammar, PartialCrystal, ValueSlot
from crystalgen.representation.sequence import VK_COORD, VK_LENGTH, encode, length_from_value
from crystalgen.representation.tables import SPACE_GROUPS
from crystalgen.representation.vocab import PLAN
from crystalgen.representation.wyckoff import WyckoffCrystal
from crystalgen.validators.distance import MIN_DISTANCE_A, pair_limits

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


def _state_at(structure: Structure, stop) -> Grammar:
    """The grammar state of a real crystal's sequence at its first value position where
    ``stop(state)`` holds."""
    enc = encode(WyckoffCrystal.from_structure(structure))
    k = int(np.flatnonzero(enc.tokens == PLAN)[0]) + 1
    state = Grammar.start(enc.tokens[:k], max_atoms=200)
    for tok, val in zip(enc.tokens[k:], enc.values[k:]):
        if isinstance(state.next_allowed(), ValueSlot) and stop(state):
            break
        state.advance(int(tok), float(val))
    return state


def _rutile_at_guarded_coordinate() -> Grammar:
    """Rutile's sequence up to O's x on 4f (x, x, 0), its last free coordinate."""
    return _state_at(CRYSTALS["rutile"], Grammar.last_free_coordinate_next)


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


# ---- the sampler's guarded draws, with a stand-in model whose heads put their weight where we say


class _Heads:
    """A stand-in for the model's value heads: one fixed mixture per value kind."""

    def __init__(self, coord=None, length=None) -> None:
        self.heads = {VK_COORD: coord, VK_LENGTH: length}

    def value_distribution(self, hidden, kind):
        return self.heads[kind]


def _batch(state: Grammar, key: int, limits) -> Batch:
    batch = Batch([np.zeros(1, np.int64)], [None], np.array([key], np.uint64), 1, 1.0, limits, 200, 512)
    row = Row(state, 0, 1, key, guard=True)
    allowed = state.next_allowed()
    row.pending = (allowed.token, 0.0, allowed.kind)
    batch.slots, batch.hidden = [row], torch.zeros(1, 4)
    return batch


def _von_mises(weights, centres, kappa=2000.0) -> VonMisesMixture:
    return VonMisesMixture(torch.log(torch.tensor([weights])), torch.tensor([centres]), torch.full((1, len(centres)), kappa))


def test_blocked_coordinate_is_drawn_from_the_model_restricted_to_the_clear_region():
    """Rutile's O x: the model puts 99.9% of its weight on x = 0 (on top of Ti) and 0.1% on
    x = 0.3. Every one of the guard's candidates is blocked, so the value comes from the
    scan: the clear region where the model has weight, x near 0.3, the same for the same key."""
    limits = pair_limits()
    state = _rutile_at_guarded_coordinate()
    heads = _Heads(coord=_von_mises([0.999, 0.001], [0.0, 0.3]))
    picked = []
    for key in (1, 2, 1):
        batch = _batch(state, key, limits)
        _draw_clear_coordinates(heads, batch, [0])
        picked.append(batch.slots[0].pending[1])
    assert picked[0] == picked[2]  # one random stream per sequence: same key, same value
    for x in picked:
        assert abs(x - 0.3) < 0.03, picked
        assert Clearance().margin(state.partial_crystal(), x, limits) >= 1.0


def test_with_no_value_clear_of_the_pair_rule_the_flat_floor_still_holds():
    """A per-pair rule no value can meet (Ti-O at least 10 Å): the kept value is still
    blocked under it, but keeps every pair the rule's floor (0.5 Å, the CDVAE rule) apart,
    though the model puts 99.9% of its weight on x = 0, on top of Ti."""
    limits = np.full((100, 100), MIN_DISTANCE_A)
    limits[22, 8] = limits[8, 22] = 10.0  # Ti-O
    state = _rutile_at_guarded_coordinate()
    heads = _Heads(coord=_von_mises([0.999, 0.001], [0.0, 0.3]))
    for key in (1, 2, 5):
        batch = _batch(state, key, limits)
        _draw_clear_coordinates(heads, batch, [0])
        x = batch.slots[0].pending[1]
        assert Clearance().margin(state.partial_crystal(), x, limits) < 1.0
        assert Clearance().nearest(state.partial_crystal(), x) >= MIN_DISTANCE_A


def test_a_clear_candidate_is_kept_as_drawn():
    """When the model's own draw is clear the guard changes nothing (first candidate kept)."""
    state = _rutile_at_guarded_coordinate()
    heads = _Heads(coord=_von_mises([1.0], [0.305]))
    batch = _batch(state, 3, pair_limits())
    _draw_clear_coordinates(heads, batch, [0])
    expected = heads.value_distribution(None, VK_COORD).sample(1.0, streams_at(np.array([3], np.uint64),
                                                                                np.array([0], np.uint64), "cpu"))
    assert batch.slots[0].pending[1] == pytest.approx(float(expected[0]), abs=1e-6)


def test_earlier_free_coordinate_needs_room_for_the_rest_of_its_site():
    """Triclinic SiO2-like cell: a general position's x is clear when some (y, z) completes
    it clear of the placed atoms; with the site's only room taken the probes find none."""
    crystal = WyckoffCrystal.from_structure(CRYSTALS["triclinic"])
    enc = encode(crystal)
    k = int(np.flatnonzero(enc.tokens == PLAN)[0]) + 1
    state = Grammar.start(enc.tokens[:k], max_atoms=200)
    seen = 0
    for tok, val in zip(enc.tokens[k:], enc.values[k:]):
        allowed = state.next_allowed()
        if isinstance(allowed, ValueSlot) and allowed.free and allowed.kind == VK_COORD \
                and not state.last_free_coordinate_next() and state.partial_crystal().site_index > 0:
            # the real crystal's own value leaves room: some completion is clear
            assert Clearance().margin(state.partial_crystal(), float(val), pair_limits()) >= 1.0
            # a minimum distance longer than the cell leaves no completion clear
            assert Clearance().margin(state.partial_crystal(), float(val), 20.0) < 1.0
            seen += 1
        state.advance(int(tok), float(val))
    assert seen >= 1


def test_fixed_orbits_planned_later_are_kept_clear_of():
    """The orbits on fixed Wyckoff positions are known once the lattice is: a free site
    written before them already keeps clear of them."""
    # rutile with its sites reversed in a made-up plan: O (free) first, Ti (fixed) later
    state = _rutile_at_guarded_coordinate()
    crystal = state.partial_crystal()
    clearance = Clearance()
    frac, numbers = clearance.others(crystal) if clearance._catch_up(crystal) else (None, None)
    assert frac is not None and len(frac) == 2 and set(numbers.tolist()) == {22}  # Ti's 2a orbit
    flipped = PartialCrystal(crystal.spacegroup, crystal.lattice, crystal.sites[::-1], [], [])
    fresh = Clearance()
    assert fresh._catch_up(flipped)
    frac, numbers = fresh.others(flipped)
    assert len(frac) == 2 and set(numbers.tolist()) == {22}  # Ti, not yet written, is already there
    assert fresh.margin(flipped, 0.0, MIN_DISTANCE_A) < 1.0  # O at x = 0 would sit on it


def test_lattice_room_and_the_length_scan():
    """Na on 1a (0, 0, 0) and Cl on 1b (0, 0, 1/2) of P4/mmm: c/2 apart whatever else, so a
    cell with c = 2.6 Å has no room for them (0.65 of the covalent radii sum is 1.74 Å).
    The length head puts all its weight there; the sampler scans longer c for a cell
    that has room."""
    nacl = SP(123, Lattice.tetragonal(3.5, 4.0), ["Na", "Cl"], [[0, 0, 0], [0, 0, 0.5]])
    state = _state_at(nacl, Grammar.last_free_length_next)
    limits = pair_limits()
    n = state.atoms_done
    system = SPACE_GROUPS[state.sg].system
    short, real = math.log(2.6 / n ** (1 / 3)), math.log(4.0 / n ** (1 / 3))
    assert not lattice_room(state.sg, state.sites, lattice_params(system, state.values + [short], n), limits)
    assert lattice_room(state.sg, state.sites, lattice_params(system, state.values + [real], n), limits)
    heads = _Heads(length=GaussianMixture(torch.zeros(1, 1), torch.tensor([[short]]), torch.tensor([[0.01]])))
    batch = _batch(state, 4, limits)
    _draw_lengths(heads, batch, [0])
    c = batch.slots[0].pending[1]
    assert lattice_room(state.sg, state.sites, lattice_params(system, state.values + [c], n), limits)
    assert length_from_value(c, n) / 2 >= 0.65 * (covalent_radii[11] + covalent_radii[17])


def test_guarded_de_novo_crystals_keep_the_physical_rule():
    """The shipped model de novo with the guard at its defaults: measured 89.3% of crystals
    keep every pair apart by the physical rule (300 crystals, seed 0;
    docs/results/dng_distance_failures_after.json), 63.3% with the guard on the last
    coordinate only; the bound leaves room for another machine's rounding and seed."""
    from crystalgen.api import CrystalGenerator

    torch.set_num_threads(1)
    results = CrystalGenerator.from_pretrained(workers=0).sample(n=48, seed=11)
    physical = np.mean([r.report["checks"]["distance"]["pass"] for r in results])
    assert physical >= 0.75, physical
