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
from crystalgen.heads.streams import NORMAL, Source, normal

MIN_STD = 1e-4
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

    def component_sample(self, index: Tensor, temperature: float, generator: Source) -> Tensor:
        mean = self._gather(self.mean, index)
        std = self._gather(self.std, index) * math.sqrt(temperature)  # p**(1/T): var * T
        noise = normal(generator, NORMAL, tuple(mean.shape), mean.device, mean.dtype)
        return mean + std * noise


class GaussianMixtureHead(nn.Module):
    """Hidden state -> :class:`GaussianMixture` over one scalar value."""

    def __init__(self, hidden_size: int, n_components: int = 8) -> None:
        super().__init__()
        self.n_components = n_components
        self.net = nn.Sequential(
            nn.Linear(hidden_size, hidden_size), nn.GELU(), nn.Linear(hidden_size, 3 * n_components)
        )

    def forward(self, hidden: Tensor) -> GaussianMixture:
        logits, mean, raw_std = self.net(hidden).float().chunk(3, dim=-1)
        std = nn.functional.softplus(raw_std) * 0.5 + MIN_STD  # starts broad (~0.35)
        return GaussianMixture(logits, mean, std)
