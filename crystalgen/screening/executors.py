"""Where shards run: in this process, in local worker processes, or on a Ray cluster.

All three call ``fn(*args)`` for each task and hand each result to ``on_done`` in the
driver as soon as it finishes (in completion order), so the driver can write every
finished shard at once. Local processes are :class:`crystalgen.parallel.WorkerPool`
(the project's one pool); Ray is the second mechanism because it spans machines.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import torch
from crystalgen.progress import progress_bar

from crystalgen.parallel import WorkerContext, WorkerPool, cpu_count

Task = tuple[Any, ...]
OnDone = Callable[[int, Any], None]


def _call(context: WorkerContext, fn: Callable, *args: Any) -> Any:
    return fn(*args)


def run_local(fn: Callable, tasks: Sequence[Task], on_done: OnDone, workers: int = 1, progress: bool = True) -> None:
    """Run tasks in this process (workers <= 1) or in a :class:`~crystalgen.parallel.WorkerPool`
    of spawned processes (the driver may hold torch / OpenMP state that fork would copy).

    Shards run in this process with the torch threads a pool worker would get
    (``cpu_count // workers``), so a resumed run whose last shard runs here rounds floats
    as the pool did and ends with exactly the same results. A shard worker samples
    in-process: it starts no pool of its own.
    """
    bar = progress_bar(total=len(tasks), desc="shards", unit="shard", enabled=progress)
    threads = max(1, cpu_count() // max(workers, 1))
    try:
        if workers <= 1 or len(tasks) <= 1:
            before = torch.get_num_threads()
            torch.set_num_threads(threads)
            try:
                for i, args in enumerate(tasks):
                    on_done(i, fn(*args))
                    bar.update()
            finally:
                torch.set_num_threads(before)
            return

        def done(i: int, result: Any) -> None:
            on_done(i, result)
            bar.update()

        with WorkerPool(min(workers, len(tasks)), fork=False, threads=threads) as pool:
            pool.run(_call, [(fn, *args) for args in tasks], on_done=done)
    finally:
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
        bar = progress_bar(total=len(tasks), desc="shards (ray)", unit="shard", enabled=progress)
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
