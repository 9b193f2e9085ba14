"""Validator throughput and ground-truth validity on a benchmark CSV (default: MPTS-52 test).

Parses every CIF first (timed separately), then times `validate_many` over the
full validator set on all cores, and reports the CDVAE structural and SMACT
compositional validity rates, so the README figures come from one command:

    nice python benchmarks/bench_validate.py /work/shared/data/benchmark/mpts_52_test.csv.gz
"""

from __future__ import annotations

import json
import os
import resource
import time
from pathlib import Path

import click

from crystalgen.data.readers import read_structures_parallel
from crystalgen.validators import smact_validity, structural_validity, validate_many


def _cpu_seconds() -> float:
    """User+system CPU time of this process plus its finished child processes."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@click.command()
@click.argument("path", default="/work/shared/data/benchmark/mpts_52_test.csv.gz", type=click.Path(exists=True))
@click.option("--workers", type=int, default=None, help="processes (default: all cores)")
@click.option("--limit", type=int, default=None, help="only the first N structures")
@click.option("--json-out", type=click.Path(), default=None, help="also write the figures as JSON")
def main(path: str, workers: int | None, limit: int | None, json_out: str | None) -> None:
    t0 = time.perf_counter()
    records = read_structures_parallel(path, workers)[:limit]
    structures = [r.structure for r in records if r.structure is not None]
    t_parse = time.perf_counter() - t0

    cpu0 = _cpu_seconds()
    t1 = time.perf_counter()
    batch = validate_many(structures, workers=workers, progress=True)
    t_validate = time.perf_counter() - t1
    cpu_validate = _cpu_seconds() - cpu0
    n_workers = workers or os.cpu_count() or 1

    structural = sum(structural_validity(s) for s in structures) / len(structures)
    compositional = sum(smact_validity(s.composition) for s in structures) / len(structures)
    figures = {
        "file": Path(path).name,
        "n": len(structures),
        "unparsable": len(records) - len(structures),
        "cores": os.cpu_count(),
        "parse_s": round(t_parse, 2),
        "validate_s": round(t_validate, 2),
        "validate_structures_per_s": round(len(structures) / t_validate, 1),
        # CPU seconds of this process and its workers: the wall figure drops when other jobs
        # share the cores, so also report what `workers` uncontended cores would reach.
        "validate_cpu_s": round(cpu_validate, 2),
        "validate_structures_per_s_uncontended": round(n_workers * len(structures) / cpu_validate, 1),
        "structural_validity": structural,
        "smact_validity": compositional,
        "summary": batch.summary,
        "pymatgen_guess_skipped": sum(
            r.checks["charge"].details.get("pymatgen_neutral") == "skipped (search too large)" for r in batch.reports
        )
        / len(structures),
    }
    print(json.dumps(figures, indent=2))
    if json_out:
        Path(json_out).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
