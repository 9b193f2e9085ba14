"""Mixture of Gaussians for lattice parameters.

Lengths arrive as ``log(L / n_atoms ** (1/3))`` (so cells of every size share one scale)
and angles as degrees / 180; both are plain real numbers here. The crystal system's
constraints (a cubic cell has one free length, ...) are imposed by the grammar: derived
values carry no loss and are never sampled, so this head only sees free parameters.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from crystalgen.heads.mixture import MixtureDistribution
from crystalgen.heads.streams import NORMAL, RowStreams, normal

MIN_STD = 1e-4
STD_SCALE = 0.5
HALF_LOG_TWO_PI = 0.5 * math.log(2.0 * math.pi)


class GaussianMixture(MixtureDistribution):
    """K Gaussian components per position: weights, means, standard deviations."""

    def __init__(self, logits: Tensor, mean: Tensor, std: Tensor) -> None:
        super().__init__(logits)
        self.mean = mean.float()
        self.std = std.float()

    @property
    def locations(self) -> Tensor:
        return self.mean

    def component_log_prob(self, x: Tensor) -> Tensor:
        z = (x.unsqueeze(-1) - self.mean) / self.std
        return -0.5 * z * z - torch.log(self.std) - HALF_LOG_TWO_PI

    def component_sample(self, index: Tensor, temperature: float, streams: RowStreams) -> Tensor:
        mean = self._gather(self.mean, index)
        std = self._gather(self.std, index) * math.sqrt(temperature)  # p**(1/T): var * T
        noise = normal(streams, NORMAL, tuple(mean.shape), mean.dtype)
        return mean + std * noise


def _softplus_inverse(y: float) -> float:
    return y + math.log(-math.expm1(-y))


class GaussianMixtureHead(nn.Module):
    """Hidden state -> :class:`GaussianMixture` over one scalar value."""

    def __init__(
        self, hidden_size: int, n_components: int = 8, initial_range: tuple[float, float] = (0.0, 1.0)
    ) -> None:
        """``initial_range``: the span the values live in. The components start as an even
        grid over it, equally weighted, each as wide as the grid spacing, whatever the
        context (the output layer's weights start at zero). Components that all start at
        one point stay symmetric, and gradient descent then fits one broad component over
        two nearby modes and rarely splits it again."""
        super().__init__()
        self.n_components = n_components
        self.net = nn.Sequential(
            nn.Linear(hidden_size, hidden_size), nn.GELU(), nn.Linear(hidden_size, 3 * n_components)
        )
        lo, hi = initial_range
        spacing = (hi - lo) / max(n_components - 1, 1)
        with torch.no_grad():
            out = self.net[-1]
            out.weight.zero_()
            out.bias.zero_()
            out.bias[n_components : 2 * n_components] = torch.linspace(lo, hi, n_components)
            out.bias[2 * n_components :] = _softplus_inverse(max(spacing - MIN_STD, MIN_STD) / STD_SCALE)

    def forward(self, hidden: Tensor) -> GaussianMixture:
        logits, mean, raw_std = self.net(hidden).float().chunk(3, dim=-1)
        std = nn.functional.softplus(raw_std) * STD_SCALE + MIN_STD
        return GaussianMixture(logits, mean, std)
