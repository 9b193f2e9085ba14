"""One shard's work: sample -> validate -> filter -> deduplicate (within the shard) ->
novelty -> score. Runs in a worker process (local pool or Ray) and returns a JSON-ready
payload; the driver writes it to disk, so workers never need the run folder.

Deduplication across shards happens afterwards, in the driver (``pipeline``): a duplicate
within a shard is also a duplicate globally, so dropping it here saves scoring work
without changing any result.
"""

from __future__ import annotations

import time
from typing import Any

from crystalgen.data.reference_index import ReferenceIndex, known_match
from crystalgen.screening.config import ScreenConfig
from crystalgen.screening.generators import load_generator, sample_target
from crystalgen.screening.ranking import score_result
from crystalgen.screening.shards import ShardSpec
from crystalgen.screening.stages import (
    DedupEntry,
    deduplicate,
    filter_reason,
    make_matcher,
    required_checks_pass,
    space_group_number,
    validate_results,
)


class _Clock:
    """Seconds spent per stage, for the throughput figures."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._t = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.seconds[stage] = self.seconds.get(stage, 0.0) + now - self._t
        self._t = now


def run_shard(spec: ShardSpec, config_dict: dict[str, Any], reference: ReferenceIndex | None) -> dict[str, Any]:
    """Everything one shard produces, as plain JSON types (see ``pipeline`` for the schema)."""
    config = ScreenConfig.from_dict(config_dict)
    target = config.targets[spec.target_index]
    clock = _Clock()
    inputs: dict[str, int] = {"sample": spec.count}  # candidates entering each stage

    generator = load_generator(config.run.generator, config.run.generator_options)
    results = sample_target(generator, target, spec.count, spec.seed, config.sampling)
    clock.lap("sample")

    inputs["validate"] = inputs["filter"] = len(results)
    validate_results(results, target)
    clock.lap("validate")

    rows: list[dict[str, Any]] = []
    for i, r in enumerate(results):
        sg = space_group_number(r.structure, config.filters.symprec)
        valid = required_checks_pass(r.report, config.filters.checks)
        reason = filter_reason(r, sg, config.filters) if valid else None
        rows.append(
            {
                "key": f"{spec.key}-c{i:04d}",
                "result": r.as_dict(),
                "formula": r.structure.composition.reduced_formula,
                "num_atoms": len(r.structure),
                "spacegroup": sg,
                "valid": valid,
                "filter_reason": reason,
                "passed_filters": valid and reason is None,
                # filled in by the later stages this candidate reaches
                "duplicate_of": None, "known_match": None, "score": None, "energy_per_atom": None,
                "formation_energy_per_atom": None, "relaxed": None, "relax_steps": None, "score_error": None,
            }
        )
    clock.lap("filter")

    matcher = make_matcher(config.novelty)
    kept = [(row, r) for row, r in zip(rows, results) if row["passed_filters"]]
    inputs["deduplicate"] = len(kept)
    dups = deduplicate([DedupEntry(row["key"], row["formula"], r.structure) for row, r in kept], matcher)
    for row, _ in kept:
        row["duplicate_of"] = dups[row["key"]]
    kept = [(row, r) for row, r in kept if row["duplicate_of"] is None]
    clock.lap("deduplicate")
    inputs["novelty"] = len(kept)

    for row, r in kept:
        row["known_match"] = known_match(r.structure, reference, matcher) if reference is not None else None
    kept = [(row, r) for row, r in kept if row["known_match"] is None]
    clock.lap("novelty")
    inputs["score"] = len(kept)

    for row, r in kept:
        s = score_result(r, config.rank, reference)
        row["score"] = s.score
        row["energy_per_atom"] = s.energy_per_atom
        row["formation_energy_per_atom"] = s.formation_energy_per_atom
        row["relaxed"] = s.relaxed.as_dict() if s.relaxed is not None else None
        row["relax_steps"] = s.relax_steps
        row["score_error"] = s.error
    clock.lap("score")

    return {
        "key": spec.key,
        "target_index": spec.target_index,
        "shard_index": spec.shard_index,
        "seed": spec.seed,
        "requested": spec.count,
        "candidates": rows,
        "seconds": clock.seconds,
        "inputs": inputs,
    }
