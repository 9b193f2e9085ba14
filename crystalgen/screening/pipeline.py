"""The screening funnel from config to outputs, resumable shard by shard.

    sample -> validate -> filter -> deduplicate -> novelty -> rank -> export

``run_screen`` plans the shards, runs the missing ones (each written atomically as soon
as it finishes), then merges all shard files in a fixed order: deduplication across
shards keeps the earliest copy, ranking sorts each target's candidates by (score,
candidate key): energies per atom of different compositions are not comparable, so
ranks are per target. Because shard
seeds are fixed and the merge reads only shard files, a run killed at any point and
started again ends with exactly the results of an uninterrupted run.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pymatgen.core import Composition, Structure

from crystalgen.data.reference_index import ReferenceIndex, load_reference
from crystalgen.screening.config import ScreenConfig
from crystalgen.screening.executors import run_tasks
from crystalgen.screening.outputs import is_output
from crystalgen.screening.outputs import write_outputs as write_run_outputs
from crystalgen.screening.result import ScreenResult
from crystalgen.screening.run_folder import claimed_run_folder
from crystalgen.screening.shards import atomic_write_bytes, plan_shards, read_shard, shard_path, write_shard
from crystalgen.screening.stages import STAGES, DedupEntry, deduplicate, make_matcher
from crystalgen.screening.worker import run_shard

log = logging.getLogger(__name__)


def _reference_for_targets(config: ScreenConfig) -> list[ReferenceIndex | None]:
    """Each target's slice of the reference corpus (only formulas it could produce)."""
    if not config.novelty.reference:
        return [None] * len(config.targets)
    element_sets = [t.elements for t in config.targets]
    full = load_reference(config.novelty.reference, element_sets)
    return [_slice(full, elements) for elements in element_sets]


def _slice(full: ReferenceIndex, elements: frozenset[str]) -> ReferenceIndex:
    return {f: e for f, e in full.items() if {el.symbol for el in Composition(f).elements} <= elements}


def _check_run_dir(run_dir: Path, config: ScreenConfig) -> None:
    """Refuse to resume a run folder that was started with a different config."""
    path = run_dir / "config.json"
    text = json.dumps(config.as_dict(), indent=2, sort_keys=True)
    if path.exists():
        if json.loads(path.read_text()) != json.loads(text):
            raise ValueError(f"{run_dir} holds a run with a different config; use a new --out folder")
        return
    atomic_write_bytes(path, text.encode())


def _stage_reached(c: dict[str, Any], has_reference: bool) -> str:
    if not c["valid"]:
        return "sampled"
    if not c["passed_filters"]:
        return "valid"
    if c["duplicate_of"] is not None:
        return "filtered"
    if has_reference and c.get("known_match") is not None:
        return "unique"
    if c.get("score") is None:
        return "novel"
    return "ranked"


def merge_shards(config: ScreenConfig, payloads: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, dict[str, int]]]:
    """All shard payloads -> the candidate table (global dedup, ranks) and the funnel."""
    candidates: list[dict[str, Any]] = []
    for p in payloads:
        target = config.targets[p["target_index"]]
        for c in p["candidates"]:
            candidates.append({**c, "target": target.name, "target_index": p["target_index"],
                               "shard_index": p["shard_index"]})

    # Across shards: a candidate that survived its own shard may still repeat an earlier shard's.
    survivors = [c for c in candidates if c["passed_filters"] and c["duplicate_of"] is None]
    entries = [DedupEntry(c["key"], c["formula"], Structure.from_dict(c["result"]["structure"])) for c in survivors]
    dups = deduplicate(entries, make_matcher(config.novelty))
    for c in survivors:
        c["duplicate_of"] = dups[c["key"]]

    has_reference = bool(config.novelty.reference)
    for c in candidates:
        c["stage"] = _stage_reached(c, has_reference)
    for c in candidates:
        c["rank"] = None
    for t_idx in range(len(config.targets)):
        mine = [c for c in candidates if c["target_index"] == t_idx and c["stage"] == "ranked"]
        for i, c in enumerate(sorted(mine, key=lambda c: (c["score"], c["key"])), start=1):
            c["rank"] = i

    funnel: dict[str, dict[str, int]] = {}
    for name in [t.name for t in config.targets] + ["total"]:
        mine = [c for c in candidates if name == "total" or c["target"] == name]
        funnel[name] = {s: sum(STAGES.index(c["stage"]) >= STAGES.index(s) for c in mine) for s in STAGES}
    return candidates, funnel


def run_screen(
    config: ScreenConfig,
    run_dir: str | Path,
    executor: str = "local",
    address: str | None = None,
    workers: int | None = None,
    progress: bool = True,
    write_outputs: bool = True,
) -> ScreenResult:
    """Run (or resume) a screening run into ``run_dir`` and write its outputs there.

    Raises :class:`~crystalgen.screening.run_folder.RunFolderBusy` while another run into
    ``run_dir`` is alive; removes the temporary files a dead one left there.
    """
    run_dir = Path(run_dir)
    with claimed_run_folder(run_dir, _own_paths(config, run_dir)) as removed:
        for path in removed:
            log.info("removed %s, left by a stopped run", path)
        return _run(config, run_dir, executor, address, workers, progress, write_outputs)


def _own_paths(config: ScreenConfig, run_dir: Path) -> Callable[[Path], bool]:
    """Which paths in ``run_dir`` this run writes: its config, shard files and outputs."""
    shards = {shard_path(run_dir, s) for s in plan_shards(config)}
    return lambda path: path == run_dir / "config.json" or path in shards or is_output(config, run_dir, path)


def _run(config: ScreenConfig, run_dir: Path, executor: str, address: str | None, workers: int | None,
         progress: bool, write_outputs: bool) -> ScreenResult:
    _check_run_dir(run_dir, config)

    specs = plan_shards(config)
    todo = [s for s in specs if not shard_path(run_dir, s).exists()]
    if len(todo) < len(specs):
        log.info("resuming: %d of %d shards already finished", len(specs) - len(todo), len(specs))
    seconds: dict[str, float] = {}

    def on_done(i: int, payload: dict[str, Any]) -> None:
        write_shard(run_dir, todo[i], payload)
        for stage, s in payload["seconds"].items():
            seconds[stage] = seconds.get(stage, 0.0) + s

    if todo:
        references = _reference_for_targets(config)
        config_dict = config.as_dict()
        tasks = [(spec, config_dict, references[spec.target_index]) for spec in todo]
        run_tasks(run_shard, tasks, on_done, executor=executor, workers=workers or config.run.workers,
                  address=address, progress=progress)

    payloads = [read_shard(run_dir, s) for s in specs]
    missing = [s.key for s, p in zip(specs, payloads) if p is None]
    if missing:
        raise RuntimeError(f"shards missing after the run: {missing}")
    t0 = time.perf_counter()
    candidates, funnel = merge_shards(config, payloads)  # type: ignore[arg-type]
    seconds["merge"] = time.perf_counter() - t0

    result = ScreenResult(config, candidates, funnel, seconds, shards_run=len(todo))
    for t in config.targets:
        f = funnel[t.name]
        rate = f["valid"] / f["sampled"] if f["sampled"] else 0.0
        if rate < config.filters.min_pass_rate:
            result.warnings.append(f"{t.name}: validity pass rate {rate:.2f} below min_pass_rate "
                                   f"{config.filters.min_pass_rate:.2f}")
    for w in result.warnings:
        log.warning(w)

    if write_outputs:
        t0 = time.perf_counter()
        write_run_outputs(result, run_dir)
        seconds["export"] = time.perf_counter() - t0
    return result
