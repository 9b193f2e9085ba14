"""Where analogue CSP misses, and which cheap ranking features recover the misses.

Tuning crystals only (the held-out MPTS-52 validation rows of the pool that
`bench_model_ranking.py` uses; never the test set), removed from the corpus by id and by
match. For each crystal the candidates of `find_candidates` are ranked in the plain order;
the top `--depth` of that order, and of the orders the prototype prior proposes (so a
re-ranking can pull a candidate up from further down), are built and matched (CDVAE
StructureMatcher settings, no validity gate). A miss at K=1 is then one of:

- in_top_depth: a matching candidate sits in the plain top `--depth` (ranking headroom);
- ranked_below_depth: a candidate of the truth's prototype further down matches;
- volume_off: a candidate of the truth's prototype matches once its cell is scaled to the
  truth's volume (the volume rule missed);
- mapping_wrong: it matches (at the truth's volume) with another pairing of equal-count elements;
- geometry_off: candidates of the truth's prototype exist but none matches even so;
- wrong_z: the corpus has the prototype only with a Z that does not divide the target's;
- no_prototype: no corpus entry has the truth's prototype key (`index.prototype_key`);
- no_analogue: no candidate at all.

Features per candidate (for the ranking rows, re-fitted offline with --features-in): the
substitution log p, known compound, same cell, e_above_hull, the prototype's popularity in
the corpus, and the votes of the query's candidates for that prototype (their count and
log of their summed substitution probability). Rankings are fitted by grid search on
top-1 and checked by k-fold cross-validation.

    nice python benchmarks/bench_analogue_misses.py --n 300 --depth 20 --features-out misses.json \\
        --json-out docs/results/analogue_misses_val300.json
"""

from __future__ import annotations

import itertools
import json
import math
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import click
import numpy as np
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Element, Structure
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

from bench_model_ranking import tuning_set
from crystalgen.analogues.candidates import build_structure, find_candidates
from crystalgen.analogues.exclusion import exclude_test_crystals
from crystalgen.analogues.index import SYMPREC, composition_key, load_index, prototype_key
from crystalgen.analogues.prior import DEFAULT_PRIOR, PriorWeights, prior_order, prototype_votes
from crystalgen.analogues.volume import VolumeRule
from crystalgen.evaluation.metrics import MATCHER_KWARGS
from crystalgen.evaluation.report import provenance, write_json

GRID = {"popularity": (0.0, 0.1, 0.25, 0.5, 1.0, 2.0), "votes": (0.0, 0.25, 0.5, 1.0, 2.0),
        "vote_mass": (0.0, 0.25, 0.5, 1.0, 2.0)}
VOTE_MASS_GRID = {"popularity": (0.0,), "votes": (0.0,), "vote_mass": GRID["vote_mass"]}
MAX_MAPPINGS = 48
CATEGORIES = ("top1", "in_top_depth", "ranked_below_depth", "volume_off", "mapping_wrong", "geometry_off",
              "wrong_z", "no_prototype", "no_analogue")


def _fits(matcher: StructureMatcher, truth: Structure, s: Structure) -> bool:
    try:
        return bool(matcher.fit(truth, s))
    except Exception:
        return False


def _truth_prototype(truth: Structure) -> str:
    try:
        prim = SpacegroupAnalyzer(truth, symprec=SYMPREC).find_primitive()
    except Exception:
        prim = truth
    return prototype_key(prim.lattice.matrix, [s.specie.Z for s in prim], prim.frac_coords)


def _at_volume(s: Structure, truth: Structure) -> Structure:
    s = s.copy()
    s.scale_lattice(truth.volume / len(truth) * len(s))
    return s


def _other_mappings(index, entry: int, truth: Structure):
    """The analogue's primitive cell with every pairing of equal-count elements onto the truth's."""
    analogue = list(zip(index.elements[entry], index.counts[entry]))
    elements, counts, _ = composition_key(truth.composition)
    target = list(zip((Element(e).Z for e in elements), counts))
    groups = sorted(set(c for _, c in analogue))
    per_group = [list(itertools.permutations([z for z, c in target if c == g])) for g in groups]
    sources = [[z for z, c in analogue if c == g] for g in groups]
    for k, choice in enumerate(itertools.product(*per_group)):
        if k >= MAX_MAPPINGS:
            return
        mapping = {Element.from_Z(a): Element.from_Z(b) for src, dst in zip(sources, choice) for a, b in zip(src, dst)}
        s = index.structure(entry)
        s.replace_species(mapping)
        yield s


def _classify(index, rule, matcher, truth, cands, matched_plain_top, proto_truth, depth) -> str:
    if not cands:
        return "no_analogue"
    if matched_plain_top[0]:
        return "top1"
    if any(matched_plain_top):
        return "in_top_depth"
    same = [c for c in cands[depth:] if index.prototype[c.entry] == proto_truth]
    if not same:
        elements, counts, _ = composition_key(truth.composition)
        any_z = index.lookup(counts, None)
        return "wrong_z" if any(index.prototype[i] == proto_truth for i in any_z) else "no_prototype"
    built = [build_structure(index, c, rule) for c in same[:5]]
    if any(_fits(matcher, truth, s) for s in built):
        return "ranked_below_depth"
    if any(_fits(matcher, truth, _at_volume(s, truth)) for s in built):
        return "volume_off"
    for c in same[:3]:
        if any(_fits(matcher, truth, _at_volume(s, truth)) for s in _other_mappings(index, c.entry, truth)):
            return "mapping_wrong"
    return "geometry_off"


def rank(cands: list[dict], weights: PriorWeights | None) -> list[int]:
    return list(range(len(cands))) if weights is None else prior_order(cands, weights)


def top_k(queries: list[dict], weights: PriorWeights | None, k: int = 1) -> float:
    hits = sum(any(q["candidates"][i]["match"] for i in rank(q["candidates"], weights)[:k])
               for q in queries if q["candidates"])
    return hits / max(len(queries), 1)


def fit(queries: list[dict], grid: dict = GRID) -> PriorWeights:
    best, best_rate = PriorWeights(0.0, 0.0, 0.0), -1.0
    for a, b, c in itertools.product(grid["popularity"], grid["votes"], grid["vote_mass"]):
        w = PriorWeights(popularity=a, votes=b, vote_mass=c)
        rate = top_k(queries, w)
        if rate > best_rate + 1e-12:
            best, best_rate = w, rate
    return best


def cross_validated(queries: list[dict], folds: int, grid: dict = GRID) -> float:
    hits = 0.0
    for f in range(folds):
        held = queries[f::folds]
        train = [q for i, q in enumerate(queries) if i % folds != f]
        hits += top_k(held, fit(train, grid)) * len(held)
    return hits / len(queries)


@click.command()
@click.option("--pool", default="../shared/data/train/pool.csv.gz", type=click.Path(exists=True), show_default=True)
@click.option("--reference", default="training-pool", show_default=True)
@click.option("--n", "n_tune", type=int, default=300, show_default=True)
@click.option("--depth", type=int, default=20, show_default=True)
@click.option("--folds", type=int, default=5, show_default=True)
@click.option("--json-out", type=click.Path(), default=None)
@click.option("--features-out", type=click.Path(), default=None)
@click.option("--features-in", type=click.Path(exists=True), default=None, help="Re-fit from saved features.")
def main(pool, reference, n_tune, depth, folds, json_out, features_out, features_in) -> None:
    if features_in:
        saved = json.loads(Path(features_in).read_text())
        report(saved["queries"], saved["meta"], folds, json_out)
        return
    ids, truths = tuning_set(pool, n_tune, 0.05, 0)
    index, exclusion = exclude_test_crystals(load_index(reference), ids, truths, MATCHER_KWARGS, workers=1)
    rule = VolumeRule.fit(index)
    matcher = StructureMatcher(**MATCHER_KWARGS)
    queries, t0 = [], time.perf_counter()
    for truth in truths:
        cands = find_candidates(index, truth.composition)
        feats = [{"log_prob": c.mapping.log_prob, "known": c.known, "same_cell": c.z_ratio == 1,
                  "e_above_hull": None if math.isnan(c.e_above_hull) else c.e_above_hull,
                  "popularity": index.popularity(c.entry), "prototype": str(index.prototype[c.entry])} for c in cands]
        votes = prototype_votes(feats)
        for f in feats:
            f["votes"], f["vote_mass"] = votes[f["prototype"]]
        # the pool: the plain top `depth` and the top `depth` of a few prior-weighted orders
        pool_ids = list(range(min(depth, len(cands))))
        for w in (PriorWeights(1.0, 0.0, 0.0), PriorWeights(0.0, 1.0, 0.0), PriorWeights(0.0, 0.0, 1.0),
                  PriorWeights(0.5, 0.5, 0.5)):
            pool_ids += rank(feats, w)[:depth]
        pool_ids = sorted(set(pool_ids))
        matched = {i: _fits(matcher, truth, build_structure(index, cands[i], rule)) for i in pool_ids}
        proto_truth = _truth_prototype(truth)
        category = _classify(index, rule, matcher, truth, cands, [matched[i] for i in range(min(depth, len(cands)))],
                             proto_truth, depth)
        kept = [dict(feats[i], match=matched[i], plain_rank=i) for i in pool_ids]
        queries.append({"formula": truth.composition.formula, "n_candidates": len(cands), "category": category,
                        "truth_prototype": proto_truth, "truth_prototype_popularity": index._popularity.get(proto_truth, 0),
                        "candidates": kept})
    meta = {"n_requested": n_tune, "depth": depth, "reference": reference, "exclusion": exclusion.as_dict(),
            "pool": pool, "wall_s": round(time.perf_counter() - t0, 1), "command": "python " + " ".join(sys.argv)}
    if features_out:
        Path(features_out).write_text(json.dumps({"meta": meta, "queries": queries}))
    report(queries, meta, folds, json_out)


def report(queries: list[dict], meta: dict, folds: int, json_out: str | None) -> None:
    n = len(queries)
    counts = Counter(q["category"] for q in queries)
    misses = n - counts["top1"]
    fitted = fit(queries)
    rows = {}
    for name, w in (("plain", None), ("popularity (1, 0, 0)", PriorWeights(1.0, 0.0, 0.0)),
                    ("votes (0, 1, 0)", PriorWeights(0.0, 1.0, 0.0)), ("vote mass (0, 0, 1)", PriorWeights(0.0, 0.0, 1.0)),
                    ("shipped default", DEFAULT_PRIOR), ("fitted on all", fitted)):
        rows[name] = {"top1": top_k(queries, w), "top5": top_k(queries, w, 5), "top20": top_k(queries, w, 20),
                      "weights": None if w is None else w.as_dict()}
    by_popularity = defaultdict(lambda: [0, 0])
    for q in queries:
        bucket = "0" if q["truth_prototype_popularity"] == 0 else (
            "1-2" if q["truth_prototype_popularity"] <= 2 else ("3-9" if q["truth_prototype_popularity"] < 10 else "10+"))
        by_popularity[bucket][0] += 1
        by_popularity[bucket][1] += q["category"] == "top1"
    result = {
        **provenance("bench_analogue_misses"), "command": meta["command"],
        "tuning_set": f"{meta['pool']}: source mpts_52/val, is_validation(id, 0.05, seed 0), seeded {meta['n_requested']}",
        "n_test": n, "depth": meta["depth"], "reference": meta["reference"], "exclusion": meta["exclusion"],
        "breakdown": {c: counts[c] for c in CATEGORIES},
        "breakdown_fraction_of_misses": {c: round(counts[c] / max(misses, 1), 4) for c in CATEGORIES if c != "top1"},
        # a known compound left in the corpus is another polymorph (a matching entry was excluded), so it never matches
        "misses_with_a_known_compound_first": sum(bool(q["candidates"]) and q["candidates"][0]["known"]
                                                  and q["category"] != "top1" for q in queries),
        "top1_by_truth_prototype_popularity": {k: {"n": v[0], "top1": round(v[1] / v[0], 4)}
                                                for k, v in sorted(by_popularity.items())},
        "rows": rows,
        f"cross_validated_top1_{folds}fold": cross_validated(queries, folds),
        f"cross_validated_top1_{folds}fold_vote_mass_only": cross_validated(queries, folds, VOTE_MASS_GRID),
        "wall_s": meta["wall_s"],
    }
    click.echo(json.dumps(result, indent=2))
    if json_out:
        write_json(json_out, result)


if __name__ == "__main__":
    main()
