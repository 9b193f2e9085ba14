"""Interatomic-distance check: are any two atoms on top of each other?

Follows the CDVAE structural-validity rule: the smallest minimum-image distance
between two distinct sites must exceed 0.5 Å (a site's distance to its own
periodic image is not counted, as in CDVAE's padded distance matrix).
"""

from __future__ import annotations

import numpy as np
from ase.data import covalent_radii
from pymatgen.core import Lattice, Structure

from crystalgen.validators.cell import Cell, as_cell
from crystalgen.validators.result import CheckResult

MIN_DISTANCE_A = 0.5


def min_distances(structure: Structure | Cell) -> tuple[float, float]:
    """Smallest minimum-image distance (Å) and smallest distance / (r_cov_i + r_cov_j).

    Returns (inf, inf) for a one-site cell, which has no pair to measure.
    """
    cell = as_cell(structure)
    if len(cell.numbers) < 2:
        return float("inf"), float("inf")
    if not np.isfinite(cell.matrix).all() or abs(np.linalg.det(cell.matrix)) < 1e-8:
        # a flat or non-finite cell has no minimum image (and LAPACK would complain)
        raise ValueError("degenerate lattice: zero or non-finite volume")
    dist = Lattice(cell.matrix).get_all_distances(cell.frac, cell.frac)
    np.fill_diagonal(dist, np.inf)
    radii = covalent_radii[cell.numbers]
    ratio = dist / (radii[:, None] + radii[None, :])
    return float(dist.min()), float(ratio.min())


def check_distance(structure: Structure | Cell) -> CheckResult:
    """Pass if the smallest interatomic distance exceeds 0.5 Å; never raises."""
    try:
        cell = as_cell(structure)
        d_min, ratio = min_distances(cell)
    except Exception as exc:  # a malformed structure fails the check instead of raising
        return CheckResult(False, None, {"error": f"{type(exc).__name__}: {exc}"})
    if not np.isfinite(d_min) and len(cell.numbers) >= 2:
        return CheckResult(False, None, {"error": "non-finite distances"})
    value = d_min if np.isfinite(d_min) else None
    ratio_value = ratio if np.isfinite(ratio) else None
    return CheckResult(bool(value is None or d_min > MIN_DISTANCE_A), value, {"min_covalent_ratio": ratio_value})
