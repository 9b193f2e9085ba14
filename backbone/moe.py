"""Mixture of experts: router, experts with sorted dispatch, shared expert.

Dispatch: the (token, expert) assignments are sorted by expert so each expert's
tokens form one contiguous slice; each expert then runs one matrix product on its
slice (or all experts run in one ``torch._grouped_mm`` call on CUDA bf16), instead
of a gather per token. ``naive_moe`` is the per-token reference it is tested against.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .config import BackboneConfig


class MLP(nn.Module):
    """SwiGLU feed-forward (HF names gate_proj / up_proj / down_proj)."""

    def __init__(self, hidden_size: int, intermediate_size: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


@dataclass
class Routing:
    indices: torch.Tensor  # (N, k) long, chosen experts
    weights: torch.Tensor  # (N, k) combine weights
    probs: torch.Tensor  # (N, E) dense softmax (for the load-balancing loss)


class TopKRouter(nn.Module):
    """Softmax router: plain top-k, or Intern-S1-Pro grouped top-k (experts split into
    G groups, top-(k/G) inside each), weights renormalised over the chosen experts.

    With ``ste`` the forward uses those sparse weights but the backward goes straight
    through the dense softmax (gradients reach the router without passing through
    top-k and renormalisation).
    """

    def __init__(self, cfg: BackboneConfig) -> None:
        super().__init__()
        self.num_experts, self.top_k = cfg.num_experts, cfg.num_experts_per_tok
        self.num_groups, self.ste, self.norm_topk_prob = cfg.router_num_groups, cfg.router_ste, cfg.norm_topk_prob
        self.weight = nn.Parameter(torch.empty(cfg.num_experts, cfg.hidden_size))

    def forward(self, x: torch.Tensor) -> Routing:
        probs = F.softmax(F.linear(x, self.weight).float(), dim=-1)  # (N, E)
        if self.num_groups > 1:
            n, g = probs.shape[0], self.num_groups
            per_group = self.num_experts // g
            top, idx = probs.view(n, g, per_group).topk(self.top_k // g, dim=-1)
            idx = idx + torch.arange(g, device=x.device)[:, None] * per_group
            top, idx = top.reshape(n, -1), idx.reshape(n, -1)
        else:
            top, idx = probs.topk(self.top_k, dim=-1)
        weights = top / top.sum(-1, keepdim=True) if self.norm_topk_prob else top
        if self.ste:
            dense = probs.gather(1, idx)
            weights = dense + (weights - dense).detach()
        return Routing(idx, weights, probs)


class Experts(nn.Module):
    """All routed experts as stacked weights (HF v5 fused layout):
    ``gate_up_proj`` (E, 2*I, H) and ``down_proj`` (E, H, I)."""

    def __init__(self, num_experts: int, hidden_size: int, intermediate_size: int) -> None:
        super().__init__()
        self.num_experts, self.intermediate_size = num_experts, intermediate_size
        self.gate_up_proj = nn.Parameter(torch.empty(num_experts, 2 * intermediate_size, hidden_size))
        self.down_proj = nn.Parameter(torch.empty(num_experts, hidden_size, intermediate_size))
        self.grouped_mm = hasattr(torch, "_grouped_mm")  # this build has it; the device is probed on first use

    def expert(self, e: int, x: torch.Tensor) -> torch.Tensor:
        return _swiglu(x, self.gate_up_proj[e], self.down_proj[e])

    def forward(self, x_NH: torch.Tensor, routing: Routing) -> torch.Tensor:
        """x (N, H) -> sum over chosen experts of weight * expert(x), (N, H).

        Shape suffixes: N tokens, K experts per token, A = N*K assignments, E experts,
        H hidden size."""
        xs_AH, order_A, counts_E = self.dispatch(x_NH, routing)
        ys_AH = self.compute(xs_AH, counts_E)
        return self.combine(ys_AH, order_A, routing).to(x_NH.dtype)

    def dispatch(self, x_NH: torch.Tensor, routing: Routing) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Each token's rows, sorted by expert so every expert's rows are one contiguous
        slice: (rows (A, H), sort order (A,), rows per expert (E,))."""
        k = routing.indices.shape[1]
        experts_A = routing.indices.reshape(-1)
        order_A = experts_A.argsort(stable=True)
        counts_E = torch.bincount(experts_A, minlength=self.num_experts)
        return x_NH[order_A // k], order_A, counts_E

    def compute(self, xs_AH: torch.Tensor, counts_E: torch.Tensor) -> torch.Tensor:
        """Every expert on its slice: one grouped GEMM on a GPU that has it (CUDA bf16),
        else one matrix product per expert."""
        if self.grouped_mm and xs_AH.is_cuda and xs_AH.dtype == torch.bfloat16 and grouped_mm_supported(xs_AH.device):
            offs_E = counts_E.cumsum(0).to(torch.int32)
            h_AI2 = torch._grouped_mm(xs_AH, self.gate_up_proj.transpose(1, 2), offs=offs_E)
            gate_AI, up_AI = h_AI2.chunk(2, dim=-1)
            return torch._grouped_mm(F.silu(gate_AI) * up_AI, self.down_proj.transpose(1, 2), offs=offs_E)
        # unbind, not [e] indexing: one backward stack instead of E zero-filled copies
        weights = zip(self.gate_up_proj.unbind(0), self.down_proj.unbind(0))
        slices = xs_AH.split(counts_E.tolist())
        return torch.cat([_swiglu(s, gu, d) for s, (gu, d) in zip(slices, weights) if s.shape[0]]
                         or [xs_AH.new_zeros(0, xs_AH.shape[1])])

    def combine(self, ys_AH: torch.Tensor, order_A: torch.Tensor, routing: Routing) -> torch.Tensor:
        """Back to (token, slot) order by a gather, then the weighted sum over the K slots:
        cheaper than scattering with index_add_ (each token has exactly K rows)."""
        n, k = routing.indices.shape
        ys_NKH = ys_AH[order_A.argsort()].view(n, k, -1)
        return torch.einsum("nkh,nk->nh", ys_NKH, routing.weights.to(ys_NKH.dtype))


def _swiglu(x: torch.Tensor, gate_up: torch.Tensor, down: torch.Tensor) -> torch.Tensor:
    gate, up = F.linear(x, gate_up).chunk(2, dim=-1)
    return F.linear(F.silu(gate) * up, down)


@functools.cache
def grouped_mm_supported(device: torch.device) -> bool:
    """Can this device run ``torch._grouped_mm`` in bf16? Probed once per device with a
    tiny product (it needs a recent GPU and build); the answer is kept."""
    try:
        x = torch.ones(2, 16, device=device, dtype=torch.bfloat16)
        w = torch.ones(2, 16, 16, device=device, dtype=torch.bfloat16)
        torch._grouped_mm(x, w, offs=torch.tensor([1, 2], device=device, dtype=torch.int32))
        return True
    except (RuntimeError, TypeError, NotImplementedError):
        return False


def load_balancing_loss(routing: Routing, num_experts: int, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Switch-style loss ``E * sum_e f_e * P_e`` (1.0 when perfectly balanced): f_e the
    share of assignments to expert e, P_e its mean router probability (real tokens only)."""
    probs, idx = routing.probs, routing.indices
    if mask is not None:
        probs, idx = probs[mask], idx[mask]
    if probs.shape[0] == 0:
        return routing.probs.sum() * 0.0
    counts = torch.bincount(idx.reshape(-1), minlength=num_experts).float()
    return num_experts * (counts / idx.numel() * probs.mean(0)).sum()


class SparseMoeBlock(nn.Module):
    """Routed experts plus one shared expert behind a sigmoid gate (HF Qwen3-Next names:
    gate, experts, shared_expert, shared_expert_gate). Returns (output, aux loss)."""

    def __init__(self, cfg: BackboneConfig) -> None:
        super().__init__()
        self.num_experts = cfg.num_experts
        self.aux_coef = cfg.router_aux_loss_coef
        self.gate = TopKRouter(cfg)
        self.experts = Experts(cfg.num_experts, cfg.hidden_size, cfg.moe_intermediate_size)
        self.shared_expert = MLP(cfg.hidden_size, cfg.shared_expert_intermediate_size)
        self.shared_expert_gate = nn.Linear(cfg.hidden_size, 1, bias=False)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, with_aux: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``with_aux=False`` (decoding) skips the balance loss: nobody reads it there."""
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        routing = self.gate(flat)
        out = self.experts(flat, routing)
        out = out + torch.sigmoid(self.shared_expert_gate(flat)) * self.shared_expert(flat)
        if not with_aux:
            return out.reshape(shape), x.new_zeros(())
        flat_mask = mask.reshape(-1) if mask is not None else None
        aux = self.aux_coef * load_balancing_loss(routing, self.num_experts, flat_mask)
        return out.reshape(shape), aux


def naive_moe(block: SparseMoeBlock, x: torch.Tensor) -> torch.Tensor:
    """Reference: loop over tokens and their chosen experts one by one (tests, benchmarks)."""
    flat = x.reshape(-1, x.shape[-1])
    routing = block.gate(flat)
    rows = []
    for i in range(flat.shape[0]):
        y = sum(routing.weights[i, j] * block.experts.expert(int(e), flat[i]) for j, e in enumerate(routing.indices[i]))
        y = y + torch.sigmoid(block.shared_expert_gate(flat[i])) * block.shared_expert(flat[i])
        rows.append(y)
    return torch.stack(rows).reshape(x.shape)
