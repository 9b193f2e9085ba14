"""Lattice check: is the cell a real, non-degenerate 3-D cell?"""

from __future__ import annotations

import numpy as np
from ase.data import atomic_masses
from pymatgen.core import Structure

from crystalgen.validators.cell import Cell, as_cell
from crystalgen.validators.result import CheckResult

MIN_VOLUME_A3 = 0.1
_AMU_PER_A3_TO_G_PER_CM3 = 1.66053906660


def lattice_parameters(matrix: np.ndarray) -> tuple[float, float, float, float, float, float]:
    """(a, b, c) in Å and (alpha, beta, gamma) in degrees from the 3x3 row-vector matrix."""
    lengths = np.linalg.norm(matrix, axis=1)
    angles = []
    for i, j in ((1, 2), (0, 2), (0, 1)):
        cos = np.dot(matrix[i], matrix[j]) / (lengths[i] * lengths[j])
        angles.append(float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))))
    return (float(lengths[0]), float(lengths[1]), float(lengths[2]), *angles)


def check_lattice(structure: Structure | Cell) -> CheckResult:
    """Pass if all numbers are finite, angles lie in (0°, 180°) and the volume exceeds 0.1 Å^3.

    The volume is |det| of the lattice matrix, so it is also what rules out flat
    cells whose angles are individually valid but cannot close (alpha+beta+gamma >= 360°).
    """
    try:
        cell = as_cell(structure)
        matrix, frac = cell.matrix, cell.frac
        if not (np.all(np.isfinite(matrix)) and np.all(np.isfinite(frac))):
            return CheckResult(False, None, {"error": "non-finite lattice or coordinates"})
        volume = float(abs(np.linalg.det(matrix)))
        params = lattice_parameters(matrix)
        angles_ok = all(0.0 < ang < 180.0 for ang in params[3:]) and all(p > 0 for p in params[:3])
        mass = float(atomic_masses[cell.numbers].sum())
        density = mass * _AMU_PER_A3_TO_G_PER_CM3 / volume if volume > 0 else None
    except Exception as exc:
        return CheckResult(False, None, {"error": f"{type(exc).__name__}: {exc}"})
    return CheckResult(
        bool(angles_ok and volume > MIN_VOLUME_A3),
        volume,
        {"density_g_cm3": density, "abc": list(params[:3]), "angles": list(params[3:])},
    )
