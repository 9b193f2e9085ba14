"""The ``Backbone`` (embeddings, decoder layers from ``layers``, final norm) and ``CausalLM``.

Parameter names follow HF Qwen3.5-MoE (``model.embed_tokens``, ``model.layers.N.
{input_layernorm, linear_attn | self_attn, post_attention_layernorm, mlp}``,
``model.norm``, ``lm_head``, ``mtp``) so real checkpoints load by name.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .cache import DecodingCache
from .config import FULL, BackboneConfig
from .layers import DecoderLayer, default_position_ids, init_weights, make_rotary
from .mtp import MTPModule, mtp_loss
from .norms import RMSNorm


@dataclass
class BackboneOutput:
    hidden_states: torch.Tensor  # (B, T, hidden), after the final norm
    aux_loss: torch.Tensor  # scalar, MoE load balancing, already times router_aux_loss_coef


class Backbone(nn.Module):
    """Decoder layers + final norm, fed with embeddings (the crystal model has its own).

    ``with_embeddings`` adds ``embed_tokens`` (used by :class:`CausalLM`, so parameter
    names match HF's ``model.*``); ``forward`` never uses it.
    """

    def __init__(self, cfg: BackboneConfig, with_embeddings: bool = False) -> None:
        super().__init__()
        self.config = cfg
        if with_embeddings:
            self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg, i, t) for i, t in enumerate(cfg.layer_types))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.rotary_emb = make_rotary(cfg)
        init_weights(self, cfg.initializer_range)

    def new_cache(self, batch_size: int, max_len: int, device: torch.device | str | None = None,
                  dtype: torch.dtype = torch.float32) -> DecodingCache:
        """Empty cache for up to ``max_len`` positions (prefix + generated)."""
        cfg = self.config
        cache = DecodingCache(batch_size, max_len,
                              key_mask=torch.zeros(batch_size, max_len, dtype=torch.bool, device=device),
                              next_position=torch.zeros(batch_size, dtype=torch.long, device=device))
        for i, t in enumerate(cfg.layer_types):
            if t == FULL:
                shape = (batch_size, cfg.num_key_value_heads, max_len, cfg.head_dim)
                cache.keys[i] = torch.zeros(shape, device=device, dtype=dtype)
                cache.values[i] = torch.zeros(shape, device=device, dtype=dtype)
        return cache

    def forward(
        self,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache: DecodingCache | None = None,
    ) -> BackboneOutput:
        b, t, _ = inputs_embeds.shape
        if attention_mask is not None:
            attention_mask = attention_mask.to(device=inputs_embeds.device, dtype=torch.bool)
        if cache is not None:
            step_mask = attention_mask if attention_mask is not None else torch.ones(
                b, t, dtype=torch.bool, device=inputs_embeds.device)
            if position_ids is None:
                position_ids = default_position_ids(step_mask, b, t, inputs_embeds.device, cache.next_position)
            cache.key_mask[:, cache.length:cache.length + t] = step_mask
            if attention_mask is not None and not cache.padded:
                cache.padded = not bool(attention_mask.all())
        elif position_ids is None:
            position_ids = default_position_ids(attention_mask, b, t, inputs_embeds.device)

        rotary = self.rotary_emb(position_ids)
        x, aux = inputs_embeds, inputs_embeds.new_zeros(())
        for layer in self.layers:
            x, layer_aux = layer(x, rotary, attention_mask, cache)
            aux = aux + layer_aux
        if cache is not None:
            cache.length += t
            cache.next_position = cache.next_position + step_mask.long().sum(-1)
        return BackboneOutput(self.norm(x), aux)


@dataclass
class CausalLMOutput:
    logits: torch.Tensor
    loss: torch.Tensor | None  # next-token CE + aux + mtp_loss_weight * MTP CE
    aux_loss: torch.Tensor
    mtp_loss: torch.Tensor | None


class CausalLM(nn.Module):
    """Token model around the backbone: embeddings, ``Backbone``, ``lm_head`` and MTP."""

    def __init__(self, cfg: BackboneConfig) -> None:
        super().__init__()

        self.config = cfg
        self.model = Backbone(cfg, with_embeddings=True)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        init_weights(self.lm_head, cfg.initializer_range)
        if cfg.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        self.mtp = MTPModule(cfg) if cfg.mtp_num_hidden_layers else None

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache: DecodingCache | None = None,
        labels: torch.Tensor | None = None,
        mtp_loss_weight: float = 0.3,
    ) -> CausalLMOutput:
        """``labels`` (B, T) are the input ids with -100 where no loss is wanted."""

        embeds = self.model.embed_tokens(input_ids)
        out = self.model(embeds, attention_mask, position_ids, cache)
        logits = self.lm_head(out.hidden_states)
        loss = extra = None
        if labels is not None:
            loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100)
            loss = loss + out.aux_loss
            if self.mtp is not None and input_ids.shape[1] > 2:
                mtp_mask = attention_mask[:, 1:] if attention_mask is not None else None
                states = self.mtp(out.hidden_states[:, :-1], embeds[:, 1:], attention_mask=mtp_mask)
                extra = mtp_loss(self.lm_head(states), labels)
                loss = loss + mtp_loss_weight * extra
        return CausalLMOutput(logits, loss, out.aux_loss, extra)
