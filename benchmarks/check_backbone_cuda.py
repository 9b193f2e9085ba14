"""CUDA checks and figures for the backbone (run on a GPU machine):

    python benchmarks/check_backbone_cuda.py

1. the bf16 ``torch._grouped_mm`` dispatch equals the per-expert loop (and is used);
2. whether flash-linear-attention kernels are installed, and cached decoding equals a
   full forward on the GPU;
3. dispatch timings (naive loop / per-expert loop / grouped GEMM) at 8 and 64 experts.
"""

from __future__ import annotations

import json

import torch

from crystalgen.backbone import Backbone, get_config
from crystalgen.backbone import deltanet
from crystalgen.backbone import moe as moe_module
from crystalgen.backbone.moe import SparseMoeBlock, naive_moe

from bench_backbone import median_seconds


def dispatch_figures(num_experts: int, top_k: int, tokens: int = 4096, hidden: int = 512) -> dict:
    torch.manual_seed(0)
    cfg = get_config("tiny", hidden_size=hidden, num_experts=num_experts, num_experts_per_tok=top_k,
                     moe_intermediate_size=256)
    block = SparseMoeBlock(cfg).cuda().to(torch.bfloat16)
    for p in block.parameters():
        torch.nn.init.normal_(p, 0.0, 0.02)
    x = torch.randn(tokens, hidden, device="cuda", dtype=torch.bfloat16)
    experts = block.experts
    with torch.no_grad():
        routing = block.gate(x)
        xs, _, counts = experts.dispatch(x, routing)
        ran = experts.grouped_mm and moe_module.grouped_mm_supported(x.device)
        grouped = experts.compute(xs, counts)
        loop = torch.cat([experts.expert(e, s) for e, s in enumerate(xs.split(counts.tolist())) if s.shape[0]])
        result = {"experts": num_experts, "top_k": top_k, "tokens": tokens, "grouped_mm_ran": ran}
        result["grouped_vs_loop_max_abs_diff"] = (grouped.float() - loop.float()).abs().max().item()
        result["block_ms"] = 1e3 * median_seconds(lambda: block(x), "cuda", repeats=10)
        experts.grouped_mm = False  # force the per-expert loop
        result["block_loop_ms"] = 1e3 * median_seconds(lambda: block(x), "cuda", repeats=10)
        experts.grouped_mm = True
        small = x[:512]
        result["naive_ms_512_tokens"] = 1e3 * median_seconds(lambda: naive_moe(block, small), "cuda", repeats=2)
        result["block_ms_512_tokens"] = 1e3 * median_seconds(lambda: block(small), "cuda", repeats=10)
    return result


def decode_check() -> dict:
    torch.manual_seed(0)
    model = Backbone(get_config("small")).cuda().eval()
    x = torch.randn(4, 80, model.config.hidden_size, device="cuda")
    with torch.no_grad():
        full = model(x).hidden_states
        cache = model.new_cache(4, 80, "cuda")
        parts = [model(x[:, :50], cache=cache).hidden_states]
        parts += [model(x[:, i:i + 1], cache=cache).hidden_states for i in range(50, 80)]
    diff = (torch.cat(parts, 1) - full).abs().max().item()
    return {"fla_installed": deltanet._fla_chunk is not None, "decode_vs_full_max_abs_diff": diff}


if __name__ == "__main__":
    out = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "decode": decode_check(),
           "dispatch": [dispatch_figures(8, 2), dispatch_figures(64, 8)]}
    print(json.dumps(out, indent=1))
