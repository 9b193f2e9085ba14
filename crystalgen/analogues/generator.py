"""`AnalogueGenerator`: structure prediction from a reference corpus, no model.

It answers the calls the evaluation harness makes on the model (`predict_structure`,
`predict_structures`): the top K distinct candidates of `candidates.find_candidates`
(duplicates by pymatgen's default StructureMatcher, compared within one analogue space
group), optionally re-ranked by CHGNet energy (`energy.EnergyRanker`). Given a model, the
top `model_top` candidates are scored by it in one batched forward pass (`model_score`),
re-ranked by the combined score (`ranking`) and, with `refine`, given the model's own
lattice and coordinates for their plan where it finds those more likely (`refine`). Each
result's trace names the analogues, the chosen one's provenance, the model's scores and
the validators' verdict.
Ranking is deterministic: `seed` is accepted for the harness and ignored.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Composition, Structure
from crystalgen.progress import progress_bar

from crystalgen.analogues.candidates import Candidate, NoAnalogueError, build_structure, find_candidates
from crystalgen.analogues.energy import EnergyRanker
from crystalgen.analogues.index import AnalogueIndex, load_index
from crystalgen.analogues.prefilter import MendeleevPrefilter
from crystalgen.analogues.prior import DEFAULT_PRIOR, PriorWeights
from crystalgen.analogues.relax import Relaxer, as_relaxer, relax_results
from crystalgen.analogues.model_score import ModelScore, encode_candidate, score_sequences
from crystalgen.analogues.ranking import RankWeights, combined_order, combined_scores, features
from crystalgen.analogues.refine import prefer_refined, refine
from crystalgen.analogues.volume import VolumeRule
from crystalgen.data.reference import REFERENCE_POOL
from crystalgen.model import CrystalModel
from crystalgen.results import GenerationResult
from crystalgen.trace import spacegroup_symbol
from crystalgen.validators.pipeline import validate
from crystalgen.validators.result import Intent


@dataclass
class AnalogueConfig:
    """extra_candidates: candidates built beyond K, so that K distinct ones remain after
    deduplication; energy_top: re-rank this many top candidates by CHGNet energy (0: off);
    energy_weight: nats per eV/atom in the combined score (see energy.py); exact_cell: the
    composition is the cell's (the CSP task); False accepts analogues of any Z (a user's
    reduced formula); prefilter: map only this many Mendeleev-closest entries of the target's
    anonymous formula (0: all; for corpora where one key holds thousands, see prefilter.py); model_top: with a
    model, rank this many top candidates by the combined score (`ranking`, weights
    `rank_weights`; 0: off); refine: let the model write their lattice and coordinates
    (`refine`, temperature 0) and keep the more likely; prior: the prototype prior's weights
    (`prior.py`; `PriorWeights()` is the plain order)."""

    extra_candidates: int = 10
    energy_top: int = 0
    energy_weight: float = 10.0
    exact_cell: bool = True
    prefilter: int = 0
    model_top: int = 10
    rank_weights: RankWeights = field(default_factory=RankWeights)
    refine: bool = False
    prior: PriorWeights = field(default_factory=lambda: DEFAULT_PRIOR)


def _describe(c: Candidate) -> str:
    if c.known:
        return f"known compound: {c.reference_id}, {spacegroup_symbol(c.spacegroup)}"
    score = (f"p={math.exp(c.mapping.log_prob):.3g}" if c.mapping.method == "pymatgen"
             else f"Mendeleev score {c.mapping.log_prob:.2f}")
    return (f"{c.reference_formula} ({c.reference_id}, {spacegroup_symbol(c.spacegroup)}, substitution "
            f"{c.mapping.describe()}, {score})")


class AnalogueGenerator:
    """Candidates from a reference corpus (the shipped pool by default, any corpus path, or an index)."""

    name = "analogue"
    parallel_safe = False  # its index is large to pickle; a query is a lookup plus a few structures

    def __init__(self, reference: str | Path | AnalogueIndex = REFERENCE_POOL, config: AnalogueConfig | None = None,
                 excluded: dict | None = None, model: CrystalModel | None = None):
        """``model``: the crystal model that scores and refines the top candidates (None: the
        plain ranking, no model involved)."""
        self.index = reference if isinstance(reference, AnalogueIndex) else load_index(reference)
        self.config = config or AnalogueConfig()
        self.volume_rule = VolumeRule.fit(self.index)
        self.excluded = excluded or {}
        self._matcher = StructureMatcher()
        self._energy = EnergyRanker(self.config.energy_weight) if self.config.energy_top > 0 else None
        self._prefilter = MendeleevPrefilter(self.index, self.config.prefilter) if self.config.prefilter > 0 else None
        self.model = model if model is not None and self.config.model_top > 0 else None

    def candidates(self, composition: Composition | str) -> list[Candidate]:
        """Every analogue of `composition`, best first; NoAnalogueError when there is none."""
        found = find_candidates(self.index, composition, self.config.exact_cell, self._prefilter, self.config.prior)
        if not found:
            raise NoAnalogueError(f"no analogue for {Composition(composition).formula}: the reference corpus "
                                  f"({Path(self.index.origin).name or 'index'}) holds no structure of that "
                                  f"anonymous formula")
        return found

    def predict_structure(self, composition: Composition | str, n: int = 1, seed: int | None = None,
                          validate: bool = True, relax: bool | Relaxer | object = False) -> list[GenerationResult]:
        """The top `n` distinct analogue structures for an exact cell composition. relax: True
        relaxes the top candidates with CHGNet and re-ranks them by energy (`relax.py`); a
        Relaxer or an ASE calculator relaxes with that."""
        composition = Composition(composition)
        relaxer = as_relaxer(relax)
        if relaxer is not None:
            found = self.predict_structure(composition, n=max(n, relaxer.config.top), validate=validate)
            return relax_results(found, relaxer, composition.formula)[:n]
        found = self.candidates(composition)
        depth = n + self.config.extra_candidates if n > 1 or self._energy is not None else 1
        pool = found[: max(depth, self.config.model_top) if self.model is not None else depth]
        built = [(c, build_structure(self.index, c, self.volume_rule)) for c in pool]
        energies: list[float | None] = [None] * len(pool)
        if self._energy is not None:
            top = min(self.config.energy_top, len(built))
            energies[:top] = self._energy.energies([s for _, s in built[:top]])
            if self.model is None:
                order = self._energy.order(pool[:top], energies[:top]) + list(range(top, len(pool)))
                built, energies = [built[i] for i in order], [energies[i] for i in order]
        notes: list[dict | None] = [None] * len(built)
        if self.model is not None:
            built, energies, notes = self._model_ranked(built, energies)
        return [self._result(composition, found, *built[i], rank, energies[i], validate, notes[i])
                for rank, i in enumerate(self._distinct(built, n))]

    def _model_ranked(self, built: list[tuple[Candidate, Structure]], energies: list[float | None]):
        """The top `model_top` candidates scored by the model (one forward pass), refined
        where configured, re-ordered by the combined score; (built, energies, trace notes)."""
        top = min(self.config.model_top, len(built))
        encoded = [encode_candidate(s) for _, s in built[:top]]
        ok = [e for e in encoded if e is not None]
        scored, refined = iter(score_sequences(self.model, ok)), iter(refine(self.model, ok) if self.config.refine else [])
        weights = self.config.rank_weights
        if self._energy is None:
            weights = dataclasses.replace(weights, energy=0.0)
        scores: list[ModelScore | None] = [next(scored) if e is not None else None for e in encoded]
        feats = [features(c, score, e) for (c, _), score, e in zip(built[:top], scores, energies)]
        combined = combined_scores(feats, weights)
        notes: list[dict | None] = []
        structures = []
        for (c, s), e, score, value in zip(built[:top], encoded, scores, combined):
            ref = next(refined) if self.config.refine and e is not None else None
            use = self.config.refine and prefer_refined(score, ref)
            structures.append(ref.structure if use else s)
            notes.append(None if score is None else {
                "plan_log_prob": round(score.plan_log_prob, 4), "value_log_lik": round(score.value_log_lik, 4),
                "n_plan_tokens": score.n_plan_tokens,
                "combined_score": round(value, 4), "refined": use,
                "refined_log_lik": None if ref is None else round(ref.value_log_lik, 4)})
        order = combined_order(feats, weights) + list(range(top, len(built)))
        built = [(built[i][0], structures[i]) if i < top else built[i] for i in order]
        return built, [energies[i] for i in order], [notes[i] if i < top else None for i in order]

    def predict_structures(self, compositions: Sequence[Composition | str], n: int = 1, seed: int | None = None,
                           validate: bool = True, relax: bool | Relaxer | object = False) -> list[list[GenerationResult]]:
        """`predict_structure` for many compositions; [] where one has no analogue."""
        out = []
        relaxer = as_relaxer(relax)
        for comp in progress_bar(compositions, desc="analogues", leave=False):
            try:
                out.append(self.predict_structure(comp, n=n, seed=seed, validate=validate, relax=relaxer or False))
            except (NoAnalogueError, ValueError):
                out.append([])
        return out

    def sample(self, n: int = 1, seed: int | None = None) -> list[GenerationResult]:
        raise NotImplementedError("the analogue strategy predicts structures for a given composition only")

    def _distinct(self, built: list[tuple[Candidate, Structure]], n: int) -> list[int]:
        """Indices of the first `n` candidates that no earlier kept one duplicates."""
        kept: list[int] = []
        for i, (cand, structure) in enumerate(built):
            if len(kept) >= n:
                break
            if any(built[k][0].spacegroup == cand.spacegroup and self._matcher.fit(built[k][1], structure)
                   for k in kept):
                continue
            kept.append(i)
        return kept

    def _result(self, composition: Composition, found: list[Candidate], cand: Candidate, structure: Structure,
                rank: int, energy: float | None, do_validate: bool, model_note: dict | None = None) -> GenerationResult:
        report = validate(structure, Intent(formula=composition.formula, exact=True)).as_dict() if do_validate else None
        lines = [f"Analogues: {len(found)} found; best {_describe(found[0])}"]
        chosen = f"chosen: candidate {found.index(cand) + 1} (rank {rank + 1}): {_describe(cand)}"
        if model_note is not None:
            lines.append(f"model plan score {model_note['plan_log_prob']:.2f} (log-prob of the plan), value "
                         f"log-lik {model_note['value_log_lik']:.2f}, combined score {model_note['combined_score']:.2f}")
            chosen += ", refined by the model" if model_note["refined"] else ", the analogue's own coordinates"
        lines.append(chosen)
        if energy is not None:
            lines.append(f"CHGNet energy {energy:.3f} eV/atom")
        if report is not None:
            failed = [k for k, v in report["checks"].items() if v.get("pass") is False]
            lines.append("validators: pass" if report["pass"] else f"validators: fail ({', '.join(failed)})")
        trace = {"strategy": "analogue", "n_analogues": len(found), "chosen": cand.provenance(),
                 "best": found[0].provenance(), "energy_per_atom": energy, "model": model_note,
                 "text": "\n".join(lines)}
        metadata = {"generator": self.name, "formula": composition.formula, "spacegroup": cand.spacegroup,
                    "reference_id": cand.reference_id, "known_compound": cand.known}
        return GenerationResult(structure, trace=trace, report=report, log_likelihood=None, metadata=metadata)
