"""Why generated crystals fail the physical distance rule: a breakdown by Wyckoff situation.

    python benchmarks/diagnose_distance.py [--n 300] [--seed 0] [--model DIR]
        [--chemsys Li-Fe-O | --elements Mg,Si,O] [--json docs/results/dng_distance_failures.json]

Samples with the API's default options (charge-aware plans, volume guard, distance
guard), decodes each sequence to its Wyckoff form and finds, per failing crystal, the
closest pair relative to the physical rule (``max(0.5 Å, 0.65 (r_i + r_j))``) and the
orbits it joins. The pair is classed by the orbit written *later* (the one the sampler
could still have moved):

- ``fixed_on_fixed``: the later orbit has no free coordinate and the earlier one has
  none either: only the lattice decides the distance;
- ``fixed_on_free``: the later orbit has no free coordinate, the earlier one had;
- ``self_fixed``: an orbit without free coordinate too close to its own images (the
  lattice alone decides);
- ``guard_exhausted``: the later orbit had free coordinates and the guard found no
  clear candidate among its draws (``self`` when the orbit hits its own images).

It also reports each failing crystal's cell against its plan (volume per atom in, below
or above the planned bin) and the isotropic scale that would clear the worst pair.

``--rule cdvae`` judges by the CDVAE structural rule (every pair > 0.5 Å) instead. Each
failing crystal is also measured the way the guard measures it (27 images of the cell as
sampled) against the validators' measure (27 images of the LLL-reduced cell, exact):
``hidden_from_sampled_cell`` counts failures whose close pair the sampled cell's images
do not show, which no guard working on that cell could have avoided.
"""

from __future__ import annotations

import argparse
import collections
import json
import time

import numpy as np
import torch
from ase.data import covalent_radii

from crystalgen.api import CrystalGenerator
from crystalgen.evaluation.report import provenance, write_json
from crystalgen.generation.decoder import generate_stream
from crystalgen.generation.request import GenerationRequest
from crystalgen.generation.rng import sequence_keys
from crystalgen.representation.sequence import DecodeError, decode, decode_plan
from crystalgen.representation.tables import SPACE_GROUPS, lattice_matrix
from crystalgen.representation.vocab import ELEMENTS, vpa_range
from crystalgen.validators.distance import (MIN_COVALENT_RATIO, MIN_DISTANCE_A, image_shifts, min_distances, pair_limits,
                                            periodic_sq_distances)

_Z = {el: z for z, el in enumerate(ELEMENTS, start=1)}


def packing(crystal) -> float:
    """Volume of spheres of radius 0.65 r_cov per atom over the cell volume: the physical
    rule keeps these spheres apart, so no clear crystal exceeds close packing (0.74)."""
    s = crystal.to_structure()
    r = MIN_COVALENT_RATIO * covalent_radii[[_Z[site.specie.symbol] for site in s]]
    return float((4.0 / 3.0 * np.pi * r ** 3).sum() / s.volume)


def rule_limits(rule: str) -> np.ndarray:
    """Allowed distance (Å) per pair of atomic numbers under ``rule``."""
    physical = pair_limits()
    return physical if rule == "physical" else np.full(physical.shape, MIN_DISTANCE_A)


def worst_pair(crystal, limits: np.ndarray) -> tuple[float, int, int]:
    """(distance / allowed distance, orbit i, orbit j >= i) of the closest pair, measured
    as the guard measures it: the 27 images of the cell as sampled."""
    table = SPACE_GROUPS[crystal.spacegroup]
    matrix = lattice_matrix(crystal.lattice)
    shifts = image_shifts(matrix)
    orbits = [table.orbit(table.index(s.letter), s.xyz) for s in crystal.sites]
    owner = np.concatenate([np.full(len(o), k) for k, o in enumerate(orbits)])
    frac = np.concatenate(orbits)
    z = np.array([_Z[crystal.sites[k].element] for k in owner])
    sq = periodic_sq_distances(frac, frac, matrix, shifts)
    np.fill_diagonal(sq, np.inf)
    margin = np.sqrt(sq) / limits[z[:, None], z[None, :]]
    a, b = np.unravel_index(np.argmin(margin), margin.shape)
    i, j = sorted((int(owner[a]), int(owner[b])))
    return float(margin[a, b]), i, j


def site_margin(crystal, j: int, xyz, fixed_only: bool = False, limits: np.ndarray | None = None) -> float:
    """Worst distance / allowed distance of orbit ``j`` at representative ``xyz`` against
    orbits ``0 .. j-1`` (as generated; with ``fixed_only`` against every orbit on a fixed
    position instead) and its own other points."""
    table = SPACE_GROUPS[crystal.spacegroup]
    matrix = lattice_matrix(crystal.lattice)
    fixed = [not table.free[table.index(s.letter)].any() for s in crystal.sites]
    chosen = [s for k, s in enumerate(crystal.sites) if k != j and fixed[k]] if fixed_only else crystal.sites[:j]
    placed = [table.orbit(table.index(s.letter), s.xyz) for s in chosen]
    w = table.index(crystal.sites[j].letter)
    orbit = table.orbit(w, table.derive_xyz(w, xyz))
    frac = np.concatenate(placed + [orbit])
    z_all = np.array([_Z[s.element] for k, s in enumerate(chosen) for _ in range(len(placed[k]))]
                     + [_Z[crystal.sites[j].element]] * len(orbit), np.int64)
    sq = periodic_sq_distances(orbit, frac, matrix, image_shifts(matrix))
    sq[:, len(frac) - len(orbit):][np.diag_indices(len(orbit))] = np.inf
    limit = (pair_limits() if limits is None else limits)[_Z[crystal.sites[j].element], z_all]
    return float((np.sqrt(sq) / limit[None, :]).min()) if sq.size else float("inf")


def rescue(crystal, j: int, rng: np.random.Generator, tries: int = 512, fixed_only: bool = False,
           limits: np.ndarray | None = None) -> str:
    """Could orbit ``j`` have been placed clear of the earlier ones on this lattice?
    ``last_coordinate``: moving only its last free coordinate (a 256-point scan) clears it;
    ``all_coordinates``: some random position of all its free coordinates does;
    ``none``: no tried position does (the lattice or the plan is at fault). With
    ``fixed_only`` the other free orbits are ignored."""
    table = SPACE_GROUPS[crystal.spacegroup]
    w = table.index(crystal.sites[j].letter)
    free = np.flatnonzero(table.free[w])
    xyz = np.array(crystal.sites[j].xyz, float)
    for v in np.linspace(0, 1, 256, endpoint=False):
        t = xyz.copy()
        t[free[-1]] = v
        if site_margin(crystal, j, t, fixed_only, limits) >= 1.0:
            return "last_coordinate"
    for _ in range(tries):
        t = xyz.copy()
        t[free] = rng.random(len(free))
        if site_margin(crystal, j, t, fixed_only, limits) >= 1.0:
            return "all_coordinates"
    return "none"


def classify(crystal, i: int, j: int) -> str:
    table = SPACE_GROUPS[crystal.spacegroup]
    free = [bool(table.free[table.index(s.letter)].any()) for s in crystal.sites]
    if not free[j]:
        return "self_fixed" if i == j else "fixed_on_fixed" if not free[i] else "fixed_on_free"
    return "guard_exhausted_self" if i == j else "guard_exhausted"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", default=None)
    ap.add_argument("--chemsys", default=None)
    ap.add_argument("--elements", default=None)
    ap.add_argument("--json", default=None)
    ap.add_argument("--rule", choices=("physical", "cdvae"), default="physical",
                    help="physical: 0.65 of the covalent radii sum (and 0.5 Å); cdvae: every pair > 0.5 Å")
    args = ap.parse_args()
    torch.set_num_threads(1)
    gen = CrystalGenerator.from_pretrained(args.model, workers=0)
    opts = gen.options(seed=args.seed)
    req = GenerationRequest.build(chemsys=args.chemsys, elements=args.elements.split(",") if args.elements else None)
    keys = sequence_keys(args.seed, 0, args.n)
    t0 = time.perf_counter()
    seqs = list(generate_stream(gen.model, [req.prefix] * args.n, keys, [opts.plan_rule(req.rule)] * args.n,
                                opts.temperature, batch_size=opts.batch_size, min_distance=opts.guard_limits,
                                volume_guard=opts.volume_guard))
    seconds = time.perf_counter() - t0
    cases: collections.Counter = collections.Counter()
    cell: collections.Counter = collections.Counter()
    scales: list[float] = []
    rescued: collections.Counter = collections.Counter()
    alone: collections.Counter = collections.Counter()
    packings: dict[bool, list[float]] = {True: [], False: []}
    rng = np.random.default_rng(0)
    limits = rule_limits(args.rule)
    hidden = 0
    decoded = failed = 0
    examples = []
    for job, seq in seqs:
        if seq is None:
            continue
        try:
            crystal, plan = decode(seq.tokens, seq.values), decode_plan(seq.tokens)
        except (DecodeError, ValueError):
            continue
        decoded += 1
        margin, i, j = worst_pair(crystal, limits)
        d_min, ratio = min_distances(crystal.to_structure())
        exact = d_min / MIN_DISTANCE_A if args.rule == "cdvae" else min(d_min / MIN_DISTANCE_A, ratio / MIN_COVALENT_RATIO)
        fails = exact <= 1.0 if args.rule == "cdvae" else exact < 1.0
        packings[not fails].append(packing(crystal))
        if not fails:
            continue
        failed += 1
        if margin >= 1.0:
            hidden += 1
            if len(examples) < 12:
                examples.append({"job": job, "spacegroup": crystal.spacegroup, "case": "hidden_from_sampled_cell",
                                 "formula": crystal.to_structure().composition.reduced_formula,
                                 "lattice": [round(float(v), 3) for v in crystal.lattice],
                                 "exact_margin": round(exact, 3), "sampled_cell_margin": round(margin, 3)})
            continue
        case = classify(crystal, i, j)
        cases[case] += 1
        lo, hi = vpa_range(plan.vpa_bin)
        vpa = crystal.to_structure().volume / crystal.num_atoms
        cell["in_bin" if lo <= vpa < hi else "below_bin" if vpa < lo else "above_bin"] += 1
        scales.append(1.0 / margin)
        if case.startswith("guard_exhausted"):
            how = rescue(crystal, j, rng, limits=limits)
            rescued[how] += 1
            if how == "none":
                alone[rescue(crystal, j, rng, fixed_only=True, limits=limits)] += 1
        if len(examples) < 12:
            s_i, s_j = crystal.sites[i], crystal.sites[j]
            examples.append({"job": job, "spacegroup": crystal.spacegroup, "formula": crystal.to_structure().composition.reduced_formula,
                             "pair": f"{s_i.element} {s_i.multiplicity}{s_i.letter} - {s_j.element} {s_j.multiplicity}{s_j.letter}",
                             "case": case, "margin": round(margin, 3)})
    out = {
        **provenance("diagnose_distance"),
        "request": {"chemsys": args.chemsys, "elements": args.elements},
        "rule": args.rule,
        "n": args.n, "decoded": decoded, f"{args.rule}_fail": failed,
        f"{args.rule}_validity": round(1 - failed / max(decoded, 1), 4),
        "hidden_from_sampled_cell": hidden,
        "fail_cases": {k: cases[k] for k in sorted(cases)},
        "guard_exhausted_could_clear_by": {k: rescued[k] for k in sorted(rescued)},
        "none_with_fixed_orbits_only_could_clear_by": {k: alone[k] for k in sorted(alone)},
        "fail_cell_vs_plan_bin": {k: cell[k] for k in sorted(cell)},
        "scale_to_clear_median": round(float(np.median(scales)), 3) if scales else None,
        "scale_to_clear_quartiles": [round(float(q), 3) for q in np.quantile(scales, [0.25, 0.75])] if scales else None,
        "packing_quartiles_pass": [round(float(q), 3) for q in np.quantile(packings[True], [0.25, 0.5, 0.75, 1.0])]
        if packings[True] else None,
        "packing_quartiles_fail": [round(float(q), 3) for q in np.quantile(packings[False], [0.25, 0.5, 0.75, 1.0])]
        if packings[False] else None,
        "seconds_generate": round(seconds, 1),
        "examples": examples,
    }
    print(json.dumps(out, indent=1))
    if args.json:
        write_json(args.json, out)


if __name__ == "__main__":
    main()
