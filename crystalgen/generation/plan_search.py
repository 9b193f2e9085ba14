"""Best-of-N plan search for the model alone: of N sampled candidates per wanted one, keep
those whose plan the model finds most likely.

The plan's likelihood is the teacher-forced plan log-probability of
`analogues.model_score` (the summed log-probabilities of the plan tokens under the CSP
prompt), computed for all samples of a composition in one batched forward pass; it leaves
out the lattice and coordinate densities, which would otherwise dominate the sum. A sample
whose structure cannot be re-encoded ranks after the scored ones, in sampling order.
"""

from __future__ import annotations

from collections.abc import Sequence

from crystalgen.analogues.model_score import score_structures
from crystalgen.model import CrystalModel
from crystalgen.results import GenerationResult


def best_by_plan(model: CrystalModel, results: Sequence[GenerationResult], n: int) -> list[GenerationResult]:
    """The `n` results of highest plan log-probability, best first; each trace records it."""
    scores = score_structures(model, [r.structure for r in results])
    order = sorted(range(len(results)),
                   key=lambda i: (scores[i] is None, -scores[i].plan_log_prob if scores[i] is not None else 0.0, i))
    kept = []
    for rank, i in enumerate(order[:n]):
        result = results[i]
        score = scores[i]
        plan = None if score is None else round(score.plan_log_prob, 4)
        if result.trace is not None:
            result.trace["plan_search"] = {
                "sampled": len(results), "rank": rank + 1, "plan_log_prob": plan,
                "value_log_lik": None if score is None else round(score.value_log_lik, 4),
                "n_plan_tokens": None if score is None else score.n_plan_tokens}
            if "text" in result.trace and plan is not None:
                result.trace["text"] += f"\nplan search: best {rank + 1} of {len(results)} by plan log-prob {plan:.2f}"
        kept.append(result)
    return kept
