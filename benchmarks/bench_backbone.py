"""Backbone speed figures: training throughput of ``tiny`` vs a dense transformer of
equal active size, MoE dispatch vs the per-token loop, decoding with vs without cache.

    python benchmarks/bench_backbone.py [--device cpu|cuda] [--threads 1] [--json out.json]

Each figure is the median of several timed repeats after a warm-up.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import time
from collections.abc import Callable

import click
import torch
from tqdm import tqdm

from crystalgen.backbone import Backbone, BackboneConfig, get_config
from crystalgen.backbone.moe import SparseMoeBlock, naive_moe


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def median_seconds(fn: Callable[[], object], device: str, repeats: int = 5, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def active_backbone_params(model: Backbone) -> int:
    """Parameters one token uses: all but the routed experts it is not sent to."""
    cfg = model.config
    total = sum(p.numel() for p in model.parameters())
    for m in model.modules():
        if isinstance(m, SparseMoeBlock):
            per_expert = sum(p.numel() for p in m.experts.parameters()) // m.num_experts
            total -= per_expert * (m.num_experts - cfg.num_experts_per_tok)
    return total


def dense_twin(cfg: BackboneConfig) -> BackboneConfig:
    """A plain dense transformer (all full attention, RoPE, dense SwiGLU) whose MLP width
    makes its parameter count equal the MoE model's active count."""
    target = active_backbone_params(Backbone(cfg))
    base = dataclasses.replace(cfg, layer_types=["full_attention"] * cfg.num_hidden_layers, num_experts=0,
                               position_embedding="rope", intermediate_size=1)
    with torch.device("meta"):
        fixed = sum(p.numel() for p in Backbone(base).parameters())
    per_unit = 3 * cfg.hidden_size * cfg.num_hidden_layers  # gate, up, down per unit of width
    return dataclasses.replace(base, intermediate_size=max(1, round((target - fixed) / per_unit) + 1))


def bench_training(cfg: BackboneConfig, device: str, batch: int, seq: int) -> dict:
    torch.manual_seed(0)
    model = Backbone(cfg).to(device)
    x = torch.randn(batch, seq, cfg.hidden_size, device=device)

    def step() -> None:
        out = model(x)
        (out.hidden_states.pow(2).mean() + out.aux_loss).backward()

    sec = median_seconds(step, device)
    return {"tokens_per_s": batch * seq / sec, "active_params": active_backbone_params(model),
            "total_params": sum(p.numel() for p in model.parameters())}


def bench_dispatch(num_experts: int, top_k: int, device: str, tokens: int, hidden: int) -> dict:
    torch.manual_seed(0)
    cfg = get_config("tiny", hidden_size=hidden, num_experts=num_experts, num_experts_per_tok=top_k,
                     moe_intermediate_size=hidden)
    block = SparseMoeBlock(cfg).to(device)
    for p in block.parameters():
        torch.nn.init.normal_(p, 0.0, 0.02)
    x = torch.randn(tokens, hidden, device=device)
    with torch.no_grad():
        torch.testing.assert_close(block(x)[0], naive_moe(block, x), atol=1e-4, rtol=1e-3)
        sorted_s = median_seconds(lambda: block(x), device)
        naive_s = median_seconds(lambda: naive_moe(block, x), device, repeats=3)
    return {"experts": num_experts, "top_k": top_k, "tokens": tokens, "sorted_ms": 1e3 * sorted_s,
            "naive_ms": 1e3 * naive_s, "speedup": naive_s / sorted_s}


def bench_decode(cfg: BackboneConfig, device: str, batch: int, prefix: int, new: int) -> dict:
    torch.manual_seed(0)
    model = Backbone(cfg).to(device).eval()
    x = torch.randn(batch, prefix + new, cfg.hidden_size, device=device)

    @torch.no_grad()
    def with_cache() -> None:
        cache = model.new_cache(batch, prefix + new, device)
        model(x[:, :prefix], cache=cache)
        for i in range(prefix, prefix + new):
            model(x[:, i:i + 1], cache=cache)

    @torch.no_grad()
    def without_cache() -> None:
        for i in range(prefix, prefix + new):
            model(x[:, :i + 1])

    cached = median_seconds(with_cache, device, repeats=3)
    uncached = median_seconds(without_cache, device, repeats=3)
    return {"batch": batch, "prefix": prefix, "new_tokens": new, "cached_tokens_per_s": batch * new / cached,
            "uncached_tokens_per_s": batch * new / uncached, "speedup": uncached / cached}


@click.command()
@click.option("--device", default="cpu", show_default=True)
@click.option("--threads", default=1, show_default=True, help="torch CPU threads (1 is fastest on a busy machine)")
@click.option("--config", "config_name", default="tiny", show_default=True)
@click.option("--batch", default=16, show_default=True)
@click.option("--seq", default=128, show_default=True)
@click.option("--json", "json_path", default=None, help="Also write the figures to this file.")
def main(device: str, threads: int, config_name: str, batch: int, seq: int, json_path: str | None) -> None:
    """Run all backbone benchmarks and print one JSON object."""
    torch.set_num_threads(threads)
    cfg = get_config(config_name)
    results: dict = {"device": torch.cuda.get_device_name() if device.startswith("cuda") else "cpu",
                     "threads": threads, "config": config_name}
    jobs = tqdm(total=7, desc="backbone benchmarks")
    twin = dense_twin(cfg)
    results["train_moe"] = bench_training(cfg, device, batch, seq)
    jobs.update()
    results["train_dense_equal_active"] = bench_training(twin, device, batch, seq)
    jobs.update()
    # which half costs: the same MoE with attention only, the same layer mix with dense MLPs
    all_attention = dataclasses.replace(cfg, layer_types=["full_attention"] * cfg.num_hidden_layers)
    results["train_moe_all_attention"] = bench_training(all_attention, device, batch, seq)
    jobs.update()
    hybrid_dense = dataclasses.replace(twin, layer_types=cfg.layer_types, position_embedding=cfg.position_embedding)
    results["train_dense_hybrid_layers"] = bench_training(hybrid_dense, device, batch, seq)
    jobs.update()
    hidden = cfg.hidden_size
    results["dispatch"] = [bench_dispatch(8, 2, device, 1024, hidden)]
    jobs.update()
    results["dispatch"].append(bench_dispatch(64, 8, device, 1024, hidden))
    jobs.update()
    results["decode"] = bench_decode(cfg, device, batch=8, prefix=32, new=96)
    jobs.update()
    jobs.close()
    text = json.dumps(results, indent=1)
    click.echo(text)
    if json_path:
        with open(json_path, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
