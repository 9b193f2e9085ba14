"""Output heads of the crystal model: tokens, fractional coordinates, lattice parameters.

- :class:`TokenHead` with grammar masks (:func:`masked_logits`, :func:`sample_token`).
- :class:`VonMisesMixtureHead`: periodic coordinates on [0, 1).
- :class:`GaussianMixtureHead`: lattice lengths (log, per-atom scaled) and angles.
- :class:`ValueEmbedding`: Fourier features of real values for the model's input.
- :class:`RowStreams`: the only source of randomness, one counter-based stream per row.
Every value distribution has ``log_prob``, ``sample(temperature, streams)`` and ``mode()``.
"""

from crystalgen.heads.gaussian_mixture import GaussianMixture, GaussianMixtureHead
from crystalgen.heads.mixture import MixtureDistribution
from crystalgen.heads.streams import RowStreams
from crystalgen.heads.token_head import TokenHead, masked_logits, sample_token
from crystalgen.heads.value_embedding import ValueEmbedding
from crystalgen.heads.von_mises import VonMisesMixture, VonMisesMixtureHead, sample_von_mises

__all__ = [
    "GaussianMixture",
    "GaussianMixtureHead",
    "MixtureDistribution",
    "RowStreams",
    "TokenHead",
    "ValueEmbedding",
    "VonMisesMixture",
    "VonMisesMixtureHead",
    "masked_logits",
    "sample_token",
    "sample_von_mises",
]
