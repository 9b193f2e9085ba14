"""Per-sequence random streams: every sequence draws its own random numbers.

With one generator for a batch, a sequence's draws would depend on which other
sequences share its batch. :class:`RowStreams` derives every uniform from
a hash of (the sequence's key, its position, a tag naming the draw, the element index):
counter-based random numbers (like Philox in JAX or cuRAND), here with the SplitMix64
mixing function. A sequence's draws are then a function of its key alone, however the
sampler groups it. The keys come from :mod:`crystalgen.generation.rng`.

This is the heads' only source of randomness: every sampling function takes a
:class:`RowStreams` (one stream per row of a ``(rows, ...)`` distribution);
:func:`uniform`, :func:`normal` and :func:`categorical` are the primitives they draw from.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)

#: tags of the draws made at one position (a von Mises rejection round j uses VON_MISES + j)
TOKEN, COMPONENT, NORMAL, VON_MISES = 0, 1, 2, 8


def mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser: a bijective, well-mixing map of uint64 arrays (wraps mod 2**64)."""
    x = np.asarray(x, np.uint64)
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * _M1
        x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


def derive_keys(base: int | np.uint64, count: int, first: int = 0) -> np.ndarray:
    """Keys ``first .. first + count - 1`` of the SplitMix64 sequence of one base key
    (key k is the same however the sequence is cut)."""
    with np.errstate(over="ignore"):
        k = np.arange(first, first + count, dtype=np.uint64) + np.uint64(1)
        return mix64(np.uint64(base) + GOLDEN * k)


class RowStreams:
    """The random streams of a batch of sequences: row r draws from key ``keys[r]`` at
    position ``positions[r]`` (the sampler passes each sequence's own position; default 0)."""

    def __init__(self, keys: np.ndarray, positions: np.ndarray | None = None,
                 device: torch.device | str = "cpu") -> None:
        self.keys = np.asarray(keys, np.uint64)
        self.positions = np.zeros(len(self.keys), np.uint64) if positions is None else np.asarray(positions, np.uint64)
        self.device = torch.device(device)

    @classmethod
    def seeded(cls, seed: int, rows: int, device: torch.device | str = "cpu") -> "RowStreams":
        """``rows`` streams keyed by an integer seed (for tests and one-off draws; the
        sampler keys its sequences through :mod:`crystalgen.generation.rng`)."""
        return cls(derive_keys(mix64(np.array([int(seed) % 2**64], np.uint64))[0], rows), None, device)

    def __len__(self) -> int:
        return len(self.keys)

    def uniform(self, tag: int, shape: tuple[int, ...] = ()) -> Tensor:
        """(rows, *shape) float64 uniforms in the open interval (0, 1)."""
        size = int(np.prod(shape, dtype=np.int64)) if shape else 1
        with np.errstate(over="ignore"):
            counter = self.positions * np.uint64(1 << 20) + np.uint64(tag)
            start = mix64(self.keys ^ mix64(counter))
            bits = mix64(start[:, None] + GOLDEN * (np.arange(size, dtype=np.uint64) + np.uint64(1)))
        u = ((bits >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0 ** -53
        return torch.from_numpy(u.reshape((len(self.keys), *shape))).to(self.device)


def uniform(streams: RowStreams, tag: int, shape: tuple[int, ...], dtype=torch.float32) -> Tensor:
    """Uniforms of ``shape`` (rows first) in the open interval (0, 1)."""
    return streams.uniform(tag, tuple(shape[1:])).to(dtype)


def normal(streams: RowStreams, tag: int, shape: tuple[int, ...], dtype=torch.float32) -> Tensor:
    """Standard normals of ``shape`` (rows first), by Box-Muller."""
    u1 = streams.uniform(tag, tuple(shape[1:]))
    u2 = streams.uniform(tag + 1, tuple(shape[1:]))
    return (torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2.0 * np.pi * u2)).to(dtype)


def categorical(probs: Tensor, streams: RowStreams, tag: int, n: int | None = None) -> Tensor:
    """Indices drawn from each row of ``probs`` (rows, K) by inverting the cumulative
    distribution: shape (rows,), or (rows, n) for n independent draws."""
    cdf = probs.double().cumsum(-1)
    u = streams.uniform(tag, (1 if n is None else n,)).to(cdf.device) * cdf[:, -1:]
    index = torch.searchsorted(cdf, u, right=True).clamp_(max=probs.shape[-1] - 1)
    return index.squeeze(-1) if n is None else index
