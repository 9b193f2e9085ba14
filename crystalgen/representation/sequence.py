"""Crystal <-> token/value sequence (format: docs/sequence_format.md). Numpy only.

`encode` writes a `WyckoffCrystal` as prefix -> plan -> lattice -> sites; `decode`
reads a (generated) sequence back; `decode_plan` extracts the reasoning plan for traces.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from crystalgen.representation import vocab as V
from crystalgen.representation.build_tables import LETTERS, SYSTEMS
from crystalgen.representation.tables import (
    LATTICE_RULES,
    SPACE_GROUPS,
    element_order_key,
    lattice_matrix,
    lattice_params_constrained,
)
from crystalgen.representation.wyckoff import WyckoffCrystal, WyckoffSite

#: value_kind codes of EncodedCrystal.value_kind
VK_TOKEN, VK_LENGTH, VK_ANGLE, VK_COORD = 0, 1, 2, 3
LATTICE_KINDS = (VK_LENGTH,) * 3 + (VK_ANGLE,) * 3


class EncodeError(ValueError):
    """The crystal does not fit the vocabulary (too many formula units, counts, ...)."""


class DecodeError(ValueError):
    """The sequence is not a well-formed crystal sequence."""


@dataclass
class Conditioning:
    """What the prefix states: reduced composition, primitive-cell formula units, space group;
    for de novo generation, optionally an element set (``elements``) that the crystal uses
    entirely (``elements_mode="all"``, a chemical system) or draws from (``"any"``); for
    either task, optionally the data source (``source``, one of ``vocab.SOURCES``) whose
    crystals the model should write like."""

    composition: dict[str, int] | None = None  # reduced formula, canonical element order
    formula_units: int | None = None  # formula units in the primitive cell
    spacegroup: int | None = None
    elements: tuple[str, ...] | None = None  # de novo element set, canonical order
    elements_mode: str = "all"  # "all" | "any" (vocab.ELEMENT_SET_MODES)
    source: str | None = None  # source prompt <src:NAME>, vocab.SOURCES

    @classmethod
    def for_task(cls, crystal: WyckoffCrystal, task: str = "csp") -> "Conditioning":
        """Default prefix: CSP knows composition and formula units; de novo generation nothing."""
        if task == "gen":
            return cls()
        z = crystal.formula_units()
        comp = {el: n // z for el, n in _ordered_counts(crystal).items()}
        return cls(comp, z // SPACE_GROUPS[crystal.spacegroup].centring, None)


def default_conditioning(crystal: WyckoffCrystal, task: str = "csp") -> Conditioning:
    return Conditioning.for_task(crystal, task)


@dataclass
class EncodedCrystal:
    tokens: np.ndarray  # int64[L]; value positions hold their value-kind token
    values: np.ndarray  # float32[L]; 0 at token positions
    value_kind: np.ndarray  # int8[L]: VK_TOKEN, VK_LENGTH, VK_ANGLE, VK_COORD
    free: np.ndarray  # bool[L]: value positions that are free (not derived)
    loss_mask: np.ndarray  # bool[L]: positions whose content is a training target

    def __len__(self) -> int:
        return len(self.tokens)


@dataclass
class PlanElement:
    element: str
    oxidation: int
    letters: list[str]
    multiplicities: list[int]


@dataclass
class Plan:
    crystal_system: str
    spacegroup: int
    Z: int
    elements: list[PlanElement] = field(default_factory=list)
    vpa_bin: int = 0
    vpa_range: tuple[float, float] = (0.0, 0.0)

    @property
    def num_atoms(self) -> int:
        return sum(sum(e.multiplicities) for e in self.elements)


# ---- value transforms (shared with the grammar so derived values agree bit for bit)

def length_value(length: float, n_atoms: int) -> float:
    return math.log(length / n_atoms ** (1 / 3))


def length_from_value(value: float, n_atoms: int) -> float:
    return math.exp(value) * n_atoms ** (1 / 3)


def derived_lattice_value(system: str, i: int, previous: list[float]) -> float | None:
    """Stored value of lattice parameter i if the crystal system fixes it, else None."""
    rule = LATTICE_RULES[system][i]
    if rule is None:
        return None
    return previous[rule[1]] if rule[0] == "copy" else float(np.float32(rule[1] / 180.0))


def derived_coordinate(sg: int, w: int, i: int, previous: list[float]) -> float | None:
    """Coordinate i of WP w's representative if it is derived (from earlier free ones), else None."""
    table = SPACE_GROUPS[sg]
    if table.free[w, i]:
        return None
    op = table.orbit_ops[w][0][i]
    acc = op[3]
    for j, v in enumerate(previous):
        acc += op[j] * v
    return float(np.float32(acc % 1.0)) % 1.0


def _ordered_counts(crystal: WyckoffCrystal) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for s in crystal.sites:
        counts[s.element] += s.multiplicity
    return {el: counts[el] for el in sorted(counts, key=element_order_key)}


class _Builder:
    def __init__(self) -> None:
        self.tokens: list[int] = []
        self.values: list[float] = []
        self.kind: list[int] = []
        self.free: list[bool] = []
        self.loss: list[bool] = []

    def tok(self, t: int, loss: bool = False) -> None:
        self.tokens.append(t), self.values.append(0.0), self.kind.append(VK_TOKEN)
        self.free.append(False), self.loss.append(loss)

    def val(self, kind_token: int, kind: int, value: float, free: bool) -> None:
        self.tokens.append(kind_token), self.values.append(value), self.kind.append(kind)
        self.free.append(free), self.loss.append(free)

    def build(self) -> EncodedCrystal:
        return EncodedCrystal(
            np.array(self.tokens, np.int64),
            np.array(self.values, np.float32),
            np.array(self.kind, np.int8),
            np.array(self.free, bool),
            np.array(self.loss, bool),
        )


def _check_range(name: str, n: int, hi: int) -> None:
    if not 1 <= n <= hi:
        raise EncodeError(f"{name} = {n} outside the vocabulary's 1..{hi}")


def encode_prefix(condition: Conditioning, task: str = "csp") -> np.ndarray:
    """Prefix tokens `<bos> <task:*> [<src:NAME>] [<sys:all|any> <el:X>+] [<el:X> <cnt:n>]* [<fu:k>] [<sg:N>] <plan>`.

    The composition must be reduced (gcd 1); it is written in canonical element order, as is
    a de novo element set.
    """
    toks = [V.BOS, V.TASKS[task]]
    if condition.source is not None:
        try:
            toks.append(V.source_token(condition.source))
        except ValueError as err:
            raise EncodeError(str(err)) from None
    if condition.elements:
        if task != "gen" or condition.composition:
            raise EncodeError("an element set is a de novo prompt; it does not go with a composition")
        if condition.elements_mode not in V.SYS_TOKENS:
            raise EncodeError(f"elements_mode must be one of {sorted(V.SYS_TOKENS)}, not {condition.elements_mode!r}")
        toks.append(V.SYS_TOKENS[condition.elements_mode])
        toks += [V.element_token(el) for el in sorted(set(condition.elements), key=element_order_key)]
    if condition.composition:
        comp = condition.composition
        g = 0
        for n in comp.values():
            g = math.gcd(g, int(n))
        if g != 1:
            raise EncodeError(f"composition {comp} is not reduced; give formula units separately")
        for el in sorted(comp, key=element_order_key):
            _check_range("count", int(comp[el]), V.MAX_COUNT)
            toks += [V.element_token(el), V.CNT0 + int(comp[el]) - 1]
    if condition.formula_units:
        _check_range("formula units", condition.formula_units, V.MAX_FU)
        toks.append(V.FU0 + condition.formula_units - 1)
    if condition.spacegroup:
        toks.append(V.SG0 + condition.spacegroup - 1)
    toks.append(V.PLAN)
    return np.array(toks, np.int64)


def encode(
    crystal: WyckoffCrystal,
    oxidation: dict[str, int] | None = None,
    task: str = "csp",
    condition: Conditioning | None = None,
    keep_site_order: bool = False,
) -> EncodedCrystal:
    """Sequence arrays of `crystal`; `oxidation` per element (missing -> 0).

    Sites are written in canonical order, or with ``keep_site_order`` in the given order
    where the grammar leaves it free (orbits of one element on one Wyckoff letter).
    """
    crystal = crystal.plan_ordered() if keep_site_order else crystal.canonical()
    table = SPACE_GROUPS[crystal.spacegroup]
    counts = _ordered_counts(crystal)
    z = crystal.formula_units()
    cond = condition if condition is not None else Conditioning.for_task(crystal, task)
    if cond.composition and {e: n * z for e, n in cond.composition.items()} != counts:
        raise EncodeError(f"conditioning composition {cond.composition} does not match {counts}")
    if cond.formula_units and cond.formula_units * table.centring != z:
        raise EncodeError(f"formula units {cond.formula_units} x centring {table.centring} != Z {z}")
    if cond.spacegroup and cond.spacegroup != crystal.spacegroup:
        raise EncodeError("conditioning space group differs from the crystal's")
    b = _Builder()
    for t in encode_prefix(cond, task):
        b.tok(int(t))
    # plan
    given_sg = cond.spacegroup is not None
    _check_range("Z", z, V.MAX_Z)
    b.tok(V.CS0 + SYSTEMS.index(table.system), loss=not given_sg)
    b.tok(V.SG0 + crystal.spacegroup - 1, loss=not given_sg)
    b.tok(V.Z0 + z - 1, loss=not cond.formula_units)
    oxidation = oxidation or {}
    for el in counts:
        q = int(round(oxidation.get(el, 0)))
        if not V.OX_MIN <= q <= V.OX_MAX:
            raise EncodeError(f"oxidation state {q} of {el} outside the vocabulary")
        b.tok(V.element_token(el), loss=not cond.composition)
        b.tok(V.OX0 + q - V.OX_MIN, loss=True)
        for s in crystal.sites:
            if s.element == el:
                b.tok(V.WY0 + LETTERS.index(s.letter), loss=True)
    params = lattice_params_constrained(table.system, crystal.lattice)
    n = crystal.num_atoms
    volume = abs(np.linalg.det(lattice_matrix(params)))
    b.tok(V.VPA0 + V.vpa_bin(volume / n), loss=True)
    b.tok(V.END_PLAN)
    # lattice
    b.tok(V.LAT)
    raw = [length_value(p, n) for p in params[:3]] + [p / 180.0 for p in params[3:]]
    lat: list[float] = []
    for i in range(6):
        derived = derived_lattice_value(table.system, i, lat)
        lat.append(float(np.float32(raw[i])) if derived is None else derived)
        b.val(V.V0 + i, LATTICE_KINDS[i], lat[-1], derived is None)
    # sites
    for s in crystal.sites:
        w = table.index(s.letter)
        b.tok(V.element_token(s.element))
        b.tok(V.WY0 + LETTERS.index(s.letter))
        xyz: list[float] = []
        for i in range(3):
            derived = derived_coordinate(crystal.spacegroup, w, i, xyz)
            xyz.append(float(np.float32(s.xyz[i] % 1.0)) % 1.0 if derived is None else derived)
            b.val(V.V0 + 6 + i, VK_COORD, xyz[-1], derived is None)
    b.tok(V.EOS)
    return b.build()


def _letter(value) -> str:
    if isinstance(value, (bytes, np.bytes_)):
        return value.decode()
    if isinstance(value, str):
        return value
    return LETTERS[int(value)]


def encode_from_arrays(
    spacegroup: int,
    lattice,
    site_element,
    site_letter,
    site_xyz,
    site_oxidation=None,
    task: str = "csp",
    condition: Conditioning | None = None,
) -> EncodedCrystal:
    """`encode` from corpus arrays (atomic numbers, letters as str/bytes/index into LETTERS)."""
    crystal, oxidation = crystal_from_arrays(spacegroup, lattice, site_element, site_letter, site_xyz, site_oxidation)
    return encode(crystal, oxidation, task, condition)


def crystal_from_arrays(
    spacegroup: int, lattice, site_element, site_letter, site_xyz, site_oxidation=None
) -> tuple[WyckoffCrystal, dict[str, int] | None]:
    """The `WyckoffCrystal` of corpus arrays and the plan's oxidation state per element
    (each element's most common site oxidation state; None without them)."""
    sg = int(spacegroup)
    table = SPACE_GROUPS[sg]
    sites = []
    for zn, letter, xyz in zip(site_element, site_letter, np.asarray(site_xyz, np.float64)):
        letter = _letter(letter)
        sites.append(
            WyckoffSite(V.ELEMENTS[int(zn) - 1], letter, int(table.multiplicity[table.index(letter)]), tuple(xyz))
        )
    oxidation = None
    if site_oxidation is not None:
        per_el: dict[str, Counter] = {}
        for s, q in zip(sites, site_oxidation):
            per_el.setdefault(s.element, Counter())[int(round(float(q)))] += s.multiplicity
        oxidation = {el: c.most_common(1)[0][0] for el, c in per_el.items()}
    return WyckoffCrystal(sg, tuple(float(v) for v in lattice), sites), oxidation


def with_prefix(encoded: EncodedCrystal, condition: Conditioning, task: str = "csp") -> EncodedCrystal:
    """The same crystal's sequence under another prefix: what `encode` writes with this
    ``condition`` and ``task``, without re-encoding (the body is copied, the plan's loss mask
    follows what the new prefix states). The condition must describe the encoded crystal."""
    start = int(np.flatnonzero(encoded.tokens == V.PLAN)[0]) + 1
    end = int(np.flatnonzero(encoded.tokens == V.END_PLAN)[0])
    prefix = encode_prefix(condition, task)
    loss = encoded.loss_mask[start:].copy()
    plan = encoded.tokens[start:end]
    loss[0:2] = condition.spacegroup is None  # <cs>, <sg>
    loss[2] = not condition.formula_units  # <Z>
    is_element = (plan >= V.EL0) & (plan < V.EL0 + len(V.ELEMENTS))
    loss[: end - start][is_element] = not condition.composition
    n = len(prefix)
    return EncodedCrystal(
        np.concatenate([prefix, encoded.tokens[start:]]),
        np.concatenate([np.zeros(n, np.float32), encoded.values[start:]]),
        np.concatenate([np.zeros(n, np.int8), encoded.value_kind[start:]]),
        np.concatenate([np.zeros(n, bool), encoded.free[start:]]),
        np.concatenate([np.zeros(n, bool), loss]),
    )


# ---- decoding

class _Reader:
    def __init__(self, tokens, values) -> None:
        self.tokens = [int(t) for t in tokens]
        self.values = None if values is None else [float(v) for v in values]
        self.i = 0

    def peek(self) -> int | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self, first: int, n: int = 1, what: str = "token") -> int:
        t = self.peek()
        if t is None or not first <= t < first + n:
            got = "end of sequence" if t is None else V.TOKENS[t]
            raise DecodeError(f"expected {what} at position {self.i}, got {got}")
        self.i += 1
        return t - first

    def value(self, kind_index: int) -> float:
        self.take(V.V0 + kind_index, 1, V.TOKENS[V.V0 + kind_index])
        return self.values[self.i - 1]


def _read_plan(r: _Reader) -> Plan:
    if V.PLAN in r.tokens:  # a whole sequence; otherwise the plan body itself
        r.i = r.tokens.index(V.PLAN) + 1
    system = SYSTEMS[r.take(V.CS0, len(SYSTEMS), "crystal system")]
    sg = r.take(V.SG0, 230, "space group") + 1
    table = SPACE_GROUPS[sg]
    if table.system != system:
        raise DecodeError(f"space group {sg} is not {system}")
    plan = Plan(system, sg, r.take(V.Z0, V.MAX_Z, "Z") + 1)
    while r.peek() is not None and V.in_range(r.peek(), V.EL0, len(V.ELEMENTS)):
        el = V.ELEMENTS[r.take(V.EL0, len(V.ELEMENTS))]
        q = r.take(V.OX0, V.OX_MAX - V.OX_MIN + 1, "oxidation state") + V.OX_MIN
        letters = []
        while r.peek() is not None and V.in_range(r.peek(), V.WY0, len(LETTERS)):
            letters.append(LETTERS[r.take(V.WY0, len(LETTERS))])
        if not letters:
            raise DecodeError(f"element {el} has no Wyckoff position")
        try:
            mults = [int(table.multiplicity[table.index(l)]) for l in letters]
        except KeyError as exc:
            raise DecodeError(str(exc)) from None
        plan.elements.append(PlanElement(el, q, letters, mults))
    if not plan.elements:
        raise DecodeError("plan lists no element")
    plan.vpa_bin = r.take(V.VPA0, V.N_VPA, "<vpa:*>")
    plan.vpa_range = V.vpa_range(plan.vpa_bin)
    r.take(V.END_PLAN, what="</plan>")
    return plan


def decode_plan(tokens) -> Plan:
    """The reasoning plan of a whole sequence, or of one starting after `<plan>`; raises DecodeError."""
    return _read_plan(_Reader(tokens, None))


def decode(tokens, values) -> WyckoffCrystal:
    """Crystal of a full sequence; derived values are recomputed, not read. Raises DecodeError."""
    r = _Reader(tokens, values)
    plan = _read_plan(r)
    table = SPACE_GROUPS[plan.spacegroup]
    n = plan.num_atoms
    r.take(V.LAT, what="<lat>")
    lat: list[float] = []
    for i in range(6):
        v = r.value(i)
        derived = derived_lattice_value(table.system, i, lat)
        lat.append(v if derived is None else derived)
    params = [length_from_value(v, n) for v in lat[:3]] + [v * 180.0 for v in lat[3:]]
    params = list(lattice_params_constrained(table.system, params))
    if not all(math.isfinite(p) and p > 0 for p in params) or max(params[3:]) >= 180.0:
        raise DecodeError(f"invalid lattice parameters {params}")
    sites = []
    for pe in plan.elements:
        for letter, mult in zip(pe.letters, pe.multiplicities):
            if V.ELEMENTS[r.take(V.EL0, len(V.ELEMENTS), f"<el:{pe.element}>")] != pe.element:
                raise DecodeError(f"site header at {r.i - 1} differs from the plan ({pe.element})")
            if LETTERS[r.take(V.WY0, len(LETTERS), f"<wy:{letter}>")] != letter:
                raise DecodeError(f"site letter at {r.i - 1} differs from the plan ({letter})")
            w = table.index(letter)
            xyz: list[float] = []
            for i in range(3):
                v = r.value(6 + i)
                derived = derived_coordinate(plan.spacegroup, w, i, xyz)
                xyz.append(v % 1.0 if derived is None else derived)
            sites.append(WyckoffSite(pe.element, letter, mult, tuple(xyz)))
    r.take(V.EOS, what="<eos>")
    return WyckoffCrystal(plan.spacegroup, tuple(params), sites)
