"""Sampling on every core: jobs split into seeded shards, shards run in worker processes.

Generation of this model on a CPU is bound by one core's speed (small matrices, one
position per step), and turning sequences into validated crystals (decoding, spglib,
SMACT, the trace) is pure Python work of about the same size. So the fastest use of N
cores is N independent processes, each generating *and* finishing its own shard, with
one torch thread each: no core waits for another and no OpenMP threads spin.

Every job (one sequence to generate) has its own random stream, keyed by the caller's
seed, the round and the job's index (:func:`~crystalgen.heads.streams.sequence_keys`),
so how the jobs are cut into shards does not decide what they draw: the same seed gives
the same crystals with 0, 1 or 16 workers and any batch size, up to float rounding
(tested; docs/sampling.md). Shards are therefore cut for speed alone: one per worker at
least, none larger than ``SHARD_BATCHES`` batches.

On a CPU under Linux workers are forked: they inherit the model and the imported
libraries, start in milliseconds, and a user's script needs no
``if __name__ == "__main__"`` guard. Elsewhere, and for a model on a GPU, they are
spawned and load the model from its directory.
"""

from __future__ import annotations

import logging
import math
import multiprocessing as mp
import os
import queue as queue_lib
import sys
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass

import numpy as np
import torch

log = logging.getLogger(__name__)

#: a shard holds at most this many batches of jobs (a shard's stream ends with a tail of
#: long sequences, so shards much smaller than this waste time; larger ones balance worse)
SHARD_BATCHES = 2
#: requests smaller than this run in the calling process (a pool round trip costs more)
POOL_FROM = 64


@dataclass(frozen=True)
class ShardSpec:
    """One shard: the jobs (indices into the request list), their random-stream keys,
    and what to run them with."""

    jobs: tuple[int, ...]
    keys: np.ndarray  # uint64, one per job
    temperature: float
    batch_size: int
    max_atoms: int
    validate: bool
    user_seed: int | None  # recorded in each result's metadata
    min_distance: float = 0.0  # the distance guard (Å; 0 = off), see crystalgen.sampling


def split_jobs(count: int, batch_size: int, workers: int) -> list[slice]:
    """Cut ``count`` jobs into equal shards: one for a single process or a small request,
    else a multiple of ``workers`` shards of at most ``SHARD_BATCHES`` batches each."""
    if workers <= 1 or count < POOL_FROM:
        return [slice(0, count)]
    shards = max(workers, math.ceil(count / max(1, SHARD_BATCHES * batch_size)))
    shards = math.ceil(shards / workers) * workers
    size = math.ceil(count / shards)
    return [slice(i, min(i + size, count)) for i in range(0, count, size)]


def run_shard(model, requests, spec: ShardSpec, on_done: Callable[[int], None] | None = None) -> list:
    """Generate and finish (decode, validate, trace) every job of a shard, in this process.

    Returns one ``GenerationResult`` or None per job, in the shard's job order.
    """
    from crystalgen.api import sequence_to_result
    from crystalgen.sampling import generate_stream

    reqs = [requests[j] for j in spec.jobs]
    guard = spec.min_distance if spec.temperature > 0 else 0.0  # greedy decoding has nothing to redraw
    out: list = [None] * len(reqs)
    pending = 0
    for i, seq in generate_stream(model, [r.prefix for r in reqs], [r.rule for r in reqs], spec.temperature,
                                  None, spec.max_atoms, batch_size=spec.batch_size, min_distance=spec.min_distance,
                                  seeds=spec.keys):
        out[i] = sequence_to_result(seq, reqs[i], spec.validate, spec.temperature, spec.user_seed, guard)
        pending += 1
        if on_done is not None and pending == 16:
            on_done(pending)
            pending = 0
    if on_done is not None and pending:
        on_done(pending)
    return out


# ---- worker processes ---------------------------------------------------------------------

_WORKER: dict = {}


def _init_worker(source, device: str, progress) -> None:
    torch.set_num_threads(1)  # one process per core; the DataLoader rule for forked workers
    if source is not None:  # spawned: load the model; forked workers inherited it
        from crystalgen.model import CrystalModel

        _WORKER["model"] = CrystalModel.from_pretrained(source, device=device)
    _WORKER["progress"] = progress


def _run_in_worker(requests, spec: ShardSpec) -> list:
    progress = _WORKER.get("progress")
    return run_shard(_WORKER["model"], requests, spec, progress.put if progress is not None else None)


def default_workers(device: torch.device) -> int:
    """One worker per core on a CPU; none (everything in this process) on a GPU, where
    ``workers=N`` runs N processes that share the GPU (spawned, each its own context)."""
    if device.type != "cpu":
        return 0
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class ShardPool:
    """A pool of sampling processes for one model, kept between calls (closed by ``close``)."""

    def __init__(self, model, workers: int, model_dir: str | None = None, spawn: bool | None = None) -> None:
        """``spawn``: start the workers fresh and load the model from ``model_dir`` (None:
        only where forking is not safe, i.e. off Linux or for a GPU model)."""
        device = model.device
        # CUDA cannot be used in a forked child of a process that initialised it
        fork = sys.platform.startswith("linux") and device.type == "cpu" if spawn is None else not spawn
        if not fork and model_dir is None:
            raise ValueError("spawned worker processes load the model from its directory; "
                             "use workers=0 for a model that was not loaded from one")
        ctx = mp.get_context("fork" if fork else "spawn")
        self.progress = ctx.Queue()
        if fork:
            _WORKER["model"] = model  # inherited by the forked workers
        self.executor = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                                            initargs=(None if fork else model_dir, str(device), self.progress))
        # start every worker now (forked: while this model is the one to inherit; spawned:
        # so that their start-up is not paid inside the first request)
        wait([self.executor.submit(time.sleep, 0.05) for _ in range(workers)])
        self.workers = workers

    def run(self, requests, specs: list[ShardSpec], on_done: Callable[[int], None] | None = None) -> list[list]:
        """Run every shard; results in shard order (whichever worker ran it)."""
        futures: dict[Future, int] = {self.executor.submit(_run_in_worker, requests, s): k
                                      for k, s in enumerate(specs)}
        results: list[list] = [[] for _ in specs]
        waiting = set(futures)
        while waiting:
            done, waiting = wait(waiting, timeout=0.2, return_when=FIRST_COMPLETED)
            self._drain(on_done)
            for f in done:
                results[futures[f]] = f.result()
        self._drain(on_done)
        return results

    def _drain(self, on_done: Callable[[int], None] | None) -> None:
        while True:
            try:
                k = self.progress.get_nowait()
            except (queue_lib.Empty, OSError):
                return
            if on_done is not None:
                on_done(k)

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)
