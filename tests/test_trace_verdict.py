"""Traces never contradict their verdict: plan consistency and charge neutrality are said plainly."""

from __future__ import annotations

import pytest
from pymatgen.core import Composition

from crystalgen.api import CrystalGenerator
from crystalgen.trace import render_trace, spacegroup_symbol


@pytest.fixture(scope="module")
def traces():
    gen = CrystalGenerator.from_pretrained(workers=0)
    try:
        # GaN and Fe2O3: the shipped model often leaves its planned space group, or plans Fe2+ with O2-
        return [r.trace for f in ("GaN", "Fe2O3") for r in gen.sample(n=16, formula=f, seed=0)]
    finally:
        gen.close()


def _line(trace, title: str) -> str:
    return next(line for line in trace["text"].splitlines() if line.split(". ", 1)[1].startswith(title))


def test_charge_step_says_when_a_plan_is_not_neutral(traces):
    seen = 0
    for t in traces:
        amounts = Composition(t["plan"]["formula"]).get_el_amt_dict()
        charge = sum(q * amounts[el] for el, q in t["plan"]["oxidation_states"].items())
        step, verdict = _line(t, "Oxidation states"), _line(t, "Validators")
        if charge != 0:
            seen += 1
            assert "not charge-neutral" in step and "not charge-neutral" in verdict, t["text"]
        else:
            assert step.endswith("neutral)") and "not charge-neutral" not in t["text"], t["text"]
    assert seen >= 1, "no non-neutral plan among the samples: the test checked nothing"


def test_verdict_line_reports_plan_consistency(traces):
    differs = 0
    for t in traces:
        verdict = _line(t, "Validators")
        assert verdict.split(": ", 1)[1].startswith(("valid; plan: ", "INVALID ("))
        if not t["consistency"]["spacegroup"]:
            differs += 1
            planned = spacegroup_symbol(t["plan"]["spacegroup"])
            got = spacegroup_symbol(t["verdict"]["found_spacegroup"])
            assert f"space group differs (planned {planned}, got {got})" in verdict, t["text"]
        followed = all(t["consistency"].values()) and t["plan"]["net_charge"] == 0
        assert verdict.endswith("plan: followed") == followed, t["text"]
        assert render_trace(t) == t["text"]
    assert differs >= 1, "no crystal left its planned space group: the test checked nothing"
