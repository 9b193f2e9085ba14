"""The token head: logits over the vocabulary, with grammar masks for legal decoding."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from crystalgen.heads.streams import TOKEN, RowStreams, categorical


class TokenHead(nn.Module):
    """Hidden state -> logits over the vocabulary (float32, for a stable softmax)."""

    def __init__(self, hidden_size: int, vocab_size: int) -> None:
        super().__init__()
        self.proj = nn.Linear(hidden_size, vocab_size, bias=False)

    def forward(self, hidden: Tensor) -> Tensor:
        return self.proj(hidden).float()


def masked_logits(logits: Tensor, mask: Tensor | None) -> Tensor:
    """Logits with every token the grammar forbids (``mask`` False) set to -inf."""
    if mask is None:
        return logits
    mask = mask.to(device=logits.device, dtype=torch.bool)
    if not mask.any(dim=-1).all():
        raise ValueError("the grammar mask allows no token at some position")
    return logits.masked_fill(~mask, float("-inf"))


def sample_token(
    logits: Tensor,
    mask: Tensor | None = None,
    temperature: float = 1.0,
    streams: RowStreams | None = None,
) -> Tensor:
    """Token ids (one per row of ``(rows, vocab)`` logits) drawn from softmax(logits / T)
    over the legal tokens with the rows' random ``streams``; ``T=0`` is greedy."""
    logits = masked_logits(logits.float(), mask)
    if temperature <= 0:
        return logits.argmax(dim=-1)
    if streams is None:
        raise ValueError("sampling at temperature > 0 needs the rows' random streams")
    probs = torch.softmax(logits / temperature, dim=-1)
    flat = probs.reshape(-1, probs.shape[-1])
    return categorical(flat, streams, TOKEN).reshape(probs.shape[:-1])
