"""Rotary position embeddings: plain RoPE and FoPE (Fourier position embedding).

FoPE, as Intern-S1-Pro uses it instead of RoPE, treats each rotary channel as a
small Fourier series instead of one pure frequency, so attention is less brittle to
frequencies that never complete a period within the training length:

* frequencies ``w_j = theta ** (-2j/d)``; those with ``w_j <= 2*pi/L_max`` (no full
  period inside ``L_max`` positions) are clipped to zero frequency (cos 1, sin 0);
* per KV head two fixed (non-trainable) coefficient matrices ``cos_coef, sin_coef`` of
  shape ``(|S|, |S|)`` over the kept frequencies S, ``I + xavier_normal(gain)`` from a fixed
  seed at initialisation;
* ``C[t,k] = sum_j cos(w_j t) cos_coef[j,k]``, ``S[t,k] = sum_j sin(w_j t) sin_coef[j,k]``,
  applied like RoPE: ``q' = q*C + rotate_half(q)*S``; query heads reuse their KV head's.

The coefficients are saved with the weights under the names Intern-S1-Pro checkpoints use
(``rotary_emb.cos_coef`` / ``rotary_emb.sin_coef``, shape (num_kv_heads, |S|, |S|)) and a
strict load requires them, so a checkpoint reproduces its model even if the seeded
initialisation ever changes.

With identity coefficients and no clipping FoPE is exactly RoPE (tested).
"""

from __future__ import annotations

import math

import torch
from torch import nn


def rope_frequencies(rotary_dim: int, theta: float) -> torch.Tensor:
    """``w_j = theta ** (-2j / d)`` for j in [0, d/2)."""
    return theta ** (-torch.arange(0, rotary_dim, 2, dtype=torch.float64, device="cpu") / rotary_dim)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the first ``cos.shape[-1]`` channels of ``x`` (B, H, T, head_dim).

    ``cos``/``sin`` are (B, H_kv, T, rotary_dim) with H_kv dividing H (or H_kv == 1):
    query heads reuse the coefficients of their KV head.
    """
    rot = cos.shape[-1]
    b, h, t, d = x.shape
    groups = cos.shape[1]
    # query heads of one KV head share its coefficients: broadcast, no repeat_interleave copy
    xg = x.view(b, groups, h // groups, t, d) if groups > 1 else x
    if groups > 1:
        cos, sin = cos[:, :, None], sin[:, :, None]
    x_rot, x_pass = xg[..., :rot], xg[..., rot:]
    out = x_rot * cos.to(x.dtype) + rotate_half(x_rot) * sin.to(x.dtype)
    out = torch.cat((out, x_pass), dim=-1) if x_pass.shape[-1] else out
    return out.reshape(b, h, t, d)


class RotaryEmbedding(nn.Module):
    """Gives ``(cos, sin)`` per position for RoPE (``kind="rope"``) or FoPE (``kind="fope"``).

    ``clip`` and ``coefficients`` exist so a test can reduce FoPE to RoPE; the model
    uses the defaults.
    """

    def __init__(
        self,
        rotary_dim: int,
        num_kv_heads: int,
        theta: float,
        max_positions: int,
        kind: str = "fope",
        init_gain: float = 0.5,
        seed: int = 0,
        clip: bool = True,
        coefficients: str = "random",  # "random" (I + xavier noise) or "identity"
    ) -> None:
        super().__init__()
        self.kind = kind
        self.rotary_dim = rotary_dim
        freqs = rope_frequencies(rotary_dim, theta)
        if kind == "fope" and clip:
            freqs = freqs[freqs > 2 * math.pi / max_positions]
        self.num_kept = len(freqs)
        self.register_buffer("inv_freq", freqs.float(), persistent=False)
        if kind == "fope":
            n = self.num_kept
            # built on the CPU on purpose: fixed seed, and still works under a meta-device context
            gen = torch.Generator(device="cpu").manual_seed(seed)
            eye = torch.eye(n, device="cpu").expand(num_kv_heads, n, n)
            std = init_gain * math.sqrt(2.0 / (n + n)) if n else 0.0  # xavier_normal on (n, n)
            if coefficients == "identity":
                std = 0.0
            a_cos = eye + std * torch.randn(num_kv_heads, n, n, generator=gen, device="cpu")
            a_sin = eye + std * torch.randn(num_kv_heads, n, n, generator=gen, device="cpu")
            self.register_buffer("cos_coef", a_cos.contiguous())
            self.register_buffer("sin_coef", a_sin.contiguous())

    def forward(self, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """position_ids (B, T) -> cos, sin of shape (B, H_kv or 1, T, rotary_dim), float32."""
        angles = position_ids.float()[..., None] * self.inv_freq.to(position_ids.device)  # (B, T, n)
        cos, sin = angles.cos(), angles.sin()
        if self.kind == "fope":
            a_cos = self.cos_coef.to(device=angles.device, dtype=angles.dtype)
            a_sin = self.sin_coef.to(device=angles.device, dtype=angles.dtype)
            cos = torch.einsum("btj,hjk->bhtk", cos, a_cos)
            sin = torch.einsum("btj,hjk->bhtk", sin, a_sin)
        else:
            cos, sin = cos[:, None], sin[:, None]
        clipped = self.rotary_dim // 2 - cos.shape[-1]
        if clipped:  # zero-frequency channels: identity rotation
            cos = torch.cat((cos, cos.new_ones(*cos.shape[:-1], clipped)), dim=-1)
            sin = torch.cat((sin, sin.new_zeros(*sin.shape[:-1], clipped)), dim=-1)
        return torch.cat((cos, cos), dim=-1), torch.cat((sin, sin), dim=-1)
