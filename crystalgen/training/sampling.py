"""A small grammar-guided sampler for the periodic "sample -> validate" check in training.

Batched incremental decoding through ``CrystalModel.step``: at every position each
sequence's :class:`Grammar` says whether a token (with its legal mask) or a value (free
or derived) comes next; tokens are drawn from the masked token head, free values from
the head of their kind, derived values are filled in by rule. The full-featured
sampler of the public API builds on the same model calls.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from crystalgen.heads import sample_token
from crystalgen.model import CrystalModel
from crystalgen.representation.grammar import Grammar, NoLegalCompletion, ValueSlot

log = logging.getLogger(__name__)


def _left_pad(prefixes: list[np.ndarray], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(p) for p in prefixes)
    tokens = torch.zeros(len(prefixes), width, dtype=torch.long)
    mask = torch.zeros(len(prefixes), width, dtype=torch.bool)
    for i, p in enumerate(prefixes):
        tokens[i, width - len(p) :] = torch.as_tensor(np.asarray(p, np.int64))
        mask[i, width - len(p) :] = True
    return tokens.to(device), mask.to(device)


@torch.no_grad()
def sample_sequences(
    model: CrystalModel,
    prefixes: list[np.ndarray],
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    max_new: int = 400,
) -> list[tuple[list[int], list[float]] | None]:
    """Complete each prefix (ending in ``<plan>``) to ``<eos>``; None where impossible.

    Returns the generated part (tokens, values) of each sequence; prepend the prefix
    (values 0) for ``representation.sequence.decode``.
    """
    device = model.device
    grammars: list[Grammar | None] = []
    for p in prefixes:
        try:
            grammars.append(Grammar.start(p))
        except (NoLegalCompletion, ValueError) as err:
            log.debug("prefix cannot be completed: %s", err)
            grammars.append(None)
    out: list[tuple[list[int], list[float]]] = [([], []) for _ in prefixes]
    tokens, mask = _left_pad(prefixes, device)
    cache = model.new_cache(len(prefixes), tokens.shape[1] + max_new)
    zeros = torch.zeros(tokens.shape, device=device)
    hidden = model.step(tokens, zeros, torch.zeros_like(tokens), cache, attention_mask=mask)
    for _ in range(max_new):
        live = [i for i, g in enumerate(grammars) if g is not None and not g.done]
        if not live:
            break
        new_tok = torch.zeros(len(prefixes), dtype=torch.long)
        new_val = torch.zeros(len(prefixes))
        new_kind = torch.zeros(len(prefixes), dtype=torch.long)
        token_rows, value_rows = [], {}
        for i in live:
            allowed = grammars[i].next_allowed()
            if isinstance(allowed, ValueSlot):
                new_tok[i], new_kind[i] = allowed.token, allowed.kind
                if allowed.free:
                    value_rows.setdefault(allowed.kind, []).append(i)
                else:
                    new_val[i] = allowed.derived_value
            else:
                token_rows.append(i)
        if token_rows:
            masks = torch.as_tensor(np.stack([grammars[i].next_allowed() for i in token_rows]), device=device)
            logits = model.token_logits(hidden[token_rows])
            new_tok[token_rows] = sample_token(logits, masks, temperature, generator).cpu()
        for kind, rows in value_rows.items():
            drawn = model.value_distribution(hidden[rows], kind).sample(temperature, generator)
            new_val[rows] = drawn.float().cpu()
        for i in live:
            grammars[i].advance(int(new_tok[i]), float(new_val[i]))
            out[i][0].append(int(new_tok[i]))
            out[i][1].append(float(new_val[i]))
        hidden = model.step(
            new_tok[:, None].to(device), new_val[:, None].to(device), new_kind[:, None].to(device), cache
        )
    return [o if g is not None and g.done else None for o, g in zip(out, grammars)]
