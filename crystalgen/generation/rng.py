"""One randomness model: every sequence draws from its own counter-based stream.

A request's seed and round give every job (one sequence to generate) a 64-bit key; the
heads draw their uniforms from (key, position, tag) through
:class:`~crystalgen.heads.streams.RowStreams`. A sequence's crystal is therefore a
function of its key alone, whatever batch, shard or worker it runs in.
"""

from __future__ import annotations

import numpy as np
import torch

from crystalgen.heads.streams import RowStreams, derive_keys, mix64


def base_seed(seed: int | None) -> int:
    """The caller's seed, or a fresh one from torch's global generator."""
    return int(seed) if seed is not None else int(torch.seed() % 2**63)


def sequence_keys(seed: int, round_: int, count: int, first: int = 0) -> np.ndarray:
    """Keys of jobs ``first .. first + count - 1`` of round ``round_`` of a request seeded with ``seed``."""
    base = mix64(np.array([int(seed) % 2**64], np.uint64))[0]
    base = mix64(np.array([base ^ np.uint64(round_ + 1)], np.uint64))[0]
    return derive_keys(base, count, first)


def streams_at(keys: np.ndarray, positions: np.ndarray, device) -> RowStreams:
    """The streams of a group of sequences, each at its own position."""
    return RowStreams(np.asarray(keys, np.uint64), np.asarray(positions, np.uint64), device)
