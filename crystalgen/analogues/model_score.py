"""Teacher-forced model scores of candidate structures: how likely the model finds each one.

A candidate (an analogue with the target's elements substituted in) is written in the
model's own sequence for the CSP prompt of its cell composition, with the encoding
training uses (`crystalgen.data.prepare.wyckoff_arrays`, then `encode_from_arrays` with
composition and formula units in the prefix). All candidates of a query go through one
batched forward pass; per candidate, in nats:

- ``plan_log_prob``: the summed log-probabilities, under the token head without grammar
  mask, of the plan tokens that are training targets under that prompt (crystal system,
  space group, oxidation states, Wyckoff letters per element, volume bin): exactly minus
  the training cross-entropy of that sequence;
- ``value_log_lik``: the summed log-densities of its free lattice values and coordinates
  (minus the value heads' training NLL).

A candidate the sequence format cannot express (no Wyckoff form, outside the vocabulary,
longer than ``MAX_LENGTH``) gets None.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from pymatgen.core import Structure

from crystalgen.data.prepare import wyckoff_arrays
from crystalgen.model import VALUE_HEADS, CrystalModel, collate
from crystalgen.representation import vocab as V
from crystalgen.representation.sequence import VK_TOKEN, EncodedCrystal, EncodeError, encode_from_arrays

#: the longest sequence scored (training's `data.max_length`)
MAX_LENGTH = 512


@dataclass(frozen=True)
class ModelScore:
    """The model's log-probability of a candidate's plan and log-density of its values (nats)."""

    plan_log_prob: float
    value_log_lik: float
    n_plan_tokens: int
    n_values: int


def encode_candidate(structure: Structure) -> EncodedCrystal | None:
    """`structure` as the model's CSP sequence (composition and formula units given); None if inexpressible."""
    arrays = wyckoff_arrays(structure)
    if not arrays["wyckoff_ok"]:
        return None
    try:
        encoded = encode_from_arrays(arrays["wyckoff_spacegroup"], arrays["wyckoff_lattice"], arrays["wyckoff_element"],
                                     arrays["wyckoff_letter"], arrays["wyckoff_xyz"], arrays["wyckoff_oxidation"],
                                     task="csp")
    except (EncodeError, ValueError, KeyError, IndexError):  # IndexError: an element beyond the vocabulary
        return None
    return encoded if len(encoded) <= MAX_LENGTH else None


def plan_tokens(encoded: EncodedCrystal) -> tuple[np.ndarray, np.ndarray]:
    """(prompt up to and including `<plan>`, the plan after it up to and including `</plan>`)."""
    tokens = encoded.tokens
    start = int(np.flatnonzero(tokens == V.PLAN)[0]) + 1
    end = int(np.flatnonzero(tokens == V.END_PLAN)[0]) + 1
    return tokens[:start], tokens[start:end]


@torch.inference_mode()
def score_sequences(model: CrystalModel, sequences: Sequence[EncodedCrystal]) -> list[ModelScore]:
    """One batched, teacher-forced forward pass over `sequences`: their `ModelScore`s."""
    if not sequences:
        return []
    batch = {k: v.to(model.device) for k, v in collate(list(sequences)).items()}
    embeds = model.embed(batch["tokens"], batch["values"], batch["value_kind"])
    hidden = model.backbone(embeds).hidden_states[:, :-1]  # row t predicts position t + 1
    target = {k: batch[k][:, 1:] for k in ("tokens", "values", "value_kind", "free", "loss_mask")}
    row = torch.arange(len(sequences), device=model.device)[:, None].expand_as(target["tokens"])
    n = len(sequences)

    token_rows = target["loss_mask"] & (target["value_kind"] == VK_TOKEN)
    logp = torch.log_softmax(model.token_logits(hidden[token_rows]).float(), dim=-1)
    picked = logp.gather(-1, target["tokens"][token_rows][:, None]).squeeze(-1)
    plan = torch.zeros(n, dtype=torch.float64, device=model.device).index_add_(0, row[token_rows], picked.double())

    values = torch.zeros(n, dtype=torch.float64, device=model.device)
    for kind in VALUE_HEADS:
        rows = target["loss_mask"] & target["free"] & (target["value_kind"] == kind)
        if rows.any():
            ll = -model.value_distribution(hidden[rows], kind).nll(target["values"][rows]).float()
            values.index_add_(0, row[rows], ll.double())
    counts_plan = token_rows.sum(1).tolist()
    counts_values = (target["loss_mask"] & target["free"] & (target["value_kind"] != VK_TOKEN)).sum(1).tolist()
    return [ModelScore(float(p), float(v), int(a), int(b))
            for p, v, a, b in zip(plan.tolist(), values.tolist(), counts_plan, counts_values)]


def score_structures(model: CrystalModel, structures: Sequence[Structure]) -> list[ModelScore | None]:
    """`ModelScore` of each structure (one forward pass for all), None where it cannot be encoded."""
    encoded = [encode_candidate(s) for s in structures]
    scored = iter(score_sequences(model, [e for e in encoded if e is not None]))
    return [None if e is None else next(scored) for e in encoded]
