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

With ``energy_top`` > 0 the top ``energy_top`` of each list are ranked together instead, by

    s = plan_log_prob - margin * [the model's own candidate] - energy_weight * (E - E_min)

with E CHGNet's single-point energy per atom (`analogues.energy`, eV/atom) and E_min the
lowest of the pooled candidates: energy decides where the plan log-probs cannot tell the
model's arrangement from the analogue's (an infinite margin keeps the sides apart, energy
orders within each). The rest follow in the head-to-head order.

K > 1: the analogue list's hits sit in its first few ranks while the model finds other
crystals, so ``model_share`` of the K slots (rounded) are kept for the model's own candidates:
the first K minus those come from the merged order, then the model's best not yet kept
(plan log-prob order), then the merged order fills any slot left. Every step skips a
candidate that StructureMatcher fits to a kept one (`distinct`).

The margin, share and energy weight are calibrations of one model against one kind of corpus, fitted on validation
crystals (`benchmarks/bench_auto_margin.py`, `bench_auto_share.py`, `bench_auto_energy.py`), never on test crystals: the shipped model on the
pool's held-out MPTS-52 rows wants its analogues (no margin lets its own plans add a match
there), the model fine-tuned on Perov-5 wants its own plans on Perov-5 validation; no single
margin serves both (docs/analogues.md). A model directory may carry its own fitted values in
``auto_ranking.json`` (``{"margin": ..., "model_share": ...}``), which `CrystalGenerator.from_pretrained` reads.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pymatgen.core import Structure

from crystalgen.analogues.energy import EnergyRanker
from crystalgen.distinct import extend_distinct
from crystalgen.results import GenerationResult

#: nats; the shipped model's margin. benchmarks/bench_auto_margin.py on the pool's held-out MPTS-52
#: validation rows (docs/results/auto_margin/mpts52_fit.json) finds every margin from +8 up, infinity
#: included, at the analogues' own rate, so the default is the analogues-first order, which also
#: spares sampling the model for a composition with n analogues (`needs_model`)
DEFAULT_MARGIN = math.inf
#: the share of K > 1 slots kept for the model's own candidates (0: none kept)
DEFAULT_MODEL_SHARE = 0.0
#: a model directory's own fitted values
MARGIN_FILE = "auto_ranking.json"

#: energies per atom (eV/atom, inf where none) of structures
EnergyFn = Callable[[Sequence[Structure]], Sequence[float]]


@dataclass(frozen=True)
class AutoRanking:
    """margin: nats of plan log-prob by which the model's own candidate must beat the
    analogue it displaces (math.inf: every analogue before every model candidate);
    model_share: the share of K > 1 slots kept for the model's own distinct candidates;
    energy_top: rank this many of each side's top candidates by plan log-prob and CHGNet
    energy together (0: off); energy_weight: nats per eV/atom in that score."""

    margin: float = DEFAULT_MARGIN
    model_share: float = DEFAULT_MODEL_SHARE
    energy_top: int = 0
    energy_weight: float = 10.0

    def as_dict(self) -> dict[str, float | None]:
        return {"margin": None if math.isinf(self.margin) else self.margin, "model_share": self.model_share,
                "energy_top": self.energy_top, "energy_weight": self.energy_weight if self.energy_top else None}

    @classmethod
    def for_model(cls, directory: str | Path | None, **changes) -> "AutoRanking":
        """The values fitted for the model in `directory` (its MARGIN_FILE), else the defaults;
        `changes` (None values ignored) override either."""
        path = Path(directory) / MARGIN_FILE if directory is not None else None
        fitted = json.loads(path.read_text()) if path is not None and path.is_file() else {}
        values = {"margin": fitted.get("margin", DEFAULT_MARGIN), "model_share": fitted.get("model_share", DEFAULT_MODEL_SHARE)}
        values.update({k: v for k, v in changes.items() if v is not None})
        values["margin"] = math.inf if values["margin"] is None else float(values["margin"])
        return cls(**values)

    def reserved_slots(self, n: int) -> int:
        """Slots of a K = n answer kept for the model's own candidates."""
        return 0 if n <= 1 else min(n, round(self.model_share * n))

    def candidates(self, n: int) -> int:
        """How many candidates each side should propose for a K = n answer."""
        return max(n, self.energy_top)


def needs_model(ranking: AutoRanking, n_analogues: int, n: int) -> bool:
    """Must ``auto`` sample the model for a composition with ``n_analogues`` of ``n`` wanted?
    Not when analogues fill every slot and no model candidate can displace one."""
    return (n_analogues < n or ranking.margin != math.inf or ranking.energy_top > 0
            or ranking.reserved_slots(n) > 0)


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
          ranking: AutoRanking | None = None, energy: EnergyFn | None = None) -> list[GenerationResult]:
    """The first `n` distinct candidates of the two ranked lists (see the module docstring):
    a candidate that repeats one kept from the other side (or the model's own) is skipped.
    Each chosen candidate's trace says which side won and why. `energy`: energies per atom
    for the energy term (default: CHGNet), used when ``ranking.energy_top`` > 0."""
    ranking = ranking or AutoRanking()
    if ranking.energy_top > 0:
        merged = _by_energy(analogue, model, ranking, energy or EnergyRanker().energies)
    else:
        merged = _head_to_head(analogue, model, ranking.margin)
    reserve = min(ranking.reserved_slots(n), len(model))
    kept: list[GenerationResult] = []
    extend_distinct(kept, merged, n - reserve, exempt=_both_analogues)
    before = len(kept)
    extend_distinct(kept, model, n, exempt=_both_analogues)
    for result in kept[before:]:
        _note_reserved(result, ranking)
    extend_distinct(kept, merged, n, exempt=_both_analogues)
    return kept


def _head_to_head(analogue: Sequence[GenerationResult], model: Sequence[GenerationResult],
                  margin: float) -> list[GenerationResult]:
    merged: list[GenerationResult] = []
    i = j = 0
    while i < len(analogue) or j < len(model):
        if i < len(analogue) and (j >= len(model) or not _model_first(model[j], analogue[i], margin)):
            chosen, other, i = analogue[i], model[j] if j < len(model) else None, i + 1
        else:
            chosen, other, j = model[j], analogue[i] if i < len(analogue) else None, j + 1
        _note(chosen, other, margin)
        merged.append(chosen)
    return merged


def energy_scores(plan_log_probs: Sequence[float | None], is_model: Sequence[bool], energies: Sequence[float],
                  margin: float, weight: float) -> list[tuple[int, float]]:
    """Sort keys (tier, score), lower tier first and higher score first within a tier: the
    module docstring's s, with an infinite margin as a tier (that side after the other) and
    a candidate without a plan log-prob or an energy last in its tier."""
    finite = [e for e in energies if math.isfinite(e)]
    e_min = min(finite) if finite else 0.0
    out = []
    for lp, own, e in zip(plan_log_probs, is_model, energies):
        tier = int(math.isinf(margin) and (own == (margin > 0)))
        bias = margin if own and math.isfinite(margin) else 0.0
        score = lp - bias - weight * (e - e_min) if lp is not None and math.isfinite(e) else -math.inf
        out.append((tier, score))
    return out


def _by_energy(analogue: Sequence[GenerationResult], model: Sequence[GenerationResult], ranking: AutoRanking,
               energy: EnergyFn) -> list[GenerationResult]:
    top = ranking.energy_top
    pool = list(analogue[:top]) + list(model[:top])
    is_model = [False] * len(analogue[:top]) + [True] * len(model[:top])
    energies = [float(e) for e in energy([r.structure for r in pool])] if pool else []
    lps = [plan_log_prob(r) for r in pool]
    keys = energy_scores(lps, is_model, energies, ranking.margin, ranking.energy_weight)
    order = sorted(range(len(pool)), key=lambda i: (keys[i][0], -keys[i][1], i))
    for i in order:
        _note_energy(pool[i], is_model[i], lps[i], energies[i], keys[i][1], ranking)
    return [pool[i] for i in order] + _head_to_head(analogue[top:], model[top:], ranking.margin)


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


def _note_energy(result: GenerationResult, own: bool, lp: float | None, energy: float, score: float,
                 ranking: AutoRanking) -> None:
    if result.trace is None:
        return
    source = "model" if own else "analogue"
    result.trace["auto"] = {"source": source, "plan_log_prob": lp, "energy_per_atom": energy,
                            "score": score if math.isfinite(score) else None,
                            "margin": None if math.isinf(ranking.margin) else ranking.margin,
                            "energy_weight": ranking.energy_weight}
    if "text" in result.trace and lp is not None and math.isfinite(energy):
        result.trace["text"] += (f"\nauto: {source} candidate ranked by plan log-prob {lp:.2f} and CHGNet energy "
                                 f"{energy:.3f} eV/atom (score {score:.2f}, {ranking.energy_weight:g} nats per eV/atom)")


def _note_reserved(result: GenerationResult, ranking: AutoRanking) -> None:
    if result.trace is None:
        return
    result.trace.setdefault("auto", {"source": "model"})["reserved_slot"] = True
    if "text" in result.trace:
        result.trace["text"] += (f"\nauto: in a slot kept for the model's own candidates "
                                 f"({ranking.model_share:g} of the K slots)")
