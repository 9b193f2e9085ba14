"""The combined ranking of analogue candidates: substitution, the model's scores, energy.

Score of candidate i (nats; higher is better):

    s_i = log p_sub,i + plan * plan_log_prob_i + values * value_log_lik_i
          + same_cell * [its primitive cell holds the target's cell] - energy * (E_i - E_min)

log p_sub: the substitution log-probability (`substitution.best_mapping`), with the
prototype prior's terms added where it ranked the candidates (`Candidate.score`); plan_log_prob and
value_log_lik: the model's teacher-forced scores (`model_score.ModelScore`); E: CHGNet's
energy per atom (eV/atom) where computed, E_min the lowest among the candidates (a
candidate without an energy counts as E_min when the energy weight is 0 and last otherwise).
Known compounds (the target's own formula) stay first, in their plain order. A candidate
without a model score (its structure has no sequence) keeps its place in the plain order;
the others are sorted by s into the remaining places. Default weights: plan, values, same_cell as fitted
(`benchmarks/bench_model_ranking.py`) on 100 held-out tuning crystals with the v2 model at
step 4500 (docs/results/model_ranking_val100_step4500.json; same_cell = 100 keeps same-cell
candidates first), energy as fitted on 200 with the CHGNet term (docs/results/model_ranking_val200.json;
used only when energies are computed, `AnalogueConfig.energy_top`). Re-fit them for another model.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from crystalgen.analogues.candidates import Candidate
from crystalgen.analogues.model_score import ModelScore


@dataclass(frozen=True)
class RankWeights:
    """Weights of the combined score (see the module docstring)."""

    plan: float = 0.1
    values: float = 0.03
    same_cell: float = 100.0
    energy: float = 100.0

    def as_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)


def features(candidate: Candidate, score: ModelScore | None, energy: float | None = None) -> dict[str, Any]:
    """The ranking inputs of one candidate, as `combined_order` reads them."""
    return {"log_prob": candidate.score, "known": candidate.known, "same_cell": candidate.z_ratio == 1,
            "plan_log_prob": None if score is None else score.plan_log_prob,
            "value_log_lik": None if score is None else score.value_log_lik,
            "energy": energy if energy is not None and math.isfinite(energy) else None}


def combined_scores(candidates: Sequence[Mapping[str, Any]], weights: RankWeights) -> list[float | None]:
    """s_i for every candidate with a model score, None for the others."""
    energies = [c["energy"] for c in candidates if c["energy"] is not None]
    e_min = min(energies) if energies else 0.0
    out: list[float | None] = []
    for c in candidates:
        if c["plan_log_prob"] is None:
            out.append(None)
            continue
        if weights.energy == 0:
            energy_term = 0.0
        else:
            energy_term = -math.inf if c["energy"] is None else -weights.energy * (c["energy"] - e_min)
        out.append(c["log_prob"] + weights.plan * c["plan_log_prob"] + weights.values * c["value_log_lik"]
                   + weights.same_cell * bool(c["same_cell"]) + energy_term)
    return out


def combined_order(candidates: Sequence[Mapping[str, Any]], weights: RankWeights) -> list[int]:
    """Indices of `candidates` (given in plain order) best first by the combined score."""
    scores = combined_scores(candidates, weights)
    movable = [i for i, s in enumerate(scores) if s is not None and not candidates[i]["known"]]
    ranked = sorted(movable, key=lambda i: (-scores[i], i))
    order = list(range(len(candidates)))
    for slot, i in zip(movable, ranked):
        order[slot] = i
    known = [i for i in order if candidates[i]["known"]]
    return known + [i for i in order if not candidates[i]["known"]]
