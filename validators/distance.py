"""Interatomic-distance check: are any two atoms closer than real crystals ever put them?

Two rules. The CDVAE rule (smallest minimum-image distance between two distinct sites
> 0.5 Å; a site's distance to its own periodic image is not counted) is kept for
``structural_validity`` and literature comparisons, but it passes Na-Cl at 0.58 Å.
The check's verdict is physical: every pair must also keep at least
``MIN_COVALENT_RATIO`` of the sum of its covalent radii. Real crystals do (calibrated
by ``benchmarks/calibrate_distance.py`` on MPTS-52 test crystals:
``docs/results/distance_calibration.json``).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from ase.data import covalent_radii
from pymatgen.core import Lattice, Structure

from crystalgen.validators.cell import Cell, as_cell
from crystalgen.validators.result import CheckResult

#: CDVAE's structural-validity rule, in Å
MIN_DISTANCE_A = 0.5
#: physical rule: smallest distance / (r_cov_i + r_cov_j) must be at least this
MIN_COVALENT_RATIO = 0.65


def pair_min_distance(z_i: int | np.ndarray, z_j: int | np.ndarray, ratio: float = MIN_COVALENT_RATIO,
                      floor: float = MIN_DISTANCE_A) -> np.ndarray:
    """Closest approach (Å) the physical rule allows between elements ``z_i`` and ``z_j``:
    ``max(floor, ratio * (r_cov_i + r_cov_j))``; broadcasts over arrays of atomic numbers."""
    radii = covalent_radii[np.asarray(z_i)] + covalent_radii[np.asarray(z_j)]
    return np.maximum(floor, ratio * radii)


@lru_cache(maxsize=8)
def pair_limits(ratio: float = MIN_COVALENT_RATIO, floor: float = MIN_DISTANCE_A) -> np.ndarray:
    """:func:`pair_min_distance` for every pair of elements, as a read-only matrix indexed
    by atomic numbers (what the sampler's distance guard takes)."""
    z = np.arange(len(covalent_radii))
    limits = pair_min_distance(z[:, None], z[None, :], ratio, floor)
    limits.setflags(write=False)
    return limits


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
    """Pass if no pair is closer than :func:`pair_min_distance`; never raises.

    ``details["cdvae_pass"]`` is the CDVAE verdict alone (smallest distance > 0.5 Å).
    """
    try:
        cell = as_cell(structure)
        d_min, ratio = min_distances(cell)
    except Exception as exc:  # a malformed structure fails the check instead of raising
        return CheckResult(False, None, {"error": f"{type(exc).__name__}: {exc}", "cdvae_pass": False})
    if not np.isfinite(d_min) and len(cell.numbers) >= 2:
        return CheckResult(False, None, {"error": "non-finite distances", "cdvae_pass": False})
    value = d_min if np.isfinite(d_min) else None
    ratio_value = ratio if np.isfinite(ratio) else None
    cdvae = bool(value is None or d_min > MIN_DISTANCE_A)
    physical = cdvae and (ratio_value is None or ratio_value >= MIN_COVALENT_RATIO)
    return CheckResult(physical, value, {"min_covalent_ratio": ratio_value, "cdvae_pass": cdvae})
