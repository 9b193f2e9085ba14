"""CDVAE's structure and composition fingerprints for COV-R / COV-P.

Structure: matminer's CrystalNNFingerprint ("ops" preset) averaged over sites.
Composition: matminer's Magpie ElementProperty, scaled by CDVAE's fixed means/stds.
matminer is an optional dependency (`pip install crystalgen[eval]`); without it,
`fingerprint_unavailable_reason()` says why coverage is reported as null.
"""

from __future__ import annotations

import importlib.util
import warnings
from functools import lru_cache

import numpy as np
from pymatgen.core import Composition, Structure

from crystalgen.evaluation.cdvae_constants import COMP_SCALER_MEANS, COMP_SCALER_STDS


def fingerprint_unavailable_reason() -> str | None:
    """None when matminer is importable, else the reason coverage cannot be computed."""
    if importlib.util.find_spec("matminer") is None:
        return "matminer is not installed (pip install 'crystalgen[eval]')"
    return None


@lru_cache(maxsize=1)
def _featurizers():
    from matminer.featurizers.composition.composite import ElementProperty
    from matminer.featurizers.site.fingerprint import CrystalNNFingerprint

    return CrystalNNFingerprint.from_preset("ops"), ElementProperty.from_preset("magpie")


def structure_fingerprint(structure: Structure) -> np.ndarray | None:
    """Site-averaged CrystalNN "ops" fingerprint; None when CrystalNN fails (CDVAE then
    drops the crystal from coverage, as we do)."""
    site_fp, _ = _featurizers()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fps = [site_fp.featurize(structure, i) for i in range(len(structure))]
    except Exception:
        return None
    return np.asarray(fps, dtype=float).mean(axis=0)


def composition_fingerprint(composition: Composition) -> np.ndarray:
    """Magpie composition features, scaled as CDVAE scales them (NaN -> 0)."""
    _, comp_fp = _featurizers()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw = np.asarray(comp_fp.featurize(Composition(composition).element_composition), dtype=float)
    scaled = (raw - np.asarray(COMP_SCALER_MEANS)) / np.asarray(COMP_SCALER_STDS)
    return np.where(np.isnan(scaled), 0.0, scaled)


def fingerprints(structure: Structure) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(structure fingerprint, composition fingerprint); both None if the structure one fails."""
    struct_fp = structure_fingerprint(structure)
    if struct_fp is None:
        return None, None
    return struct_fp, composition_fingerprint(structure.composition)
