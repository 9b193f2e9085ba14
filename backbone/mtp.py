"""Multi-token prediction (MTP), as in Qwen3-Next / Intern-S2: one extra decoder layer
that combines the backbone state at position t with the embedding of token t+1 and
predicts token t+2 through the shared ``lm_head``. Training with it densifies the
signal; at inference it can draft a second token."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import FULL, BackboneConfig
from .layers import DecoderLayer, default_position_ids, init_weights, make_rotary
from .norms import RMSNorm


class MTPModule(nn.Module):
    """HF names: pre_fc_norm_embedding, pre_fc_norm_hidden, fc, layers, norm."""

    def __init__(self, cfg: BackboneConfig) -> None:
        super().__init__()
        h = cfg.hidden_size
        self.pre_fc_norm_embedding = RMSNorm(h, cfg.rms_norm_eps)
        self.pre_fc_norm_hidden = RMSNorm(h, cfg.rms_norm_eps)
        self.fc = nn.Linear(2 * h, h, bias=False)
        # index past the backbone's layers, so cache slots would never collide
        self.layers = nn.ModuleList(DecoderLayer(cfg, cfg.num_hidden_layers + i, FULL)
                                    for i in range(max(cfg.mtp_num_hidden_layers, 1)))
        self.norm = RMSNorm(h, cfg.rms_norm_eps)
        self.rotary_emb = make_rotary(cfg)
        init_weights(self, cfg.initializer_range)

    def forward(
        self,
        hidden: torch.Tensor,
        next_inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """hidden (B, T', H) at positions t, embeddings (B, T', H) of tokens t+1 ->
        (B, T', H) states whose logits predict token t+2."""
        x = torch.cat((self.pre_fc_norm_embedding(next_inputs_embeds), self.pre_fc_norm_hidden(hidden)), dim=-1)
        x = self.fc(x)
        b, t, _ = x.shape
        if attention_mask is not None:
            attention_mask = attention_mask.bool()
        if position_ids is None:
            position_ids = default_position_ids(attention_mask, b, t, x.device)
        rotary = self.rotary_emb(position_ids)
        for layer in self.layers:
            x, _ = layer(x, rotary, attention_mask, None)
        return self.norm(x)


def mtp_loss(mtp_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of MTP logits (B, T-1, V), row t predicting ``labels[:, t+2]``
    (-100 = ignored). The last row has no target and is dropped."""
    logits = mtp_logits[:, :-1]
    return F.cross_entropy(logits.flatten(0, 1).float(), labels[:, 2:].flatten(), ignore_index=-100)
