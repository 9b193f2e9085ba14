"""A process-pool map with a progress bar: validation, CIF writing, evaluation scoring.

That work is CPU-bound pure Python (pymatgen, spglib), so threads do not help; processes
do. Small batches, ``workers <= 1`` and platforms without ``fork`` run in this process,
which also keeps tests and debugging simple.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")
R = TypeVar("R")


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
    """`[fn(x) for x in items]`, over `workers` processes, in input order; in this process
    when there are fewer than ``serial_below`` items (a pool costs more than it saves).

    `fn` must be a module-level function (it is pickled). Forked workers inherit the
    parent's imports, so the per-process start cost is small.
    """
    items = list(items)
    bar = tqdm(total=len(items), desc=desc, unit=unit, disable=not progress, leave=leave)
    try:
        if workers <= 1 or len(items) < max(serial_below, 2) or "fork" not in multiprocessing.get_all_start_methods():
            out = []
            for item in items:
                out.append(fn(item))
                bar.update()
            return out
        ctx = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            out = []
            for result in pool.map(fn, items, chunksize=chunksize):
                out.append(result)
                bar.update()
            return out
    finally:
        bar.close()
