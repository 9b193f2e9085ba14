"""RMS norms of the Qwen3.5 family."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _rms(x: torch.Tensor, eps: float) -> torch.Tensor:
    x = x.float()
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)


class RMSNorm(nn.Module):
    """Zero-centred RMSNorm: scale is ``1 + weight`` with weight initialised to 0,
    so weight decay pulls the scale towards 1 rather than 0 (Qwen3-Next / Gemma)."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the fused kernel, in float32 like _rms (one op instead of five: decoding is op-bound)
        return F.rms_norm(x.float(), x.shape[-1:], 1.0 + self.weight.float(), self.eps).to(x.dtype)


class RMSNormGated(nn.Module):
    """RMSNorm followed by a SiLU gate, ``norm(x) * weight * silu(z)``: the output norm
    of Gated DeltaNet, where ``z`` is a separate projection of the layer input."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        out = _rms(x, self.eps) * self.weight.float() * F.silu(gate.float())
        return out.to(x.dtype)
