"""What storing a model's weights in bf16 costs: per-head validation NLL, float32 vs bf16 round trip.

Holds out the validation part of a prepared corpus exactly as training does (seeded hash of
``material_id``), scores the model as saved, then after ``save_pretrained(dtype=bfloat16)``
and reload (upcast to float32), and writes both with their differences:

    python benchmarks/bench_weight_dtype.py --model crystalgen/pretrained --data runs/pool_v2.h5 \
        --json docs/results/weight_dtype.json
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import click
import numpy as np
import torch

from crystalgen.data.corpus import read_corpus
from crystalgen.model import CrystalModel
from crystalgen.training.config import DataConfig
from crystalgen.training.dataset import encode_corpus, is_validation, split, validation_batches
from crystalgen.training.distributed import DistContext
from crystalgen.training.loop import evaluate


@click.command()
@click.option("--model", "model_dir", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--data", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "json_out", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--seed", default=0, show_default=True, help="validation hash seed (the training config's data.split_seed)")
@click.option("--threads", default=1, show_default=True)
def main(model_dir: Path, data: Path, json_out: Path, seed: int, threads: int) -> None:
    torch.set_num_threads(threads)
    cfg = DataConfig()
    corpus = read_corpus(data)
    held = np.array([is_validation(str(m), cfg.val_fraction, seed) for m in corpus.ids])
    corpus.wyckoff["ok"] = corpus.wyckoff["ok"] & held  # encode only the validation part
    _, val = split(encode_corpus(corpus, cfg.max_length, progress=False), cfg.val_fraction, seed)
    batches = validation_batches(val, cfg.batch_size)
    ctx = DistContext()
    t0 = time.perf_counter()
    fp32 = evaluate(CrystalModel.from_pretrained(model_dir), batches, ctx, bf16=False)
    with tempfile.TemporaryDirectory() as tmp:
        CrystalModel.from_pretrained(model_dir).save_pretrained(tmp, dtype=torch.bfloat16)
        size_bf16 = sum(p.stat().st_size for p in Path(tmp).glob("*.safetensors"))
        bf16 = evaluate(CrystalModel.from_pretrained(tmp), batches, ctx, bf16=False)
    size_fp32 = sum(p.stat().st_size for p in model_dir.glob("*.safetensors"))
    result = {
        "model": str(model_dir), "data": str(data), "n_val": len(val), "seed": seed,
        "val_nll_stored": fp32, "val_nll_bf16_round_trip": bf16,
        "difference": {k: bf16[k] - fp32[k] for k in fp32},
        "weights_bytes_stored": size_fp32, "weights_bytes_bf16": size_bf16,
        "seconds": time.perf_counter() - t0,
    }
    json_out.parent.mkdir(parents=True, exist_ok=True)
    json_out.write_text(json.dumps(result, indent=2) + "\n")
    click.echo(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
