"""How ``strategy="auto"`` orders the analogues' and the model's own candidates on one scale.

Both kinds of candidate are scored by the same function: the model's teacher-forced plan
log-probability under the composition prompt (`analogues.model_score`; the analogue
generator records it in ``trace["model"]``, plan search in ``trace["plan_search"]``). Each
list keeps its own order (analogues: the combined analogue ranking; the model's: plan
log-prob), and the two are merged head to head: the model's next candidate goes first when
its plan log-prob beats the next analogue's by more than ``margin`` nats, i.e. when the
model is confident and the analogue disagrees. A candidate without a score (its structure
has no sequence) never displaces the other list's head. ``margin`` = inf is the analogues-first
order.

The margin is a calibration of one model against one kind of corpus, fitted on validation
crystals (`benchmarks/bench_auto_margin.py`), never on test crystals: the shipped model on the
pool's held-out MPTS-52 rows wants its analogues (no margin lets its own plans add a match
there), the model fine-tuned on Perov-5 wants its own plans on Perov-5 validation; no single
margin serves both (docs/analogues.md). A model directory may carry its own fitted margin in
``auto_ranking.json`` (``{"margin": ...}``), which `CrystalGenerator.from_pretrained` reads.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from crystalgen.distinct import distinct_results
from crystalgen.results import GenerationResult

#: nats; the shipped model's margin. benchmarks/bench_auto_margin.py on the pool's held-out MPTS-52
#: validation rows (docs/results/auto_margin/mpts52_fit.json) finds every margin from +8 up, infinity
#: included, at the analogues' own rate, so the default is the analogues-first order, which also
#: spares sampling the model for a composition with n analogues (`needs_model`)
DEFAULT_MARGIN = math.inf
#: a model directory's own fitted margin
MARGIN_FILE = "auto_ranking.json"


@dataclass(frozen=True)
class AutoRanking:
    """margin: nats of plan log-prob by which the model's own candidate must beat the
    analogue it displaces (math.inf: every analogue before every model candidate)."""

    margin: float = DEFAULT_MARGIN

    def as_dict(self) -> dict[str, float | None]:
        return {"margin": None if math.isinf(self.margin) else self.margin}

    @classmethod
    def for_model(cls, directory: str | Path | None) -> "AutoRanking":
        """The margin fitted for the model in `directory` (its MARGIN_FILE), else the default."""
        path = Path(directory) / MARGIN_FILE if directory is not None else None
        if path is None or not path.is_file():
            return cls()
        margin = json.loads(path.read_text()).get("margin")
        return cls(math.inf if margin is None else float(margin))


def needs_model(ranking: AutoRanking, n_analogues: int, n: int) -> bool:
    """Must ``auto`` sample the model for a composition with ``n_analogues`` of ``n`` wanted?
    Not when analogues fill every slot and no model candidate can displace one."""
    return n_analogues < n or ranking.margin != math.inf


def plan_log_prob(result: GenerationResult) -> float | None:
    """The model's plan log-prob of a candidate as its trace records it (None: unscored)."""
    trace = result.trace or {}
    for key in ("model", "plan_search"):
        note = trace.get(key)
        if isinstance(note, dict) and note.get("plan_log_prob") is not None:
            return float(note["plan_log_prob"])
    return None


def _model_first(model: GenerationResult, analogue: GenerationResult, margin: float) -> bool:
    lm, la = plan_log_prob(model), plan_log_prob(analogue)
    return lm is not None and la is not None and lm - la > margin


def merge(analogue: Sequence[GenerationResult], model: Sequence[GenerationResult], n: int,
          ranking: AutoRanking | None = None) -> list[GenerationResult]:
    """The first `n` distinct candidates of the two ranked lists merged head to head (see
    the module docstring): a candidate that repeats one kept from the other side (or the
    model's own) is skipped. Each chosen candidate's trace says which side won and by how much."""
    margin = (ranking or AutoRanking()).margin
    merged: list[GenerationResult] = []
    i = j = 0
    while i < len(analogue) or j < len(model):
        if i < len(analogue) and (j >= len(model) or not _model_first(model[j], analogue[i], margin)):
            chosen, other, i = analogue[i], model[j] if j < len(model) else None, i + 1
        else:
            chosen, other, j = model[j], analogue[i] if i < len(analogue) else None, j + 1
        _note(chosen, other, margin)
        merged.append(chosen)
    return distinct_results(merged, n, exempt=_both_analogues)


def _both_analogues(a: GenerationResult, b: GenerationResult) -> bool:
    """The analogue generator keeps its own candidates apart (within one space group)."""
    return all((r.trace or {}).get("strategy") == "analogue" for r in (a, b))


def _note(chosen: GenerationResult, other: GenerationResult | None, margin: float) -> None:
    if chosen.trace is None or other is None:
        return
    mine, theirs = plan_log_prob(chosen), plan_log_prob(other)
    source = "analogue" if chosen.trace.get("strategy") == "analogue" else "model"
    rival = "model's own candidate" if source == "analogue" else "analogue"
    chosen.trace["auto"] = {"source": source, "plan_log_prob": mine, "rival_plan_log_prob": theirs,
                            "margin": None if math.isinf(margin) else margin}
    if "text" in chosen.trace and mine is not None and theirs is not None:
        chosen.trace["text"] += (f"\nauto: {source} chosen, plan log-prob {mine:.2f} against the {rival}'s "
                                 f"{theirs:.2f} (the model wins by more than {margin:g})")
