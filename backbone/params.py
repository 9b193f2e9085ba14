"""Parameter counts (total and active per token) without allocating any memory."""

from __future__ import annotations

import torch

from .config import BackboneConfig
from .moe import SparseMoeBlock


def count_parameters(cfg: BackboneConfig) -> dict[str, int]:
    """Build ``CausalLM(cfg)`` on the meta device and count.

    ``active_params`` counts what one token touches: everything except the routed
    experts it is not sent to (``num_experts - num_experts_per_tok`` of each MoE
    layer); embeddings, ``lm_head`` and the MTP module are included in both figures.
    """
    from .model import CausalLM

    with torch.device("meta"):
        model = CausalLM(cfg)
    total = sum(p.numel() for p in model.parameters())
    inactive = 0
    for m in model.modules():
        if isinstance(m, SparseMoeBlock):
            per_expert = sum(p.numel() for p in m.experts.parameters()) // m.num_experts
            inactive += per_expert * (m.num_experts - cfg.num_experts_per_tok)
    embed = model.model.embed_tokens.weight.numel()
    head = 0 if cfg.tie_word_embeddings else model.lm_head.weight.numel()
    mtp = sum(p.numel() for p in model.mtp.parameters()) if model.mtp is not None else 0
    return {
        "total_params": total,
        "active_params": total - inactive,
        "embedding_params": embed + head,
        "mtp_params": mtp,
        "backbone_params": sum(p.numel() for n, p in model.model.named_parameters() if not n.startswith("embed_tokens")),
        "num_hidden_layers": cfg.num_hidden_layers,
        "num_full_attention_layers": cfg.layer_types.count("full_attention"),
        "num_linear_attention_layers": cfg.layer_types.count("linear_attention"),
    }
