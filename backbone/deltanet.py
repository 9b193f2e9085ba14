"""Gated DeltaNet (linear attention) of Qwen3-Next / Qwen3.5 / Intern-S2.

Per value head the layer keeps a (d_k x d_v) memory ``S`` and, for each token,
decays it by ``exp(g)`` and writes ``v`` at key ``k`` with the delta rule
(``S <- S + beta * k (v - S^T k)^T``); the output is ``S^T q``. Two equivalent
forms: a chunked parallel form for training/prefill (matrix products inside chunks
of 64 tokens, a short loop over chunks only) and a recurrent form for one-token
decoding. The flash-linear-attention kernels replace both on CUDA when installed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .cache import DecodingCache
from .config import BackboneConfig
from .norms import RMSNormGated

try:  # optional CUDA kernels
    from fla.ops.gated_delta_rule import chunk_gated_delta_rule as _fla_chunk
    from fla.ops.gated_delta_rule import fused_recurrent_gated_delta_rule as _fla_recurrent
except ImportError:  # pragma: no cover - depends on the machine
    _fla_chunk = _fla_recurrent = None


def l2norm(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).sum(-1, keepdim=True) + eps)


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    """float32 at least (bf16 inputs lose too much in the state), float64 kept for tests."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


class _UnitLowerInverse(torch.autograd.Function):
    """``(I + L)^-1`` for strictly lower-triangular ``L`` (batched).

    A hand-written backward (``-W^T G W^T``, kept strictly lower) is much faster on CPU
    than autograd through ``solve_triangular``, whose backward solves with
    non-contiguous operands.
    """

    @staticmethod
    def forward(ctx, lower: torch.Tensor) -> torch.Tensor:
        eye = torch.eye(lower.shape[-1], dtype=lower.dtype, device=lower.device)
        # the right-hand side must be contiguous: an expanded one is ~50x slower
        inv = torch.linalg.solve_triangular(eye + lower, eye.expand_as(lower).contiguous(), upper=False,
                                            unitriangular=True)
        ctx.save_for_backward(inv)
        return inv

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (inv,) = ctx.saved_tensors
        inv_t = inv.transpose(-1, -2)
        return -(inv_t @ grad @ inv_t).tril(-1)


def chunk_gated_delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    beta: torch.Tensor,
    chunk_size: int = 64,
    initial_state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Chunked parallel gated delta rule.

    q, k (B, T, H, d_k) (already l2-normalised), v (B, T, H, d_v), g (log decay, <= 0)
    and beta (B, T, H). Returns output (B, T, H, d_v) and the final state (B, H, d_k, d_v).

    Inside a chunk the sequential delta-rule writes are solved at once in the WY form:
    with ``L`` the strictly lower ``(beta k) k^T`` weighted by decay, ``(I + L)^-1``
    turns the per-token updates into one matrix product (a batched triangular solve
    with a hand-written backward, instead of HF's in-place row-by-row substitution).
    """
    in_dtype = v.dtype
    b, t, h, dk = k.shape
    dv = v.shape[-1]
    c = min(chunk_size, t)
    ct = _compute_dtype(v)
    q, k, v, g, beta = (x.transpose(1, 2).to(ct) for x in (q, k, v, g, beta))
    pad = (-t) % c
    if pad:  # padded steps have g = beta = 0: no decay, no write
        q, k, v = (F.pad(x, (0, 0, 0, pad)) for x in (q, k, v))
        g, beta = F.pad(g, (0, pad)), F.pad(beta, (0, pad))
    n = (t + pad) // c
    q = q * dk**-0.5
    q, k, v = (x.reshape(b, h, n, c, x.shape[-1]) for x in (q, k, v))
    g, beta = g.reshape(b, h, n, c).cumsum(-1), beta.reshape(b, h, n, c)
    k_beta, v_beta = k * beta[..., None], v * beta[..., None]

    causal = torch.ones(c, c, dtype=torch.bool, device=q.device).tril()
    # decay[i, j] = exp(g_i - g_j) for j <= i (masked before exp: no overflow)
    decay = (g[..., :, None] - g[..., None, :]).masked_fill(~causal, float("-inf")).exp()
    wy = _UnitLowerInverse.apply((k_beta @ k.transpose(-1, -2) * decay).tril(-1))
    # u: pseudo-values (before removing what the state already holds); w: decayed keys
    u, w = (wy @ torch.cat((v_beta, k_beta * g.exp()[..., None]), dim=-1)).split((dv, dk), dim=-1)
    qk = q @ k.transpose(-1, -2) * decay

    state = q.new_zeros(b, h, dk, dv) if initial_state is None else initial_state.to(ct)
    outs = []
    # unbind once (not x[:, :, i] per chunk): cheaper backward
    chunks = zip(*(x.unbind(2) for x in (q, k, u, w, qk, g)))
    for q_i, k_i, u_i, w_i, qk_i, g_i in chunks:
        u_i = u_i - w_i @ state
        outs.append((q_i * g_i[..., None].exp()) @ state + qk_i @ u_i)
        g_last = g_i[..., -1:]
        k_decayed = k_i * (g_last - g_i).exp()[..., None]
        state = state * g_last.exp()[..., None] + k_decayed.transpose(-1, -2) @ u_i
    out = torch.stack(outs, dim=2).reshape(b, h, n * c, dv)[:, :, :t]
    return out.transpose(1, 2).to(in_dtype), state


def recurrent_gated_delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    beta: torch.Tensor,
    initial_state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token-by-token form of :func:`chunk_gated_delta_rule` (same arguments); used for decoding."""
    in_dtype = v.dtype
    b, t, h, dk = k.shape
    ct = _compute_dtype(v)
    q, k, v, g, beta = (x.transpose(1, 2).to(ct) for x in (q, k, v, g, beta))
    q = q * dk**-0.5
    state = q.new_zeros(b, h, dk, v.shape[-1]) if initial_state is None else initial_state.to(ct)
    outs = []
    for q_i, k_i, v_i, g_i, b_i in zip(*(x.unbind(2) for x in (q, k, v, g, beta))):
        state = state * g_i.exp()[..., None, None]
        delta = (v_i - (k_i[..., None] * state).sum(-2)) * b_i[..., None]
        state = state + k_i[..., None] * delta[..., None, :]
        outs.append((q_i[..., None] * state).sum(-2))
    return torch.stack(outs, dim=1).to(in_dtype), state


class GatedDeltaNet(nn.Module):
    """Parameter names follow HF ``Qwen3_5GatedDeltaNet``: in_proj_qkv, in_proj_z, in_proj_b,
    in_proj_a, conv1d, dt_bias, A_log, norm, out_proj."""

    def __init__(self, cfg: BackboneConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.num_k_heads, self.num_v_heads = cfg.linear_num_key_heads, cfg.linear_num_value_heads
        self.head_k_dim, self.head_v_dim = cfg.linear_key_head_dim, cfg.linear_value_head_dim
        self.key_dim = self.num_k_heads * self.head_k_dim
        self.value_dim = self.num_v_heads * self.head_v_dim
        self.conv_dim = 2 * self.key_dim + self.value_dim
        self.kernel = cfg.linear_conv_kernel_dim
        self.chunk_size = cfg.linear_chunk_size
        h = cfg.hidden_size
        self.in_proj_qkv = nn.Linear(h, self.conv_dim, bias=False)
        self.in_proj_z = nn.Linear(h, self.value_dim, bias=False)
        self.in_proj_b = nn.Linear(h, self.num_v_heads, bias=False)
        self.in_proj_a = nn.Linear(h, self.num_v_heads, bias=False)
        self.conv1d = nn.Conv1d(self.conv_dim, self.conv_dim, self.kernel, groups=self.conv_dim,
                                padding=self.kernel - 1, bias=False)
        self.dt_bias = nn.Parameter(torch.ones(self.num_v_heads))
        # A ~ U(0, 16) as in Mamba2 / Qwen3-Next: a spread of decay rates across heads
        self.A_log = nn.Parameter(torch.empty(self.num_v_heads).uniform_(1e-4, 16).log())
        self.norm = RMSNormGated(self.head_v_dim, cfg.rms_norm_eps)
        self.out_proj = nn.Linear(self.value_dim, h, bias=False)

    def _conv(self, mixed: torch.Tensor, cache: DecodingCache | None) -> torch.Tensor:
        """Causal depthwise conv over (B, C, T); the cache keeps the last kernel-1 inputs."""
        if cache is not None and self.layer_idx in cache.conv_states:
            history = cache.conv_states[self.layer_idx]
        else:
            history = mixed.new_zeros(mixed.shape[0], mixed.shape[1], self.kernel - 1)
        inp = torch.cat((history.to(mixed.dtype), mixed), dim=-1)
        if cache is not None:
            cache.conv_states[self.layer_idx] = inp[..., -(self.kernel - 1):].detach()
        return F.silu(F.conv1d(inp, self.conv1d.weight, groups=self.conv_dim))

    def forward(
        self, x: torch.Tensor, attention_mask: torch.Tensor | None = None, cache: DecodingCache | None = None
    ) -> torch.Tensor:
        b, t, _ = x.shape
        mixed = self.in_proj_qkv(x)
        if attention_mask is not None:  # padding writes nothing into the conv window
            mixed = mixed * attention_mask[..., None].to(mixed.dtype)
        mixed = self._conv(mixed.transpose(1, 2), cache).transpose(1, 2)
        q, k, v = mixed.split((self.key_dim, self.key_dim, self.value_dim), dim=-1)
        q = l2norm(q.reshape(b, t, self.num_k_heads, self.head_k_dim))
        k = l2norm(k.reshape(b, t, self.num_k_heads, self.head_k_dim))
        v = v.reshape(b, t, self.num_v_heads, self.head_v_dim)
        beta = torch.sigmoid(self.in_proj_b(x)).float()
        g = -self.A_log.float().exp() * F.softplus(self.in_proj_a(x).float() + self.dt_bias.float())
        if attention_mask is not None:  # padding: no write (beta 0), no decay (g 0)
            m = attention_mask[..., None].float()
            beta, g = beta * m, g * m
        rep = self.num_v_heads // self.num_k_heads
        if rep > 1:
            q, k = q.repeat_interleave(rep, dim=2), k.repeat_interleave(rep, dim=2)

        state = cache.recurrent_states.get(self.layer_idx) if cache is not None else None
        out, new_state = self._core(q, k, v, g, beta, state, decoding=cache is not None and t == 1)
        if cache is not None:
            cache.recurrent_states[self.layer_idx] = new_state.detach()
        z = self.in_proj_z(x).reshape(b, t, self.num_v_heads, self.head_v_dim)
        out = self.norm(out, z).reshape(b, t, self.value_dim)
        return self.out_proj(out)

    def _core(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor, beta: torch.Tensor,
        state: torch.Tensor | None, decoding: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if q.is_cuda and _fla_chunk is not None:  # fla: same (B, T, H, d) layout, g in float32
            fn = _fla_recurrent if decoding else _fla_chunk
            return fn(q, k, v, g.float(), beta.to(v.dtype), initial_state=state, output_final_state=True)
        if decoding:
            return recurrent_gated_delta_rule(q, k, v, g, beta, state)
        return chunk_gated_delta_rule(q, k, v, g, beta, self.chunk_size, state)
