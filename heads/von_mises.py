"""Mixture of von Mises distributions for fractional coordinates, periodic on [0, 1).

A coordinate x is the angle 2*pi*x, so 0.99 and 0.01 are close, as they are in the
crystal. Densities are with respect to x (not the angle), so they compare directly
with the Gaussian heads' densities.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from crystalgen.heads.mixture import MixtureDistribution
from crystalgen.heads.streams import VON_MISES, RowStreams, uniform

TWO_PI = 2.0 * math.pi
MIN_KAPPA = 1e-3
MAX_KAPPA = 1e6  # a spread of ~1e-4 in x: precise enough for any real coordinate


class VonMisesMixture(MixtureDistribution):
    """K von Mises components per position: weights, centres ``mu`` in [0, 1), concentrations."""

    def __init__(self, logits: Tensor, mu: Tensor, kappa: Tensor) -> None:
        super().__init__(logits)
        self.mu = mu.float()
        self.kappa = kappa.float()

    @property
    def locations(self) -> Tensor:
        return self.mu

    def component_log_prob(self, x: Tensor) -> Tensor:
        # log[2*pi * exp(k cos(d)) / (2*pi*I0(k))] with I0(k) = i0e(k) * exp(k) for stability
        d = TWO_PI * (x.unsqueeze(-1) - self.mu)
        return self.kappa * (torch.cos(d) - 1.0) - torch.log(torch.special.i0e(self.kappa))

    def component_sample(self, index: Tensor, temperature: float, streams: RowStreams) -> Tensor:
        mu = self._gather(self.mu, index)
        kappa = self._gather(self.kappa, index) / temperature  # p**(1/T) is von Mises(k/T)
        angle = sample_von_mises(kappa, streams)
        return torch.remainder(mu + angle / TWO_PI, 1.0)


def sample_von_mises(kappa: Tensor, streams: RowStreams) -> Tensor:
    """Angles in (-pi, pi] from von Mises(0, kappa) (shape ``(rows, ...)``), Best & Fisher
    (1979) rejection sampling.

    Written out (rather than torch.distributions.VonMises) so that rejection round j of
    every row draws from that row's own stream (tag ``VON_MISES + j``), never from a
    global generator.
    """
    k = kappa.double().clamp(MIN_KAPPA, MAX_KAPPA)
    tau = 1.0 + torch.sqrt(1.0 + 4.0 * k * k)
    rho = (tau - torch.sqrt(2.0 * tau)) / (2.0 * k)
    r = (1.0 + rho * rho) / (2.0 * rho)
    out = torch.zeros_like(k)
    todo = torch.ones_like(k, dtype=torch.bool)
    round_ = 0
    while todo.any():
        u = uniform(streams, VON_MISES + round_, (*k.shape, 3), k.dtype).movedim(-1, 0)
        round_ += 1
        z = torch.cos(math.pi * u[0])
        f = (1.0 + r * z) / (r + z)
        c = k * (r - f)
        accept = (c * (2.0 - c) - u[1] > 0) | (torch.log(c / u[1]) + 1.0 - c >= 0)
        theta = torch.sign(u[2] - 0.5) * torch.acos(f.clamp(-1.0, 1.0))
        new = todo & accept
        out = torch.where(new, theta, out)
        todo = todo & ~accept
    return out.to(kappa.dtype)


class VonMisesMixtureHead(nn.Module):
    """Hidden state -> :class:`VonMisesMixture` (centre from a (cos, sin) pair, so it is periodic)."""

    def __init__(self, hidden_size: int, n_components: int = 8) -> None:
        super().__init__()
        self.n_components = n_components
        self.net = nn.Sequential(
            nn.Linear(hidden_size, hidden_size), nn.GELU(), nn.Linear(hidden_size, 4 * n_components)
        )

    def forward(self, hidden: Tensor) -> VonMisesMixture:
        logits, cos, sin, raw_kappa = self.net(hidden).float().chunk(4, dim=-1)
        mu = torch.remainder(torch.atan2(sin, cos) / TWO_PI, 1.0)
        kappa = (nn.functional.softplus(raw_kappa) * 10.0 + MIN_KAPPA).clamp(max=MAX_KAPPA)
        return VonMisesMixture(logits, mu, kappa)
