"""Backbone configuration and its presets.

Field names follow the Hugging Face ``Qwen3_5MoeTextConfig`` (Qwen3.5-MoE / Qwen3-Next)
wherever such a field exists, so a real Intern-S2-Preview ``config.json`` maps onto
this dataclass; fields without an HF counterpart (FoPE, grouped/STE routing, chunk
size) are marked below.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LINEAR = "linear_attention"
FULL = "full_attention"


def default_layer_types(num_layers: int, full_attention_interval: int) -> list[str]:
    """Qwen3.5 pattern: layer i is full attention when (i + 1) % interval == 0."""
    return [FULL if (i + 1) % full_attention_interval == 0 else LINEAR for i in range(num_layers)]


@dataclass
class BackboneConfig:
    """Shape of the decoder. The defaults are the ``tiny`` preset."""

    vocab_size: int = 512
    hidden_size: int = 128
    num_hidden_layers: int = 4
    layer_types: list[str] | None = None  # None => from full_attention_interval
    full_attention_interval: int = 4
    hidden_act: str = "silu"
    rms_norm_eps: float = 1e-6
    initializer_range: float = 0.02
    tie_word_embeddings: bool = False
    max_position_embeddings: int = 2048
    # gated full attention
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    head_dim: int = 32
    attention_bias: bool = False
    rope_theta: float = 10000.0
    partial_rotary_factor: float = 0.5
    position_embedding: str = "fope"  # not HF: "fope" | "rope"
    fope_init_gain: float = 0.5  # not HF: xavier gain of the FoPE coefficient noise
    fope_seed: int = 0  # not HF: seed of the (non-trainable) FoPE coefficients
    # Gated DeltaNet
    linear_conv_kernel_dim: int = 4
    linear_key_head_dim: int = 32
    linear_value_head_dim: int = 32
    linear_num_key_heads: int = 2
    linear_num_value_heads: int = 4
    linear_chunk_size: int = 64  # not HF: chunk length of the parallel form
    # MLP / MoE
    intermediate_size: int = 512  # dense MLP width (used when num_experts is 0/None)
    num_experts: int | None = 8
    num_experts_per_tok: int = 2
    moe_intermediate_size: int = 128
    shared_expert_intermediate_size: int = 128
    norm_topk_prob: bool = True
    router_aux_loss_coef: float = 0.001
    router_num_groups: int = 1  # not HF: Intern-S1-Pro grouped routing (1 = plain top-k)
    router_ste: bool = False  # not HF: straight-through routing (backward via dense softmax)
    # multi-token prediction
    mtp_num_hidden_layers: int = 1

    def __post_init__(self) -> None:
        n = self.num_hidden_layers
        lt = self.layer_types
        # dataclasses.replace(cfg, num_hidden_layers=...) passes the old default list
        # along; regenerate it when it is just the default pattern of another length.
        if lt is None or (len(lt) != n and list(lt) == default_layer_types(len(lt), self.full_attention_interval)):
            lt = default_layer_types(n, self.full_attention_interval)
        self.layer_types = list(lt)
        if len(self.layer_types) != n:
            raise ValueError(f"layer_types has {len(self.layer_types)} entries, num_hidden_layers is {n}")
        bad = set(self.layer_types) - {LINEAR, FULL}
        if bad:
            raise ValueError(f"unknown layer types {bad}; use {LINEAR!r} or {FULL!r}")
        if self.position_embedding not in ("fope", "rope"):
            raise ValueError("position_embedding must be 'fope' or 'rope'")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError("num_attention_heads must be a multiple of num_key_value_heads")
        if self.linear_num_value_heads % self.linear_num_key_heads:
            raise ValueError("linear_num_value_heads must be a multiple of linear_num_key_heads")
        if self.is_moe:
            if self.num_experts_per_tok % self.router_num_groups or self.num_experts % self.router_num_groups:
                raise ValueError("router_num_groups must divide num_experts and num_experts_per_tok")

    @property
    def is_moe(self) -> bool:
        return bool(self.num_experts)

    @property
    def rotary_dim(self) -> int:
        return int(self.head_dim * self.partial_rotary_factor) // 2 * 2

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "BackboneConfig":
        """Build from a dict; an unknown key is an error (a typo must not fall back to a default)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown backbone config keys {sorted(unknown)}; known: {sorted(names)}")
        return cls(**d)


PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {},
    "small": dict(
        hidden_size=384, num_hidden_layers=8, num_attention_heads=6, num_key_value_heads=2,
        head_dim=64, partial_rotary_factor=0.5, linear_key_head_dim=64, linear_value_head_dim=64,
        linear_num_key_heads=3, linear_num_value_heads=6, intermediate_size=1536,
        num_experts=16, num_experts_per_tok=4, moe_intermediate_size=160,
        shared_expert_intermediate_size=384, max_position_embeddings=4096,
    ),
    # Intern-S2-Preview (35B-A3B), a Qwen3.5-35B-A3B-shaped decoder.
    "intern-s2-preview": dict(
        vocab_size=248320, hidden_size=2048, num_hidden_layers=40, full_attention_interval=4,
        num_attention_heads=16, num_key_value_heads=2, head_dim=256, partial_rotary_factor=0.25,
        rope_theta=10_000_000.0, max_position_embeddings=262_144,
        linear_key_head_dim=128, linear_value_head_dim=128, linear_num_key_heads=16,
        linear_num_value_heads=32, intermediate_size=6144, num_experts=256, num_experts_per_tok=8,
        moe_intermediate_size=512, shared_expert_intermediate_size=512, mtp_num_hidden_layers=1,
    ),
}


def get_config(name_or_path: str | Path, **overrides: Any) -> BackboneConfig:
    """A preset by name, or a JSON file of overrides (optional key ``"base"`` names the preset)."""
    name = str(name_or_path)
    if name in PRESETS:
        return BackboneConfig(**{**PRESETS[name], **overrides})
    path = Path(name)
    if path.suffix == ".json" and path.is_file():
        data = json.loads(path.read_text())
        base = data.pop("base", "tiny")
        return BackboneConfig.from_dict({**PRESETS[base], **data, **overrides})
    raise KeyError(f"unknown backbone config {name!r}; presets: {sorted(PRESETS)} or a .json file")
