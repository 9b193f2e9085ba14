"""Charge-aware de novo plans: the grammar's masks keep every plan completable into a
composition the charge validator accepts, on real elements, with no dead end."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from pymatgen.core import Composition, Lattice

from crystalgen.cli import main

from crystalgen.generation.decoder import generate_batch
from crystalgen.generation.request import GenerationRequest, RequestError
from crystalgen.generation.volume import pick_in_bin, volume_per_atom
from crystalgen.model import CrystalModel, CrystalModelConfig
from crystalgen.representation import vocab as V
from crystalgen.representation.charge import PlanRule, metals, pauling, smact_states
from crystalgen.representation.grammar import OX, PLAN_END, ZED, Grammar
from crystalgen.representation.random_walk import random_completion
from crystalgen.representation.sequence import Conditioning, decode_plan, encode_prefix
from crystalgen.validators.charge import _pauling_ok, smact_validity

PREFIX = encode_prefix(Conditioning(), task="gen")
LIFEO = frozenset({"Li", "Fe", "O"})


def _plans(rule: PlanRule, n: int, seed: int):
    """Uniform random walks through the grammar under ``rule``: every allowed choice is
    taken sometimes, which is a harder test than a trained model's preferences."""
    rng = np.random.default_rng(seed)
    start = Grammar.start(PREFIX, rule=rule)
    for _ in range(n):
        tokens, _ = random_completion(start.copy(), rng)
        yield decode_plan(np.concatenate([PREFIX, tokens]))


def _composition(plan) -> Composition:
    return Composition({e.element: sum(e.multiplicities) for e in plan.elements})


def _own_states_pass(plan) -> bool:
    """The plan's own oxidation states: from SMACT's list, neutral, Pauling-consistent (as the validator tests them)."""
    els = sorted(plan.elements, key=lambda e: Composition(e.element).elements[0].Z)
    if any(e.oxidation not in smact_states(e.element) for e in els):
        return False
    charge = sum(e.oxidation * sum(e.multiplicities) for e in els)
    return charge == 0 and _pauling_ok(tuple(e.oxidation for e in els), tuple(pauling(e.element) for e in els))


@pytest.mark.parametrize("seed", [0, 1])
def test_chemsys_plans_are_neutral_and_use_every_element(seed):
    for plan in _plans(PlanRule(LIFEO, LIFEO), 25, seed):
        comp = _composition(plan)
        assert {el.symbol for el in comp.elements} == LIFEO
        assert smact_validity(comp), comp
        assert _own_states_pass(plan), [(e.element, e.oxidation) for e in plan.elements]


def test_open_plans_pass_the_charge_validator():
    for plan in _plans(PlanRule(), 40, 3):
        assert smact_validity(_composition(plan)), _composition(plan)
        # no lone element padded to the atom budget: every open plan is an ionic compound
        assert len(plan.elements) > 1 and _own_states_pass(plan), [(e.element, e.oxidation) for e in plan.elements]


def test_oxidation_step_offers_only_smact_states():
    state = Grammar.start(PREFIX, rule=PlanRule(LIFEO, LIFEO))
    rng = np.random.default_rng(0)
    while not state.plan or state.plan[-1][2] or state.phase != OX:  # the first oxidation state is next
        allowed = state.next_allowed()
        state.advance(int(rng.choice(np.flatnonzero(allowed))))
    el = state.plan[-1][0]
    offered = {int(t) - V.OX0 + V.OX_MIN for t in np.flatnonzero(state.next_allowed())}
    assert offered and offered <= set(smact_states(el))


def test_element_sets_without_a_neutral_composition_are_refused():
    # B (+1..+3) is more electronegative than Si, so B can never be Si's cation; He and Ne have no states
    for system in ("B-Si", "He-Ne", "Li-Na"):
        with pytest.raises(RequestError, match="no charge-neutral composition"):
            GenerationRequest.build(chemsys=system)
    with pytest.raises(RequestError, match="allow-intermetallic"):
        GenerationRequest.build(chemsys="Li-Na")
    GenerationRequest.build(chemsys="Li-Na", allow_intermetallic=True)  # an alloy is allowed then
    GenerationRequest.build(chemsys="B-Si", charge_neutral=False)  # plans as trained: no charge rule
    GenerationRequest.build(chemsys="O-F")  # OF2: O +2 is less electronegative than F -1


def _alloy_walk(rule: PlanRule) -> list[tuple[str, int]]:
    """Walk towards an all-metal binary: Z = 1, <ox:0> first, a second element when offered."""
    state = Grammar.start(PREFIX, rule=rule)
    rng = np.random.default_rng(0)
    while state.phase != PLAN_END:
        allowed = state.next_allowed()
        ids = np.flatnonzero(allowed)
        if state.phase == ZED:
            tok = V.Z0
        elif state.phase == OX:
            tok = V.OX0 - V.OX_MIN if allowed[V.OX0 - V.OX_MIN] else int(ids[0])
        else:
            elements = [t for t in ids if V.in_range(t, V.EL0, len(V.ELEMENTS))]
            tok = elements[0] if elements and len(state.plan) < 2 else int(rng.choice(ids))
        state.advance(int(tok))
    return [(e, q) for e, q, _ in state.plan]


def test_intermetallic_option_allows_non_neutral_all_metal_plans():
    al_fe = frozenset({"Al", "Fe", "Ni"})
    plan = _alloy_walk(PlanRule(al_fe, intermetallic=True))
    assert len(plan) >= 2 and all(q == 0 for _, q in plan)
    assert smact_validity(Composition({e: 1 for e, _ in plan}))  # an alloy: CDVAE's rule passes it
    plan = _alloy_walk(PlanRule(al_fe))  # without the option <ox:0> ends the plan (a single element)
    assert len(plan) == 1 or all(q != 0 for _, q in plan)
    for plan in _plans(PlanRule(al_fe), 20, 4):
        if len(plan.elements) > 1:
            assert _own_states_pass(plan)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_random_model_writes_only_neutral_plans(seed):
    torch.manual_seed(seed)
    model = CrystalModel(CrystalModelConfig()).eval()
    rules = [PlanRule(), PlanRule(LIFEO, LIFEO), PlanRule(frozenset({"Mg", "Si", "O"}))]
    prefixes = [PREFIX] * 6
    out = generate_batch(model, prefixes, [rules[i % 3] for i in range(6)], seed=seed)
    assert all(seq is not None for seq in out)  # no dead end
    for i, seq in enumerate(out):
        plan = decode_plan(seq.tokens)
        comp = _composition(plan)
        assert smact_validity(comp), comp
        if i % 3 == 1:
            assert {el.symbol for el in comp.elements} == LIFEO
        if len(plan.elements) > 1:
            assert _own_states_pass(plan)


def test_unconstrained_plans_are_not_always_neutral():
    """Without the rule the grammar is the trained one: the test above can fail."""
    plans = list(_plans(PlanRule(LIFEO, LIFEO, neutral=False), 25, 0))
    assert not all(smact_validity(_composition(p)) for p in plans)
    assert all({el.symbol for el in _composition(p).elements} == LIFEO for p in plans)


def test_cli_refuses_a_system_with_no_neutral_composition(tmp_path):
    result = CliRunner().invoke(main, ["sample", "--chemsys", "B-Si", "-n", "2", "--out", str(tmp_path / "x.cif")])
    assert result.exit_code != 0
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "no charge-neutral composition of Si-B" in errors[0]  # one line that says why
    assert "B +1/+2/+3" in errors[0] and "Traceback" not in result.output
    assert not (tmp_path / "x.cif").exists()


def test_volume_per_atom_matches_pymatgen():
    # a real monoclinic cell (stored values: log(L / n^(1/3)), angles / 180)
    n, (a, b, c, beta) = 8, (5.1, 6.3, 7.7, 104.0)
    values = [math.log(x / n ** (1 / 3)) for x in (a, b, c)] + [0.5, beta / 180.0, 0.5]
    expected = Lattice.from_parameters(a, b, c, 90, beta, 90).volume / n
    assert volume_per_atom("monoclinic", values, n) == pytest.approx(expected, rel=1e-6)
    # before its free angle is drawn, it counts as 90 degrees
    assert volume_per_atom("monoclinic", values[:3], n) == pytest.approx(a * b * c / n, rel=1e-6)


def test_volume_guard_keeps_the_cell_in_the_planned_bin():
    state = Grammar.start(encode_prefix(Conditioning(composition={"Na": 1, "Cl": 1}, formula_units=1), task="csp"))
    for tok in (V.CS0 + 6, V.SG0 + 224, V.Z0 + 3, V.element_token("Na"), V.OX0 + 5, V.WY0, V.element_token("Cl"),
                V.OX0 + 3, V.WY0 + 1, V.VPA0 + 12, V.END_PLAN, V.LAT):
        state.advance(tok)
    assert state.last_free_length_next()  # cubic: a is the only free length
    lo, hi = V.vpa_range(12)
    n = state.atoms_done
    inside = math.log((lo * hi) ** 0.5 * n) / 3 - math.log(n) / 3  # the bin's geometric centre
    candidates = np.array([inside + 0.3, inside - 0.2, inside, inside + 0.01], np.float32)
    assert pick_in_bin(state, candidates) == 2  # the first one inside
    assert pick_in_bin(state, candidates[:2]) == 1  # none inside: the closest
