"""The sampling product, on the shipped model: constrained decoding guarantees, the API,
the CLI and the writers, and that the trained model really produces valid crystals.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from pymatgen.core import Composition, Structure
from pymatgen.symmetry.groups import SpaceGroup
from ase.data import covalent_radii

from crystalgen.api import PRETRAINED_DIR, CrystalGenerator, RequestError, SamplingOptions
from crystalgen.cli import main
from crystalgen.io import read_h5, write_results
from crystalgen.results import GenerationResult

# what the shipped model must at least reach (it measured more: see MODEL_CARD.md). "valid" is the
# validators' verdict with the physical distance rule: unguarded, seeds 0-2 measured NaCl 0.71-0.77,
# de novo 0.28-0.35 (physical distances 0.36-0.42, CDVAE structural 0.82-0.84).
NACL_VALID = 0.55
DENOVO_STRUCTURAL = 0.6
DENOVO_PHYSICAL = 0.25
DENOVO_VALID = 0.2
PLAN_SPACEGROUP_AGREEMENT = 0.6


@pytest.fixture(scope="module")
def gen():
    torch.set_num_threads(1)  # a busy 2-core machine: spinning OpenMP threads cost more than they give
    return CrystalGenerator.from_pretrained()


def test_shipped_model_is_in_the_package():
    assert (PRETRAINED_DIR / "model.safetensors").is_file()
    assert (PRETRAINED_DIR / "MODEL_CARD.md").is_file()


def test_formula_is_met_exactly(gen):
    results = gen.sample(n=12, formula="LiFePO4", seed=0)
    assert len(results) == 12
    for r in results:
        assert r.structure.composition.reduced_formula == "LiFePO4"
        assert r.trace["plan"]["reduced_formula"] == "LiFePO4"
        assert r.report["checks"]["composition"]["pass"] is True


def test_predict_structure_fixes_the_cell_content(gen):
    results = gen.predict_structure("Na2Cl2", n=6, seed=1, strategy="model")
    assert results
    for r in results:
        # the conventional cell holds the lattice centring's points x Na2Cl2, never another count
        letter = SpaceGroup.from_int_number(r.metadata["planned_spacegroup"]).symbol[0]
        centring = {"P": 1, "A": 2, "B": 2, "C": 2, "I": 2, "F": 4, "R": 3}[letter]
        assert r.structure.composition.reduced_formula == "NaCl"
        assert len(r.structure) == 4 * centring


def test_same_seed_same_structures(gen):
    a = gen.sample(n=5, formula="SrTiO3", seed=7, validate=False)
    b = gen.sample(n=5, formula="SrTiO3", seed=7, validate=False)
    c = gen.sample(n=5, formula="SrTiO3", seed=8, validate=False)
    key = lambda rs: [(r.structure.lattice.abc, r.structure.frac_coords.round(6).tolist()) for r in rs]  # noqa: E731
    assert key(a) == key(b)
    assert key(a) != key(c)


def _same_crystals(a, b) -> None:
    """Same crystals up to float rounding, as the README promises across worker counts
    and batch sizes: same planned space group and species, lattice lengths within 0.1%,
    fractional coordinates within 0.01. Another batch composition rounds the model's sums
    differently, which can flip a rejection round of a von Mises draw and move that
    coordinate within its component's width (1e-4 to a few 1e-3 for the sharp components
    a trained model uses)."""
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.metadata["planned_spacegroup"] == y.metadata["planned_spacegroup"]
        assert x.structure.species == y.structure.species
        np.testing.assert_allclose(x.structure.lattice.abc, y.structure.lattice.abc, rtol=1e-3)
        np.testing.assert_allclose(x.structure.frac_coords, y.structure.frac_coords, atol=1e-2)


def test_worker_processes_give_the_same_crystals(gen):
    """Every sequence has its own random stream: 2 worker processes (4 shards) reproduce
    the in-process result (one shard)."""
    kwargs = dict(n=64, formula="SrTiO3", seed=3, batch_size=8, validate=False)
    alone = CrystalGenerator(gen.model, workers=0).sample(**kwargs)
    pooled = CrystalGenerator(gen.model, workers=2)
    try:
        together = pooled.sample(**kwargs)
        assert pooled._rounds._pool is not None  # really ran in worker processes
    finally:
        pooled.close()
    assert len(alone) == 64
    _same_crystals(alone, together)


def test_spawned_workers_load_the_model_and_give_the_same_crystals(gen):
    """The start method a GPU model uses (spawn: fresh processes that load the model from
    its directory), checked on the CPU."""
    from crystalgen.generation.options import SamplingOptions
    from crystalgen.generation.request import GenerationRequest
    from crystalgen.generation.rng import sequence_keys
    from crystalgen.generation.shards import ShardPool, ShardSpec, run_shard

    requests = [GenerationRequest.build("SrTiO3")]
    keys = sequence_keys(9, 0, 40)
    opts = SamplingOptions(temperature=1.0, seed=9, batch_size=16, min_distance=0.5, validate=False)
    specs = [ShardSpec(tuple([0] * 20), keys[k:k + 20], opts, 60) for k in (0, 20)]
    pool = ShardPool(gen.model, 2, str(PRETRAINED_DIR), spawn=True)
    try:
        spawned = [r for part in pool.run(requests, specs) for r in part]
    finally:
        pool.close()
    alone = run_shard(gen.model, requests, ShardSpec(tuple([0] * 40), keys, opts, 60))
    _same_crystals(alone, spawned)


def test_batch_size_does_not_change_the_crystals(gen):
    kwargs = dict(n=24, formula="Li2MnO3", seed=5, validate=False)
    _same_crystals(gen.sample(batch_size=5, **kwargs), gen.sample(batch_size=64, **kwargs))


def test_continuous_batching_matches_one_sequence_at_a_time(gen):
    """Greedy decoding is a function of the prefix alone, so refilling finished rows,
    trimming and compacting the cache must not change any sequence."""
    from crystalgen.generation.decoder import generate_batch, generate_stream
    from crystalgen.generation.request import GenerationRequest

    formulas = ["NaCl", "LiFePO4", "SrTiO3", "Li2MnO3", "CsCl", "MgAl2O4", "GaN"]
    prefixes = [GenerationRequest.build(f).prefix for f in formulas]
    alone = [generate_batch(gen.model, [p], temperature=0.0)[0] for p in prefixes]
    streamed = dict(generate_stream(gen.model, prefixes, np.arange(len(prefixes), dtype=np.uint64), temperature=0.0,
                                    batch_size=3))
    assert sorted(streamed) == list(range(len(formulas)))
    for i, seq in enumerate(alone):
        assert seq is not None and streamed[i] is not None
        np.testing.assert_array_equal(streamed[i].tokens, seq.tokens)
        # padded and unpadded attention round differently; a mode moves by ~1e-4 at most
        np.testing.assert_allclose(streamed[i].values, seq.values, atol=2e-3)


def test_chemsys_and_element_rules(gen):
    for r in gen.sample(n=10, chemsys="Li-Fe-O", seed=2):
        assert {el.symbol for el in r.structure.composition.elements} == {"Li", "Fe", "O"}
    for r in gen.sample(n=10, elements=["Mg", "Si", "O"], seed=3):
        assert {el.symbol for el in r.structure.composition.elements} <= {"Mg", "Si", "O"}


def test_requested_space_group_is_planned_and_built(gen):
    for r in gen.sample(n=6, formula="NaCl", spacegroup=225, seed=4):
        assert r.trace["plan"]["spacegroup"] == 225
        # the cell is rebuilt from Fm-3m Wyckoff orbits: 4 formula units at least
        assert len(r.structure) % 8 == 0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(formula="Xx2O3"), "unknown element 'Xx'"),
        (dict(formula="Na(Cl"), "cannot read formula"),
        (dict(chemsys="Li-Qq"), "unknown element"),
        (dict(formula="NaCl", chemsys="Na-Cl"), "at most one"),
        (dict(formula="NaCl", spacegroup=230, num_atoms=2), "cannot be placed"),
        (dict(formula="Na60Cl60", num_atoms=120), "formula units"),
        (dict(formula="NaCl", n=0), "n must be at least 1"),
        (dict(formula="NaCl", n=-1), "n must be at least 1"),
    ],
)
def test_bad_requests_are_refused(gen, kwargs, message):
    with pytest.raises(RequestError, match=message):
        gen.sample(**{"n": 1, **kwargs})


def test_results_round_trip_through_every_format(gen, tmp_path):
    results = gen.sample(n=3, formula="NaCl", seed=5)
    back = GenerationResult.from_dict(json.loads(json.dumps(results[0].as_dict())))
    assert back.structure == results[0].structure and back.trace == results[0].trace

    write_results(results, tmp_path / "out.cif")
    from pymatgen.io.cif import CifParser

    parsed = CifParser(tmp_path / "out.cif").parse_structures(primitive=False)
    assert len(parsed) == 3
    assert all(s.composition.reduced_formula == "NaCl" for s in parsed)
    from ase.io import read

    frames = read(tmp_path / "out.cif", index=":")
    assert len(frames) == 3

    write_results(results, tmp_path / "cifs")
    assert len(list((tmp_path / "cifs").glob("*.cif"))) == 3

    write_results(results, tmp_path / "out.extxyz")
    assert len(read(tmp_path / "out.extxyz", index=":")) == 3

    write_results(results, tmp_path / "out.h5")
    again = read_h5(tmp_path / "out.h5")
    assert [r.structure.composition for r in again] == [r.structure.composition for r in results]
    assert np.allclose(again[1].structure.frac_coords, results[1].structure.frac_coords)


def test_symmetrised_cif_keeps_the_space_group(tmp_path):
    from pathlib import Path

    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    examples = Path(__file__).resolve().parents[1] / "examples" / "reference"
    structures = [Structure.from_file(examples / name) for name in ("LiFePO4.cif", "NaCl.cif")]
    write_results([GenerationResult(s) for s in structures], tmp_path / "cifs")
    paths = sorted((tmp_path / "cifs").glob("*.cif"))
    for path, s in zip(paths, structures):
        number = int(next(line.split()[-1] for line in path.read_text().splitlines()
                          if line.startswith("_symmetry_Int_Tables_number")))
        assert number == SpacegroupAnalyzer(s, symprec=0.01).get_space_group_number() > 1
        assert Structure.from_file(path).matches(s)


def test_cli_sample_writes_and_summarises(tmp_path):
    out = tmp_path / "nacl.json"
    res = CliRunner().invoke(
        main, ["sample", "--formula", "NaCl", "-n", "3", "--seed", "0", "--out", str(out), "--trace"],
    )
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    assert len(data) == 3
    assert "1. Composition" in res.output and "overall" in res.output


@pytest.mark.parametrize(
    "args", [["--formula", "Xx2"], ["--formula", "NaCl", "--chemsys", "Na-Cl"],
             ["--formula", "NaCl", "--spacegroup", "230", "--num-atoms", "2"]]
)
def test_cli_bad_input_fails_cleanly(tmp_path, args):
    out = tmp_path / "never.cif"
    res = CliRunner().invoke(main, ["sample", *args, "--out", str(out)])
    assert res.exit_code != 0
    assert "Error" in res.output
    assert not out.exists() and list(tmp_path.iterdir()) == []


# --- what needs a trained model -----------------------------------------------------------
# Thresholds sit well below what the shipped model measured (MODEL_CARD.md), so that a
# retrained model that really got worse fails, and noise does not.


def test_shipped_model_makes_valid_crystals(gen):
    # the model on its own: no distance guard
    nacl = gen.sample(n=48, formula="NaCl", seed=0, min_distance=0)
    denovo = gen.sample(n=96, seed=0, min_distance=0)
    assert len(nacl) == 48 and len(denovo) == 96
    assert np.mean([r.valid for r in nacl]) >= NACL_VALID
    structural = np.mean([r.report["checks"]["distance"]["cdvae_pass"] and r.report["checks"]["lattice"]["pass"]
                          for r in denovo])
    assert structural >= DENOVO_STRUCTURAL, structural
    physical = np.mean([r.report["checks"]["distance"]["pass"] and r.report["checks"]["lattice"]["pass"]
                        for r in denovo])
    assert DENOVO_PHYSICAL <= physical <= structural, (physical, structural)
    assert np.mean([r.valid for r in denovo]) >= DENOVO_VALID


def test_distance_guard_keeps_atoms_apart(gen):
    # Li2MnO3: about a quarter of the unguarded crystals put two atoms within 0.5 Å
    guarded = gen.sample(n=64, formula="Li2MnO3", seed=0)
    unguarded = gen.sample(n=64, formula="Li2MnO3", seed=0, min_distance=0)

    def apart(results):
        return np.mean([r.report["checks"]["distance"]["cdvae_pass"] for r in results])  # the guard's 0.5 Å

    assert apart(guarded) >= 0.9 and apart(guarded) > apart(unguarded), (apart(guarded), apart(unguarded))
    assert all(r.metadata["min_distance"] == 0.5 for r in guarded)
    for r in guarded:  # the guard changes coordinates only: the composition and plan still hold
        assert r.structure.composition.reduced_formula == "Li2MnO3"
        assert r.report["checks"]["composition"]["pass"] is True


def test_distance_guard_follows_the_physical_rule(gen):
    """By default the guard keeps each pair 0.65 of its covalent radii apart, the validators'
    verdict; with the ratio off it keeps only the flat 0.5 Å, and far more crystals fail."""
    physical = gen.sample(n=64, formula="LiFePO4", seed=0)
    flat = gen.sample(n=64, formula="LiFePO4", seed=0, options=SamplingOptions(seed=0, covalent_ratio=0.0))

    def passed(results):
        return np.mean([r.report["checks"]["distance"]["pass"] for r in results])

    assert passed(physical) >= passed(flat) + 0.25, (passed(physical), passed(flat))
    limits = SamplingOptions().guard_limits
    assert limits[11, 17] == pytest.approx(0.65 * (covalent_radii[11] + covalent_radii[17]))
    assert SamplingOptions(temperature=0).guard_limits == 0.0


def test_shipped_model_follows_its_plan(gen):
    results = gen.sample(n=48, formula="SrTiO3", seed=1)
    agree = np.mean([r.trace["consistency"]["spacegroup"] for r in results])
    assert agree >= PLAN_SPACEGROUP_AGREEMENT, agree
