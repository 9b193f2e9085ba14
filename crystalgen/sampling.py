"""Batched, grammar-constrained generation of crystal sequences with the decoding cache.

One prefill of all (left-padded) prefixes, then one position per step for the whole
batch: the attention KV cache and the DeltaNet state mean no step re-runs the prefix.
At every position each sequence's :class:`~crystalgen.representation.grammar.Grammar`
says what may come next:

- a token position: the token head's logits are masked to the legal tokens (Wyckoff
  letters of the space group, multiplicities that still sum to the composition, ...)
  and, during the plan, to the elements the user allowed;
- a free value position: a draw from the value head of that kind (lattice length,
  angle, fractional coordinate), or its mode when ``temperature == 0``;
- a derived value position: the value the crystal system or Wyckoff position fixes.

Numpy and torch only (no pymatgen), so this also runs inside training on a GPU box.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from crystalgen.heads import masked_logits
from crystalgen.representation import vocab as V
from crystalgen.representation.grammar import DEFAULT_MAX_ATOMS, Grammar, NoLegalCompletion, ValueSlot

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ElementRule:
    """Which elements the plan may use when the prefix gives no composition.

    ``allowed``: elements the plan may draw from (None: any). ``required``: elements the
    plan must contain, all of them (a chemical system); the grammar lists elements in
    canonical order, so a required element can never be skipped past.
    """

    allowed: frozenset[str] | None = None
    required: frozenset[str] = frozenset()

    def element_mask(self) -> np.ndarray:
        """Boolean mask over the vocabulary: element tokens this rule permits (others True)."""
        mask = np.ones(V.VOCAB_SIZE, bool)
        if self.allowed is not None:
            els = slice(V.EL0, V.EL0 + len(V.ELEMENTS))
            mask[els] = False
            for el in self.allowed | self.required:
                mask[V.element_token(el)] = True
        return mask


@dataclass
class SampledSequence:
    """A finished sequence: prefix and generated part, and its log-likelihood (nats).

    The log-likelihood is the model's own (temperature 1) log-probability of the sampled
    tokens under the grammar-masked distribution plus the log-density of the free values.
    """

    tokens: np.ndarray
    values: np.ndarray
    log_likelihood: float


class _Row:
    """Decoding state of one sequence of the batch."""

    __slots__ = ("grammar", "rule", "mask", "in_plan", "elements_seen", "tokens", "values", "ll", "failed")

    def __init__(self, grammar: Grammar | None, rule: ElementRule | None) -> None:
        self.grammar = grammar
        self.rule = rule
        self.mask = rule.element_mask() if rule is not None and rule.allowed is not None else None
        self.in_plan = True
        self.elements_seen: set[str] = set()
        self.tokens: list[int] = []
        self.values: list[float] = []
        self.ll = 0.0
        self.failed = grammar is None

    @property
    def live(self) -> bool:
        return not self.failed and not self.grammar.done

    def token_mask(self, allowed: np.ndarray) -> np.ndarray:
        """The grammar's mask, narrowed by the element rule while the plan is written."""
        if self.rule is None or not self.in_plan:
            return allowed
        mask = allowed if self.mask is None else allowed & self.mask
        missing = self.rule.required - self.elements_seen
        if missing:
            # the plan may not close before every required element has appeared
            mask = mask.copy()
            mask[V.VPA0 : V.VPA0 + V.N_VPA] = False
        return mask

    def record_token(self, tok: int) -> None:
        if tok == V.END_PLAN:
            self.in_plan = False
        elif self.in_plan and V.in_range(tok, V.EL0, len(V.ELEMENTS)):
            self.elements_seen.add(V.token_element(tok))


def _left_pad(prefixes: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(p) for p in prefixes)
    tokens = torch.zeros(len(prefixes), width, dtype=torch.long)
    mask = torch.zeros(len(prefixes), width, dtype=torch.bool)
    for i, p in enumerate(prefixes):
        tokens[i, width - len(p) :] = torch.as_tensor(np.asarray(p, np.int64))
        mask[i, width - len(p) :] = True
    return tokens, mask


@torch.no_grad()
def generate_batch(
    model,
    prefixes: list[np.ndarray],
    rules: list[ElementRule | None] | None = None,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    max_atoms: int = DEFAULT_MAX_ATOMS,
    max_new: int = 512,
) -> list[SampledSequence | None]:
    """Complete every prefix (each ending in ``<plan>``) to ``<eos>``.

    Returns one :class:`SampledSequence` per prefix, or None where the prefix has no
    legal completion or the element rule left no legal token.
    """
    device = model.device
    rules = rules or [None] * len(prefixes)
    rows = []
    for p, rule in zip(prefixes, rules):
        try:
            rows.append(_Row(Grammar.start(p, max_atoms=max_atoms), rule))
        except NoLegalCompletion as err:
            log.debug("no legal completion: %s", err)
            rows.append(_Row(None, rule))
    tokens, mask = _left_pad(prefixes)
    cache = model.new_cache(len(prefixes), tokens.shape[1] + max_new)
    zeros = torch.zeros(tokens.shape)
    hidden = model.step(tokens.to(device), zeros.to(device), torch.zeros_like(tokens).to(device), cache,
                        attention_mask=mask.to(device))
    n = len(rows)
    for _ in range(max_new):
        live = [i for i, r in enumerate(rows) if r.live]
        if not live:
            break
        new_tok = np.zeros(n, np.int64)
        new_val = np.zeros(n, np.float32)
        new_kind = np.zeros(n, np.int64)
        token_rows: list[int] = []
        token_masks: list[np.ndarray] = []
        value_rows: dict[int, list[int]] = {}
        for i in live:
            row = rows[i]
            allowed = row.grammar.next_allowed()
            if isinstance(allowed, ValueSlot):
                new_tok[i], new_kind[i] = allowed.token, allowed.kind
                if allowed.free:
                    value_rows.setdefault(allowed.kind, []).append(i)
                else:
                    new_val[i] = allowed.derived_value
                continue
            m = row.token_mask(allowed)
            if not m.any():
                row.failed = True
                continue
            if m.sum() == 1:  # forced token: probability 1, no model call needed
                new_tok[i] = int(np.flatnonzero(m)[0])
            else:
                token_rows.append(i)
                token_masks.append(m)
        if token_rows:
            idx = torch.as_tensor(token_rows, device=device)
            logits = masked_logits(model.token_logits(hidden[idx]).float(),
                                   torch.as_tensor(np.stack(token_masks), device=device))
            logp = torch.log_softmax(logits, dim=-1)
            if temperature <= 0:
                chosen = logits.argmax(dim=-1)
            else:
                probs = torch.softmax(logits / temperature, dim=-1)
                chosen = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
            chosen_lp = logp.gather(-1, chosen[:, None]).squeeze(-1).cpu().numpy()
            chosen = chosen.cpu().numpy()
            for j, i in enumerate(token_rows):
                new_tok[i] = chosen[j]
                rows[i].ll += float(chosen_lp[j])
        for kind, vrows in value_rows.items():
            dist = model.value_distribution(hidden[torch.as_tensor(vrows, device=device)], kind)
            drawn = dist.sample(temperature, generator)
            lp = dist.log_prob(drawn).cpu().numpy()
            drawn = drawn.float().cpu().numpy()
            for j, i in enumerate(vrows):
                new_val[i] = drawn[j]
                rows[i].ll += float(lp[j])
        for i in live:
            row = rows[i]
            if row.failed:
                continue
            tok, val = int(new_tok[i]), float(new_val[i])
            try:
                row.grammar.advance(tok, val)
            except (NoLegalCompletion, ValueError) as err:
                log.debug("sequence %d stopped: %s", i, err)
                row.failed = True
                continue
            row.record_token(tok)
            row.tokens.append(tok)
            row.values.append(val)
        hidden = model.step(
            torch.as_tensor(new_tok[:, None], device=device),
            torch.as_tensor(new_val[:, None], device=device),
            torch.as_tensor(new_kind[:, None], device=device),
            cache,
        )
    out: list[SampledSequence | None] = []
    for p, row in zip(prefixes, rows):
        if row.failed or not row.grammar.done:
            out.append(None)
            continue
        toks = np.concatenate([np.asarray(p, np.int64), np.asarray(row.tokens, np.int64)])
        vals = np.concatenate([np.zeros(len(p), np.float32), np.asarray(row.values, np.float32)])
        out.append(SampledSequence(toks, vals, row.ll))
    return out
