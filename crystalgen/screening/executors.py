"""Where shards run: in this process, in local worker processes, or on a Ray cluster.

All three call ``fn(*args)`` for each task and hand each result to ``on_done`` in the
driver as soon as it finishes (in completion order), so the driver can write every
finished shard at once. No scheduling of our own: ``concurrent.futures`` or Ray does it.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Any

from tqdm import tqdm

Task = tuple[Any, ...]
OnDone = Callable[[int, Any], None]


def _exit_with_parent(parent: int) -> None:
    """Stop this worker when the driver dies (a killed run must not leave shards computing)."""
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:
            os._exit(1)


_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


@contextmanager
def _child_thread_limit(threads: int) -> Iterator[None]:
    """Spawn children with ``threads`` BLAS/OpenMP threads each.

    The variables must be in the environment when a child starts: OpenBLAS reads them when
    numpy loads, which is before any initializer runs. Unlimited, two workers' BLAS threads
    spin against each other: ASE's cell filter (tiny scipy solves) ran 5x slower.
    """
    saved = {k: os.environ.get(k) for k in _THREAD_VARIABLES}
    os.environ.update({k: str(threads) for k in _THREAD_VARIABLES})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _init_worker(threads: int, parent: int) -> None:
    """Limit torch threads (no oversubscription) and follow the driver's death."""
    try:
        import torch

        torch.set_num_threads(threads)
    except ImportError:
        pass
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()


def run_local(fn: Callable, tasks: Sequence[Task], on_done: OnDone, workers: int = 1, progress: bool = True) -> None:
    """Run tasks in this process (workers <= 1) or in a pool of spawned processes.

    In this process BLAS keeps the threads it started with; for relaxations with one worker,
    start the run with ``OMP_NUM_THREADS=1`` (the pool sets it for its workers itself).
    """
    bar = tqdm(total=len(tasks), desc="shards", unit="shard", disable=not progress)
    if workers <= 1 or len(tasks) <= 1:
        for i, args in enumerate(tasks):
            on_done(i, fn(*args))
            bar.update()
        bar.close()
        return
    threads = max(1, (os.cpu_count() or 1) // workers)
    # spawn, not fork: the driver may already hold torch / OpenMP state that fork would copy.
    with _child_thread_limit(threads), ProcessPoolExecutor(
        workers, mp_context=mp.get_context("spawn"), initializer=_init_worker, initargs=(threads, os.getpid())
    ) as pool:
        pending = {pool.submit(fn, *args): i for i, args in enumerate(tasks)}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                on_done(pending.pop(fut), fut.result())
                bar.update()
    bar.close()


def run_ray(
    fn: Callable, tasks: Sequence[Task], on_done: OnDone, address: str | None = None,
    workers: int | None = None, progress: bool = True,
) -> None:
    """Run tasks as Ray tasks (one CPU each) on the cluster at ``address``.

    ``address=None`` starts a local Ray instance with ``workers`` CPUs (for testing); the
    instance is shut down again afterwards, a cluster we only connected to is left alone
    except for our connection.
    """
    try:
        import ray
    except ImportError as exc:  # optional extra
        raise RuntimeError("the Ray executor needs the optional extra: pip install 'crystalgen[ray]'") from exc

    started_here = not ray.is_initialized()
    if started_here:
        if address is None:
            ray.init(num_cpus=workers or os.cpu_count(), include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=address, log_to_driver=False)
    try:
        remote = ray.remote(num_cpus=1)(fn)
        # Arguments shared by many tasks (config, reference corpus) go into the object store once.
        shared: dict[int, Any] = {}

        def put(arg: Any) -> Any:
            if isinstance(arg, dict):
                if id(arg) not in shared:
                    shared[id(arg)] = ray.put(arg)
                return shared[id(arg)]
            return arg

        pending = {remote.remote(*[put(a) for a in args]): i for i, args in enumerate(tasks)}
        bar = tqdm(total=len(tasks), desc="shards (ray)", unit="shard", disable=not progress)
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                on_done(pending.pop(ref), ray.get(ref))
                bar.update()
        bar.close()
    finally:
        if started_here:
            ray.shutdown()


def run_tasks(
    fn: Callable, tasks: Sequence[Task], on_done: OnDone, executor: str = "local",
    workers: int = 1, address: str | None = None, progress: bool = True,
) -> None:
    """Dispatch to the executor named in the config or on the command line."""
    if executor == "local":
        run_local(fn, tasks, on_done, workers=workers, progress=progress)
    elif executor == "ray":
        run_ray(fn, tasks, on_done, address=address, workers=workers, progress=progress)
    else:
        raise ValueError(f"unknown executor {executor!r} (use 'local' or 'ray')")
