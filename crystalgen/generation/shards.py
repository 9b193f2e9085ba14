"""A request's jobs, cut into shards and run in this process or in worker processes.

Generation of this model on a CPU is bound by one core's speed (small matrices, one
position per step), and turning sequences into validated crystals (decoding, spglib,
SMACT, the trace) is pure Python work of about the same size. So the fastest use of N
cores is N independent processes, each generating *and* finishing its own shard, with
one torch thread each.

Every job has its own random stream (:mod:`crystalgen.generation.rng`), so how jobs are
cut into shards does not decide what they draw: shards are cut for speed alone, one per
worker at least, none larger than ``SHARD_BATCHES`` batches.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from crystalgen.generation.decoder import generate_stream
from crystalgen.generation.finish import finish
from crystalgen.generation.options import SamplingOptions
from crystalgen.generation.request import GenerationRequest
from crystalgen.model import CrystalModel
from crystalgen.parallel import WorkerContext, WorkerPool, can_fork
from crystalgen.results import GenerationResult

#: a shard holds at most this many batches of jobs (a shard's stream ends with a tail of
#: long sequences, so shards much smaller than this waste time; larger ones balance worse)
SHARD_BATCHES = 2
#: requests smaller than this run in the calling process (a pool round trip costs more)
POOL_FROM = 64
#: finished sequences between two progress reports
REPORT_EVERY = 16


@dataclass(frozen=True)
class ShardSpec:
    """One shard: the jobs (indices into the request list), their random-stream keys,
    and how to sample them."""

    jobs: tuple[int, ...]
    keys: np.ndarray  # uint64, one per job
    options: SamplingOptions
    max_atoms: int


def split_jobs(count: int, batch_size: int, workers: int) -> list[slice]:
    """Cut ``count`` jobs into equal shards: one for a single process or a small request,
    else a multiple of ``workers`` shards of at most ``SHARD_BATCHES`` batches each."""
    if workers <= 1 or count < POOL_FROM:
        return [slice(0, count)]
    shards = max(workers, math.ceil(count / max(1, SHARD_BATCHES * batch_size)))
    shards = math.ceil(shards / workers) * workers
    size = math.ceil(count / shards)
    return [slice(i, min(i + size, count)) for i in range(0, count, size)]


def run_shard(model, requests: list[GenerationRequest], spec: ShardSpec,
              report: Callable[[int], None] | None = None) -> list[GenerationResult | None]:
    """Generate and finish (decode, validate, trace) every job of a shard, in this process.
    One result or None per job, in the shard's job order."""
    reqs = [requests[j] for j in spec.jobs]
    opts = spec.options
    out: list[GenerationResult | None] = [None] * len(reqs)
    pending = 0
    for i, seq in generate_stream(model, [r.prefix for r in reqs], spec.keys, [opts.plan_rule(r.rule) for r in reqs],
                                  opts.temperature, spec.max_atoms, batch_size=opts.batch_size,
                                  min_distance=opts.guard_limits, volume_guard=opts.volume_guard):
        out[i] = finish(seq, reqs[i], opts)
        pending += 1
        if report is not None and pending == REPORT_EVERY:
            report(pending)
            pending = 0
    if report is not None and pending:
        report(pending)
    return out


def _load_model(model_dir: str, device: str) -> CrystalModel:
    return CrystalModel.from_pretrained(model_dir, device=device)


def _shard_task(context: WorkerContext, requests: list[GenerationRequest], spec: ShardSpec) -> list:
    return run_shard(context.state, requests, spec, context.report)


class ShardPool:
    """Sampling processes for one model, kept between calls (closed by ``close``)."""

    def __init__(self, model, workers: int, model_dir: str | Path | None = None, spawn: bool | None = None) -> None:
        """``spawn``: start the workers fresh and load the model from ``model_dir`` (None:
        only where forking is not safe, i.e. off Linux or for a GPU model, since CUDA cannot
        be used in a forked child of a process that initialised it)."""
        fork = can_fork() and model.device.type == "cpu" if spawn is None else not spawn
        if fork:
            self.pool = WorkerPool(workers, setup_args=(model,), fork=True)
        elif model_dir is None:
            raise ValueError("spawned worker processes load the model from its directory; "
                             "use workers=0 for a model that was not loaded from one")
        else:
            self.pool = WorkerPool(workers, _load_model, (str(model_dir), str(model.device)), fork=False)
        self.workers = workers

    def run(self, requests: list[GenerationRequest], specs: list[ShardSpec],
            on_progress: Callable[[int], None] | None = None) -> list[list]:
        """Every shard's results, in shard order (whichever worker ran it)."""
        return self.pool.run(_shard_task, [(requests, s) for s in specs], on_progress=on_progress)

    def close(self) -> None:
        self.pool.close()
