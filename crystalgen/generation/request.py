"""What the user asked for: checked, and turned into the model's prefix and an element rule."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Iterable

import numpy as np
from pymatgen.core import Composition, Element

from crystalgen.representation import vocab as V
from crystalgen.representation.charge import PlanRule
from crystalgen.representation.grammar import DEFAULT_MAX_ATOMS, Grammar, NoLegalCompletion
from crystalgen.representation.sequence import Conditioning, encode_prefix
from crystalgen.representation.tables import element_order_key


class RequestError(ValueError):
    """A generation request that cannot be met (unknown element, impossible composition, ...)."""


@dataclass(frozen=True)
class GenerationRequest:
    """What to generate, resolved into the model's prefix and, de novo, the plan rule
    (elements, charge neutrality) the grammar applies."""

    prefix: np.ndarray
    rule: PlanRule | None
    formula: str | None  # reduced formula asked for, for validation
    spacegroup: int | None
    num_atoms: int | None  # atoms in the primitive cell (checked after generation when no formula)

    @classmethod
    def build(
        cls,
        formula: str | Composition | None = None,
        chemsys: str | Iterable[str] | None = None,
        elements: Iterable[str] | None = None,
        spacegroup: int | None = None,
        num_atoms: int | None = None,
        exact_cell: bool = False,
        max_atoms: int = DEFAULT_MAX_ATOMS,
        charge_neutral: bool = True,
        allow_intermetallic: bool = False,
        element_prompt: bool = False,
        like: str | None = None,
        source_prompts: Iterable[str] = (),
    ) -> "GenerationRequest":
        """Check a request and turn it into a prefix; raises :class:`RequestError`.

        ``formula``: a reduced formula lets the model choose the formula units; a
        multiple (``Li4Fe4P4O16``) or ``exact_cell=True`` fixes the primitive cell's
        content, as crystal structure prediction does. ``num_atoms``: atoms in the
        primitive cell. ``chemsys`` ("Li-Fe-O"): exactly these elements;
        ``elements``: any subset of these. De novo plans are charge-neutral (or one
        element) unless ``charge_neutral`` is False; ``allow_intermetallic`` also allows
        all-metal plans (:class:`~crystalgen.representation.charge.PlanRule`). A chemical
        system with no such plan within ``max_atoms`` is a :class:`RequestError`.
        ``element_prompt``: a chemical system or element set is written into the prefix
        (``<sys:all|any> <el:X>+``, as the model saw it in training; for a model that knows
        those tokens) and the grammar reads it from there into the plan rule; without it
        the rule alone carries the elements (masks at sampling time only).
        ``like``: a data source (``vocab.SOURCES``, e.g. ``"mpts_52/val"``) whose crystals to
        write like, as a source prompt ``<src:NAME>``; it goes with any other request, and
        only to a model trained to follow it (``source_prompts``: the model's list).
        """
        given = [x is not None for x in (formula, chemsys, elements)]
        if sum(given) > 1:
            raise RequestError("give at most one of formula, chemsys and elements")
        if spacegroup is not None and not 1 <= int(spacegroup) <= 230:
            raise RequestError(f"space group must be 1-230, got {spacegroup}")
        sg = int(spacegroup) if spacegroup is not None else None
        rule = PlanRule(neutral=charge_neutral, intermetallic=allow_intermetallic)
        cond = Conditioning(spacegroup=sg)
        reduced_formula = None
        if formula is not None:
            comp = parse_composition(formula)
            reduced, factor = comp.get_reduced_composition_and_factor()
            counts = {el.symbol: int(round(n)) for el, n in reduced.items()}
            if any(abs(n - round(n)) > 1e-8 for n in comp.values()):
                raise RequestError(f"formula {formula!r} has fractional occupancies; crystalgen generates ordered crystals")
            fu = int(round(factor)) if (exact_cell or factor > 1) else None
            common = math.gcd(*counts.values())
            if common > 1:  # pymatgen keeps O2, N2, H2, ... diatomic in reduced compositions
                counts = {el: n // common for el, n in counts.items()}
                fu = fu * common if fu is not None else None
            if num_atoms is not None:
                per_fu = sum(counts.values())
                if num_atoms % per_fu:
                    raise RequestError(f"{num_atoms} atoms is not a whole number of {reduced.reduced_formula} units")
                if fu is not None and fu * per_fu != num_atoms:
                    raise RequestError(f"formula {formula} has {fu * per_fu} atoms, but num_atoms is {num_atoms}")
                fu = num_atoms // per_fu
            if max(counts.values()) > V.MAX_COUNT:
                raise RequestError(f"{reduced.reduced_formula}: element counts above {V.MAX_COUNT} do not fit the model")
            if fu is not None and fu > V.MAX_FU:
                raise RequestError(f"{fu} formula units per primitive cell exceed the model's maximum {V.MAX_FU}")
            cond = Conditioning(
                composition={el: counts[el] for el in sorted(counts, key=element_order_key)},
                formula_units=fu,
                spacegroup=sg,
            )
            reduced_formula = reduced.reduced_formula
            rule = None
        elif chemsys is not None or elements is not None:
            names = chemsys.split("-") if isinstance(chemsys, str) else list(chemsys or elements)
            symbols = frozenset(_element(e) for e in names if e.strip())
            if not symbols:
                raise RequestError("no elements given")
            if element_prompt:
                cond = Conditioning(spacegroup=sg, elements=tuple(sorted(symbols, key=element_order_key)),
                                    elements_mode="all" if chemsys is not None else "any")
            else:
                rule = PlanRule(symbols, symbols if chemsys is not None else frozenset(), charge_neutral,
                                allow_intermetallic)
        if like is not None:
            cond = dataclasses.replace(cond, source=check_source(like, tuple(source_prompts)))
        task = "csp" if cond.composition else "gen"
        prefix = encode_prefix(cond, task=task)
        try:
            Grammar.start(prefix, max_atoms=max_atoms, rule=rule)
        except NoLegalCompletion as err:
            raise RequestError(str(err)) from None
        return cls(prefix, rule, reduced_formula, sg, num_atoms)


def check_source(name: str, followed: tuple[str, ...]) -> str:
    """``name`` if the model follows that source prompt; a one-line :class:`RequestError` otherwise."""
    if name not in V.SOURCES:
        raise RequestError(f"unknown source {name!r} for like; known: {', '.join(V.SOURCES)}")
    if not followed:
        raise RequestError(f"like={name!r}: this model was not trained with source prompts "
                           "(train with data.source_prompt_fraction > 0)")
    if name not in followed:
        raise RequestError(f"like={name!r}: this model was trained to follow only {', '.join(followed)}")
    return name


def _element(symbol: str) -> str:
    symbol = symbol.strip()
    try:
        el = Element(symbol)
    except ValueError:
        raise RequestError(f"unknown element {symbol!r}") from None
    if el.symbol not in V.ELEMENTS:
        raise RequestError(f"element {el.symbol} is outside the model's vocabulary (H to Pu)")
    return el.symbol


def parse_composition(formula: str | Composition) -> Composition:
    try:
        comp = formula if isinstance(formula, Composition) else Composition(str(formula))
    except Exception as err:
        raise RequestError(f"cannot read formula {formula!r}: {err}") from None
    if not comp.elements:
        raise RequestError(f"formula {formula!r} has no elements")
    for el in comp.elements:  # pymatgen reads unknown symbols as dummy species
        _element(getattr(el, "symbol", str(el)))
    return comp
