"""Relaxing candidates with an ASE calculator: convergence, re-ranking, and divergence kept out."""

from __future__ import annotations

import math

import numpy as np
import pytest
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.emt import EMT
from click.testing import CliRunner
from pymatgen.core import Lattice, Structure
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

from crystalgen.analogues.generator import AnalogueGenerator
from crystalgen.analogues.index import load_index
from crystalgen.analogues.relax import RelaxConfig, Relaxer, relax_results
from crystalgen.evaluation.datasets import load_structures
from crystalgen.results import GenerationResult


class _NaNCalculator(Calculator):
    """Returns a NaN energy: what a calculator outside its domain can do."""

    implemented_properties = ["energy", "forces", "stress"]

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        self.results = {"energy": math.nan, "forces": np.zeros((len(atoms), 3)), "stress": np.zeros(6)}


class _ExplodingCalculator(Calculator):
    """Forces that grow on every call and an energy that rises: a relax that runs away."""

    implemented_properties = ["energy", "forces", "stress"]

    def __init__(self):
        super().__init__()
        self.calls = 0

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        self.calls += 1
        forces = np.zeros((len(atoms), 3))
        forces[0, 0] = 10.0 ** self.calls
        self.results = {"energy": float(self.calls), "forces": forces, "stress": np.zeros(6)}


def _copper(kind: str, a: float) -> Structure:
    if kind == "fcc":
        return Structure(Lattice.cubic(a), ["Cu"] * 4, [[0, 0, 0], [0, .5, .5], [.5, 0, .5], [.5, .5, 0]])
    return Structure(Lattice.cubic(a), ["Cu"] * 2, [[0, 0, 0], [.5, .5, .5]])


def test_relax_lowers_the_energy_and_reranks_by_it():
    """EMT copper: a strained fcc cell relaxes towards a = 3.59 Å, and fcc ranks above bcc after the relax."""
    relaxer = Relaxer(EMT(), RelaxConfig(top=2, steps=200, fmax=0.01))
    outcome = relaxer.relax(_copper("fcc", 3.75))
    assert outcome.relaxed and outcome.energy_after < outcome.energy_before
    assert abs(outcome.structure.lattice.a - 3.59) < 0.03
    candidates = [GenerationResult(_copper("bcc", 2.87), trace={"text": "bcc"}),
                  GenerationResult(_copper("fcc", 3.75), trace={"text": "fcc"})]
    ranked = relax_results(candidates, relaxer)
    assert [r.trace["text"].split("\n")[0] for r in ranked] == ["fcc", "bcc"]
    assert all("relaxed: ΔE" in r.trace["text"] and r.trace["relax"]["relaxed"] for r in ranked)


@pytest.mark.parametrize("calculator, reason", [(_NaNCalculator, "not finite"), (_ExplodingCalculator, "exploded")])
def test_a_diverging_relax_keeps_the_unrelaxed_candidate(mpts52_sample_path, calculator, reason):
    test = load_structures(str(mpts52_sample_path))
    structure = test.structures[0]
    outcome = Relaxer(calculator(), RelaxConfig(fix_symmetry=False)).relax(structure)
    assert not outcome.relaxed and outcome.structure is structure and reason in outcome.reason
    assert outcome.describe().startswith("relax abandoned: ")


def test_analogue_relax_with_a_diverging_calculator_returns_the_unrelaxed_analogue(mpts52_sample_path, tmp_path):
    corpus = tmp_path / "corpus.csv.gz"
    corpus.write_bytes(mpts52_sample_path.read_bytes())
    gen = AnalogueGenerator(load_index(corpus, workers=1))
    target = load_structures(str(mpts52_sample_path)).structures[0].composition
    [plain] = gen.predict_structure(target, n=1)
    [kept] = gen.predict_structure(target, n=1, relax=Relaxer(_NaNCalculator(), RelaxConfig(top=1)))
    assert kept.structure == plain.structure and kept.metadata["relaxed"] is False
    assert "relax abandoned: energy is not finite" in kept.trace["text"]


def test_cli_sample_relax_with_chgnet(tmp_path):
    pytest.importorskip("chgnet")
    from crystalgen.cli import main

    out = tmp_path / "nacl"
    run = CliRunner().invoke(main, ["sample", "--formula", "NaCl", "-n", "1", "--strategy", "analogue", "--relax",
                                    "--relax-top", "2", "--workers", "0", "--out", str(out), "--trace"])
    assert run.exit_code == 0, run.output
    assert "relaxed: ΔE" in run.output
    [cif] = out.glob("*.cif")
    assert SpacegroupAnalyzer(Structure.from_file(cif), symprec=0.1).get_space_group_number() == 225
