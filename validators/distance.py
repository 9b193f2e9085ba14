"""Interatomic-distance check: are any two atoms closer than real crystals ever put them?

Two rules. The CDVAE rule (smallest minimum-image distance between two distinct sites
> 0.5 Å; a site's distance to its own periodic image is not counted) is kept for
``structural_validity`` and literature comparisons, but it passes Na-Cl at 0.58 Å.
The check's verdict is physical: every pair must also keep at least
``MIN_COVALENT_RATIO`` of the sum of its covalent radii. Real crystals do (calibrated
by ``benchmarks/calibrate_distance.py`` on MPTS-52 test crystals:
``docs/results/distance_calibration.json``).

:func:`periodic_sq_distances` is crystalgen's one periodic-distance computation: this
check and the sampler's distance guard (:mod:`crystalgen.generation.guard`) both use it.
"""

from __future__ import annotations

import itertools
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

#: fractional offsets of a cell and its 26 neighbours
IMAGES = np.array(list(itertools.product((-1, 0, 1), repeat=3)), np.float64)
#: pairs per block of :func:`periodic_sq_distances` (bounds its memory)
_BLOCK = 1 << 16
#: below this many pairs one broadcast over all 27 images is fastest, above it a loop over them
_LOOP_ABOVE = 512


def image_shifts(matrix: np.ndarray) -> np.ndarray:
    """(27, 3) Cartesian offsets (Å) of the cell and its 26 neighbours."""
    return IMAGES @ matrix


def periodic_sq_distances(frac_a: np.ndarray, frac_b: np.ndarray, matrix: np.ndarray,
                          shifts: np.ndarray | None = None) -> np.ndarray:
    """(len(a), len(b)) squared shortest distances (Å^2) between fractional points of a
    periodic cell (lattice vectors as rows of ``matrix``).

    The fractional difference is wrapped to its minimum image and then compared with the 26
    neighbouring images, as pymatgen's ``pbc_shortest_vectors`` does: exact for a reduced
    cell (:func:`min_distances` LLL-reduces first). ``shifts``: :func:`image_shifts` of
    ``matrix``, for callers that measure one cell many times. Small inputs (the sampler's
    guard) broadcast over the images at once, large ones loop over them; both evaluate
    ``(x + s_x)^2 + (y + s_y)^2 + (z + s_z)^2`` in the same order, so the result is the
    same to the bit whichever way it is computed.
    """
    shifts = image_shifts(matrix) if shifts is None else shifts
    out = np.empty((len(frac_a), len(frac_b)))
    rows = max(1, _BLOCK // max(len(frac_b), 1))
    for start in range(0, len(frac_a), rows):
        diff = frac_a[start:start + rows, None, :] - frac_b[None, :, :]
        diff -= np.round(diff)
        cart = diff @ matrix  # (rows, b, 3) at the fractional minimum image
        if cart.shape[0] * cart.shape[1] <= _LOOP_ABOVE:
            out[start:start + rows] = ((cart[:, :, None, :] + shifts) ** 2).sum(-1).min(-1)
            continue
        x, y, z = cart[..., 0], cart[..., 1], cart[..., 2]
        best = (x + shifts[0, 0]) ** 2 + (y + shifts[0, 1]) ** 2 + (z + shifts[0, 2]) ** 2
        for sx, sy, sz in shifts[1:]:
            np.minimum(best, (x + sx) ** 2 + (y + sy) ** 2 + (z + sz) ** 2, out=best)
        out[start:start + rows] = best
    return out


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
    lattice = Lattice(cell.matrix)
    frac = lattice.get_lll_frac_coords(cell.frac)
    dist = np.sqrt(periodic_sq_distances(frac, frac, lattice.lll_matrix))
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
