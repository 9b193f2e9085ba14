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
from collections.abc import Callable, Iterator
from pathlib import Path

from crystalgen.generation.options import SamplingOptions
from crystalgen.generation.request import GenerationRequest
from crystalgen.generation.rng import base_seed, sequence_keys
from crystalgen.generation.shards import ShardPool, ShardSpec, run_shard, split_jobs
from crystalgen.progress import progress_bar
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
        return [res for chunk in self.stream(request, n, options) for res in chunk]

    def stream(self, request: GenerationRequest, n: int, options: SamplingOptions,
               chunk: int | None = None) -> Iterator[list[GenerationResult]]:
        """:meth:`generate`'s results, in order, as lists that each come from up to ``chunk``
        jobs (None: a whole round), so a caller can write them out and let them go.

        Job k of a round has the same key however the round is cut, so chunks change only
        how jobs share batches (float rounding); with ``chunk`` >= ``n`` the results are
        :meth:`generate`'s bit for bit.
        """
        base = base_seed(options.seed)
        made, attempts, budget, round_ = 0, 0, n * options.max_rounds, 0
        bar = progress_bar(total=n, desc="sampling", unit="seq", enabled=options.progress)  # sequences tried
        try:
            while made < n and attempts < budget:
                # ask for as many as the success rate so far says are needed; the rate comes
                # from finished rounds only, so the same seed always asks for the same jobs
                rate = max(made / attempts, 0.1) if attempts else 1.0
                size = min(budget - attempts, max(math.ceil((n - made) / rate), 1))
                attempts += size
                bar.total = attempts
                bar.refresh()
                for first in range(0, size, chunk or size):
                    count = min(chunk or size, size - first)
                    done = self.run_jobs([request], [0] * count, base, round_, options, bar.update, first)
                    kept = [res for res in done if self._keep(res, request, options)][: n - made]
                    made += len(kept)
                    if kept:
                        yield kept
                    if made >= n:
                        break
                round_ += 1
        finally:
            bar.close()
        if made < n:
            log.warning("generated %d of %d requested crystals in %d attempts", made, n, attempts)

    @staticmethod
    def _keep(res: GenerationResult | None, request: GenerationRequest, options: SamplingOptions) -> bool:
        if res is None or (options.only_valid and not res.valid):
            return False
        if request.num_atoms and not request.formula:
            return len(res.structure.get_primitive_structure()) == request.num_atoms
        return True

    def generate_many(self, requests: list[GenerationRequest | None], n: int,
                      options: SamplingOptions) -> list[list[GenerationResult]]:
        """``n`` results per request, all requests sharing batches (None: skipped)."""
        base = base_seed(options.seed)
        results: list[list[GenerationResult]] = [[] for _ in requests]
        bar = progress_bar(total=0, desc="predicting", unit="seq", enabled=options.progress)  # sequences tried
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
                 options: SamplingOptions, on_progress: Callable[[int], None] | None = None,
                 first: int = 0) -> list[GenerationResult | None]:
        """One result (or None) per job (an index into ``requests``), shard by shard: in
        worker processes when there is more than one shard. The jobs are the round's
        ``first``, ``first + 1``, ... (their random keys)."""
        keys = sequence_keys(base, round_, len(jobs), first)  # job k's random stream, however jobs are split
        specs = [ShardSpec(tuple(jobs[part]), keys[part], options, self.max_atoms)
                 for part in split_jobs(len(jobs), options.batch_size, self.workers)]
        if len(specs) > 1 and self.workers > 1:
            if self._pool is None:
                self._pool = ShardPool(self.model, self.workers, self.model_dir)
            parts = self._pool.run(requests, specs, on_progress)
        else:
            parts = [run_shard(self.model, requests, spec, on_progress) for spec in specs]
        return [res for part in parts for res in part]
