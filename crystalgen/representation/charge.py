"""Charge-aware plans: can the plan written so far still become a composition the charge
validator accepts?

The charge validator (CDVAE's rule, ``crystalgen.validators.charge``) accepts one element,
all metals (an alloy), or one SMACT oxidation state per element (the SMACT 1.4 list, read
here and by the validator) summing to zero and passing Pauling's test: no cation at least
as electronegative as an anion. A de novo plan writes its elements in canonical order,
each with its ``<ox>`` token and then its Wyckoff orbits, so the grammar asks this question
before every element, oxidation state and Wyckoff letter, and masks what cannot be
completed: sampling never reaches a dead end and never writes a plan the validator rejects.

Kinds of plan (:class:`PlanRule`): *ionic* (every ``<ox>`` from the element's SMACT list,
the plan's own oxidation states neutral and Pauling-consistent), *single* (``<ox:0>``, only
for a one-element system) and, with ``intermetallic``, *metallic* (metals only, ``<ox:0>``,
one or more). The model writes ``<ox:0>`` where pymatgen had no guess for its training
crystal, mostly intermetallics; without ``intermetallic`` that token is masked, so such a
plan becomes an ionic compound rather than a lone element padded to the atom budget.

Counts are multiples of Z, so charges are summed in units of Z atoms. With a named element
set (``--chemsys``, ``--elements``) the completion is an exact depth-first search over the
elements still allowed; with every element open, the witness may use one further element
to close the charge, which keeps the open search small (a plan that could only be balanced
by two or more further elements is not offered; any offered step still has a completion).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from crystalgen.representation import vocab as V
from crystalgen.representation.feasibility import feasible
from crystalgen.representation.tables import element_order_key

ORDER: tuple[str, ...] = tuple(sorted(V.ELEMENTS, key=element_order_key))
POSITION: dict[str, int] = {e: i for i, e in enumerate(ORDER)}
NONE = float("-inf"), float("inf")  # Pauling bounds before any cation / anion


@dataclass(frozen=True)
class PlanRule:
    """What a de novo plan may contain.

    ``allowed``: elements it may use (None: any); ``required``: elements it must use, all of
    them (a chemical system). ``neutral``: plans must be ionic and neutral (or the one
    element of a one-element system; False: the model's plan as trained, only the element
    sets applied).
    ``intermetallic``: all-metal plans with ``<ox:0>`` are allowed too (CDVAE counts them valid).
    """

    allowed: frozenset[str] | None = None
    required: frozenset[str] = frozenset()
    neutral: bool = True
    intermetallic: bool = False

    def later(self, after: int) -> tuple[str, ...]:
        """Elements this rule may use after canonical position ``after``, in canonical order."""
        return _later(self.allowed, self.required, after)


@lru_cache(maxsize=65536)
def _later(allowed: frozenset[str] | None, required: frozenset[str], after: int) -> tuple[str, ...]:
    return tuple(e for e in ORDER[after + 1:] if allowed is None or e in allowed or e in required)


# ---- element data (the charge validator reads the same functions)

@lru_cache(maxsize=None)
def smact_states(symbol: str) -> tuple[int, ...]:
    """Oxidation states as SMACT 1.4 (and so CDVAE) listed them; () if none."""
    import smact

    return tuple(smact.Element(symbol).oxidation_states_smact14 or ())


@lru_cache(maxsize=None)
def pauling(symbol: str) -> float | None:
    """SMACT's Pauling electronegativity (None for a few elements, e.g. Pm, Rn)."""
    import smact

    return smact.Element(symbol).pauling_eneg


@lru_cache(maxsize=1)
def metals() -> frozenset[str]:
    import smact

    return frozenset(smact.metals)


def compatible(symbol: str, q: int, lo: float, hi: float) -> bool:
    """Pauling's test against the cations (most electronegative: ``lo``) and anions (least:
    ``hi``) so far. An element without an electronegativity is never tested: the validator
    counts a pair with a missing value as passing, so leaving it out only ever accepts less."""
    en = pauling(symbol)
    if en is None or q == 0:
        return True
    return en < hi if q > 0 else en > lo


def bounds_after(symbol: str, q: int, lo: float, hi: float) -> tuple[float, float]:
    en = pauling(symbol)
    if en is None or q == 0:
        return lo, hi
    return (max(lo, en), hi) if q > 0 else (lo, min(hi, en))


@lru_cache(maxsize=4096)
def closer_charges(after: int, lo: float, hi: float) -> tuple[int, ...]:
    """Oxidation states some element after canonical position ``after`` can take (open set)."""
    return tuple(sorted({q for e in ORDER[after + 1:] for q in smact_states(e) if compatible(e, q, lo, hi)}))


# ---- completion

@dataclass(frozen=True)
class Written:
    """The charge side of a plan being written: the closed elements' charge ``T`` (units of
    Z atoms), Pauling bounds, the canonical position of the element being written and the
    required elements not yet written."""

    T: int = 0
    lo: float = NONE[0]
    hi: float = NONE[1]
    after: int = -1
    required: frozenset[str] = frozenset()


def can_finish(rule: PlanRule, kind: str, sg: int, z: int, budget: int, min_wp: int, avail: int,
               cur_total: int, q: int, w: Written) -> bool:
    """Can the element being written (charge ``q``, ``cur_total`` atoms so far, placing from
    Wyckoff index ``min_wp`` with fixed positions ``avail`` free) close at a positive
    multiple of Z, and further elements complete the plan within ``budget`` more atoms?
    ``kind``: ``"ionic"`` (neutral, Pauling-consistent), ``"metal"`` (metals only) or
    ``"free"`` (any charge); each needs every required element written."""
    if rule.allowed is None and kind == "ionic":
        return _finish_open(sg, z, budget, min_wp, avail, cur_total, q, w.T, closer_charges(w.after, w.lo, w.hi))
    return _finish_named(rule, kind, sg, z, budget, min_wp, avail, cur_total, q if kind == "ionic" else 0, w)


def _extras(z: int, budget: int, cur_total: int):
    """Atoms the element being written may still receive: its total a positive multiple of z."""
    for extra in range((-cur_total) % z, budget + 1, z):
        if cur_total + extra:
            yield extra


@lru_cache(maxsize=1_000_000)
def _finish_open(sg: int, z: int, budget: int, min_wp: int, avail: int, cur_total: int, q: int, T: int,
                 closers: tuple[int, ...]) -> bool:
    qmax = max((abs(c) for c in closers), default=0)
    for extra in _extras(z, budget, cur_total):
        t1 = T + q * ((cur_total + extra) // z)
        left = budget - extra
        if abs(t1) > qmax * (left // z):
            if q * t1 > 0:  # more of this element only moves the charge further away
                break
            continue
        if not feasible(sg, (extra,), min_wp, avail):
            continue
        if t1 == 0:
            return True
        for c in closers:
            if c * t1 < 0 and t1 % c == 0:
                n = z * (-t1 // c)
                if n <= left and feasible(sg, (extra, n), min_wp, avail):
                    return True
    return False


@lru_cache(maxsize=1_000_000)
def _finish_named(rule: PlanRule, kind: str, sg: int, z: int, budget: int, min_wp: int, avail: int,
                  cur_total: int, q: int, w: Written) -> bool:
    qmax = _qmax(rule, w.after) if kind == "ionic" else 0
    for extra in _extras(z, budget, cur_total):
        t1 = w.T + q * ((cur_total + extra) // z)
        if abs(t1) > qmax * ((budget - extra) // z):
            if q * t1 > 0:
                break
            continue
        if feasible(sg, (extra,), min_wp, avail) and _future(
                rule, kind, sg, z, budget - extra, (extra,), min_wp, avail, t1, w.after, w.lo, w.hi, w.required):
            return True
    return False


@lru_cache(maxsize=65536)
def _qmax(rule: PlanRule, after: int) -> int:
    """Largest |oxidation state| of the rule's elements after canonical position ``after``."""
    return max((abs(s) for e in rule.later(after) for s in smact_states(e)), default=0)


@lru_cache(maxsize=1_000_000)
def _future(rule: PlanRule, kind: str, sg: int, z: int, budget: int, counts: tuple[int, ...], min_wp: int,
            avail: int, T: int, after: int, lo: float, hi: float, required: frozenset[str]) -> bool:
    """Depth-first: later elements of the rule (in canonical order, none required skipped)
    with counts multiple of z that fit ``budget`` and, with ``counts``, the Wyckoff positions."""
    if T == 0 and not required:
        return True
    ionic = kind == "ionic"
    if ionic and not _charge_possible(rule, after, T, budget // z, lo, hi, required):
        return False
    later = [e for e in rule.later(after) if kind != "metal" or e in metals()]
    for i, e in enumerate(later):
        last = i == len(later) - 1
        for qe in (smact_states(e) if ionic else (0,)):
            if ionic and not compatible(e, qe, lo, hi):
                continue
            lo2, hi2 = bounds_after(e, qe, lo, hi)
            if last and ionic:  # nothing follows: this element alone must close the charge
                if qe * T >= 0 or T % qe:
                    continue
                ks: range = range(-T // qe, min(-T // qe, budget // z) + 1)
            else:
                ks = range(1, budget // z + 1)
            for k in ks:
                grown = counts + (z * k,)
                if not feasible(sg, grown, min_wp, avail):
                    continue
                if _future(rule, kind, sg, z, budget - z * k, grown, min_wp, avail, T + qe * k, POSITION[e],
                           lo2, hi2, required - {e}):
                    return True
        if e in required:
            break  # a required element cannot be skipped
    return False


@lru_cache(maxsize=1_000_000)
def _charge_possible(rule: PlanRule, after: int, T: int, units: int, lo: float, hi: float,
                     required: frozenset[str]) -> bool:
    """The charge half of :func:`_future` alone (no Wyckoff positions): can later elements,
    ``units`` x Z atoms at most, bring ``T`` to zero? Shared by every space group and Z."""
    if T == 0 and not required:
        return True
    if abs(T) > _qmax(rule, after) * units:
        return False
    later = rule.later(after)
    for i, e in enumerate(later):
        for qe in smact_states(e):
            if not compatible(e, qe, lo, hi):
                continue
            lo2, hi2 = bounds_after(e, qe, lo, hi)
            if i == len(later) - 1:
                if qe * T < 0 and T % qe == 0 and -T // qe <= units and not required - {e}:
                    return True
                continue
            for k in range(1, units + 1):
                if _charge_possible(rule, POSITION[e], T + qe * k, units - k, lo2, hi2, required - {e}):
                    return True
        if e in required:
            break
    return False


def may_exist(rule: PlanRule, max_atoms: int) -> bool:
    """Quick necessary test, before any space group is tried: can the rule's required
    elements be balanced at all within ``max_atoms`` (or form an allowed alloy)?"""
    if not rule.neutral or len(rule.required) < 2:
        return True
    if rule.intermetallic and rule.required <= metals():
        return True
    return _charge_possible(rule, -1, 0, max_atoms, NONE[0], NONE[1], rule.required)


def describe_states(symbols) -> str:
    """``O -2/-1/+1/+2; F -1``: the SMACT states a message about a chemical system quotes."""
    parts = []
    for s in sorted(symbols, key=element_order_key):
        states = smact_states(s)
        parts.append(f"{s} " + ("/".join(f"{q:+d}" for q in states) if states else "none"))
    return "; ".join(parts)

