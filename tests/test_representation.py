"""Crystal <-> sequence representation on real structures: round trip, grammar, masks."""
from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Lattice, Structure

from crystalgen.representation.grammar import Grammar, NoLegalCompletion, ValueSlot
from crystalgen.representation.random_walk import random_completion
from crystalgen.representation.sequence import (
    Conditioning,
    DecodeError,
    decode,
    decode_plan,
    encode,
    encode_from_arrays,
    encode_prefix,
)
from crystalgen.representation.tables import SPACE_GROUPS
from crystalgen.representation.vocab import LAT, PLAN, TOKENS, VOCAB, VOCAB_SIZE
from crystalgen.representation.wyckoff import WyckoffCrystal

FIXTURE = Path(__file__).parent / "fixtures" / "pool_sample.csv.gz"
MATCHER = StructureMatcher(stol=0.5, angle_tol=10, ltol=0.3)


def _built() -> dict[str, Structure]:
    """Textbook structures covering cubic, tetragonal, hexagonal, trigonal (R), monoclinic, triclinic."""
    sp = Structure.from_spacegroup
    return {
        "NaCl": sp(225, Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]),
        "rutile": sp(136, Lattice.tetragonal(4.59, 2.96), ["Ti", "O"], [[0, 0, 0], [0.305, 0.305, 0]]),
        "wurtzite": sp(186, Lattice.hexagonal(3.25, 5.21), ["Zn", "O"], [[1 / 3, 2 / 3, 0], [1 / 3, 2 / 3, 0.382]]),
        "spinel": sp(227, Lattice.cubic(8.08), ["Mg", "Al", "O"], [[0, 0, 0], [0.625] * 3, [0.3874] * 3]),
        "perovskite": sp(221, Lattice.cubic(4.0), ["Ba", "Ti", "O"], [[0, 0, 0], [0.5] * 3, [0.5, 0.5, 0]]),
        "corundum": sp(167, Lattice.hexagonal(4.76, 12.99), ["Al", "O"], [[0, 0, 0.352], [0.306, 0, 0.25]]),
        "monoclinic": sp(12, Lattice.monoclinic(9.1, 4.2, 7.3, 103.0), ["Li", "O"], [[0.11, 0, 0.31], [0.29, 0.21, 0.43]]),
        "triclinic": sp(
            2, Lattice.from_parameters(5.1, 6.2, 7.3, 82, 86, 97), ["Si", "O", "O"],
            [[0.1, 0.2, 0.3], [0.3, 0.1, 0.6], [0.7, 0.8, 0.15]],
        ),
    }


def _structures() -> list[Structure]:
    out = list(_built().values())
    if FIXTURE.exists():  # real pool rows shipped by the project
        import pandas as pd

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out += [Structure.from_str(c, fmt="cif") for c in pd.read_csv(FIXTURE).cif]
    return out


@pytest.fixture(scope="module")
def crystals() -> list[tuple[Structure, WyckoffCrystal]]:
    return [(s, WyckoffCrystal.from_structure(s)) for s in _structures()]


def _replay(encoded, max_atoms: int = 100_000) -> Grammar:
    k = int(np.flatnonzero(encoded.tokens == PLAN)[0]) + 1
    state = Grammar.start(encoded.tokens[:k], max_atoms=max_atoms)
    for tok, val, free in zip(encoded.tokens[k:], encoded.values[k:], encoded.free[k:]):
        allowed = state.next_allowed()
        if isinstance(allowed, ValueSlot):
            assert allowed.token == tok and allowed.free == free
            if not free:
                assert allowed.derived_value == pytest.approx(float(val), abs=1e-6)
        else:
            assert allowed[tok], f"{TOKENS[tok]} rejected; allowed {[TOKENS[i] for i in np.flatnonzero(allowed)]}"
        state.advance(int(tok), float(val))
    assert state.done
    return state


def test_table_is_consistent_with_symmetry():
    for sg, t in SPACE_GROUPS.items():
        assert t.letters[0] == "a" and len(t.general_ops) == t.multiplicity[-1] == t.multiplicity.max()
        assert t.multiplicity[-1] % t.centring == 0
        for w, ops in enumerate(t.orbit_ops):
            assert len(ops) == t.multiplicity[w]
            # a generic representative point has `multiplicity` distinct images
            pt = t.derive_xyz(w, [0.1234, 0.2345, 0.3456])
            orbit = t.orbit(w, pt)
            d = orbit[:, None] - orbit[None]
            d -= np.round(d)
            assert (np.abs(d).max(-1) + np.eye(len(orbit)) > 1e-6).all(), (sg, t.letters[w])


def test_wyckoff_form_of_known_structures(crystals):
    nacl, spinel = crystals[0][1], crystals[3][1]
    assert nacl.spacegroup == 225 and [(s.element, s.letter) for s in nacl.sites] == [("Na", "a"), ("Cl", "b")]
    assert spinel.spacegroup == 227 and spinel.counts() == {"Mg": 8, "Al": 16, "O": 32}
    assert [s.element for s in spinel.sites] == ["Mg", "Al", "O"]  # electronegativity order


def test_round_trip_matches(crystals):
    for structure, crystal in crystals:
        encoded = encode(crystal, None)
        rebuilt = decode(encoded.tokens, encoded.values).to_structure()
        assert MATCHER.fit(structure, rebuilt), structure.composition.reduced_formula
        assert rebuilt.composition.reduced_composition == structure.composition.reduced_composition


def test_encoded_arrays_follow_the_format(crystals):
    rutile = crystals[1][1]
    enc = encode(rutile, {"Ti": 4, "O": -2})
    words = [TOKENS[t] for t in enc.tokens]
    assert words[:8] == ["<bos>", "<task:csp>", "<el:Ti>", "<cnt:1>", "<el:O>", "<cnt:2>", "<fu:2>", "<plan>"]
    assert words[8:19] == ["<cs:tetragonal>", "<sg:136>", "<Z:2>", "<el:Ti>", "<ox:+4>", "<wy:a>",
                           "<el:O>", "<ox:-2>", "<wy:f>", words[17], "</plan>"]
    assert not enc.loss_mask[:8].any()  # never the prefix
    values = enc.value_kind > 0
    assert values.sum() == 6 + 3 * 2 and (enc.loss_mask[values] == enc.free[values]).all()
    assert enc.free[values].sum() == 2 + 1  # a, c; O's x (y = x, z = 0)
    plan = decode_plan(enc.tokens)
    assert (plan.spacegroup, plan.Z, plan.crystal_system) == (136, 2, "tetragonal")
    assert [(e.element, e.oxidation, e.letters, e.multiplicities) for e in plan.elements] == [
        ("Ti", 4, ["a"], [2]), ("O", -2, ["f"], [4])]
    assert plan.vpa_range[0] <= rutile.to_structure().volume / 6 < plan.vpa_range[1]


def test_encode_from_arrays_equals_encode(crystals):
    for _, c in crystals:
        z_numbers = [VOCAB[f"<el:{s.element}>"] - VOCAB["<el:H>"] + 1 for s in c.sites]
        a = encode_from_arrays(c.spacegroup, c.lattice, z_numbers, [s.letter.encode() for s in c.sites],
                               [s.xyz for s in c.sites], [1] * len(c.sites))
        b = encode(c, {s.element: 1 for s in c.sites})
        assert (a.tokens == b.tokens).all() and np.allclose(a.values, b.values)


@pytest.mark.parametrize("task", ["csp", "gen"])
def test_grammar_accepts_every_encoded_sequence(crystals, task):
    for _, crystal in crystals:
        _replay(encode(crystal, None, task=task))
    _, corundum = crystals[5]
    cond = Conditioning.for_task(corundum, "csp")
    cond.spacegroup = corundum.spacegroup
    _replay(encode(corundum, None, condition=cond))


@pytest.mark.parametrize(
    "composition, fu, sg",
    [({"Na": 1, "Cl": 1}, None, None), ({"Ba": 1, "Ti": 1, "O": 3}, 1, None),
     ({"Mg": 1, "Al": 2, "O": 4}, None, 227), ({"Li": 3, "P": 1, "O": 4}, 2, None), ({"Si": 1, "O": 2}, None, 152)],
)
def test_random_walk_gives_exact_composition(composition, fu, sg):
    rng = np.random.default_rng(0)
    prefix = encode_prefix(Conditioning(composition, fu, sg), "csp")
    for _ in range(15):
        toks, vals = random_completion(Grammar.start(prefix, max_atoms=60), rng)
        crystal = decode(np.r_[prefix, toks], np.r_[np.zeros(len(prefix)), vals])
        z = decode_plan(toks).Z
        assert crystal.counts() == {el: n * z for el, n in composition.items()}
        assert crystal.num_atoms <= 60
        if fu:
            assert z == fu * SPACE_GROUPS[crystal.spacegroup].centring
        if sg:
            assert crystal.spacegroup == sg
        lattice, frac, species = crystal.to_arrays()
        assert len(frac) == len(species) == crystal.num_atoms and abs(np.linalg.det(lattice)) > 0


def test_random_walk_de_novo_is_decodable():
    rng = np.random.default_rng(1)
    prefix = encode_prefix(Conditioning(), "gen")
    for _ in range(30):
        toks, vals = random_completion(Grammar.start(prefix, max_atoms=40), rng)
        crystal = decode(np.r_[prefix, toks], np.r_[np.zeros(len(prefix)), vals])
        z = decode_plan(toks).Z
        assert 0 < crystal.num_atoms <= 40 and all(n % z == 0 for n in crystal.counts().values())


def test_no_legal_completion():
    with pytest.raises(NoLegalCompletion, match="230"):  # Ia-3d's smallest orbit holds 16 atoms
        Grammar.start(encode_prefix(Conditioning({"Na": 1, "Cl": 1}, 1, 230), "csp"))
    with pytest.raises(NoLegalCompletion):
        Grammar.start(encode_prefix(Conditioning({"Li": 1, "O": 40}), "csp"), max_atoms=30)


def test_grammar_masks_and_illegal_tokens():
    state = Grammar.start(encode_prefix(Conditioning({"Na": 1, "Cl": 1}, 1, 225), "csp"))
    assert np.flatnonzero(state.next_allowed()).tolist() == [VOCAB["<cs:cubic>"]]
    state.advance(VOCAB["<cs:cubic>"])
    state.advance(VOCAB["<sg:225>"])
    assert np.flatnonzero(state.next_allowed()).tolist() == [VOCAB["<Z:4>"]]  # fu 1 x F-centring 4
    for tok in ("<Z:4>", "<el:Na>", "<ox:+1>"):
        state.advance(VOCAB[tok])
    allowed = {TOKENS[i] for i in np.flatnonzero(state.next_allowed())}
    assert allowed == {"<wy:a>", "<wy:b>"}  # 4 Na atoms: only the 4-fold orbits
    state.advance(VOCAB["<wy:a>"])
    state.advance(VOCAB["<el:Cl>"])
    state.advance(VOCAB["<ox:-1>"])
    assert {TOKENS[i] for i in np.flatnonzero(state.next_allowed())} == {"<wy:b>"}  # a is taken
    with pytest.raises(ValueError):
        state.advance(VOCAB["<wy:a>"])
    assert state.next_allowed().shape == (VOCAB_SIZE,)


def test_decode_rejects_ill_formed_sequences(crystals):
    enc = encode(crystals[0][1], None)
    with pytest.raises(DecodeError):
        decode(enc.tokens[:-1], enc.values[:-1])
    lat = int(np.flatnonzero(enc.tokens == LAT)[0])
    with pytest.raises(DecodeError):
        decode(np.delete(enc.tokens, lat + 3), np.delete(enc.values, lat + 3))


def test_runtime_modules_need_only_numpy():
    code = (
        "import sys, crystalgen.representation.grammar, crystalgen.representation.sequence;"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('pymatgen', 'pyxtal', 'spglib')];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def _brute_feasible(sg: int, counts: tuple[int, int]) -> bool:
    """Two elements: try every assignment of fixed positions (to element 1, 2 or none)."""
    import itertools

    t = SPACE_GROUPS[sg]
    fixed = [int(m) for m, f in zip(t.multiplicity, t.fixed) if f]
    free = sorted({int(m) for m, f in zip(t.multiplicity, t.fixed) if not f})
    reach = np.zeros(max(counts) + 1, bool)
    reach[0] = True
    for m in free:
        for n in range(m, len(reach)):
            reach[n] |= reach[n - m]
    for owner in itertools.product((0, 1, 2), repeat=len(fixed)):
        left = [counts[0] - sum(m for m, o in zip(fixed, owner) if o == 1),
                counts[1] - sum(m for m, o in zip(fixed, owner) if o == 2)]
        if all(n >= 0 and reach[n] for n in left):
            return True
    return False


@pytest.mark.parametrize("sg", [47, 123, 191, 221, 225, 227])
def test_feasibility_agrees_with_brute_force(sg):
    from crystalgen.representation.feasibility import feasible

    for a in range(1, 13):
        for b in range(1, 13):
            assert feasible(sg, (a, b)) == _brute_feasible(sg, (a, b)), (sg, a, b)


def test_vocabulary_ids_are_stable():
    assert VOCAB_SIZE == 512 and TOKENS[0] == "<pad>" and VOCAB["<eos>"] == 2
    assert (VOCAB["<el:H>"], VOCAB["<sg:1>"], VOCAB["<wy:A>"], VOCAB["<v:z>"]) == (8, 186, 449, 495)
    assert TOKENS[496:498] == ("<sys:all>", "<sys:any>")  # appended: older models keep their ids
    assert TOKENS[498] == "<src:wbm>" and TOKENS[511] == "<src:carbon_24>"
