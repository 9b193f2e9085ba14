"""CHGNet single-point energy per atom as a ranking term for analogue candidates.

Score of candidate i among the top ones: s_i = log p_i - w * (E_i - min_j E_j), with log p_i
the substitution log-probability (nats), E_i CHGNet's energy per atom (eV/atom, no relax)
and w = `weight` nats per eV/atom; higher is better. A candidate CHGNet cannot evaluate
gets E = +inf (ranked last among the scored ones). CHGNet (optional dependency
`crystalgen[chgnet]`) ships its weights in its wheel, so this works offline.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

from pymatgen.core import Structure


@lru_cache(maxsize=1)
def chgnet_model():
    """The pretrained CHGNet, loaded once per process."""
    try:
        from chgnet.model import CHGNet
    except ImportError as err:  # optional dependency
        raise ImportError("energy ranking needs CHGNet: pip install 'crystalgen[chgnet]'") from err
    return CHGNet.load(verbose=False)


class EnergyRanker:
    """Energies per atom from CHGNet and the combined ordering."""

    def __init__(self, weight: float = 10.0, batch_size: int = 16):
        self.weight = weight
        self.batch_size = batch_size

    def energies(self, structures: Sequence[Structure]) -> list[float]:
        if not structures:
            return []
        model = chgnet_model()
        try:
            preds = model.predict_structure(list(structures), task="e", batch_size=self.batch_size)
            preds = preds if isinstance(preds, list) else [preds]
            return [float(p["e"]) for p in preds]
        except Exception:  # one bad cell fails the batch: score them one by one
            out = []
            for s in structures:
                try:
                    out.append(float(model.predict_structure(s, task="e")["e"]))
                except Exception:
                    out.append(math.inf)
            return out

    def order(self, candidates, energies: Sequence[float]) -> list[int]:
        """Indices of `candidates` (with `.score`, the substitution log p plus any prior) by descending combined score."""
        finite = [e for e in energies if math.isfinite(e)]
        e_min = min(finite) if finite else 0.0
        scores = [c.score - self.weight * (e - e_min) if math.isfinite(e) else -math.inf
                  for c, e in zip(candidates, energies)]
        return sorted(range(len(candidates)), key=lambda i: (-scores[i], i))
