"""How many equivalent Wyckoff forms the augmentation finds per structure, and what encoding them costs.

For an evenly spaced subset of a prepared corpus, encodes every structure as training does
(``encode_variants``: the six prefix variants) and then its equivalent forms
(``equivalent_encodings``, up to ``--max-forms``), timing both, and counts the forms kept
(capped) and an upper bound on all distinct forms (settings x representatives x orders).
Times are CPU seconds of this process (``time.process_time``): on a shared machine the wall
time depends on the other jobs, the CPU time much less.

    nice python benchmarks/bench_augment.py --data runs/pool_v2.h5 --limit 2000 --json docs/results/augment_v2.json
"""

from __future__ import annotations

import json
import platform
import time
from collections import Counter
from datetime import date
from pathlib import Path

import click
import numpy as np

from crystalgen.data.corpus import read_corpus
from crystalgen.representation.equivalent import EquivalentForms
from crystalgen.representation.sequence import EncodeError, crystal_from_arrays
from crystalgen.training.dataset import encode_variants, equivalent_encodings, wyckoff_arrays

BOUND_BINS = (1, 2, 4, 8, 16, 64, 256, 4096)


def _bin(n: int) -> str:
    for lo, hi in zip((0, *BOUND_BINS), BOUND_BINS):
        if n <= hi:
            return f"{lo + 1}-{hi}" if hi > lo + 1 else str(hi)
    return f">{BOUND_BINS[-1]}"


@click.command()
@click.option("--data", required=True, type=click.Path(exists=True, dir_okay=False), help="prepared corpus (.h5)")
@click.option("--limit", type=int, default=2000, show_default=True, help="structures, evenly spaced over the corpus")
@click.option("--max-forms", type=int, default=8, show_default=True, help="data.augment_max_variants")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None)
@click.option("--hardware", default="", help="a line for the result file")
def main(data: str, limit: int, max_forms: int, json_out: str | None, hardware: str) -> None:
    corpus = read_corpus(data)
    w = corpus.wyckoff
    picks = np.unique(np.linspace(0, len(corpus) - 1, min(limit, len(corpus))).astype(int))
    forms, bounds, plain_s, extra_s, skipped = [], [], 0.0, 0.0, 0
    for i in picks:
        if not w["ok"][i]:
            skipped += 1
            continue
        arrays = wyckoff_arrays(w, i)
        try:
            t0 = time.process_time()
            encode_variants(*arrays)
            t1 = time.process_time()
            extra = equivalent_encodings(str(corpus.ids[i]), arrays, max_forms)
            t2 = time.process_time()
        except (EncodeError, ValueError, KeyError):
            skipped += 1
            continue
        plain_s, extra_s = plain_s + t1 - t0, extra_s + t2 - t1
        forms.append(len(extra) + 1)
        bounds.append(EquivalentForms(crystal_from_arrays(*arrays)[0]).count_bound())
    n = len(forms)
    result = {
        "data": data, "n_structures": n, "skipped": skipped, "max_forms": max_forms,
        "forms_mean": float(np.mean(forms)), "forms_histogram": dict(sorted(Counter(map(str, forms)).items())),
        "share_with_one_form": float(np.mean(np.array(forms) == 1)),
        "bound_median": float(np.median(bounds)), "bound_histogram": dict(Counter(_bin(b) for b in bounds)),
        "encode_cpu_ms_per_structure": 1000 * plain_s / n, "forms_cpu_ms_per_structure": 1000 * extra_s / n,
        "settings": {"limit": limit, "subset": "evenly spaced over the corpus"},
        "hardware": hardware or platform.processor() or platform.machine(), "date": str(date.today()),
        "command": "python benchmarks/bench_augment.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in (("data", data), ("limit", limit), ("max_forms", max_forms))),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if json_out:
        Path(json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(json_out).write_text(text + "\n")


if __name__ == "__main__":
    main()
