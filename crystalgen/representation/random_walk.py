"""Uniform random completion of a grammar state (tests, benchmarks, smoke checks)."""
from __future__ import annotations

import numpy as np

from crystalgen.representation.grammar import Grammar, ValueSlot
from crystalgen.representation.sequence import VK_ANGLE, VK_COORD


def random_completion(state: Grammar, rng: np.random.Generator, max_steps: int = 10_000):
    """Walk `state` to `<eos>`, choosing uniformly among allowed tokens and drawing free values.

    Lengths are drawn around the typical stored value (log(L / N^(1/3)) ~ 0.9), angles in
    60..120 degrees, coordinates in [0, 1). Returns (tokens, values) of the walked part.
    """
    tokens: list[int] = []
    values: list[float] = []
    for _ in range(max_steps):
        if state.done:
            return tokens, values
        allowed = state.next_allowed()
        if isinstance(allowed, ValueSlot):
            if not allowed.free:
                value = allowed.derived_value
            elif allowed.kind == VK_COORD:
                value = float(rng.random())
            elif allowed.kind == VK_ANGLE:
                value = float(rng.uniform(60.0, 120.0) / 180.0)
            else:
                value = float(rng.normal(0.9, 0.1))
            token = allowed.token
        else:
            token = int(rng.choice(np.flatnonzero(allowed)))
            value = 0.0
        state.advance(token, value)
        tokens.append(token)
        values.append(value)
    raise RuntimeError("grammar did not finish")
