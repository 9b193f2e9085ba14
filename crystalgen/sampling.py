"""Batched, grammar-constrained generation of crystal sequences with the decoding cache.

One prefill of all (left-padded) prefixes, then one position per step for the whole
batch: the attention KV cache and the DeltaNet state mean no step re-runs the prefix.
At every position each sequence's :class:`~crystalgen.representation.grammar.Grammar`
says what may come next:

- a token position: the token head's logits are masked to the legal tokens (Wyckoff
  letters of the space group, multiplicities that still sum to the composition, ...)
  and, during the plan, to the elements the user allowed;
- a free value position: a draw from the value head of that kind (lattice length,
  angle, fractional coordinate), or its mode when ``temperature == 0``; with
  ``min_distance`` > 0, the last free coordinate of a site is drawn several times and the
  first draw whose orbit keeps that distance from the atoms already placed is kept
  (:mod:`~crystalgen.representation.clearance`);
- a derived value position: the value the crystal system or Wyckoff position fixes.

Numpy and torch only (no pymatgen), so this also runs inside training on a GPU box.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from crystalgen.heads import masked_logits
from crystalgen.heads.streams import TOKEN, RowStreams, Source, categorical
from crystalgen.representation import vocab as V
from crystalgen.representation.clearance import CANDIDATES, Clearance, guarded_coordinate
from crystalgen.representation.grammar import DEFAULT_MAX_ATOMS, Grammar, NoLegalCompletion, ValueSlot
from crystalgen.representation.sequence import VK_COORD

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

    __slots__ = ("grammar", "rule", "mask", "in_plan", "elements_seen", "tokens", "values", "ll", "failed",
                 "pending", "index", "prefix_len", "clearance", "key")

    def __init__(self, grammar: Grammar | None, rule: ElementRule | None, guard: bool = False) -> None:
        self.grammar = grammar
        self.rule = rule
        self.mask = rule.element_mask() if rule is not None and rule.allowed is not None else None
        self.in_plan = True
        self.elements_seen: set[str] = set()
        self.tokens: list[int] = []
        self.values: list[float] = []
        self.ll = 0.0
        self.failed = grammar is None
        self.pending: tuple[int, float, int] | None = None  # (token, value, kind) chosen this step
        self.index = 0  # which prefix this row completes
        self.prefix_len = 0
        self.clearance = Clearance() if guard else None
        self.key = 0  # the sequence's random stream (used when the sampler is given seeds)

    @property
    def positions(self) -> int:
        """Cache positions this row occupies (its prefix plus what it generated)."""
        return self.prefix_len + len(self.tokens)

    def result(self, prefix: np.ndarray) -> SampledSequence | None:
        if self.failed or not self.grammar.done:
            return None
        toks = np.concatenate([np.asarray(prefix, np.int64), np.asarray(self.tokens, np.int64)])
        vals = np.concatenate([np.zeros(len(prefix), np.float32), np.asarray(self.values, np.float32)])
        return SampledSequence(toks, vals, self.ll)

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


#: once no job is waiting, drop finished rows from the batch when at most this share runs
COMPACT_BELOW = 0.75
#: trim the cache's time axis when this many leading positions are padding for every row
TRIM_AT = 16


@torch.inference_mode()
def generate_batch(
    model,
    prefixes: list[np.ndarray],
    rules: list[ElementRule | None] | None = None,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    max_atoms: int = DEFAULT_MAX_ATOMS,
    max_new: int = 512,
    min_distance: float = 0.0,
) -> list[SampledSequence | None]:
    """Complete every prefix (each ending in ``<plan>``) to ``<eos>``, all in one batch.

    Returns one :class:`SampledSequence` per prefix, or None where the prefix has no
    legal completion or the element rule left no legal token.
    """
    out: list[SampledSequence | None] = [None] * len(prefixes)
    for i, seq in generate_stream(model, prefixes, rules, temperature, generator, max_atoms, max_new,
                                  batch_size=max(len(prefixes), 1), min_distance=min_distance):
        out[i] = seq
    return out


@torch.inference_mode()
def generate_stream(
    model,
    prefixes: list[np.ndarray],
    rules: list[ElementRule | None] | None = None,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    max_atoms: int = DEFAULT_MAX_ATOMS,
    max_new: int = 512,
    batch_size: int = 512,
    min_distance: float = 0.0,
    seeds: np.ndarray | None = None,
) -> Iterator[tuple[int, SampledSequence | None]]:
    """Continuous batching: yields ``(index of the prefix, sequence or None)`` as
    sequences finish, keeping up to ``batch_size`` of them running.

    A finished row's slot is refilled with the next waiting prefix (prefilled on its own,
    then written into the shared cache; its earlier positions are masked), so the batch
    stays full and no step waits for the longest sequence of a batch. Rows, refills and
    random draws follow a fixed order, so the same generator seed gives the same output.

    ``seeds`` (one uint64 key per prefix, e.g. :func:`~crystalgen.heads.streams.sequence_keys`):
    every sequence draws from its own counter-based stream instead of ``generator``, so
    its output depends on its key alone, not on the batch size or on which other
    prefixes share the call (worker processes rely on this).

    ``min_distance`` (Å, 0 = off): the distance guard for the last free coordinate of
    each site (at ``temperature > 0``). The low-level default is off, the model as
    trained; the API and CLI turn it on (``clearance.MIN_DISTANCE_A``).
    """
    device = model.device
    rules = rules or [None] * len(prefixes)
    waiting = iter(range(len(prefixes)))
    slots: list[_Row | None] = []
    hidden = cache = None
    refill_min = max(1, batch_size // 16)
    guard = min_distance > 0 and temperature > 0

    finished: list[tuple[int, SampledSequence | None]] = []

    def admit(count: int) -> list[_Row]:
        """Rows for up to ``count`` next prefixes that have a legal completion (the others
        finish at once, as None)."""
        rows: list[_Row] = []
        for i in waiting:
            try:
                row = _Row(Grammar.start(prefixes[i], max_atoms=max_atoms), rules[i], guard)
            except NoLegalCompletion as err:
                log.debug("no legal completion: %s", err)
                finished.append((i, None))
                continue
            row.index, row.prefix_len = i, len(prefixes[i])
            if seeds is not None:
                row.key = int(seeds[i])
            rows.append(row)
            if len(rows) == count:
                break
        return rows

    while True:
        # retire finished rows, refill their slots with waiting prefixes
        for j, row in enumerate(slots):
            if row is not None and not row.live:
                finished.append((row.index, row.result(prefixes[row.index])))
                slots[j] = None
        free = [j for j, row in enumerate(slots) if row is None]
        if cache is None or (free and (len(free) >= refill_min or len(free) == len(slots))):
            new = admit(batch_size if cache is None else len(free))
            if new:
                part, h = _prefill(model, [prefixes[row.index] for row in new])
                if cache is None:
                    cache, hidden, slots = part, h, new
                else:
                    where = free[: len(new)]
                    cache.insert(torch.as_tensor(where, device=device), part)
                    hidden[torch.as_tensor(where, device=device)] = h
                    for j, row in zip(where, new):
                        slots[j] = row
        yield from finished
        finished.clear()
        live = [j for j, row in enumerate(slots) if row is not None]
        if not live:
            return
        if len(live) <= COMPACT_BELOW * len(slots):  # nothing left to refill with: shrink
            keep = torch.as_tensor(live, device=device)
            cache.select(keep)
            hidden = hidden[keep]
            slots = [slots[j] for j in live]
            live = list(range(len(slots)))
        span = max(slots[j].positions for j in live)
        if cache.length - span >= TRIM_AT:
            cache.keep_last(span)
        _step_rows(model, slots, live, hidden, temperature, generator, min_distance, streams=seeds is not None)
        n = len(slots)
        new_tok = np.zeros(n, np.int64)
        new_val = np.zeros(n, np.float32)
        new_kind = np.zeros(n, np.int64)
        for j in live:
            row = slots[j]
            if row.failed or row.pending is None:
                continue
            tok, val, kind = row.pending
            row.pending = None
            try:
                row.grammar.advance(tok, val)
            except (NoLegalCompletion, ValueError) as err:
                log.debug("sequence %d stopped: %s", row.index, err)
                row.failed = True
                continue
            row.record_token(tok)
            row.tokens.append(tok)
            row.values.append(val)
            if len(row.tokens) >= max_new and not row.grammar.done:
                row.failed = True
            new_tok[j], new_val[j], new_kind[j] = tok, val, kind
        cache.reserve(cache.length + 1)
        hidden = model.step(
            torch.as_tensor(new_tok[:, None], device=device),
            torch.as_tensor(new_val[:, None], device=device),
            torch.as_tensor(new_kind[:, None], device=device),
            cache,
        )


def _prefill(model, prefixes: list[np.ndarray]):
    """A fresh cache holding these prefixes, and each one's last hidden state. Identical
    prefixes (every row of a ``sample`` call) are computed once and copied."""
    device = model.device
    keys = [np.asarray(p, np.int64).tobytes() for p in prefixes]
    unique = list(dict.fromkeys(keys))
    where = {k: u for u, k in enumerate(unique)}
    tokens, mask = _left_pad([np.frombuffer(k, np.int64).copy() for k in unique])
    cache = model.new_cache(len(unique), tokens.shape[1] + 64)
    hidden = model.step(tokens.to(device), torch.zeros(tokens.shape, device=device),
                        torch.zeros_like(tokens).to(device), cache, attention_mask=mask.to(device))
    if len(unique) < len(prefixes):
        rows = torch.as_tensor([where[k] for k in keys], device=device)
        cache.select(rows)
        hidden = hidden[rows]
    return cache, hidden


_ONLY_TOKEN: dict[int, tuple[np.ndarray, int | None]] = {}


def _only_token(mask: np.ndarray) -> int | None:
    """The one legal token of a mask, None if several, -1 if none. The grammar's masks are
    shared read-only arrays, so the answer is remembered per array."""
    hit = _ONLY_TOKEN.get(id(mask))
    if hit is not None and hit[0] is mask:
        return hit[1]
    ids = np.flatnonzero(mask)
    answer = -1 if len(ids) == 0 else int(ids[0]) if len(ids) == 1 else None
    if not mask.flags.writeable:  # a cached grammar mask: lives as long as the entry keeps it
        if len(_ONLY_TOKEN) > 100_000:
            _ONLY_TOKEN.clear()
        _ONLY_TOKEN[id(mask)] = (mask, answer)
    return answer


def _source(rows: list[_Row], slots: list[int], generator: torch.Generator | None, streams: bool,
            device) -> Source:
    """The rows' own streams at their positions (``streams``), else the shared generator."""
    if not streams:
        return generator
    return RowStreams(np.array([rows[j].key for j in slots], np.uint64),
                      np.array([len(rows[j].tokens) for j in slots], np.uint64), device)


def _step_rows(model, rows: list[_Row], live: list[int], hidden: torch.Tensor, temperature: float,
               generator: torch.Generator | None, min_distance: float = 0.0, streams: bool = False) -> None:
    """Choose every live row's next position (``row.pending = (token, value, kind)``).

    Forced tokens and derived values need no model call; the others are drawn from the
    token head (grammar-masked) or the value head of their kind, one call per kind
    (guarded coordinates separately: several draws each). ``streams``: each row draws
    from its own stream (``row.key``) instead of ``generator``.
    """
    device = hidden.device
    token_slots: list[int] = []
    token_masks: list[np.ndarray] = []
    value_slots: dict[int, list[int]] = {}
    guarded: list[int] = []
    for j in live:
        row = rows[j]
        try:
            allowed = row.grammar.next_allowed()
        except NoLegalCompletion as err:  # a dead end: the row yields None, the others go on
            log.debug("sequence %d stopped: %s", row.index, err)
            row.failed = True
            continue
        if isinstance(allowed, ValueSlot):
            if allowed.free:
                row.pending = (allowed.token, 0.0, allowed.kind)
                if row.clearance is not None and guarded_coordinate(row.grammar):
                    guarded.append(j)
                else:
                    value_slots.setdefault(allowed.kind, []).append(j)
            else:
                row.pending = (allowed.token, float(allowed.derived_value), allowed.kind)
            continue
        m = row.token_mask(allowed)
        forced = _only_token(m)
        if forced == -1:
            row.failed = True
            continue
        if forced is not None:  # forced token: probability 1, no model call needed
            row.pending = (forced, 0.0, 0)
        else:
            token_slots.append(j)
            token_masks.append(m)
    if token_slots:
        idx = torch.as_tensor(token_slots, device=device)
        logits = masked_logits(model.token_logits(hidden[idx]).float(),
                               torch.as_tensor(np.stack(token_masks), device=device))
        logp = torch.log_softmax(logits, dim=-1)
        if temperature <= 0:
            chosen = logits.argmax(dim=-1)
        else:
            probs = torch.softmax(logits / temperature, dim=-1)
            chosen = categorical(probs, _source(rows, token_slots, generator, streams, device), TOKEN)
        chosen_lp = logp.gather(-1, chosen[:, None]).squeeze(-1).cpu().numpy()
        for j, tok, lp in zip(token_slots, chosen.cpu().numpy().tolist(), chosen_lp.tolist()):
            rows[j].pending = (tok, 0.0, 0)
            rows[j].ll += lp
    for kind, slots in value_slots.items():
        dist = model.value_distribution(hidden[torch.as_tensor(slots, device=device)], kind)
        drawn = dist.sample(temperature, _source(rows, slots, generator, streams, device))
        lp = dist.log_prob(drawn).cpu().numpy().tolist()
        for j, v, l in zip(slots, drawn.float().cpu().numpy().tolist(), lp):
            rows[j].pending = (rows[j].pending[0], v, kind)
            rows[j].ll += l
    if guarded:
        _draw_clear(model, rows, guarded, hidden, temperature, _source(rows, guarded, generator, streams, device),
                    min_distance)


def _draw_clear(model, rows: list[_Row], slots: list[int], hidden: torch.Tensor, temperature: float,
                source: Source, min_distance: float) -> None:
    """The last free coordinate of a site for these rows: ``CANDIDATES`` draws each, keep
    the first whose orbit stays ``min_distance`` clear of the placed atoms (else the
    farthest). The log-likelihood counts the kept value under the untruncated head."""
    dist = model.value_distribution(hidden[torch.as_tensor(slots, device=hidden.device)], VK_COORD)
    drawn = dist.sample(temperature, source, n=CANDIDATES).float()  # (rows, CANDIDATES)
    values = drawn.cpu().numpy()
    pick = [rows[j].clearance.first_clear(rows[j].grammar, values[r], min_distance) for r, j in enumerate(slots)]
    kept = drawn[torch.arange(len(slots)), torch.as_tensor(pick)]
    lp = dist.log_prob(kept).cpu().numpy().tolist()
    for j, v, l in zip(slots, kept.cpu().numpy().tolist(), lp):
        rows[j].pending = (rows[j].pending[0], v, VK_COORD)
        rows[j].ll += l
