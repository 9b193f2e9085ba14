"""Fourier-feature embeddings of real values, added to the input at value positions.

Coordinates use periodic features sin/cos(2*pi*k*x), so x and x+1 embed identically;
lengths and angles use log-spaced frequencies plus the raw value. One projection per
value kind (1 length, 2 angle, 3 coordinate).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

LENGTH, ANGLE, COORDINATE = 1, 2, 3
VALUE_KINDS = (LENGTH, ANGLE, COORDINATE)


class ValueEmbedding(nn.Module):
    """(values, kinds) -> (B, T, H) embeddings; zero wherever ``kinds == 0`` (token positions)."""

    def __init__(self, hidden_size: int, n_frequencies: int = 16) -> None:
        super().__init__()
        periodic = torch.arange(1, n_frequencies + 1, dtype=torch.float32) * 2 * math.pi
        smooth = torch.logspace(-1, 2, n_frequencies, dtype=torch.float32)
        self.register_buffer("periodic_freqs", periodic, persistent=False)
        self.register_buffer("smooth_freqs", smooth, persistent=False)
        n_features = 2 * n_frequencies
        self.proj = nn.ModuleDict(
            {
                str(LENGTH): nn.Linear(n_features + 1, hidden_size),
                str(ANGLE): nn.Linear(n_features + 1, hidden_size),
                str(COORDINATE): nn.Linear(n_features, hidden_size),
            }
        )

    def _features(self, x: Tensor, freqs: Tensor) -> Tensor:
        phase = x.float().unsqueeze(-1) * freqs
        return torch.cat([torch.sin(phase), torch.cos(phase)], dim=-1)

    def forward(self, values: Tensor, kinds: Tensor) -> Tensor:
        out = None
        for kind in VALUE_KINDS:
            if kind == COORDINATE:
                feats = self._features(values, self.periodic_freqs)
            else:
                feats = torch.cat(
                    [self._features(values, self.smooth_freqs), values.float().unsqueeze(-1)], dim=-1
                )
            emb = self.proj[str(kind)](feats) * (kinds == kind).unsqueeze(-1)
            out = emb if out is None else out + emb
        return out
