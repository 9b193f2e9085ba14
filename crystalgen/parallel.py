"""Worker processes for every CPU-bound fan-out: sampling shards, screening shards,
validation, CIF writing and evaluation scoring.

One mechanism, :class:`WorkerPool`: long-lived processes, each of which builds its state
once (``setup``, e.g. load the model) and then runs tasks ``fn(context, *args)`` from a
shared queue; results come back in completion order to an ``on_done`` callback in the
caller. :func:`parallel_map` is the one-off ``[fn(x) for x in items]`` on top of it.

The process rules live here, so every caller gets them:

- **No nested pools.** A worker runs its tasks in-process: inside a worker,
  :func:`in_worker` is true, :func:`default_workers` is 0 and :func:`parallel_map` is
  serial. (A pool forked inside a spawned worker is what deadlocked screening runs.)
- **Children die with their parent.** On Linux every worker asks the kernel for SIGKILL
  when its parent dies (``PR_SET_PDEATHSIG``); elsewhere a thread watches the parent.
- **Ctrl-C** reaches only the parent (workers ignore SIGINT); the parent kills the
  workers, also while it is still starting them, and re-raises ``KeyboardInterrupt``
  within a second. Tasks are queued two per worker, so none is left in a pipe.

Workers are forked where that is safe (Linux, CPU work: they inherit the model and the
imported libraries and start in milliseconds) and spawned otherwise; spawned workers
get ``threads`` BLAS/OpenMP threads through the environment, which those libraries read
when they load, before any setup runs.

Ray (``crystalgen.screening.executors``) is the other mechanism, for clusters of machines.
"""

from __future__ import annotations

import ctypes
import itertools
import multiprocessing as mp
import os
import queue as queue_lib
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from crystalgen.progress import progress_bar

T = TypeVar("T")
R = TypeVar("R")

_IN_WORKER = "CRYSTALGEN_IN_WORKER"
_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
_PR_SET_PDEATHSIG = 1


def in_worker() -> bool:
    """Is this process a crystalgen worker (which must not start pools of its own)?"""
    return os.environ.get(_IN_WORKER) == "1"


def cpu_count() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def default_workers(device_type: str = "cpu") -> int:
    """One worker per core for CPU work; none inside a worker or for a GPU (where
    ``workers=N`` runs N spawned processes that share the GPU)."""
    return 0 if in_worker() or device_type != "cpu" else cpu_count()


def can_fork() -> bool:
    return sys.platform.startswith("linux") and "fork" in mp.get_all_start_methods()


@dataclass(frozen=True)
class WorkerContext:
    """What a task receives first: the worker's state (``setup``'s result) and a way to
    report progress (a count of finished items) to the caller."""

    state: Any
    report: Callable[[int], None]


def _die_with_parent(parent: int) -> None:
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):
            pass
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)
        return

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _serve(parent: int, threads: int, setup, setup_args: tuple, tasks, results) -> None:
    """A worker's life: follow the parent, build the state, run tasks until told to stop."""
    _die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ[_IN_WORKER] = "1"
    if "torch" in sys.modules or setup is not None:
        try:
            import torch

            torch.set_num_threads(threads)
        except ImportError:
            pass
    try:
        state = setup(*setup_args) if setup is not None else (setup_args[0] if setup_args else None)
    except BaseException:
        results.put((-1, "error", traceback.format_exc()))
        return
    context = WorkerContext(state, lambda n: results.put((-1, "progress", n)))
    while True:
        item = tasks.get()
        if item is None:
            return
        k, fn, args = item
        try:
            results.put((k, "ok", fn(context, *args)))
        except BaseException:
            results.put((k, "error", traceback.format_exc()))


@contextmanager
def _child_thread_limit(threads: int) -> Iterator[None]:
    """Start children with ``threads`` BLAS/OpenMP threads each (read when numpy loads)."""
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


class WorkerError(RuntimeError):
    """A task raised in a worker, or a worker died."""


class WorkerPool:
    """``workers`` processes, each holding ``setup(*setup_args)`` (or, with ``setup=None``,
    ``setup_args[0]`` as is: a forked worker inherits it without pickling)."""

    def __init__(self, workers: int, setup: Callable[..., Any] | None = None, setup_args: tuple = (),
                 fork: bool | None = None, threads: int = 1) -> None:
        if in_worker():
            raise RuntimeError("a crystalgen worker process may not start worker processes of its own")
        fork = can_fork() if fork is None else fork
        if fork and not can_fork():
            raise ValueError("fork is not available on this platform")
        if not fork and setup is None and setup_args:
            raise ValueError("spawned workers build their state with `setup`")
        ctx = mp.get_context("fork" if fork else "spawn")
        self.tasks = ctx.Queue()
        self.results = ctx.Queue()
        self.processes = [ctx.Process(target=_serve, args=(os.getpid(), threads, setup, setup_args,
                                                           self.tasks, self.results), daemon=True)
                          for _ in range(workers)]
        try:
            with _child_thread_limit(threads):
                for p in self.processes:
                    p.start()
        except BaseException:  # Ctrl-C while starting: stop those already started
            self.processes = [p for p in self.processes if p.pid is not None]
            self.close(wait=False)
            raise
        self.workers = workers

    def __enter__(self) -> "WorkerPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def run(self, fn: Callable[..., R], tasks: Sequence[tuple], on_done: Callable[[int, R], None] | None = None,
            on_progress: Callable[[int], None] | None = None) -> list[R]:
        """``[fn(context, *args) for args in tasks]`` over the workers, in task order;
        ``on_done(i, result)`` is called in the caller as each task finishes.

        At most two tasks per worker are queued at a time, the next one sent as each
        finishes: the queue's pipe never fills, so no thread of this process is left
        blocked writing tasks that no worker will read when the run stops.
        """
        out: list[Any] = [None] * len(tasks)
        remaining = len(tasks)
        pending = iter(enumerate(tasks))
        try:
            for k, args in itertools.islice(pending, 2 * self.workers):
                self.tasks.put((k, fn, tuple(args)))
            while remaining:
                try:
                    k, kind, value = self.results.get(timeout=0.5)
                except queue_lib.Empty:
                    dead = [p.exitcode for p in self.processes if not p.is_alive()]
                    if dead:
                        raise WorkerError(f"a worker process died (exit code {dead[0]})") from None
                    continue
                if kind == "progress":
                    if on_progress is not None:
                        on_progress(value)
                elif kind == "error":
                    raise WorkerError(f"a task failed in a worker process:\n{value}")
                else:
                    out[k] = value
                    remaining -= 1
                    for j, args in itertools.islice(pending, 1):
                        self.tasks.put((j, fn, tuple(args)))
                    if on_done is not None:
                        on_done(k, value)
        except BaseException:
            self.close(wait=False)
            raise
        return out

    def close(self, wait: bool = True) -> None:
        """Stop the workers: let them finish their current task (``wait``) or kill them."""
        if not self.processes:
            return
        if wait:
            for _ in self.processes:
                self.tasks.put(None)
            deadline = time.monotonic() + 10.0
            for p in self.processes:
                p.join(max(0.0, deadline - time.monotonic()))
        for p in self.processes:
            if p.is_alive():
                p.kill()
                p.join()
        for q in (self.tasks, self.results):
            q.cancel_join_thread()
            q.close()
        self.processes = []


def _apply_chunk(context: WorkerContext, fn: Callable[[T], R], items: list[T]) -> list[R]:
    out = [fn(x) for x in items]
    context.report(len(items))
    return out


def parallel_map(
    fn: Callable[[T], R],
    items: Sequence[T] | Iterable[T],
    workers: int = 1,
    desc: str | None = None,
    chunksize: int = 4,
    progress: bool = True,
    serial_below: int = 2,
    unit: str = "it",
    leave: bool = False,
) -> list[R]:
    """``[fn(x) for x in items]`` over ``workers`` forked processes, in input order; in
    this process when there are fewer than ``serial_below`` items (a pool costs more than
    it saves), inside a worker, or where fork is unavailable.

    ``fn`` must be a module-level function (it is pickled).
    """
    items = list(items)
    bar = progress_bar(total=len(items), desc=desc, unit=unit, enabled=progress, leave=leave)
    try:
        if workers <= 1 or len(items) < max(serial_below, 2) or in_worker() or not can_fork():
            out = []
            for item in items:
                out.append(fn(item))
                bar.update()
            return out
        chunks = [items[i:i + chunksize] for i in range(0, len(items), chunksize)]
        with WorkerPool(min(workers, len(chunks)), fork=True, threads=1) as pool:
            parts = pool.run(_apply_chunk, [(fn, c) for c in chunks], on_progress=bar.update)
        return [r for part in parts for r in part]
    finally:
        bar.close()
