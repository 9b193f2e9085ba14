"""The batched, grammar-constrained decode loop, with the decoding cache.

One prefill of all (left-padded) prefixes, then one position per step for the whole
batch: the attention KV cache and the DeltaNet state mean no step re-runs the prefix.
The loop is four small functions around an explicit :class:`Batch`:

- :func:`admit` / :func:`prefill`: retire finished rows, start waiting prefixes in the
  free slots (continuous batching: a finished row's slot is refilled, its earlier cache
  positions masked, so no step waits for the longest sequence);
- :func:`step`: choose every live row's next position. At a token position the token
  head's logits are masked to what the row's :class:`~crystalgen.representation.grammar.Grammar`
  allows (the request's plan rule included: elements, charge neutrality); at a free value position a
  draw from the value head of that kind (lattice length, angle, fractional coordinate),
  or its mode at ``temperature == 0``; every free coordinate of a site goes through the
  distance guard (:mod:`crystalgen.generation.guard`), and de novo the last free lattice
  length through the volume guard (:mod:`crystalgen.generation.volume`), which with the
  distance guard on also keeps the fixed-position orbits apart; a derived value is the
  one the crystal system or Wyckoff position fixes;
- :func:`commit`: advance each row's grammar and feed the chosen positions to the model.

Every row draws from its own random stream (:mod:`crystalgen.generation.rng`), so its
output depends on its key alone, not on the batch size or on which other prefixes share
the call. Numpy and torch only (no pymatgen structures), so this also runs in training.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from crystalgen.generation.guard import (BLOCKED, CANDIDATES, GRID, ROOMY, Clearance, MinDistance, floor_distance,
                                        lattice_room)
from crystalgen.generation.rng import sequence_keys, streams_at
from crystalgen.generation.volume import bin_gap, lattice_params, pick_in_bin
from crystalgen.heads import masked_logits, sample_token
from crystalgen.representation.charge import PlanRule
from crystalgen.representation.grammar import DEFAULT_MAX_ATOMS, Grammar, NoLegalCompletion, ValueSlot
from crystalgen.representation.sequence import VK_COORD, VK_LENGTH
from crystalgen.representation.tables import SPACE_GROUPS

log = logging.getLogger(__name__)

#: once no job is waiting, drop finished rows from the batch when at most this share runs
COMPACT_BELOW = 0.75
#: trim the cache's time axis when this many leading positions are padding for every row
TRIM_AT = 16
#: the random-stream tag of a guarded coordinate's scan (offset and pick); clear of the heads' tags
GRID_TAG = 1 << 10
#: clear points of a coordinate's scan tested for room for the later sites
SCAN_DRAWS = 4
#: how far past the longest candidate (in stored value, log length) a lattice length scan reaches
SCAN_LONGER = 0.4


@dataclass
class SampledSequence:
    """A finished sequence: prefix and generated part, and its log-likelihood (nats).

    The log-likelihood is the model's own (temperature 1) log-probability of the sampled
    tokens under the grammar-masked distribution plus the log-density of the free values.
    """

    tokens: np.ndarray
    values: np.ndarray
    log_likelihood: float


class Row:
    """Decoding state of one sequence of the batch."""

    __slots__ = ("grammar", "tokens", "values", "ll", "failed", "pending", "index", "prefix_len", "clearance", "key",
                 "forced")

    def __init__(self, grammar: Grammar, index: int, prefix_len: int, key: int, guard: bool,
                 forced: tuple[int, ...] = ()) -> None:
        self.grammar = grammar
        self.tokens: list[int] = []
        self.values: list[float] = []
        self.ll = 0.0
        self.failed = False
        self.pending: tuple[int, float, int] | None = None  # (token, value, kind) chosen this step
        self.index = index  # which prefix this row completes
        self.prefix_len = prefix_len
        self.clearance = Clearance() if guard else None
        self.key = key  # the sequence's random stream
        self.forced = forced  # tokens written first, whatever the model says (a given plan)

    @property
    def positions(self) -> int:
        """Cache positions this row occupies (its prefix plus what it generated)."""
        return self.prefix_len + len(self.tokens)

    @property
    def live(self) -> bool:
        return not self.failed and not self.grammar.done

    def result(self, prefix: np.ndarray) -> SampledSequence | None:
        if self.failed or not self.grammar.done:
            return None
        toks = np.concatenate([np.asarray(prefix, np.int64), np.asarray(self.tokens, np.int64)])
        vals = np.concatenate([np.zeros(len(prefix), np.float32), np.asarray(self.values, np.float32)])
        return SampledSequence(toks, vals, self.ll)


@dataclass
class Batch:
    """Everything the loop carries between steps: the work, the slots, the model's cache."""

    prefixes: list[np.ndarray]
    rules: list[PlanRule | None]
    keys: np.ndarray  # uint64, one random-stream key per prefix
    batch_size: int
    temperature: float
    min_distance: MinDistance
    max_atoms: int
    max_new: int
    volume_guard: bool = False
    plans: list[np.ndarray] | None = None  # per prefix, tokens forced after `<plan>`
    waiting: Iterator[int] = field(init=False)
    slots: list[Row | None] = field(default_factory=list)
    cache: object | None = None
    hidden: torch.Tensor | None = None
    finished: list[tuple[int, SampledSequence | None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.waiting = iter(range(len(self.prefixes)))

    @property
    def guard(self) -> bool:
        return self.temperature > 0 and (isinstance(self.min_distance, np.ndarray) or self.min_distance > 0)

    def live(self) -> list[int]:
        return [j for j, row in enumerate(self.slots) if row is not None]


@torch.inference_mode()
def generate_batch(
    model,
    prefixes: list[np.ndarray],
    rules: list[PlanRule | None] | None = None,
    temperature: float = 1.0,
    seed: int = 0,
    max_atoms: int = DEFAULT_MAX_ATOMS,
    max_new: int = 512,
    min_distance: MinDistance = 0.0,
    plans: list[np.ndarray] | None = None,
) -> list[SampledSequence | None]:
    """Complete every prefix (each ending in ``<plan>``) to ``<eos>``, all in one batch;
    prefix i draws from key i of ``seed`` (:func:`~crystalgen.generation.rng.sequence_keys`).
    One :class:`SampledSequence` per prefix, or None where the prefix has no legal
    completion under its rule. ``plans``: per prefix, tokens forced right after ``<plan>``
    (a given plan: the model then writes what follows it; a forced token the grammar
    refuses ends the row as None)."""
    keys = sequence_keys(seed, 0, len(prefixes))
    out: list[SampledSequence | None] = [None] * len(prefixes)
    for i, seq in generate_stream(model, prefixes, keys, rules, temperature, max_atoms, max_new,
                                  batch_size=max(len(prefixes), 1), min_distance=min_distance, plans=plans):
        out[i] = seq
    return out


@torch.inference_mode()
def generate_stream(
    model,
    prefixes: list[np.ndarray],
    keys: np.ndarray,
    rules: list[PlanRule | None] | None = None,
    temperature: float = 1.0,
    max_atoms: int = DEFAULT_MAX_ATOMS,
    max_new: int = 512,
    batch_size: int = 512,
    min_distance: MinDistance = 0.0,
    volume_guard: bool = False,
    plans: list[np.ndarray] | None = None,
) -> Iterator[tuple[int, SampledSequence | None]]:
    """Yield ``(index of the prefix, sequence or None)`` as sequences finish, keeping up
    to ``batch_size`` of them running.

    ``keys``: one uint64 random-stream key per prefix (:func:`~crystalgen.generation.rng.sequence_keys`).
    ``min_distance`` (Å or a per-pair matrix; 0 = off): the distance guard for the last
    free coordinate of each site (at ``temperature > 0``). Off here, the model as
    trained; the API and CLI turn it on. ``volume_guard``: in de novo rows (those with a
    plan rule) the last free lattice length keeps the cell in the plan's volume-per-atom
    bin (:mod:`crystalgen.generation.volume`). ``plans``: as in :func:`generate_batch`;
    forced tokens add nothing to the log-likelihood.
    """
    batch = Batch(prefixes, rules or [None] * len(prefixes), np.asarray(keys, np.uint64), batch_size,
                  temperature, min_distance, max_atoms, max_new, volume_guard=volume_guard and temperature > 0,
                  plans=plans)
    while True:
        admit(model, batch)
        yield from batch.finished
        batch.finished.clear()
        if not batch.live():
            return
        compact(batch)
        step(model, batch)
        commit(model, batch)


def _start_rows(batch: Batch, count: int) -> list[Row]:
    """Rows for up to ``count`` next prefixes that have a legal completion (the others
    finish at once, as None)."""
    rows: list[Row] = []
    for i in batch.waiting:
        try:
            grammar = Grammar.start(batch.prefixes[i], max_atoms=batch.max_atoms, rule=batch.rules[i])
        except NoLegalCompletion as err:
            log.debug("no legal completion: %s", err)
            batch.finished.append((i, None))
            continue
        forced = () if batch.plans is None else tuple(int(t) for t in batch.plans[i])
        rows.append(Row(grammar, i, len(batch.prefixes[i]), int(batch.keys[i]), batch.guard, forced))
        if len(rows) == count:
            break
    return rows


def admit(model, batch: Batch) -> None:
    """Retire finished rows; refill their slots with waiting prefixes (prefilled together,
    then written into the shared cache) once enough slots are free."""
    for j, row in enumerate(batch.slots):
        if row is not None and not row.live:
            batch.finished.append((row.index, row.result(batch.prefixes[row.index])))
            batch.slots[j] = None
    free = [j for j, row in enumerate(batch.slots) if row is None]
    refill_min = max(1, batch.batch_size // 16)
    if batch.cache is not None and not (free and (len(free) >= refill_min or len(free) == len(batch.slots))):
        return
    new = _start_rows(batch, batch.batch_size if batch.cache is None else len(free))
    if not new:
        return
    cache, hidden = prefill(model, [batch.prefixes[row.index] for row in new])
    if batch.cache is None:
        batch.cache, batch.hidden, batch.slots = cache, hidden, new
        return
    where = free[: len(new)]
    batch.cache.insert(torch.as_tensor(where, device=model.device), cache)
    batch.hidden[torch.as_tensor(where, device=model.device)] = hidden
    for j, row in zip(where, new):
        batch.slots[j] = row


def prefill(model, prefixes: list[np.ndarray]):
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


def _left_pad(prefixes: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(p) for p in prefixes)
    tokens = torch.zeros(len(prefixes), width, dtype=torch.long)
    mask = torch.zeros(len(prefixes), width, dtype=torch.bool)
    for i, p in enumerate(prefixes):
        tokens[i, width - len(p) :] = torch.as_tensor(np.asarray(p, np.int64))
        mask[i, width - len(p) :] = True
    return tokens, mask


def compact(batch: Batch) -> None:
    """Drop empty slots once at most ``COMPACT_BELOW`` of them run (nothing is left to
    refill with), and trim cache positions that are padding for every row."""
    live = batch.live()
    if len(live) <= COMPACT_BELOW * len(batch.slots):
        keep = torch.as_tensor(live, device=batch.hidden.device)
        batch.cache.select(keep)
        batch.hidden = batch.hidden[keep]
        batch.slots = [batch.slots[j] for j in live]
    span = max(row.positions for row in batch.slots if row is not None)
    if batch.cache.length - span >= TRIM_AT:
        batch.cache.keep_last(span)


def _only_token(mask: np.ndarray) -> int | None:
    """The one legal token of a mask, None if several, -1 if none."""
    ids = np.flatnonzero(mask)
    return -1 if len(ids) == 0 else int(ids[0]) if len(ids) == 1 else None


def _streams(batch: Batch, slots: list[int], device):
    rows = batch.slots
    return streams_at(np.array([rows[j].key for j in slots], np.uint64),
                      np.array([len(rows[j].tokens) for j in slots], np.uint64), device)


def step(model, batch: Batch) -> None:
    """Choose every live row's next position (``row.pending = (token, value, kind)``).

    Forced tokens and derived values need no model call; the others are drawn from the
    token head (grammar-masked) or the value head of their kind, one call per kind
    (guarded coordinates separately: several draws each).
    """
    rows, hidden, temperature = batch.slots, batch.hidden, batch.temperature
    device = hidden.device
    token_slots: list[int] = []
    token_masks: list[np.ndarray] = []
    value_slots: dict[int, list[int]] = {}
    guarded: list[int] = []
    sized: list[int] = []
    for j in batch.live():
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
                if row.clearance is not None and allowed.kind == VK_COORD:
                    guarded.append(j)
                elif batch.volume_guard and row.grammar.rule is not None and row.grammar.last_free_length_next():
                    sized.append(j)
                else:
                    value_slots.setdefault(allowed.kind, []).append(j)
            else:
                row.pending = (allowed.token, float(allowed.derived_value), allowed.kind)
            continue
        if len(row.tokens) < len(row.forced):  # a given plan's token (not allowed by the grammar: the row fails)
            forced = row.forced[len(row.tokens)] if allowed[row.forced[len(row.tokens)]] else -1
        else:
            forced = _only_token(allowed)
        if forced == -1:
            row.failed = True
            continue
        if forced is not None:  # forced token: probability 1, no model call needed
            row.pending = (forced, 0.0, 0)
        else:
            token_slots.append(j)
            token_masks.append(allowed)
    if token_slots:
        _draw_tokens(model, batch, token_slots, token_masks)
    for kind, slots in value_slots.items():
        dist = model.value_distribution(hidden[torch.as_tensor(slots, device=device)], kind)
        drawn = dist.sample(temperature, _streams(batch, slots, device))
        lp = dist.log_prob(drawn).cpu().numpy().tolist()
        for j, v, l in zip(slots, drawn.float().cpu().numpy().tolist(), lp):
            rows[j].pending = (rows[j].pending[0], v, kind)
            rows[j].ll += l
    if guarded:
        _draw_clear_coordinates(model, batch, guarded)
    if sized:
        _draw_lengths(model, batch, sized)


def _draw_tokens(model, batch: Batch, slots: list[int], masks: list[np.ndarray]) -> None:
    """One grammar-masked draw from the token head per row (argmax at temperature 0)."""
    device = batch.hidden.device
    idx = torch.as_tensor(slots, device=device)
    logits = masked_logits(model.token_logits(batch.hidden[idx]).float(),
                           torch.as_tensor(np.stack(masks), device=device))
    logp = torch.log_softmax(logits, dim=-1)
    streams = _streams(batch, slots, device) if batch.temperature > 0 else None
    chosen = sample_token(logits, None, batch.temperature, streams)
    chosen_lp = logp.gather(-1, chosen[:, None]).squeeze(-1).cpu().numpy()
    for j, tok, lp in zip(slots, chosen.cpu().numpy().tolist(), chosen_lp.tolist()):
        batch.slots[j].pending = (tok, 0.0, 0)
        batch.slots[j].ll += lp


def _draw_lengths(model, batch: Batch, slots: list[int]) -> None:
    """The last free lattice length of de novo rows under the volume guard:
    ``CANDIDATES`` draws from the length head, the one :func:`pick_in_bin` chooses (with
    the distance guard on, a cell that leaves the planned atoms room first). When no
    candidate leaves room, a scan of ``GRID`` values from the shortest candidate to
    ``SCAN_LONGER`` (in log length) past the longest: of those that leave room, the ones
    closest to the plan's bin, one drawn by the head's (tempered) density. The log-likelihood
    counts the kept value under the untruncated head."""
    rows, hidden, temperature = batch.slots, batch.hidden, batch.temperature
    dist = model.value_distribution(hidden[torch.as_tensor(slots, device=hidden.device)], VK_LENGTH)
    streams = _streams(batch, slots, hidden.device)
    drawn = dist.sample(temperature, streams, n=CANDIDATES).float()
    values = drawn.cpu().numpy().astype(np.float64)
    kept = np.empty(len(slots))
    stuck: list[int] = []
    for r, j in enumerate(slots):
        room = _room(rows[j], batch.min_distance)
        k = pick_in_bin(rows[j].grammar, values[r], room)
        kept[r] = values[r, k]
        if room is not None and not room(kept[r]):
            stuck.append(r)
    if stuck:
        u = streams.uniform(GRID_TAG, (1 + GRID,)).cpu().numpy()
        lo, hi = values.min(axis=1, keepdims=True), values.max(axis=1, keepdims=True) + SCAN_LONGER
        grid = (lo + (hi - lo) * (np.arange(GRID)[None, :] + u[:, :1]) / GRID).astype(np.float32).astype(np.float64)
        density = _grid_log_density(dist, grid, temperature)
        for r in stuck:
            row = rows[slots[r]]
            room = _room(row, batch.min_distance)
            gaps = np.array([bin_gap(row.grammar, v) for v in grid[r].tolist()])
            order = _gumbel_order(density[r], u[r, 1:])
            for g in order[np.argsort(gaps[order], kind="stable")]:  # closest to the bin first, by density within
                if room(float(grid[r, g])):
                    kept[r] = grid[r, g]
                    break
    _keep(model, batch, slots, dist, kept, VK_LENGTH)


def _room(row: Row, min_distance: MinDistance):
    """With the distance guard on: does a candidate last free length keep the plan's
    fixed-position orbits apart and leave each free site room? (None: guard off.)"""
    if row.clearance is None:
        return None
    g = row.grammar
    system = SPACE_GROUPS[g.sg].system
    return lambda value: lattice_room(g.sg, g.sites, lattice_params(system, g.values + [value], g.atoms_done),
                                      min_distance)


def _grid_log_density(dist, grid: np.ndarray, temperature: float) -> np.ndarray:
    """(rows, points) log-density of the head ``dist`` at each row's grid points, tempered."""
    return torch.stack([dist.log_prob(torch.as_tensor(grid[:, g], device=dist.logits.device))
                        for g in range(grid.shape[1])], dim=-1).double().cpu().numpy() / temperature


def _gumbel_order(log_weights: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Indices in the order of a draw without replacement with probabilities proportional
    to exp(log_weights) (Gumbel top-k, from the uniforms ``u``): the first index that meets
    a condition is a draw from the weights restricted to the indices that meet it."""
    return np.argsort(-(log_weights - np.log(-np.log(u))), kind="stable")


def _keep(model, batch: Batch, slots: list[int], dist, kept: np.ndarray, kind: int) -> None:
    """Write the kept values as the rows' pending positions, adding their log-density
    under the untruncated head to the log-likelihood."""
    rows = batch.slots
    lp = dist.log_prob(torch.as_tensor(kept, dtype=torch.float32, device=batch.hidden.device)).cpu().numpy().tolist()
    for j, v, l in zip(slots, kept.tolist(), lp):
        rows[j].pending = (rows[j].pending[0], float(v), kind)
        rows[j].ll += l


def _draw_clear_coordinates(model, batch: Batch, slots: list[int]) -> None:
    """A free coordinate under the distance guard. Of ``CANDIDATES`` draws from the
    coordinate head, the first with the best status (:meth:`Clearance.pick`: clear, and
    room left for the later free sites). When none has room, draws from the head's density
    (tempered) over the clear points of a ``GRID``-point scan (shifted by the row's own
    uniform), up to ``SCAN_DRAWS`` of them, the first with room kept (the first clear one
    when the candidates had no clear value). When no value is clear, the rule falls back to
    its flat floor (:func:`~crystalgen.generation.guard.floor_distance`): the candidate with
    the largest margin if it keeps every pair that far apart, else a draw from the density
    over the scan's points that do; with none, that candidate. The log-likelihood counts the
    kept value under the untruncated head."""
    rows, hidden, temperature = batch.slots, batch.hidden, batch.temperature
    dist = model.value_distribution(hidden[torch.as_tensor(slots, device=hidden.device)], VK_COORD)
    streams = _streams(batch, slots, hidden.device)
    drawn = dist.sample(temperature, streams, n=CANDIDATES).float()
    values = drawn.cpu().numpy().astype(np.float64)
    kept = values[:, 0].copy()
    stuck: dict[int, int] = {}
    for r, j in enumerate(slots):
        k, status = rows[j].clearance.pick(rows[j].grammar.partial_crystal(), values[r], batch.min_distance)
        kept[r] = values[r, k]
        if status < ROOMY:
            stuck[r] = status
    if stuck:
        u = streams.uniform(GRID_TAG, (1 + GRID,)).cpu().numpy()
        grid = np.mod((np.arange(GRID)[None, :] + u[:, :1]) / GRID, 1.0).astype(np.float32).astype(np.float64)
        density = _grid_log_density(dist, grid, temperature)
        for r, status in stuck.items():
            row = rows[slots[r]]
            crystal = row.grammar.partial_crystal()
            tried, clear = 0, False
            order = _gumbel_order(density[r], u[r, 1:])  # a draw from the density over the points not yet refused
            for g in order:
                if row.clearance.margin(crystal, float(grid[r, g]), batch.min_distance) < 1.0:
                    continue
                clear = True
                if status == BLOCKED or row.clearance.pick(crystal, grid[r, g:g + 1], batch.min_distance)[1] == ROOMY:
                    kept[r] = grid[r, g]
                    break
                tried += 1
                if tried == SCAN_DRAWS:
                    break
            if status == BLOCKED and not clear and isinstance(batch.min_distance, np.ndarray):
                kept[r] = _floor_clear(row.clearance, crystal, kept[r], grid[r, order], batch.min_distance)
    _keep(model, batch, slots, dist, kept, VK_COORD)


def _floor_clear(clearance: Clearance, crystal, best: float, scan: np.ndarray, min_distance: MinDistance) -> float:
    """With no value clear of the full rule: ``best`` (the candidate with the largest margin)
    if it keeps the rule's flat floor, else the first of ``scan`` (in draw order) that does,
    else ``best``."""
    floor = floor_distance(min_distance)
    for v in (best, *scan.tolist()):
        if clearance.margin(crystal, float(v), floor) >= 1.0:
            return float(v)
    return best


def commit(model, batch: Batch) -> None:
    """Advance every row's grammar by its chosen position and feed the batch's new
    positions to the model (rows that stopped feed a padding position)."""
    n = len(batch.slots)
    new_tok = np.zeros(n, np.int64)
    new_val = np.zeros(n, np.float32)
    new_kind = np.zeros(n, np.int64)
    for j in batch.live():
        row = batch.slots[j]
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
        row.tokens.append(tok)
        row.values.append(val)
        if len(row.tokens) >= batch.max_new and not row.grammar.done:
            row.failed = True
        new_tok[j], new_val[j], new_kind[j] = tok, val, kind
    device = model.device
    batch.cache.reserve(batch.cache.length + 1)
    batch.hidden = model.step(
        torch.as_tensor(new_tok[:, None], device=device),
        torch.as_tensor(new_val[:, None], device=device),
        torch.as_tensor(new_kind[:, None], device=device),
        batch.cache,
    )
