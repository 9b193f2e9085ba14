"""Time `crystalgen data prepare` on a real file (default: the whole training pool).

Reports wall time and CPU seconds (this process plus its workers): on a shared
machine the wall time depends on other jobs, the CPU time does not, so
CPU seconds / cores is what an idle machine of the same kind would take.

    nice python benchmarks/bench_prepare.py /work/shared/data/train/pool.csv.gz --out runs/pool.h5
"""

from __future__ import annotations

import json
import os
import resource
import time
from pathlib import Path

import click

from crystalgen.data.corpus import read_corpus
from crystalgen.data.prepare import PrepareConfig, prepare


def _cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@click.command()
@click.argument("sources", nargs=-1)
@click.option("--out", default="runs/pool.h5", type=click.Path(dir_okay=False), help="corpus to write")
@click.option("--workers", type=int, default=None, help="processes (default: all cores)")
def main(sources: tuple[str, ...], out: str, workers: int | None) -> None:
    sources = sources or ("/work/shared/data/train/pool.csv.gz",)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    cpu0, t0 = _cpu_seconds(), time.perf_counter()
    report = prepare(list(sources), out, PrepareConfig(workers=workers))
    wall, cpu = time.perf_counter() - t0, _cpu_seconds() - cpu0
    corpus = read_corpus(out)
    cores = workers or os.cpu_count() or 1
    figures = {
        "sources": list(sources),
        "out": out,
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1),
        "cores": cores,
        "uncontended_wall_estimate_s": round(cpu / cores, 1),
        "ms_cpu_per_structure": round(1000 * cpu / max(report.read, 1), 1),
        "report": report.as_dict(),
        "corpus_structures": len(corpus),
        "wyckoff_ok_fraction": float(corpus.wyckoff["ok"].mean()) if len(corpus) else None,
        "file_mb": round(Path(out).stat().st_size / 1e6, 1),
    }
    print(report.text())
    print(json.dumps({k: v for k, v in figures.items() if k != "report"}, indent=2))
    Path(f"{out}.bench.json").write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
