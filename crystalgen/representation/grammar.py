"""Grammar of the crystal sequence: what may come next, so generation stays legal.

`state = Grammar.start(prefix_tokens)` reads a prefix (ending in `<plan>`); then, at every
position, `state.next_allowed()` returns a read-only boolean mask over the vocabulary
(token position) or a `ValueSlot` (value position), and `state.advance(token, value)` steps.

With a composition in the prefix, Wyckoff letters are masked so that every element's
orbit multiplicities can still sum exactly to count x Z (`feasibility.feasible`, fixed
positions usable once), Z to what `<fu:k>` x centring and `max_atoms` allow, and space
groups / crystal systems to those with at least one legal completion. Without a
composition (de novo), elements come in canonical order, each element's atom count is a
multiple of Z and the total stays within `max_atoms`; a `PlanRule` (`charge.py`) further
limits the elements and keeps the plan completable into a charge-neutral composition.
Masks are cached per state key.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np

from crystalgen.representation import vocab as V
from crystalgen.representation.build_tables import LETTERS, SYSTEMS
from crystalgen.representation.charge import (
    POSITION,
    PlanRule,
    Written,
    bounds_after,
    can_finish,
    compatible,
    describe_states,
    may_exist,
    metals,
    smact_states,
)
from crystalgen.representation.feasibility import REACH_LIMIT, feasible, group_info, next_state
from crystalgen.representation.sequence import (
    LATTICE_KINDS,
    VK_COORD,
    derived_coordinate,
    derived_lattice_value,
)
from crystalgen.representation.tables import LATTICE_RULES, SPACE_GROUPS, element_order_key

DEFAULT_MAX_ATOMS = 60


class NoLegalCompletion(ValueError):
    """No sequence continuing this prefix/state satisfies the grammar."""


@dataclass(frozen=True)
class PartialCrystal:
    """The crystal written so far (read-only views into the grammar), for geometry-aware
    sampling: the space group, the six stored lattice values once complete, every planned
    site as (element, Wyckoff index), each finished site's three coordinates, and the
    coordinates written so far for the site in progress."""

    spacegroup: int
    lattice: tuple[float, ...] | None
    sites: list[tuple[str, int]]
    placed: list[tuple[float, float, float]]
    current: list[float]

    @property
    def site_index(self) -> int:
        """Index (into ``sites``) of the site in progress."""
        return len(self.placed)


@dataclass(frozen=True)
class ValueSlot:
    kind: int  # VK_LENGTH, VK_ANGLE or VK_COORD
    free: bool
    derived_value: float | None
    token: int = 0  # the value-kind token to feed at this position


# ---- cached masks

def _mask(ids) -> np.ndarray:
    m = np.zeros(V.VOCAB_SIZE, bool)
    m[list(ids)] = True
    m.setflags(write=False)
    return m


@lru_cache(maxsize=None)
def _onehot(tok: int) -> np.ndarray:
    return _mask([tok])


_VPA_IDS = tuple(range(V.VPA0, V.VPA0 + V.N_VPA))
_OX_MASK = _mask(range(V.OX0, V.OX0 + V.OX_MAX - V.OX_MIN + 1))
_EL_KEYS = [element_order_key(e) for e in V.ELEMENTS]


@lru_cache(maxsize=None)
def _cached_mask(ids: tuple[int, ...]) -> np.ndarray:
    return _mask(ids)


@lru_cache(maxsize=4096)
def _csp_options(counts: tuple[int, ...], fu: int | None, max_atoms: int,
                 given_sg: int | None = None) -> dict[int, tuple[int, ...]]:
    """Space group -> legal Z values for a reduced composition (and optional primitive fu).
    Cached, so every row of a request shares one (read-only) dict."""
    if given_sg:
        return {s: zs for s, zs in _csp_options(counts, fu, max_atoms).items() if s == given_sg}
    n_formula = sum(counts)
    options = {}
    for sg in range(1, 231):
        centring = SPACE_GROUPS[sg].centring
        zs = [fu * centring] if fu else range(1, V.MAX_Z + 1)
        ok = tuple(
            z for z in zs
            if z <= V.MAX_Z and z * n_formula <= max_atoms and feasible(sg, tuple(c * z for c in counts))
        )
        if ok:
            options[sg] = ok
    return options


@lru_cache(maxsize=256)
def _gen_options(max_atoms: int, given_sg: int | None) -> dict[int, tuple[int, ...]]:
    """De novo: space group -> legal Z values (shared by every row, like `_csp_options`)."""
    sgs = [given_sg] if given_sg else range(1, 231)
    options = {s: _gen_z_options(s, max_atoms) for s in sgs}
    return {s: zs for s, zs in options.items() if zs}


@lru_cache(maxsize=None)
def _gen_z_options(sg: int, max_atoms: int) -> tuple[int, ...]:
    _, _, reach, _ = group_info(sg)
    limit = min(max_atoms, REACH_LIMIT)
    return tuple(z for z in range(1, V.MAX_Z + 1) if reach[z: limit + 1: z].any())


@lru_cache(maxsize=200_000)
def _gen_can_close(sg: int, total: int, z: int, budget: int, min_wp: int, avail: int) -> bool:
    """De novo: can an element holding `total` atoms grow to a positive multiple of Z within budget?"""
    for extra in range((-total) % z, min(budget, REACH_LIMIT) + 1, z):
        if total + extra > 0 and feasible(sg, (extra,), min_wp, avail):
            return True
    return False


@dataclass(frozen=True)
class RuleOptions:
    """De novo under a plan rule (charge-neutral, or several required elements): the
    crystal systems, space groups and Z that some plan of the rule completes in, each
    worked out when first asked for (a system needs one group, a group one Z: most answer
    at their first try)."""

    rule: PlanRule
    max_atoms: int
    given_sg: int | None

    def __bool__(self) -> bool:
        return bool(self.systems())

    def systems(self) -> tuple[str, ...]:
        return _rule_systems(self)

    def groups(self, system: str) -> tuple[int, ...]:
        return _rule_groups(self, system)

    def zs(self, sg: int) -> tuple[int, ...]:
        return _rule_zs(self, sg)


@lru_cache(maxsize=256)
def _rule_systems(o: RuleOptions) -> tuple[str, ...]:
    return tuple(s for s in SYSTEMS if _rule_groups(o, s, first=True))


@lru_cache(maxsize=4096)
def _rule_groups(o: RuleOptions, system: str, first: bool = False) -> tuple[int, ...]:
    """Groups of ``system`` with a legal Z (``first``: stop at the first such group)."""
    out = []
    for sg, zs in _gen_options(o.max_atoms, o.given_sg).items():
        if SPACE_GROUPS[sg].system == system and any(_starts(o.rule, sg, z, o.max_atoms) for z in zs):
            out.append(sg)
            if first:
                break
    return tuple(out)


@lru_cache(maxsize=65536)
def _rule_zs(o: RuleOptions, sg: int) -> tuple[int, ...]:
    return tuple(z for z in _gen_options(o.max_atoms, o.given_sg).get(sg, ()) if _starts(o.rule, sg, z, o.max_atoms))


@lru_cache(maxsize=65536)
def _starts(rule: PlanRule, sg: int, z: int, max_atoms: int) -> bool:
    avail = group_info(sg)[3]
    return any(_may_start(rule, None, sg, z, max_atoms, avail, Written(required=rule.required), e, True)
               for e in rule.later(-1))


@lru_cache(maxsize=200_000)
def _may_start(rule: PlanRule, mode: str | None, sg: int, z: int, budget: int, avail: int, w: Written,
               e: str, first: bool) -> bool:
    """May element ``e`` open the next element of the plan (some oxidation state completes)?"""
    if any(POSITION[r] < POSITION[e] for r in w.required):
        return False  # it would skip a required element
    return bool(_ox_options(rule, mode, sg, z, budget, avail, w, e, first))


@lru_cache(maxsize=200_000)
def _ox_options(rule: PlanRule, mode: str | None, sg: int, z: int, budget: int, avail: int, w: Written,
                e: str, first: bool) -> tuple[int, ...]:
    """Oxidation states element ``e`` may take as the next element (``first``: the plan's first)."""
    req = w.required - {e}
    if not rule.neutral:
        free = can_finish(rule, "free", sg, z, budget, 0, avail, 0, 0, Written(0, after=POSITION[e], required=req))
        return tuple(range(V.OX_MIN, V.OX_MAX + 1)) if free else ()
    out: list[int] = []
    if mode in (None, "ionic"):
        for q in smact_states(e):
            if compatible(e, q, w.lo, w.hi):
                lo, hi = bounds_after(e, q, w.lo, w.hi)
                if can_finish(rule, "ionic", sg, z, budget, 0, avail, 0, q,
                              Written(w.T, lo, hi, POSITION[e], req)):
                    out.append(q)
    metal_ok = (rule.intermetallic and e in metals() and mode in (None, "metal")
                and can_finish(rule, "metal", sg, z, budget, 0, avail, 0, 0, Written(0, after=POSITION[e], required=req)))
    # a lone element only when asked for (a one-element system): where the model writes <ox:0>
    # for a compound it has in mind, ending the plan after that element would not be that compound
    single_ok = first and rule.required == {e} and _gen_can_close(sg, 0, z, budget, 0, avail)
    if metal_ok or single_ok:
        out.append(0)
    return tuple(sorted(set(out)))


# ---- the state machine

(CS, SG, ZED, EL, OX, WY, WYM, PLAN_END, LAT, LATV, SITE_EL, SITE_WY, SITE_V, EOS, DONE) = range(15)


class Grammar:
    """One sequence's grammar state. Build with `Grammar.start(prefix)` (or `Grammar(prefix)`)."""

    __slots__ = (
        "max_atoms", "task", "comp", "fu", "given_sg", "options", "phase", "sg", "z", "plan",
        "cur_left", "cur_total", "min_wp", "avail", "atoms_done", "values", "site", "sites", "_allowed",
        "_chosen_system", "lattice", "placed", "rule", "mode", "written", "vpa_bin", "source",
    )

    def __init__(self, prefix_tokens, max_atoms: int = DEFAULT_MAX_ATOMS, rule: PlanRule | None = None) -> None:
        self.max_atoms = max_atoms
        self.rule = rule
        self.vpa_bin: int | None = None  # the plan's volume-per-atom bin, once written
        self.mode: str | None = None  # de novo under a rule, once chosen: "ionic", "metal", "single" or "free"
        self._read_prefix([int(t) for t in prefix_tokens])
        self.phase = CS
        self.sg = self.z = 0
        self.plan: list[tuple[str, int, list[int]]] = []  # (element, oxidation, WP indices)
        self.cur_left = self.cur_total = self.min_wp = self.avail = self.atoms_done = 0
        self.values: list[float] = []
        self.site = 0
        self.sites: list[tuple[str, int]] = []
        # the crystal written so far, for geometry-aware sampling (`partial_crystal`): the six
        # stored lattice values once complete, and each finished site's three coordinates
        self.lattice: tuple[float, ...] | None = None
        self.placed: list[tuple[float, float, float]] = []
        self._allowed = None
        self._chosen_system = ""
        self.written = Written()
        if self.comp is not None:
            counts = tuple(n for _, n in self.comp)
            self.options = _csp_options(counts, self.fu, max_atoms, self.given_sg)
            if not self.options:
                formula = "".join(f"{e}{n}" for e, n in self.comp)
                where = f" in space group {self.given_sg}" if self.given_sg else ""
                fu = f" with {self.fu} formula units per primitive cell" if self.fu else ""
                raise NoLegalCompletion(
                    f"{formula}{fu} cannot be placed on Wyckoff positions{where} within "
                    f"{max_atoms} atoms per conventional cell (Z <= {V.MAX_Z})"
                )
            self.rule = None  # a given composition fixes the elements; the rule is for de novo plans
        else:
            self.options = _gen_options(max_atoms, self.given_sg)
            if not self.options:
                raise NoLegalCompletion(f"space group {self.given_sg} cannot hold a crystal within {max_atoms} atoms")
            rule = self.rule
            if rule is not None:
                self.written = Written(required=rule.required)
                if rule.neutral or len(rule.required) > 1:  # else any one element completes
                    self.options = RuleOptions(rule, max_atoms, self.given_sg) if may_exist(rule, max_atoms) else {}
                if not self.options:
                    raise NoLegalCompletion(_no_plan_message(rule, max_atoms, self.given_sg))

    @classmethod
    def start(cls, prefix_tokens, max_atoms: int = DEFAULT_MAX_ATOMS, rule: PlanRule | None = None) -> "Grammar":
        """Grammar state just after `prefix_tokens` (raises NoLegalCompletion); ``rule``
        limits a de novo plan's elements and charge (ignored with a composition)."""
        return cls(prefix_tokens, max_atoms, rule)

    def _read_prefix(self, toks: list[int]) -> None:
        if len(toks) < 3 or toks[0] != V.BOS or toks[-1] != V.PLAN or toks[1] not in V.TASKS.values():
            raise ValueError("prefix must be <bos> <task:*> ... <plan>")
        self.task = "csp" if toks[1] == V.TASK_CSP else "gen"
        # a source prompt only tells the model whose crystals to write like: no mask follows from it
        has_source = V.in_range(toks[2], V.SRC0, len(V.SOURCES))
        self.source = V.SOURCES[toks[2] - V.SRC0] if has_source else None
        i = self._read_element_set(toks, 2 + has_source)
        comp = []
        while V.in_range(toks[i], V.EL0, len(V.ELEMENTS)):
            if not V.in_range(toks[i + 1], V.CNT0, V.MAX_COUNT):
                raise ValueError(f"element token at {i} not followed by a count")
            comp.append((V.token_element(toks[i]), toks[i + 1] - V.CNT0 + 1))
            i += 2
        self.comp = tuple(comp) or None
        if comp and [e for e, _ in comp] != sorted((e for e, _ in comp), key=element_order_key):
            raise ValueError("prefix composition must list elements in canonical order (see Conditioning)")
        self.fu = self.given_sg = None
        if V.in_range(toks[i], V.FU0, V.MAX_FU):
            if not comp:
                raise ValueError("<fu:k> needs a composition")
            self.fu = toks[i] - V.FU0 + 1
            i += 1
        if V.in_range(toks[i], V.SG0, 230):
            self.given_sg = toks[i] - V.SG0 + 1
            i += 1
        if i != len(toks) - 1:
            raise ValueError(f"unexpected prefix token {V.TOKENS[toks[i]]} at {i}")

    def _read_element_set(self, toks: list[int], i: int) -> int:
        """Read a de novo prefix's ``<sys:all|any> <el:X>+`` into ``self.rule`` (merged with a
        rule given by the caller: elements allowed by both, required by either); returns the
        index after it."""
        if toks[i] not in (V.SYS_ALL, V.SYS_ANY):
            return i
        if self.task != "gen":
            raise ValueError("an element-set prompt (<sys:*>) belongs to a de novo (<task:gen>) prefix")
        required, j = toks[i] == V.SYS_ALL, i + 1
        elements = []
        while V.in_range(toks[j], V.EL0, len(V.ELEMENTS)):
            elements.append(V.token_element(toks[j]))
            j += 1
        if not elements or elements != sorted(elements, key=element_order_key):
            raise ValueError("<sys:*> must be followed by its elements in canonical order")
        listed = frozenset(elements)
        rule = self.rule or PlanRule(neutral=False)
        allowed = listed if rule.allowed is None else rule.allowed & listed
        self.rule = replace(rule, allowed=allowed, required=rule.required | listed if required else rule.required)
        return j

    def copy(self) -> "Grammar":
        new = object.__new__(Grammar)
        for name in self.__slots__:
            setattr(new, name, getattr(self, name))
        new.plan = [(e, q, list(ws)) for e, q, ws in self.plan]
        new.values = list(self.values)
        new.sites = list(self.sites)
        new.placed = list(self.placed)
        return new

    @property
    def done(self) -> bool:
        return self.phase == DONE

    # -- what may come next

    def next_allowed(self) -> np.ndarray | ValueSlot:
        if self._allowed is None:
            self._allowed = self._compute()
            if isinstance(self._allowed, np.ndarray) and not self._allowed.any():
                raise NoLegalCompletion("no legal token at this position")
        return self._allowed

    def _compute(self) -> np.ndarray | ValueSlot:
        ph = self.phase
        if isinstance(self.options, RuleOptions):
            if ph == CS:
                return _cached_mask(tuple(V.CS0 + SYSTEMS.index(s) for s in self.options.systems()))
            if ph == SG:
                return _cached_mask(tuple(V.SG0 + s - 1 for s in self.options.groups(self._system)))
            if ph == ZED:
                return _cached_mask(tuple(V.Z0 + z - 1 for z in self.options.zs(self.sg)))
        if ph == CS:
            hit = _CS_CACHE.get(id(self.options))
            if hit is None or hit[0] is not self.options:  # options dicts are shared (lru_cache)
                ids = tuple(sorted({V.CS0 + SYSTEMS.index(SPACE_GROUPS[s].system) for s in self.options}))
                if len(_CS_CACHE) > 10_000:
                    _CS_CACHE.clear()
                hit = _CS_CACHE[id(self.options)] = (self.options, _cached_mask(ids))
            return hit[1]
        if ph == SG:
            return _cached_mask(tuple(V.SG0 + s - 1 for s in self.options if SPACE_GROUPS[s].system == self._system))
        if ph == ZED:
            return _cached_mask(tuple(V.Z0 + z - 1 for z in self.options[self.sg]))
        if ph == EL:
            return _cached_mask(self._element_or_end())
        if ph == OX:
            if self.rule is None:
                return _OX_MASK
            qs = _ox_options(self.rule, self.mode, self.sg, self.z, self.max_atoms - self.atoms_done, self.avail,
                             self.written, self.plan[-1][0], len(self.plan) == 1)
            return _cached_mask(tuple(V.OX0 + q - V.OX_MIN for q in qs))
        if ph in (WY, WYM):
            return self._wyckoff_mask()
        if ph == PLAN_END:
            return _onehot(V.END_PLAN)
        if ph == LAT:
            return _onehot(V.LAT)
        if ph == LATV:
            i = len(self.values)
            d = derived_lattice_value(SPACE_GROUPS[self.sg].system, i, self.values)
            return ValueSlot(LATTICE_KINDS[i], d is None, d, V.V0 + i)
        if ph == SITE_EL:
            return _onehot(V.element_token(self.sites[self.site][0]))
        if ph == SITE_WY:
            return _onehot(V.WY0 + LETTERS.index(SPACE_GROUPS[self.sg].letters[self.sites[self.site][1]]))
        if ph == SITE_V:
            i = len(self.values)
            d = derived_coordinate(self.sg, self.sites[self.site][1], i, self.values)
            return ValueSlot(VK_COORD, d is None, d, V.V0 + 6 + i)
        if ph == EOS:
            return _onehot(V.EOS)
        return _cached_mask(())

    @property
    def _system(self) -> str:
        return self._chosen_system

    def _element_or_end(self) -> tuple[int, ...]:
        """Tokens that may open the next plan element, plus `<vpa:*>` when the plan may end."""
        k = len(self.plan)
        if self.comp is not None:
            return (V.element_token(self.comp[k][0]),) if k < len(self.comp) else _VPA_IDS
        if self.rule is not None:
            return self._rule_element_or_end()
        ids: list[int] = list(_VPA_IDS) if k else []
        budget = self.max_atoms - self.atoms_done
        if budget >= self.z and _gen_can_close(self.sg, 0, self.z, budget, 0, self.avail):
            last = element_order_key(self.plan[-1][0]) if k else (float("-inf"), 0)
            ids += [V.EL0 + i for i, key in enumerate(_EL_KEYS) if key > last]
        return tuple(ids)

    def _rule_element_or_end(self) -> tuple[int, ...]:
        """Under a rule: `<vpa:*>` when the plan may end here, and the elements that may open
        the next element (``self.written`` holds the closed elements' charge)."""
        return _rule_next(self.rule, self.mode, self.sg, self.z, self.max_atoms - self.atoms_done, self.avail,
                          self.written, len(self.plan))

    def _wyckoff_mask(self) -> np.ndarray:
        key = (self.sg, self.phase, self._remaining(), self.cur_total, self.min_wp, self.avail,
               self.z, self.max_atoms - self.atoms_done, len(self.plan), self.plan[-1][0], self.comp,
               self.rule, self.mode, self.plan[-1][1], self.written)
        mask = _WY_CACHE.get(key)
        if mask is None:
            mask = self._wyckoff_mask_uncached()
            if len(_WY_CACHE) > 500_000:
                _WY_CACHE.clear()
            _WY_CACHE[key] = mask
        return mask

    def _remaining(self) -> tuple[int, ...] | None:
        if self.comp is None:
            return None
        k = len(self.plan) - 1  # the element being written
        return (self.cur_left,) + tuple(n * self.z for _, n in self.comp[k + 1:])

    def _wyckoff_mask_uncached(self) -> np.ndarray:
        mult, fixed, _, _ = group_info(self.sg)
        letters = SPACE_GROUPS[self.sg].letters
        ids: list[int] = []
        rem = self._remaining()
        budget = self.max_atoms - self.atoms_done - self.cur_total
        for w in range(self.min_wp, len(mult)):
            m = mult[w]
            if fixed[w] and not self.avail >> w & 1:
                continue
            min_wp, avail = next_state(self.sg, w, self.avail)
            if rem is not None:
                ok = m <= rem[0] and feasible(self.sg, (rem[0] - m,) + rem[1:], min_wp, avail)
            else:
                ok = m <= budget and _gen_can_close(self.sg, self.cur_total + m, self.z, budget - m, min_wp, avail)
                if ok and self.rule is not None and self.mode != "single":
                    ok = can_finish(self.rule, self.mode, self.sg, self.z, budget - m, min_wp, avail,
                                    self.cur_total + m, self.plan[-1][1], self.written)
            if ok:
                ids.append(V.WY0 + LETTERS.index(letters[w]))
        if self.phase == WYM and (rem[0] == 0 if rem is not None else self.cur_total % self.z == 0):
            ids += self._element_or_end_after_current()
        return _cached_mask(tuple(sorted(ids)))

    def _element_or_end_after_current(self) -> tuple[int, ...]:
        saved = self.atoms_done, self.written
        self.atoms_done += self.cur_total
        self.written = self._closed()
        try:
            return self._element_or_end()
        finally:
            self.atoms_done, self.written = saved

    def _closed(self) -> Written:
        """``self.written`` with the element being written closed at its current count."""
        w = self.written
        if self.mode != "ionic":
            return w
        return Written(w.T + self.plan[-1][1] * (self.cur_total // self.z), w.lo, w.hi, w.after, w.required)

    def _start_element(self, el: str, q: int) -> None:
        """Under a rule: the plan's kind (set by its first oxidation state) and the Pauling
        bounds and required elements once ``el`` with charge ``q`` opens."""
        if self.mode is None:
            metal = self.rule.intermetallic and el in metals()
            self.mode = "free" if not self.rule.neutral else "ionic" if q else "metal" if metal else "single"
        w = self.written
        lo, hi = bounds_after(el, q, w.lo, w.hi) if self.mode == "ionic" else (w.lo, w.hi)
        self.written = Written(w.T, lo, hi, POSITION[el], w.required - {el})

    # -- stepping

    def partial_crystal(self) -> PartialCrystal:
        """The crystal written so far (views, valid until the next ``advance``)."""
        return PartialCrystal(self.sg, self.lattice, self.sites, self.placed, self.values)

    def last_free_length_next(self) -> bool:
        """Is the next position the last free lattice length? (With it and the crystal
        system's rules the cell volume is known up to the free angles.)"""
        i = len(self.values)
        if self.phase != LATV or i >= 3:
            return False
        rules = LATTICE_RULES[self._chosen_system]
        return rules[i] is None and all(r is not None for r in rules[i + 1:3])

    def last_free_coordinate_next(self) -> bool:
        """Is the next position the last free coordinate of a site? (Its value fixes the
        site's whole orbit, which is what the distance guard tests.)"""
        if self.lattice is None or self.site >= len(self.sites):
            return False
        i = len(self.values)
        free = SPACE_GROUPS[self.sg].free[self.sites[self.site][1]]
        return bool(free[i]) and not free[i + 1:].any()

    def advance(self, token: int, value: float | None = None) -> None:
        """Consume one position: a token id, or the value-kind token and its value."""
        allowed = self.next_allowed()
        token = int(token)
        if isinstance(allowed, ValueSlot):
            if token != allowed.token:
                raise ValueError(f"expected value token {V.TOKENS[allowed.token]}, got {V.TOKENS[token]}")
            if allowed.free and value is None:
                raise ValueError("a free value position needs a value")
            self._advance_value(allowed.derived_value if not allowed.free else float(value))
        else:
            if not allowed[token]:
                raise ValueError(f"token {V.TOKENS[token]} is not allowed here")
            self._advance_token(token)
        self._allowed = None

    def _advance_value(self, value: float) -> None:
        self.values.append(value % 1.0 if self.phase == SITE_V else value)  # as `decode` reads it
        if self.phase == LATV and len(self.values) == 6:
            self.lattice = tuple(self.values)
            self.values = []
            self.phase = SITE_EL
        elif self.phase == SITE_V and len(self.values) == 3:
            self.placed.append(tuple(self.values))
            self.values = []
            self.site += 1
            self.phase = SITE_EL if self.site < len(self.sites) else EOS

    def _advance_token(self, tok: int) -> None:
        ph = self.phase
        if ph == CS:
            self._chosen_system = SYSTEMS[tok - V.CS0]
            self.phase = SG
        elif ph == SG:
            self.sg = tok - V.SG0 + 1
            self.avail = group_info(self.sg)[3]
            self.phase = ZED
        elif ph == ZED:
            self.z = tok - V.Z0 + 1
            self.phase = EL
        elif ph in (EL, WYM) and not V.in_range(tok, V.WY0, len(LETTERS)):
            if ph == WYM:
                self.atoms_done += self.cur_total
                self.written = self._closed()
            if V.in_range(tok, V.VPA0, V.N_VPA):
                self.vpa_bin = tok - V.VPA0
                self.phase = PLAN_END
            else:
                el = V.token_element(tok)
                self.plan.append((el, 0, []))
                self.cur_total, self.min_wp = 0, 0
                self.cur_left = self.comp[len(self.plan) - 1][1] * self.z if self.comp else 0
                self.phase = OX
        elif ph == OX:
            el, _, ws = self.plan[-1]
            q = tok - V.OX0 + V.OX_MIN
            self.plan[-1] = (el, q, ws)
            if self.rule is not None:
                self._start_element(el, q)
            self.phase = WY
        elif ph in (WY, WYM):
            w = SPACE_GROUPS[self.sg].index(LETTERS[tok - V.WY0])
            m = group_info(self.sg)[0][w]
            self.plan[-1][2].append(w)
            self.cur_total += m
            self.cur_left -= m
            self.min_wp, self.avail = next_state(self.sg, w, self.avail)
            self.phase = WYM
        elif ph == PLAN_END:
            self.sites = [(el, w) for el, _, ws in self.plan for w in ws]
            self.phase = LAT
        elif ph == LAT:
            self.phase = LATV
        elif ph == SITE_EL:
            self.phase = SITE_WY
        elif ph == SITE_WY:
            self.phase = SITE_V
        elif ph == EOS:
            self.phase = DONE

@lru_cache(maxsize=200_000)
def _rule_next(rule: PlanRule, mode: str | None, sg: int, z: int, budget: int, avail: int, w: Written,
               k: int) -> tuple[int, ...]:
    """Tokens that may follow a closed element (or open the plan, ``k == 0``) under a rule."""
    ids: list[int] = []
    if k and not w.required and (w.T == 0 or mode != "ionic" or not rule.neutral):
        ids += _VPA_IDS
    if mode == "single" or budget < z or not _gen_can_close(sg, 0, z, budget, 0, avail):
        return tuple(ids)
    later = [e for e in rule.later(w.after) if mode != "metal" or e in metals()]
    ids += [V.element_token(e) for e in later if _may_start(rule, mode, sg, z, budget, avail, w, e, k == 0)]
    return tuple(sorted(ids))


def _no_plan_message(rule: PlanRule, max_atoms: int, sg: int | None) -> str:
    """Why a chemical system has no plan: the SMACT states of its elements, and the way out."""
    system = "-".join(sorted(rule.required, key=lambda e: POSITION[e]))
    where = f" in space group {sg}" if sg else ""
    hint = ""
    if not rule.intermetallic and rule.required <= metals():
        hint = "; all are metals: allow intermetallic plans (--allow-intermetallic) for alloys"
    return (f"no charge-neutral composition of {system} fits {max_atoms} atoms per cell{where}: no choice of "
            f"SMACT oxidation states ({describe_states(rule.required)}) sums to zero with every cation less "
            f"electronegative than every anion{hint}")


_WY_CACHE: dict = {}
_CS_CACHE: dict[int, tuple[dict, np.ndarray]] = {}  # id(options) -> (options, crystal-system mask)
