"""Refinement: the model writes the lattice and free coordinates of an analogue's plan.

The candidate's plan tokens (space group, Z, elements with oxidation states and Wyckoff
letters, volume bin) are forced after the CSP prompt and the decoder
(`generation.decoder.generate_batch(plans=...)`) writes the rest: the mode of every value
head at temperature 0, or draws at temperature > 0 (the best of `samples` by
log-likelihood). A refined candidate's log-likelihood is the log-density of its free values
under the model given that plan, the same quantity as `ModelScore.value_log_lik` of the
analogue's own coordinates, so the two compare directly: `prefer_refined` keeps the
refined structure when the model finds its values more likely than the analogue's own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pymatgen.core import Structure

from crystalgen.analogues.model_score import ModelScore, plan_tokens
from crystalgen.generation.decoder import generate_batch
from crystalgen.model import CrystalModel
from crystalgen.representation.grammar import DEFAULT_MAX_ATOMS
from crystalgen.representation.sequence import DecodeError, EncodedCrystal, decode, decode_plan


@dataclass(frozen=True)
class Refined:
    """The model's structure for a given plan and its values' log-density (nats)."""

    structure: Structure
    value_log_lik: float
    spacegroup: int


def refine(model: CrystalModel, sequences: Sequence[EncodedCrystal], temperature: float = 0.0, samples: int = 1,
           seed: int = 0) -> list[Refined | None]:
    """For each encoded candidate, the model's lattice and coordinates under its plan (one
    batch for all); None where the decoder finds no legal completion."""
    if not sequences:
        return []
    samples = 1 if temperature == 0 else max(1, samples)
    split = [plan_tokens(s) for s in sequences]
    max_atoms = max(DEFAULT_MAX_ATOMS, *(decode_plan(plan).num_atoms for _, plan in split))
    out = generate_batch(model, [p for p, _ in split] * samples, temperature=temperature,
                         seed=seed, max_atoms=max_atoms,
                         plans=[plan for _, plan in split] * samples)
    best: list[Refined | None] = [None] * len(sequences)
    for k, seq in enumerate(out):
        i = k % len(sequences)
        if seq is None or (best[i] is not None and best[i].value_log_lik >= seq.log_likelihood):
            continue
        try:
            crystal = decode(seq.tokens, seq.values)
            best[i] = Refined(crystal.to_structure(), float(seq.log_likelihood), crystal.spacegroup)
        except (DecodeError, ValueError):
            continue
    return best


def prefer_refined(own: ModelScore | None, refined: Refined | None) -> bool:
    """Keep the refined structure when its values are more likely under the model than the analogue's own."""
    return refined is not None and (own is None or refined.value_log_lik > own.value_log_lik)
