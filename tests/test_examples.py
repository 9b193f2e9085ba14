"""The shipped example CIFs are the forms users expect (checked with spglib)."""

from __future__ import annotations

from pathlib import Path

import pytest
import spglib
from pymatgen.core import Structure

from crystalgen.validators import physical_validity

EXAMPLES = Path(__file__).parents[1] / "examples"


@pytest.mark.parametrize(
    "path, formula, number",
    [
        ("reference/NaCl.cif", "NaCl", 225),
        ("reference/LiFePO4.cif", "LiFePO4", 62),
        ("reference/SrTiO3.cif", "SrTiO3", 221),
        ("other_polymorphs/LiFePO4_Cmcm_mp-18951.cif", "LiFePO4", 63),
        ("other_polymorphs/SrTiO3_I4mcm_mp-4651.cif", "SrTiO3", 140),
    ],
)
def test_example_space_groups(path, formula, number):
    s = Structure.from_file(EXAMPLES / path)
    cell = (s.lattice.matrix, s.frac_coords, [site.specie.Z for site in s])
    dataset = spglib.get_symmetry_dataset(cell, symprec=0.01)
    assert s.composition.reduced_formula == formula
    assert dataset.number == number
    assert physical_validity(s)


def test_readme_screening_funnel_is_the_result_file():
    """The README's funnel table is ``docs/results/screen_model_funnel.csv``, row for row."""
    root = Path(__file__).parents[1]
    rows = [line.split(",") for line in (root / "docs/results/screen_model_funnel.csv").read_text().split()]
    readme = (root / "README.md").read_text()
    table = readme[readme.index("docs/results/screen_model_funnel.csv"):].split("\n\n")[1]
    cells = [[c.strip().strip("*") for c in line.strip("|").split("|")] for line in table.splitlines()]
    assert cells[0] == rows[0] and cells[2:] == rows[1:]
