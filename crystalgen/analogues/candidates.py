"""The ranked analogue candidates for one target composition, each with its provenance.

Candidates are the corpus entries with the target's anonymous formula whose Z divides the
target's formula units. Ranking (best first):
1. known compounds (the analogue is the target's own reduced formula), lowest
   e_above_hull first: a known composition comes back as itself, ground state first;
2. then by the mapping's substitution log-probability (`substitution.best_mapping`);
3. ties (polymorphs of one analogue formula) by the analogue's e_above_hull (unknown
   counts as UNKNOWN_E_HULL eV/atom), then fewest repeats to reach the target's cell (a
   primitive cell as large as the target's cell first), then corpus order.
With prior weights (`prior.PriorWeights`), the candidates that are not the target compound
are re-ordered within their cell group by the prototype prior (`prior.prior_order`).
A candidate's structure is the analogue's primitive cell with the elements substituted,
repeated to the target's formula units and rescaled by the volume rule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from pymatgen.core import Composition, Element, Structure

from crystalgen.analogues.index import AnalogueIndex, composition_key
from crystalgen.analogues.prefilter import MendeleevPrefilter
from crystalgen.analogues.prior import PriorWeights, prior_order, prior_scores, prototype_votes
from crystalgen.analogues.substitution import Mapping, best_mapping
from crystalgen.analogues.volume import VolumeRule

UNKNOWN_E_HULL = 0.1


class NoAnalogueError(ValueError):
    """The reference corpus holds no structure with the target's anonymous formula."""


@dataclass
class Candidate:
    """One analogue of a target: `entry` in the index, its id, formula and space group, the
    element mapping with its log-probability, and whether it is the target compound itself."""

    entry: int
    reference_id: str
    reference_formula: str
    spacegroup: int
    mapping: Mapping
    known: bool
    e_above_hull: float
    z_ratio: int
    prototype: str = ""
    popularity: int = 1
    prior_score: float | None = None

    @property
    def score(self) -> float:
        """The ranking score: the prototype prior's s where it was applied, else log p_sub."""
        return self.mapping.log_prob if self.prior_score is None else self.prior_score

    def provenance(self) -> dict:
        return {
            "reference_id": self.reference_id, "reference_formula": self.reference_formula,
            "spacegroup": self.spacegroup, "substitution": self.mapping.describe(),
            "mapping": [list(p) for p in self.mapping.pairs], "log_prob": round(self.mapping.log_prob, 4),
            "method": self.mapping.method, "known_compound": self.known,
            "e_above_hull": None if math.isnan(self.e_above_hull) else round(self.e_above_hull, 4),
            "prototype": self.prototype, "prototype_popularity": self.popularity,
        }

    def prior_features(self) -> dict:
        """What `prior.prior_order` reads (votes are added per query)."""
        return {"log_prob": self.mapping.log_prob, "known": self.known, "same_cell": self.z_ratio == 1,
                "prototype": self.prototype, "popularity": self.popularity}


def _rank_key(c: Candidate) -> tuple:
    e_hull = UNKNOWN_E_HULL if math.isnan(c.e_above_hull) else c.e_above_hull
    # analogues whose primitive cell already holds the target's cell content first (no
    # supercell guess): on 200 held-out MPTS-52 validation crystals of the pool, top-1 46.0%
    # against 44.0% (benchmarks/bench_analogue_ranking.py, docs/results/analogue_ranking_val200.json)
    return (c.z_ratio != 1, not c.known, -round(c.mapping.log_prob, 9) if not c.known else 0.0, e_hull, c.z_ratio,
            c.entry)


def find_candidates(index: AnalogueIndex, composition: Composition | str, exact_cell: bool = True,
                    prefilter: MendeleevPrefilter | None = None, prior: PriorWeights | None = None) -> list[Candidate]:
    """Every analogue of `composition`, best first. exact_cell: the composition is the cell's
    (candidates are repeated to its formula units); else any Z is accepted and kept (a user's
    "Fe2O3" then finds corundum, whose primitive cell holds two formula units). prefilter:
    map only the entries it keeps (the Mendeleev-closest ones; see prefilter.py). prior: the
    prototype prior's weights (None or all 0: the plain order)."""
    elements, counts, units = composition_key(composition)
    target = tuple(sorted(zip(elements, counts)))
    found = []
    hits = index.lookup(counts, units if exact_cell else None)
    if prefilter is not None:
        hits = prefilter.select(hits, elements, counts)
    for i in hits:
        analogue = tuple(sorted((Element.from_Z(z).symbol, c) for z, c in zip(index.elements[i], index.counts[i])))
        mapping = best_mapping(analogue, target)
        if mapping is None:
            continue
        found.append(Candidate(
            entry=int(i), reference_id=str(index.ids[i]), reference_formula=index.formula(int(i)),
            spacegroup=int(index.spacegroup[i]), mapping=mapping, known=analogue == target,
            e_above_hull=float(index.e_above_hull[i]), z_ratio=units // int(index.z[i]) if exact_cell else 1,
            prototype=str(index.prototype[i]), popularity=index.popularity(int(i)),
        ))
    found.sort(key=_rank_key)
    if prior is None or prior.off:
        return found
    feats = [c.prior_features() for c in found]
    votes = prototype_votes(feats)
    for f in feats:
        f["votes"], f["vote_mass"] = votes[f["prototype"]]
    for c, s in zip(found, prior_scores(feats, prior)):
        c.prior_score = s
    return [found[i] for i in prior_order(feats, prior)]


def _supercell_matrix(m: int) -> list[int]:
    """Diagonal repeats whose product is m, spread over the three axes."""
    factors, p, rest = [], 2, m
    while rest > 1:
        while rest % p == 0:
            factors.append(p)
            rest //= p
        p += 1
    diag = [1, 1, 1]
    for k, f in enumerate(sorted(factors, reverse=True)):
        diag[int(np.argmin(diag))] *= f
    return diag


def build_structure(index: AnalogueIndex, candidate: Candidate, volume_rule: VolumeRule | None) -> Structure:
    """The candidate's crystal: substituted, repeated to the target's formula units, rescaled."""
    structure = index.structure(candidate.entry)
    pairs = candidate.mapping.substitutions
    if volume_rule is not None and pairs:
        counts = dict(zip(index.elements[candidate.entry], (float(c) for c in index.counts[candidate.entry])))
        ratio = volume_rule.scale([(Element(a).Z, Element(b).Z) for a, b in pairs], counts)
        if np.isfinite(ratio) and ratio > 0:
            structure.scale_lattice(structure.volume * ratio)
    if pairs:
        structure.replace_species({Element(a): Element(b) for a, b in pairs})
    if candidate.z_ratio > 1:
        structure.make_supercell(_supercell_matrix(candidate.z_ratio))
    return structure
