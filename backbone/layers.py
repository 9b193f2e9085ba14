"""The building blocks the backbone and the MTP module share: the decoder layer, the
rotary embedding it uses, position ids for left-padded batches, the weight init."""

from __future__ import annotations

import torch
from torch import nn

from .attention import GatedAttention
from .cache import DecodingCache
from .config import FULL, BackboneConfig
from .deltanet import GatedDeltaNet
from .fope import RotaryEmbedding
from .moe import MLP, Experts, SparseMoeBlock, TopKRouter
from .norms import RMSNorm


class DecoderLayer(nn.Module):
    """Pre-norm residual block: token mixer (DeltaNet or gated attention), then MLP/MoE."""

    def __init__(self, cfg: BackboneConfig, layer_idx: int, layer_type: str) -> None:
        super().__init__()
        self.layer_type = layer_type
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        if layer_type == FULL:
            self.self_attn = GatedAttention(cfg, layer_idx)
        else:
            self.linear_attn = GatedDeltaNet(cfg, layer_idx)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = SparseMoeBlock(cfg) if cfg.is_moe else MLP(cfg.hidden_size, cfg.intermediate_size)

    def forward(
        self,
        x: torch.Tensor,
        rotary: tuple[torch.Tensor, torch.Tensor],
        attention_mask: torch.Tensor | None,
        cache: DecodingCache | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.input_layernorm(x)
        if self.layer_type == FULL:
            h = self.self_attn(h, rotary, attention_mask, cache)
        else:
            h = self.linear_attn(h, attention_mask, cache)
        x = x + h
        h = self.post_attention_layernorm(x)
        if isinstance(self.mlp, SparseMoeBlock):
            h, aux = self.mlp(h, attention_mask, with_aux=cache is None)
        else:
            h, aux = self.mlp(h), x.new_zeros(())
        return x + h, aux


def make_rotary(cfg: BackboneConfig) -> RotaryEmbedding:
    return RotaryEmbedding(cfg.rotary_dim, cfg.num_key_value_heads, cfg.rope_theta, cfg.max_position_embeddings,
                           kind=cfg.position_embedding, init_gain=cfg.fope_init_gain, seed=cfg.fope_seed)


def default_position_ids(attention_mask: torch.Tensor | None, batch: int, length: int, device: torch.device,
                         start: torch.Tensor | None = None) -> torch.Tensor:
    """arange, or for left padding the count of real tokens before each position."""
    if attention_mask is None:
        pos = torch.arange(length, device=device).expand(batch, length)
    else:
        pos = (attention_mask.long().cumsum(-1) - 1).clamp_min(0)
    return pos if start is None else pos + start[:, None]


def init_weights(module: nn.Module, std: float) -> None:
    """Normal(0, std) for projections, embeddings and experts; norms keep their own init."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, 0.0, std)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, Experts):
            nn.init.normal_(m.gate_up_proj, 0.0, std)
            nn.init.normal_(m.down_proj, 0.0, std)
        elif isinstance(m, TopKRouter):
            nn.init.normal_(m.weight, 0.0, std)
