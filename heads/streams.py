"""Per-sequence random streams: every sequence draws its own random numbers.

With one ``torch.Generator`` for a batch, a sequence's draws would depend on which other
sequences share its batch. :class:`RowStreams` derives every uniform from
a hash of (the sequence's key, its position, a tag naming the draw, the element index):
counter-based random numbers (like Philox in JAX or cuRAND), here with the SplitMix64
mixing function. A sequence's draws are then a function of its key alone, however the
sampler groups it. The keys come from :mod:`crystalgen.generation.rng`.

The heads accept either source where they take a ``generator``; :func:`uniform` and
:func:`normal` are the two primitives they draw from.
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


class RowStreams:
    """The random streams of a batch of sequences: row r draws from key ``keys[r]`` at
    position ``positions[r]`` (the sampler passes each sequence's own position)."""

    def __init__(self, keys: np.ndarray, positions: np.ndarray, device: torch.device | str = "cpu") -> None:
        self.keys = np.asarray(keys, np.uint64)
        self.positions = np.asarray(positions, np.uint64)
        self.device = torch.device(device)

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


Source = RowStreams | torch.Generator | None


def uniform(source: Source, tag: int, shape: tuple[int, ...], device, dtype=torch.float32) -> Tensor:
    """Uniforms of ``shape`` (rows first) in (0, 1) from a stream set, or [0, 1) from a
    torch generator (None: torch's global one)."""
    if isinstance(source, RowStreams):
        return source.uniform(tag, tuple(shape[1:])).to(dtype)
    return torch.rand(shape, dtype=dtype, device=device, generator=source)


def normal(source: Source, tag: int, shape: tuple[int, ...], device, dtype=torch.float32) -> Tensor:
    """Standard normals of ``shape`` (rows first); from streams by Box-Muller."""
    if isinstance(source, RowStreams):
        u1 = source.uniform(tag, tuple(shape[1:]))
        u2 = source.uniform(tag + 1, tuple(shape[1:]))
        return (torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2.0 * np.pi * u2)).to(dtype)
    return torch.randn(shape, dtype=dtype, device=device, generator=source)


def categorical(probs: Tensor, source: Source, tag: int, n: int | None = None) -> Tensor:
    """Indices drawn from each row of ``probs`` (rows, K): shape (rows,), or (rows, n) for n
    independent draws. From streams by inverting the cumulative distribution."""
    if not isinstance(source, RowStreams):
        draws = torch.multinomial(probs, 1 if n is None else n, replacement=n is not None, generator=source)
        return draws.squeeze(-1) if n is None else draws
    cdf = probs.double().cumsum(-1)
    u = source.uniform(tag, (1 if n is None else n,)).to(cdf.device) * cdf[:, -1:]
    index = torch.searchsorted(cdf, u, right=True).clamp_(max=probs.shape[-1] - 1)
    return index.squeeze(-1) if n is None else index
