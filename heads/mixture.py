"""A mixture of K one-dimensional distributions, the shared core of the value heads.

The von Mises head (fractional coordinates) and the Gaussian head (lattice lengths and
angles) differ only in their components; weighting, log-likelihood, temperature
sampling and the "most likely value" are the same, so they live here once.
"""

from __future__ import annotations

import torch
from torch import Tensor

from crystalgen.heads.streams import COMPONENT, RowStreams, categorical


class MixtureDistribution:
    """Mixture over the last dimension of ``logits`` (shape ``(..., K)``).

    Subclasses define the components through :meth:`component_log_prob`,
    :meth:`component_sample` and :attr:`locations` (each component's own mode).
    All arithmetic is float32 even under bf16 autocast: likelihoods need the range.
    """

    def __init__(self, logits: Tensor) -> None:
        self.logits = logits.float()

    # --- component interface -------------------------------------------------------
    @property
    def locations(self) -> Tensor:  # (..., K)
        raise NotImplementedError

    def component_log_prob(self, x: Tensor) -> Tensor:
        """log density of ``x`` (shape ``(...)``) under each component -> ``(..., K)``."""
        raise NotImplementedError

    def component_sample(self, index: Tensor, temperature: float, streams: RowStreams) -> Tensor:
        """One draw from component ``index`` (shape ``(...)``), sharpened by ``temperature``."""
        raise NotImplementedError

    def _gather(self, param: Tensor, index: Tensor) -> Tensor:
        """``param[..., index]``: index has shape ``(...)``, or ``(..., n)`` for n draws each."""
        if index.dim() == param.dim():
            return param.gather(-1, index)
        return param.gather(-1, index.unsqueeze(-1)).squeeze(-1)

    # --- mixture ---------------------------------------------------------------------
    def log_prob(self, x: Tensor) -> Tensor:
        """log density of ``x`` (shape ``(...)``) under the mixture."""
        log_w = torch.log_softmax(self.logits, dim=-1)
        return torch.logsumexp(log_w + self.component_log_prob(x.float()), dim=-1)

    def nll(self, x: Tensor) -> Tensor:
        return -self.log_prob(x)

    def sample(self, temperature: float = 1.0, streams: RowStreams | None = None, n: int | None = None) -> Tensor:
        """A draw from the mixture tempered as p**(1/T), shape ``(...)``; with ``n``, n
        independent draws each, shape ``(..., n)``. ``temperature=0`` gives :meth:`mode`.

        ``streams``: one random stream per row of a ``(rows, K)`` mixture
        (:class:`~crystalgen.heads.streams.RowStreams`); needed unless ``temperature <= 0``."""
        if temperature <= 0:
            mode = self.mode()
            return mode if n is None else mode.unsqueeze(-1).expand(*mode.shape, n)
        if streams is None:
            raise ValueError("sampling at temperature > 0 needs the rows' random streams")
        probs = torch.softmax(self.logits / temperature, dim=-1)
        flat = probs.reshape(-1, probs.shape[-1])
        index = categorical(flat, streams, COMPONENT, n)
        index = index.reshape(probs.shape[:-1] if n is None else (*probs.shape[:-1], n))
        return self.component_sample(index, temperature, streams)

    def mode(self) -> Tensor:
        """The most likely value: the component location with the highest mixture density.

        Exact when the components are well separated, and a close approximation when
        they overlap; used for precise regression (``temperature=0``).
        """
        candidates = self.locations  # (..., K)
        scores = torch.stack(
            [self.log_prob(candidates[..., k]) for k in range(candidates.shape[-1])], dim=-1
        )
        return self._gather(candidates, scores.argmax(dim=-1))
