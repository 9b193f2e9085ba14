"""The physical distance verdict: covalent-radius ratio, calibrated on real crystals; CDVAE rule kept beside it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ase.data import atomic_numbers, covalent_radii
from pymatgen.core import Structure

from crystalgen.validators import (
    MIN_COVALENT_RATIO,
    pair_min_distance,
    physical_validity,
    structural_validity,
    validate,
    validate_many,
)
from crystalgen.validators.distance import min_distances


def _squeezed_to(structure, d_target: float):
    """The same crystal, isotropically compressed until its shortest bond is ``d_target`` Å."""
    d_min, _ = min_distances(structure)
    s = structure.copy()
    s.scale_lattice(structure.volume * (d_target / d_min) ** 3)
    return s


def test_squeezed_rock_salt_fails_physical_but_passes_cdvae():
    nacl = Structure.from_file(Path(__file__).parents[1] / "examples" / "reference" / "NaCl.cif")
    squeezed = _squeezed_to(nacl, 1.2)  # Na-Cl at 1.2 Å: over 0.5 Å, under 0.65 x (1.66 + 1.02) Å
    assert structural_validity(squeezed) and not physical_validity(squeezed)
    report = validate(squeezed)
    assert report.checks["distance"].passed is False and not report.passed
    assert report.checks["distance"].details["cdvae_pass"] is True
    assert report.checks["distance"].details["min_covalent_ratio"] == pytest.approx(1.2 / 2.68, abs=0.01)
    assert validate(nacl).checks["distance"].passed and physical_validity(nacl)
    summary = validate_many([nacl, squeezed], workers=1, progress=False).summary
    assert summary["structural_validity"] == 1.0 and summary["physical_validity"] == 0.5
    assert summary["distance"] == 0.5


def test_real_crystals_pass_the_physical_rule(mpts52_records, pool_records):
    structures = [r.structure for r in (*mpts52_records, *pool_records) if r.structure is not None]
    assert len(structures) >= 90
    assert all(physical_validity(s) for s in structures)
    ratios = [min_distances(s)[1] for s in structures]
    assert min(ratios) >= MIN_COVALENT_RATIO


def test_pair_min_distance_is_the_per_pair_form_of_the_rule():
    na, cl, h = atomic_numbers["Na"], atomic_numbers["Cl"], atomic_numbers["H"]
    assert pair_min_distance(na, cl) == pytest.approx(MIN_COVALENT_RATIO * (covalent_radii[na] + covalent_radii[cl]))
    assert pair_min_distance(h, h) == 0.5  # tiny radii: CDVAE's 0.5 Å floor
    grid = pair_min_distance(np.array([[na], [h]]), np.array([[cl, h]]))
    assert grid.shape == (2, 2) and grid[0, 0] == pair_min_distance(na, cl)
