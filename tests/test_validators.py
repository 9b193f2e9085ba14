"""Validators on real structures (tests/fixtures), including structures built to fail each check."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from crystalgen.validators import (
    CHECK_NAMES,
    Intent,
    check_charge,
    check_composition,
    check_distance,
    check_lattice,
    check_symmetry,
    smact_validity,
    structural_validity,
    validate,
    validate_many,
)
from crystalgen.validators import distance
from crystalgen.validators.distance import min_distances, periodic_sq_distances


@pytest.fixture(scope="module")
def nacl(pool_records) -> Structure:
    """Rock-salt-type DyHoZn2 would do too; NaCl is built from the shipped example CIF."""
    from pathlib import Path

    return Structure.from_file(Path(__file__).parents[1] / "examples" / "reference" / "NaCl.cif")


@pytest.fixture(scope="module")
def oxide(mpts52_records) -> Structure:
    """NdScO3 (mp-31117), a charge-balanced perovskite, Pnma."""
    record = next(r for r in mpts52_records if r.id == "mp-31117")
    return record.structure


# --- distance -------------------------------------------------------------------------------


def test_distance_real_structure_passes_and_matches_brute_force(oxide):
    result = check_distance(oxide)
    # brute force over a 3x3x3 block of images
    cart = oxide.cart_coords
    shifts = np.array([[i, j, k] for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)]) @ oxide.lattice.matrix
    best = min(
        np.linalg.norm(cart[a] - cart[b] - s)
        for a in range(len(cart))
        for b in range(len(cart))
        if a != b
        for s in shifts
    )
    assert result.passed is True
    assert result.value == pytest.approx(best, abs=1e-6)
    assert 0.5 < result.details["min_covalent_ratio"] < 2.0


def test_overlapping_atoms_fail_distance(oxide):
    broken = oxide.copy()
    broken.append("O", broken[0].coords + np.array([0.3, 0.0, 0.0]), coords_are_cartesian=True)
    result = check_distance(broken)
    assert result.passed is False
    assert result.value == pytest.approx(0.3, abs=1e-6)
    assert structural_validity(broken) is False
    assert structural_validity(oxide) is True


def test_distance_across_the_periodic_boundary():
    s = Structure(Lattice.cubic(4.0), ["Na", "Cl"], [[0.01, 0, 0], [0.97, 0, 0]])
    assert min_distances(s)[0] == pytest.approx(0.16, abs=1e-9)
    assert check_distance(s).passed is False


@pytest.mark.parametrize("params", [(5.1, 6.2, 7.3, 82, 86, 97), (3.0, 9.0, 4.0, 60, 120, 75), (4.0, 4.0, 4.0, 90, 90, 90)])
def test_periodic_distances_match_pymatgen_on_skewed_cells(params, monkeypatch):
    """The one periodic-distance computation (validators and the sampler's guard) agrees with
    pymatgen's, through the LLL-reduced cell, and its two evaluation orders agree to the bit."""
    rng = np.random.default_rng(len(params) + int(params[3]))
    lattice = Lattice.from_parameters(*params)
    frac = rng.random((40, 3))
    reference = lattice.get_all_distances(frac, frac)
    np.fill_diagonal(reference, np.inf)
    s = Structure(lattice, ["O"] * 40, frac)
    assert min_distances(s)[0] == pytest.approx(reference.min(), abs=1e-9)
    reduced = lattice.get_lll_frac_coords(frac)
    ours = np.sqrt(periodic_sq_distances(reduced, reduced, lattice.lll_matrix))
    np.testing.assert_allclose(ours, lattice.get_all_distances(frac, frac), atol=1e-9)
    monkeypatch.setattr(distance, "_LOOP_ABOVE", 0)
    looped = periodic_sq_distances(reduced, reduced[:7], lattice.lll_matrix)
    monkeypatch.setattr(distance, "_LOOP_ABOVE", 10**9)
    assert np.array_equal(looped, periodic_sq_distances(reduced, reduced[:7], lattice.lll_matrix))


# --- lattice --------------------------------------------------------------------------------


def test_lattice_real_structure(oxide):
    result = check_lattice(oxide)
    assert result.passed is True
    assert result.value == pytest.approx(oxide.volume)
    assert result.details["density_g_cm3"] == pytest.approx(float(oxide.density), rel=1e-4)  # ASE vs pymatgen mass tables


def test_flat_and_nonfinite_cells_fail(oxide):
    flat = Structure(Lattice([[4, 0, 0], [0, 4, 0], [2, 2, 1e-4]]), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    assert check_lattice(flat).passed is False
    assert check_lattice(flat).value < 0.1
    assert structural_validity(flat) is False
    nan = Structure(Lattice.cubic(4.0), ["Na", "Cl"], [[0, 0, 0], [np.nan, 0.5, 0.5]])
    assert check_lattice(nan).passed is False


# --- charge ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("formula", "valid"),
    [
        ("NaCl", True),
        ("LiFePO4", True),
        ("Fe", True),  # single element
        ("Cu3Au", True),  # all metals: alloy
        ("Nd4Sc4O12", True),
        ("Nd4Sc4O11", False),  # one oxygen short
        ("Al2O5", False),
        ("Li3O", False),
    ],
)
def test_smact_validity_rule(formula, valid):
    assert smact_validity(formula) is valid


def test_smact_counts_are_reduced_by_gcd():
    assert smact_validity("Nd8Sc8O24") == smact_validity("NdScO3") is True


def test_charge_imbalanced_oxide_fails(oxide):
    broken = oxide.copy()
    broken.remove_sites([next(i for i, site in enumerate(broken) if site.specie.symbol == "O")])
    assert broken.composition.reduced_formula == "Nd4Sc4O11"
    result = check_charge(broken)
    assert result.passed is False
    # pymatgen's second opinion is reported (here a mixed-valence guess), not used for the verdict
    assert "pymatgen_oxidation_states" in result.details
    good = check_charge(oxide)
    assert good.passed is True
    assert good.details["pymatgen_oxidation_states"] == {"Nd": 3.0, "Sc": 3.0, "O": -2.0}


# --- symmetry -------------------------------------------------------------------------------


def test_symmetry_of_real_structure(oxide):
    result = check_symmetry(oxide)
    assert result.passed is True
    assert result.value == 62
    assert result.details["is_p1"] is False
    assert check_symmetry(oxide, intended=62).passed is True
    assert check_symmetry(oxide, intended=225).passed is False


def test_distorted_cell_reads_as_p1(oxide):
    rng = np.random.default_rng(0)
    distorted = Structure(
        Lattice(oxide.lattice.matrix + rng.normal(0, 0.3, (3, 3))),
        oxide.species,
        oxide.cart_coords + rng.normal(0, 0.3, (len(oxide), 3)),
        coords_are_cartesian=True,
    )
    result = check_symmetry(distorted, intended=62)
    assert result.value == 1
    assert result.details["is_p1"] is True
    assert result.passed is False


# --- composition ----------------------------------------------------------------------------


def test_composition_reduced_and_exact(oxide):
    assert check_composition(oxide).passed is None  # not applicable without a formula
    assert check_composition(oxide, "NdScO3").passed is True
    assert check_composition(oxide, "NdScO3", exact=True).passed is False
    assert check_composition(oxide, "Nd4Sc4O12", exact=True).passed is True
    assert check_composition(oxide, "NdScO2").passed is False
    assert check_composition(oxide, "not a formula!").passed is False


# --- report and batch -----------------------------------------------------------------------


def test_report_shape_and_intent(oxide):
    report = validate(oxide, Intent(spacegroup=62, formula="NdScO3"))
    d = report.as_dict()
    assert set(d) == {"pass", "checks"}
    assert set(d["checks"]) == set(CHECK_NAMES)
    assert d["pass"] is True
    assert d["checks"]["symmetry"]["spacegroup"] == 62
    assert d["checks"]["distance"]["value"] == pytest.approx(check_distance(oxide).value)
    json.dumps(d)  # serialisable as is
    # composition N/A without intent, and not counted against the overall verdict
    plain = validate(oxide)
    assert plain.checks["composition"].applicable is False
    assert plain.passed is True
    assert validate(oxide, Intent(formula="NaCl")).passed is False


def test_validate_never_raises_on_unusable_input(oxide):
    disordered = oxide.copy()
    disordered.replace(0, {"Nd": 0.5, "Sc": 0.5})
    for bad in (disordered, Structure(Lattice.cubic(3.0), [], []), "not a structure"):
        report = validate(bad)
        assert report.passed is False
        assert report.checks["distance"].passed is False
        json.dumps(report.as_dict())


def test_ground_truth_sample_is_valid(mpts52_records):
    structures = [r.structure for r in mpts52_records]
    batch = validate_many(structures, workers=1, progress=False)
    assert batch.summary["n"] == len(structures) == 40
    assert batch.summary["distance"] == batch.summary["lattice"] == 1.0
    assert all(structural_validity(s) for s in structures)
    smact_rate = np.mean([smact_validity(s.composition) for s in structures])
    assert batch.summary["charge"] == pytest.approx(smact_rate)
    assert 0.75 <= smact_rate < 1.0  # published ~90% for Materials Project data; some real entries fail
    assert batch.summary["composition"] is None


def test_parallel_matches_serial(pool_records):
    structures = [r.structure for r in pool_records]
    intents = [Intent(spacegroup=62)] * len(structures)
    serial = validate_many(structures, intents, workers=1, progress=False)
    parallel = validate_many(structures, intents, workers=2, progress=False)
    assert [r.as_dict() for r in serial.reports] == [r.as_dict() for r in parallel.reports]
    assert serial.summary == parallel.summary
    # one structure of the 60 (one per space group) is Pnma
    assert serial.summary["symmetry"] == pytest.approx(1 / 60)
