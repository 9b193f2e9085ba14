"""Training throughput of the crystal model: real (non-pad) tokens per second.

Encodes (part of) a prepared corpus, then times optimizer steps exactly as the training
loop takes them (bucketed batches, AdamW, clipping, bf16 autocast on CUDA).

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_train.py --data runs/pool.h5 \
        --config examples/train_tiny.toml --steps 40 [--device cuda] [--set KEY=VALUE ...]
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import click
import torch

from crystalgen.data.corpus import read_corpus
from crystalgen.model import CrystalModel
from crystalgen.representation import vocab as V
from crystalgen.training.config import load_config
from crystalgen.training.dataset import EpochBatches, collate, encode_corpus
from crystalgen.training.distributed import pick_device
from crystalgen.training.loop import autocast_for, make_optimizer, to_device


@click.command()
@click.option("--data", required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--config", "config_path", type=click.Path(exists=True, path_type=Path))
@click.option("--set", "overrides", multiple=True)
@click.option("--device", default=None)
@click.option("--steps", default=40, show_default=True, help="timed steps")
@click.option("--warmup", default=5, show_default=True, help="untimed steps first")
@click.option("--limit", default=3000, show_default=True, help="structures to encode (0 = all)")
def main(data, config_path, overrides, device, steps, warmup, limit) -> None:
    config = load_config(config_path, list(overrides))
    device = pick_device(device)
    if device.type == "cpu":
        torch.set_num_threads(config.num_threads)
    corpus = read_corpus(data)
    if limit:
        corpus.wyckoff["ok"] = corpus.wyckoff["ok"].copy()
        corpus.wyckoff["ok"][limit:] = False
    t0 = time.perf_counter()
    encoded = encode_corpus(corpus, config.data.max_length, progress=False)
    encode_s = time.perf_counter() - t0
    torch.manual_seed(config.seed)
    model = CrystalModel(config.model).to(device).train()
    model.mask_heads = device.type == "cuda"
    opt = make_optimizer(model, config.optim)
    batches = EpochBatches(encoded, config.data, config.seed).plan(0)
    tokens, padded, start = 0, 0, None
    for i in range(warmup + steps):
        if i == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
        batch = to_device(collate(batches[i % len(batches)]), device)
        with autocast_for(device, config.bf16):
            loss = model(batch)["loss"]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.optim.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i >= warmup:
            tokens += int((batch["tokens"] != V.PAD).sum())
            padded += batch["tokens"].numel()
    if device.type == "cuda":
        torch.cuda.synchronize()
    wall = time.perf_counter() - start
    result = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu x{torch.get_num_threads()}",
        "backbone": config.model.backbone,
        "overrides": config.model.backbone_overrides,
        "parameters": sum(p.numel() for p in model.parameters()),
        "batch_size": config.data.batch_size,
        "steps": steps,
        "ms_per_step": 1000 * wall / steps,
        "tokens_per_s": tokens / wall,
        "padding_fraction": 1 - tokens / padded,
        "encode_structures_per_s": len(encoded) / encode_s,
        "peak_gpu_mib": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None,
    }
    click.echo(json.dumps(result))


if __name__ == "__main__":
    main()
