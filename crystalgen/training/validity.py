"""The periodic "sample -> validate" pass rate reported during training.

Decoding to a structure and the validators need pymatgen, which the GPU training box
may lack: then the check is skipped with a single log line and training goes on.
"""

from __future__ import annotations

import logging

import numpy as np

from crystalgen.model import CrystalModel
from crystalgen.sampling import generate_batch

log = logging.getLogger(__name__)
_warned = False


def sample_pass_rate(
    model: CrystalModel, prefixes: list[np.ndarray], seed: int, temperature: float = 1.0
) -> dict[str, float] | None:
    """Sample one crystal per prefix and validate it; None when pymatgen is missing.

    Returns ``completed`` (grammar reached ``<eos>``), ``decoded`` (became a structure) and
    ``pass_rate`` (passed every applicable validator), each as a fraction of the prefixes.
    """
    global _warned
    try:
        from crystalgen.representation.sequence import DecodeError, decode
        from crystalgen.validators import validate
    except ImportError as err:
        if not _warned:
            log.warning("sample -> validate check skipped (%s)", err)
            _warned = True
        return None
    samples = generate_batch(model, prefixes, temperature=temperature, seed=seed)
    completed = decoded = passed = 0
    for sample in samples:
        if sample is None:
            continue
        completed += 1
        try:
            structure = decode(sample.tokens, sample.values).to_structure()
        except (DecodeError, ValueError, np.linalg.LinAlgError):
            continue
        decoded += 1
        passed += bool(validate(structure).passed)
    n = max(len(prefixes), 1)
    return {"completed": completed / n, "decoded": decoded / n, "pass_rate": passed / n}
