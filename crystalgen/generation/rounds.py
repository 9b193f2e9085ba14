"""Asking for crystals in rounds until enough come back, for one request or many.

A round runs a batch of jobs (one sequence each) through the shards. Sequences can fail
(no legal completion, an undecodable crystal), and under ``only_valid`` or a de novo
``num_atoms`` some results are dropped, so further rounds ask for what is missing, up to
a budget. Round ``r``'s job ``k`` always has the same random key, so the same seed asks
for the same jobs and gets the same crystals.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path

from tqdm.auto import tqdm

from crystalgen.generation.options import SamplingOptions
from crystalgen.generation.request import GenerationRequest
from crystalgen.generation.rng import base_seed, sequence_keys
from crystalgen.generation.shards import ShardPool, ShardSpec, run_shard, split_jobs
from crystalgen.results import GenerationResult

log = logging.getLogger(__name__)


class Rounds:
    """Runs jobs for a model: in this process, or in a pool of ``workers`` processes that
    starts on the first request large enough and lives until :meth:`close`."""

    def __init__(self, model, max_atoms: int, workers: int, model_dir: str | Path | None = None) -> None:
        self.model = model
        self.max_atoms = max_atoms
        self.workers = workers
        self.model_dir = model_dir
        self._pool: ShardPool | None = None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def generate(self, request: GenerationRequest, n: int, options: SamplingOptions) -> list[GenerationResult]:
        """``n`` results for one request (fewer if ``max_rounds`` x ``n`` attempts run out)."""
        base = base_seed(options.seed)
        results: list[GenerationResult] = []
        attempts, budget, round_ = 0, n * options.max_rounds, 0
        bar = tqdm(total=n, desc="sampling", unit="seq", disable=not options.progress)  # sequences tried
        while len(results) < n and attempts < budget:
            # ask for as many as the success rate so far says are needed; the rate comes
            # from finished rounds only, so the same seed always asks for the same jobs
            rate = max(len(results) / attempts, 0.1) if attempts else 1.0
            size = min(budget - attempts, max(math.ceil((n - len(results)) / rate), 1))
            attempts += size
            bar.total = attempts
            bar.refresh()
            kept = []
            for res in self.run_jobs([request], [0] * size, base, round_, options, bar.update):
                if res is None or (options.only_valid and not res.valid):
                    continue
                if request.num_atoms and not request.formula:
                    if len(res.structure.get_primitive_structure()) != request.num_atoms:
                        continue
                kept.append(res)
            results += kept[: n - len(results)]
            round_ += 1
        bar.close()
        if len(results) < n:
            log.warning("generated %d of %d requested crystals in %d attempts", len(results), n, attempts)
        return results

    def generate_many(self, requests: list[GenerationRequest | None], n: int,
                      options: SamplingOptions) -> list[list[GenerationResult]]:
        """``n`` results per request, all requests sharing batches (None: skipped)."""
        base = base_seed(options.seed)
        results: list[list[GenerationResult]] = [[] for _ in requests]
        bar = tqdm(total=0, desc="predicting", unit="seq", disable=not options.progress)  # sequences tried
        for round_ in range(options.max_rounds):
            jobs = [i for i, r in enumerate(requests) if r is not None for _ in range(n - len(results[i]))]
            if not jobs:
                break
            bar.total += len(jobs)
            bar.refresh()
            jobs.sort(key=lambda i: len(requests[i].prefix))  # similar lengths: little padding
            for i, res in zip(jobs, self.run_jobs(requests, jobs, base, round_, options, bar.update)):
                if res is not None and len(results[i]) < n:
                    results[i].append(res)
        bar.close()
        return results

    def run_jobs(self, requests: list[GenerationRequest | None], jobs: list[int], base: int, round_: int,
                 options: SamplingOptions,
                 on_progress: Callable[[int], None] | None = None) -> list[GenerationResult | None]:
        """One result (or None) per job (an index into ``requests``), shard by shard: in
        worker processes when there is more than one shard."""
        keys = sequence_keys(base, round_, len(jobs))  # job k's random stream, however jobs are split
        specs = [ShardSpec(tuple(jobs[part]), keys[part], options, self.max_atoms)
                 for part in split_jobs(len(jobs), options.batch_size, self.workers)]
        if len(specs) > 1 and self.workers > 1:
            if self._pool is None:
                self._pool = ShardPool(self.model, self.workers, self.model_dir)
            parts = self._pool.run(requests, specs, on_progress)
        else:
            parts = [run_shard(self.model, requests, spec, on_progress) for spec in specs]
        return [res for part in parts for res in part]
