"""The prototype prior: crystal structures repeat, so an analogue whose structure type is
common in the corpus, or shared by many of the query's analogues, is the likelier answer.

Score of a candidate that is not the target compound itself (nats; higher is better):

    s = log p_sub + popularity * log(n_corpus) + votes * log(n_query) + vote_mass * log(sum_j p_sub,j)

n_corpus: corpus entries with the candidate's prototype key (`index.prototype_key`:
anonymous formula, space group, Wyckoff letters per element); n_query and sum_j p_sub,j:
the query's candidates of that prototype and their summed substitution probabilities
(`prototype_votes`). The plain order's structure stays: analogues whose primitive cell
holds the target's cell first, known compounds first among those; the prior re-orders the
rest: the best candidate of each prototype (highest log p_sub) by s, then the others by s (they
would mostly repeat a crystal already listed, and K > 1 wants distinct ones), ties in plain order. Default weights: fitted by grid search on
held-out tuning crystals, kept after cross-validation (`benchmarks/bench_analogue_misses.py`, docs/analogues.md).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PriorWeights:
    """Weights of the prototype prior (see the module docstring); all 0 is the plain order."""

    popularity: float = 0.0
    votes: float = 0.0
    vote_mass: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)

    @property
    def off(self) -> bool:
        return self.popularity == 0 and self.votes == 0 and self.vote_mass == 0


def prototype_votes(candidates: Sequence[Mapping[str, Any]]) -> dict[str, tuple[int, float]]:
    """Per prototype key: (how many of the candidates have it, log of their summed substitution p)."""
    count: dict[str, int] = {}
    mass: dict[str, float] = {}
    for c in candidates:
        key = c["prototype"]
        count[key] = count.get(key, 0) + 1
        mass[key] = mass.get(key, 0.0) + math.exp(c["log_prob"])
    return {k: (count[k], math.log(mass[k]) if mass[k] > 0 else -math.inf) for k in count}


def representatives(candidates: Sequence[Mapping[str, Any]]) -> list[bool]:
    """Whether each candidate is the best of its prototype (highest log p, then the given order)."""
    best: dict[str, int] = {}
    for i, c in enumerate(candidates):
        j = best.get(c["prototype"])
        if j is None or c["log_prob"] > candidates[j]["log_prob"]:
            best[c["prototype"]] = i
    return [best[c["prototype"]] == i for i, c in enumerate(candidates)]


def prior_scores(candidates: Sequence[Mapping[str, Any]], weights: PriorWeights) -> list[float]:
    """s for each candidate (each needs log_prob, popularity, votes, vote_mass)."""
    return [c["log_prob"] + weights.popularity * math.log(max(c["popularity"], 1))
            + weights.votes * math.log(max(c["votes"], 1)) + (weights.vote_mass * c["vote_mass"] if weights.vote_mass else 0.0)
            for c in candidates]


def prior_order(candidates: Sequence[Mapping[str, Any]], weights: PriorWeights) -> list[int]:
    """Indices of `candidates` (given in plain order) best first: same cell first, known
    compounds first (in their plain order), then the best candidate of each prototype by s,
    then the others by s."""
    scores = prior_scores(candidates, weights)
    rep = representatives(candidates)
    return sorted(range(len(candidates)), key=lambda i: (not candidates[i]["same_cell"], not candidates[i]["known"],
                                                         (False, 0.0) if candidates[i]["known"] else (not rep[i], -scores[i]), i))


#: the default (`AnalogueConfig.prior`), as fitted on the tuning crystals (docs/analogues.md)
DEFAULT_PRIOR = PriorWeights(vote_mass=1.0)
