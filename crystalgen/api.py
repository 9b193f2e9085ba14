"""The Python API: ``CrystalGenerator`` turns the trained model into pymatgen Structures.

    >>> from crystalgen import CrystalGenerator
    >>> gen = CrystalGenerator.from_pretrained()          # the model shipped in the package
    >>> results = gen.sample(n=4, formula="LiFePO4", seed=0)
    >>> results[0].structure                             # a pymatgen Structure
    >>> print(results[0].trace["text"])                  # the model's reasoning, step by step

Generation is grammar-constrained (see ``crystalgen.sampling``): a requested formula is
met exactly, a requested space group is used, and every structure is rebuilt from its
Wyckoff positions, so it carries the symmetry the model planned.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from pymatgen.core import Composition, Element

from crystalgen.heads.streams import sequence_keys
from crystalgen.representation import vocab as V
from crystalgen.representation.clearance import MIN_DISTANCE_A
from crystalgen.representation.grammar import DEFAULT_MAX_ATOMS, Grammar, NoLegalCompletion
from crystalgen.representation.sequence import Conditioning, DecodeError, decode, decode_plan, encode_prefix
from crystalgen.representation.tables import element_order_key
from crystalgen.results import GenerationResult
from crystalgen.sampling import ElementRule
from crystalgen.trace import build_trace
from crystalgen.workers import ShardPool, ShardSpec, default_workers, run_shard, split_jobs

log = logging.getLogger(__name__)

#: Sequences decoded together per process. Wider batches amortise the per-step cost: on
#: the 2-core dev CPU, SrTiO3 gave 219 / 246 valid crystals/s at batch 512 / 1024 (2 workers,
#: benchmarks/bench_sample.py); a worker's peak memory stayed near 1 GB either way.
DEFAULT_BATCH_SIZE = 1024

#: Where the shipped default model lives (package data).
PRETRAINED_DIR = Path(__file__).resolve().parent / "pretrained"

__all__ = ["CrystalGenerator", "GenerationResult", "GenerationRequest", "RequestError", "PRETRAINED_DIR"]


class RequestError(ValueError):
    """A generation request that cannot be met (unknown element, impossible composition, ...)."""


@dataclass(frozen=True)
class GenerationRequest:
    """What to generate, resolved into the model's prefix and an element rule."""

    prefix: np.ndarray
    rule: ElementRule | None
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
    ) -> "GenerationRequest":
        """Check a request and turn it into a prefix; raises :class:`RequestError`.

        ``formula``: a reduced formula lets the model choose the formula units; a
        multiple (``Li4Fe4P4O16``) or ``exact_cell=True`` fixes the primitive cell's
        content, as crystal structure prediction does. ``num_atoms``: atoms in the
        primitive cell. ``chemsys`` ("Li-Fe-O"): exactly these elements;
        ``elements``: any subset of these.
        """
        given = [x is not None for x in (formula, chemsys, elements)]
        if sum(given) > 1:
            raise RequestError("give at most one of formula, chemsys and elements")
        if spacegroup is not None and not 1 <= int(spacegroup) <= 230:
            raise RequestError(f"space group must be 1-230, got {spacegroup}")
        sg = int(spacegroup) if spacegroup is not None else None
        rule = None
        cond = Conditioning(spacegroup=sg)
        reduced_formula = None
        if formula is not None:
            comp = _composition(formula)
            reduced, factor = comp.get_reduced_composition_and_factor()
            counts = {el.symbol: int(round(n)) for el, n in reduced.items()}
            if any(abs(n - round(n)) > 1e-8 for n in comp.values()):
                raise RequestError(f"formula {formula!r} has fractional occupancies; crystalgen generates ordered crystals")
            fu = int(round(factor)) if (exact_cell or factor > 1) else None
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
        elif chemsys is not None or elements is not None:
            names = chemsys.split("-") if isinstance(chemsys, str) else list(chemsys or elements)
            symbols = frozenset(_element(e) for e in names if e.strip())
            if not symbols:
                raise RequestError("no elements given")
            rule = ElementRule(allowed=symbols, required=symbols if chemsys is not None else frozenset())
        task = "csp" if cond.composition else "gen"
        prefix = encode_prefix(cond, task=task)
        try:
            Grammar.start(prefix, max_atoms=max_atoms)
        except NoLegalCompletion as err:
            raise RequestError(str(err)) from None
        return cls(prefix, rule, reduced_formula, sg, num_atoms)


def _element(symbol: str) -> str:
    symbol = symbol.strip()
    try:
        el = Element(symbol)
    except ValueError:
        raise RequestError(f"unknown element {symbol!r}") from None
    if el.symbol not in V.ELEMENTS:
        raise RequestError(f"element {el.symbol} is outside the model's vocabulary (H to Pu)")
    return el.symbol


def _composition(formula: str | Composition) -> Composition:
    try:
        comp = formula if isinstance(formula, Composition) else Composition(str(formula))
    except Exception as err:
        raise RequestError(f"cannot read formula {formula!r}: {err}") from None
    if not comp.elements:
        raise RequestError(f"formula {formula!r} has no elements")
    for el in comp.elements:  # pymatgen reads unknown symbols as dummy species
        _element(getattr(el, "symbol", str(el)))
    return comp


class CrystalGenerator:
    """Generates crystals with a trained crystalgen model.

    Results are :class:`~crystalgen.results.GenerationResult` objects: ``.structure``
    (pymatgen), ``.trace`` (the reasoning plan and verdict), ``.report`` (validators),
    ``.log_likelihood``, ``.to_ase()``, ``as_dict()``/``from_dict()``.
    """

    def __init__(
        self,
        model,
        device: str | torch.device = "cpu",
        max_atoms: int = DEFAULT_MAX_ATOMS,
        workers: int | None = None,
        model_dir: str | Path | None = None,
        min_distance: float = MIN_DISTANCE_A,
    ) -> None:
        """``workers``: sampling processes for large requests (None: one per core on a
        CPU, none on a GPU; 0: everything in this process). Results do not depend on it
        beyond float rounding.
        ``min_distance``: the distance guard (Å) every call uses unless it gives its own
        (see :meth:`sample`); 0 turns it off."""
        self.model = model.eval()
        self.device = torch.device(device)
        self.max_atoms = max_atoms
        self.workers = default_workers(self.device) if workers is None else int(workers)
        self.model_dir = str(model_dir) if model_dir is not None else None
        self.min_distance = float(min_distance)
        self._pool: ShardPool | None = None

    def close(self) -> None:
        """Stop the worker processes (they are started on the first large request)."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    @classmethod
    def from_pretrained(cls, path: str | Path | None = None, device: str = "cpu", **kwargs) -> "CrystalGenerator":
        """Load the shipped default model, or a directory written by ``save_pretrained``."""
        from crystalgen.model import CrystalModel

        directory = Path(path) if path is not None else PRETRAINED_DIR
        if not (directory / "model.safetensors").is_file():
            raise FileNotFoundError(f"no model.safetensors in {directory}")
        if str(device).startswith("cuda") and not torch.cuda.is_available():
            raise RequestError("device cuda asked for, but no CUDA device is available")
        return cls(CrystalModel.from_pretrained(directory, device=device), device=device, model_dir=directory, **kwargs)

    # ------------------------------------------------------------------------------------
    def sample(
        self,
        n: int = 1,
        formula: str | Composition | None = None,
        chemsys: str | Iterable[str] | None = None,
        elements: Iterable[str] | None = None,
        spacegroup: int | None = None,
        num_atoms: int | None = None,
        temperature: float = 1.0,
        seed: int | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        validate: bool = True,
        only_valid: bool = False,
        max_rounds: int = 10,
        progress: bool = False,
        min_distance: float | None = None,
    ) -> list[GenerationResult]:
        """Generate ``n`` crystals; see :meth:`GenerationRequest.build` for the options.

        ``temperature`` scales every choice (0: the most likely token and value).
        The same ``seed`` with the same arguments gives the same structures.
        ``only_valid`` keeps sampling (up to ``max_rounds`` x ``n`` attempts) until ``n``
        results pass every validator check; fewer are returned if that budget runs out.
        ``min_distance`` (Å; None: the generator's): the distance guard, which redraws
        the last free coordinate of a site whose orbit would come closer than this to an
        atom already placed (:mod:`crystalgen.representation.clearance`); 0 samples the
        model unguarded.
        """
        request = GenerationRequest.build(formula, chemsys, elements, spacegroup, num_atoms, max_atoms=self.max_atoms)
        return self.generate(request, n, temperature, seed, batch_size, validate, only_valid, max_rounds, progress,
                             min_distance=min_distance)

    def predict_structure(
        self,
        composition: str | Composition,
        n: int = 1,
        temperature: float = 1.0,
        seed: int | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        validate: bool = True,
        progress: bool = False,
        min_distance: float | None = None,
    ) -> list[GenerationResult]:
        """Crystal structure prediction: ``n`` candidates with exactly this cell content
        (``min_distance``: as in :meth:`sample`)."""
        request = GenerationRequest.build(composition, exact_cell=True, max_atoms=self.max_atoms)
        return self.generate(request, n, temperature, seed, batch_size, validate, False, 3, progress,
                             min_distance=min_distance)

    def predict_structures(
        self,
        compositions: list[str | Composition],
        n: int = 1,
        temperature: float = 1.0,
        seed: int | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        validate: bool = True,
        max_rounds: int = 3,
        progress: bool = False,
        min_distance: float | None = None,
    ) -> list[list[GenerationResult]]:
        """Crystal structure prediction for many compositions at once (``min_distance``:
        as in :meth:`sample`).

        Sequences of different compositions share batches (left-padded prefixes), which
        is what makes evaluating thousands of test crystals fast. Returns ``n``
        candidates per composition (fewer where the model failed ``max_rounds`` times;
        none for a composition the model cannot express).
        """
        from tqdm.auto import tqdm

        requests: list[GenerationRequest | None] = []
        for comp in compositions:
            try:
                requests.append(GenerationRequest.build(comp, exact_cell=True, max_atoms=self.max_atoms))
            except RequestError as err:
                log.info("skipping %s: %s", comp, err)
                requests.append(None)
        base = _base_seed(seed)
        results: list[list[GenerationResult]] = [[] for _ in compositions]
        bar = tqdm(total=0, desc="predicting", unit="seq", disable=not progress)  # sequences tried
        for round_ in range(max_rounds):
            jobs = [i for i, r in enumerate(requests) if r is not None for _ in range(n - len(results[i]))]
            if not jobs:
                break
            bar.total += len(jobs)
            bar.refresh()
            jobs.sort(key=lambda i: len(requests[i].prefix))  # similar lengths: little padding
            for i, res in zip(jobs, self._run_jobs(requests, jobs, base, round_, temperature, batch_size,
                                                   validate, seed, bar.update, min_distance)):
                if res is not None and len(results[i]) < n:
                    results[i].append(res)
        bar.close()
        return results

    def generate(
        self,
        request: GenerationRequest,
        n: int,
        temperature: float = 1.0,
        seed: int | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        validate: bool = True,
        only_valid: bool = False,
        max_rounds: int = 10,
        progress: bool = False,
        min_distance: float | None = None,
    ) -> list[GenerationResult]:
        """Generate for a prepared request (used by the CLI and the pipelines)."""
        from tqdm.auto import tqdm

        if n < 1:
            return []
        base = _base_seed(seed)
        results: list[GenerationResult] = []
        attempts, budget, round_ = 0, n * max_rounds, 0
        bar = tqdm(total=n, desc="sampling", unit="seq", disable=not progress)  # sequences tried
        while len(results) < n and attempts < budget:
            # ask for as many as the success rate so far says are needed (failed
            # sequences, invalid crystals under only_valid, wrong num_atoms); the rate comes
            # from finished rounds only, so the same seed always asks for the same jobs
            rate = max(len(results) / attempts, 0.1) if attempts else 1.0
            size = min(budget - attempts, max(math.ceil((n - len(results)) / rate), 1))
            attempts += size
            bar.total = attempts
            bar.refresh()
            kept = []
            for res in self._run_jobs([request], [0] * size, base, round_, temperature, batch_size, validate, seed,
                                      bar.update, min_distance):
                if res is None or (only_valid and not res.valid):
                    continue
                if request.num_atoms and not request.formula:
                    if len(res.structure.get_primitive_structure()) != request.num_atoms:
                        continue
                kept.append(res)
            results += kept[: n - len(results)]
            round_ += 1
        bar.close()
        if len(results) < n:
            log.warning("generated %d of %d requested crystals in %d attempts", len(results), n, attempts)
        return results

    def _run_jobs(self, requests, jobs: list[int], base: int, round_: int, temperature: float, batch_size: int,
                  validate: bool, user_seed, on_done=None,
                  min_distance: float | None = None) -> list[GenerationResult | None]:
        """Generate and finish one result (or None) per job (an index into ``requests``),
        shard by shard: in worker processes when there is more than one shard."""
        min_distance = self.min_distance if min_distance is None else float(min_distance)
        keys = sequence_keys(base, round_, len(jobs))  # job k's random stream, however jobs are split
        specs = [ShardSpec(tuple(jobs[part]), keys[part], temperature, batch_size, self.max_atoms, validate,
                           user_seed, min_distance)
                 for part in split_jobs(len(jobs), batch_size, self.workers)]
        if len(specs) > 1 and self.workers > 1:
            if self._pool is None:
                self._pool = ShardPool(self.model, self.workers, self.model_dir)
            parts = self._pool.run(requests, specs, on_done)
        else:
            parts = [run_shard(self.model, requests, spec, on_done) for spec in specs]
        return [res for part in parts for res in part]


def _base_seed(seed: int | None) -> int:
    return int(seed) if seed is not None else int(torch.seed() % 2**63)


def sequence_to_result(seq, request: GenerationRequest, validate: bool, temperature: float,
                       seed, min_distance: float | None = None) -> GenerationResult | None:
    """Decode a sampled sequence into a result: structure, validators' report, trace."""
    if seq is None:
        return None
    try:
        crystal = decode(seq.tokens, seq.values)
        plan = decode_plan(seq.tokens)
        structure = crystal.to_structure()
    except (DecodeError, ValueError) as err:
        log.debug("undecodable sequence: %s", err)
        return None
    report = None
    if validate:
        from crystalgen.validators import Intent, validate as run_validators

        intent = Intent(spacegroup=request.spacegroup, formula=request.formula)
        report = run_validators(structure, intent).as_dict()
    return GenerationResult(
        structure=structure,
        trace=build_trace(plan, structure, report),
        report=report,
        log_likelihood=float(seq.log_likelihood),
        metadata={
            "formula": request.formula,
            "spacegroup": request.spacegroup,
            "temperature": temperature,
            "seed": seed,
            "min_distance": min_distance,
            "planned_spacegroup": plan.spacegroup,
        },
    )
