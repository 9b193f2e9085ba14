"""The Python API: ``CrystalGenerator`` turns the trained model into pymatgen Structures.

    >>> from crystalgen import CrystalGenerator
    >>> gen = CrystalGenerator.from_pretrained()          # the model shipped in the package
    >>> results = gen.sample(n=4, formula="LiFePO4", seed=0)
    >>> results[0].structure                             # a pymatgen Structure
    >>> print(results[0].trace["text"])                  # the model's reasoning, step by step

A facade over :mod:`crystalgen.generation`: requests are checked there
(``GenerationRequest``), sampling options travel as one ``SamplingOptions``, and
generation is grammar-constrained, so a requested formula is met exactly, a requested
space group is used, and every structure is rebuilt from its Wyckoff positions.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch
from pymatgen.core import Composition

from crystalgen.analogues.candidates import NoAnalogueError
from crystalgen.analogues.generator import AnalogueConfig, AnalogueGenerator
from crystalgen.analogues.index import AnalogueIndex
from crystalgen.analogues.relax import Relaxer, as_relaxer, relax_results
from crystalgen.auto_ranking import AutoRanking, merge, needs_model
from crystalgen.data.reference import REFERENCE_POOL
from crystalgen.generation.options import DEFAULT_BATCH_SIZE, SamplingOptions
from crystalgen.generation.plan_search import best_by_plan
from crystalgen.generation.request import GenerationRequest, RequestError, check_source, parse_composition
from crystalgen.generation.rounds import Rounds
from crystalgen.model import CrystalModel
from crystalgen.parallel import default_workers
from crystalgen.representation import vocab as V
from crystalgen.representation.grammar import DEFAULT_MAX_ATOMS
from crystalgen.results import GenerationResult
from crystalgen.validators.distance import MIN_DISTANCE_A

log = logging.getLogger(__name__)

#: Where the shipped default model lives (package data).
PRETRAINED_DIR = Path(__file__).resolve().parent / "pretrained"

__all__ = ["CrystalGenerator", "GenerationResult", "GenerationRequest", "RequestError", "SamplingOptions",
           "DEFAULT_BATCH_SIZE", "PRETRAINED_DIR"]


class CrystalGenerator:
    """Generates crystals with a trained crystalgen model.

    Results are :class:`~crystalgen.results.GenerationResult` objects: ``.structure``
    (pymatgen), ``.trace`` (the reasoning plan and verdict), ``.report`` (validators),
    ``.log_likelihood``, ``.to_ase()``, ``as_dict()``/``from_dict()``. Implements the
    :class:`~crystalgen.generation.protocol.Generator` protocol.
    """

    name = "crystalgen"
    parallel_safe = False  # it runs its own worker processes

    #: where structure prediction gets its candidates: ``"model"`` samples plans from the
    #: model; ``"analogue"`` substitutes elements into reference structures of the same
    #: anonymous formula (:mod:`crystalgen.analogues`); ``"auto"`` merges the ranked
    #: analogues with the model's own candidates on one scale, the model's plan log-prob
    #: (:mod:`crystalgen.auto_ranking`; the model alone where the corpus has no analogue)
    STRATEGIES = ("auto", "model", "analogue")

    def __init__(
        self,
        model,
        device: str | torch.device = "cpu",
        max_atoms: int = DEFAULT_MAX_ATOMS,
        workers: int | None = None,
        model_dir: str | Path | None = None,
        min_distance: float = MIN_DISTANCE_A,
        strategy: str = "auto",
        reference: str | Path | AnalogueIndex | None = None,
        analogue_config: AnalogueConfig | None = None,
        plan_search: int = 1,
        charge_neutral: bool = True,
        allow_intermetallic: bool = False,
        volume_guard: bool = True,
        auto_ranking: AutoRanking | None = None,
        like: str | None = None,
    ) -> None:
        """``workers``: sampling processes for large requests (None: one per core on a
        CPU, none on a GPU or inside a worker process; 0: everything in this process).
        Results do not depend on it beyond float rounding.
        ``min_distance``: the distance guard (Å) every call uses unless it gives its own
        (see :meth:`sample`); 0 turns it off.
        ``strategy``: the default of :meth:`predict_structure` (see :attr:`STRATEGIES`);
        ``reference``: the analogue corpus (default: the shipped reference pool);
        ``analogue_config``: how analogues are ranked (default: ``AnalogueConfig()``, the
        combined ranking with this generator's model, no CHGNet term);
        ``plan_search``: structure prediction's model candidates are the best of this many
        samples per wanted one by plan log-probability (:mod:`crystalgen.generation.plan_search`;
        1: as sampled).
        ``charge_neutral``, ``allow_intermetallic``: the de novo plan rule, and
        ``volume_guard`` (see :class:`SamplingOptions`), every call uses unless it gives its own.
        ``auto_ranking``: how ``"auto"`` merges analogues and the model's candidates
        (default: :class:`~crystalgen.auto_ranking.AutoRanking`, the shipped model's fitted
        margin; :meth:`from_pretrained` reads a model directory's own).
        ``like``: the source prompt :meth:`sample` uses unless it gives its own (see there)."""
        _check_strategy(strategy)
        self.model = model.eval()
        self.device = torch.device(device)
        self.max_atoms = max_atoms
        self.workers = default_workers(self.device.type) if workers is None else int(workers)
        self.model_dir = str(model_dir) if model_dir is not None else None
        self.min_distance = float(min_distance)
        self.charge_neutral = bool(charge_neutral)
        self.allow_intermetallic = bool(allow_intermetallic)
        self.volume_guard = bool(volume_guard)
        self.like = check_source(like, self.source_prompts) if like is not None else None
        self._rounds = Rounds(self.model, max_atoms, self.workers, self.model_dir)
        self.strategy = strategy
        self.reference = reference
        self.analogue_config = analogue_config or AnalogueConfig()
        self.plan_search = max(1, int(plan_search))
        self.auto_ranking = auto_ranking or AutoRanking()
        self._analogues: tuple[object, AnalogueGenerator] | None = None  # (its corpus, the generator)

    def analogues(self, reference: str | Path | AnalogueIndex | None = None) -> AnalogueGenerator:
        """The analogue generator over ``reference`` (default: this generator's corpus, else
        the shipped pool), kept while the same corpus is asked for (an index object by
        identity, a path by its text). This generator's model scores and re-ranks its top
        candidates (:mod:`crystalgen.analogues.ranking`)."""
        if reference is None:
            reference = self.reference if self.reference is not None else REFERENCE_POOL
        if self._analogues is not None:
            held, generator = self._analogues
            paths = isinstance(held, (str, Path)) and isinstance(reference, (str, Path))
            if held is reference or (paths and str(held) == str(reference)):
                return generator
        generator = AnalogueGenerator(reference, dataclasses.replace(self.analogue_config, exact_cell=True),
                                      model=self.model)
        self._analogues = (reference, generator)
        return generator

    def close(self) -> None:
        """Stop the worker processes (they are started on the first large request)."""
        rounds = getattr(self, "_rounds", None)
        if rounds is not None:
            rounds.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    @classmethod
    def from_pretrained(cls, path: str | Path | None = None, device: str = "cpu", **kwargs) -> "CrystalGenerator":
        """Load the shipped default model, or a directory written by ``save_pretrained``."""
        directory = Path(path) if path is not None else PRETRAINED_DIR
        if not any((directory / name).is_file() for name in ("model.safetensors", "model.safetensors.index.json")):
            raise FileNotFoundError(f"no model.safetensors (or its sharded index) in {directory}")
        if str(device).startswith("cuda") and not torch.cuda.is_available():
            raise RequestError("device cuda asked for, but no CUDA device is available")
        kwargs.setdefault("auto_ranking", AutoRanking.for_model(directory))
        return cls(CrystalModel.from_pretrained(directory, device=device), device=device, model_dir=directory, **kwargs)

    @property
    def element_prompts(self) -> bool:
        """Whether chemical-system / element-set requests go into the prefix as trained
        prompts (``<sys:all|any>``): for a model trained with those tokens; an older model
        gets them as grammar masks alone."""
        return self.model.knows_token(V.SYS_ALL)

    @property
    def source_prompts(self) -> tuple[str, ...]:
        """The data sources ``like=`` may name: those the model was trained to follow (empty for
        a model trained without source prompts)."""
        return tuple(self.model.source_prompts)

    def options(self, options: SamplingOptions | None = None, **changes) -> SamplingOptions:
        """Sampling options: ``options`` (default: this generator's guard distance and plan
        rule) with ``changes`` applied (None values ignored)."""
        base = options if options is not None else SamplingOptions(
            min_distance=self.min_distance, charge_neutral=self.charge_neutral,
            allow_intermetallic=self.allow_intermetallic, volume_guard=self.volume_guard)
        return base.with_(**changes)

    # ------------------------------------------------------------------------------------
    def sample(
        self,
        n: int = 1,
        formula: str | Composition | None = None,
        chemsys: str | Iterable[str] | None = None,
        elements: Iterable[str] | None = None,
        spacegroup: int | None = None,
        num_atoms: int | None = None,
        temperature: float | None = None,
        seed: int | None = None,
        batch_size: int | None = None,
        validate: bool | None = None,
        only_valid: bool | None = None,
        max_rounds: int | None = None,
        progress: bool | None = None,
        min_distance: float | None = None,
        options: SamplingOptions | None = None,
        charge_neutral: bool | None = None,
        allow_intermetallic: bool | None = None,
        volume_guard: bool | None = None,
        like: str | None = None,
    ) -> list[GenerationResult]:
        """Generate ``n`` crystals; see :meth:`GenerationRequest.build` for what to ask for
        and :class:`SamplingOptions` for how (keywords override ``options``).

        ``temperature`` scales every choice (0: the most likely token and value; default 1).
        The same ``seed`` with the same arguments gives the same structures.
        ``only_valid`` keeps sampling (up to ``max_rounds`` x ``n`` attempts, default 10)
        until ``n`` results pass every validator check; fewer are returned if that budget
        runs out. ``min_distance`` (Å; None: the generator's): the distance guard, which
        draws every free coordinate from the model where the site's orbit stays at least
        this far (and the physical rule's share of the covalent radii) from the other
        atoms (:mod:`crystalgen.generation.guard`); 0 samples the model unguarded. ``charge_neutral`` (default True): de novo plans are
        charge-neutral by the charge validator's rule, or one element; ``allow_intermetallic``:
        all-metal plans too; ``volume_guard`` (default True): cells in the plan's volume
        bin (see :class:`SamplingOptions`). ``like`` (None: the generator's): write crystals like
        this data source's (``"mpts_52/val"``, ...; :attr:`source_prompts` lists those the model
        follows), together with any of the requests above.
        """
        opts = self.options(options, temperature=temperature, seed=seed, batch_size=batch_size, validate=validate,
                            only_valid=only_valid, max_rounds=max_rounds, progress=progress,
                            min_distance=min_distance, charge_neutral=charge_neutral,
                            allow_intermetallic=allow_intermetallic, volume_guard=volume_guard)
        request = GenerationRequest.build(formula, chemsys, elements, spacegroup, num_atoms, max_atoms=self.max_atoms,
                                          charge_neutral=opts.charge_neutral,
                                          allow_intermetallic=opts.allow_intermetallic,
                                          element_prompt=self.element_prompts,
                                          like=like if like is not None else self.like,
                                          source_prompts=self.source_prompts)
        return self.generate(request, n, options=opts)

    def predict_structure(
        self,
        composition: str | Composition,
        n: int = 1,
        temperature: float | None = None,
        seed: int | None = None,
        batch_size: int | None = None,
        validate: bool | None = None,
        progress: bool | None = None,
        min_distance: float | None = None,
        options: SamplingOptions | None = None,
        strategy: str | None = None,
        reference: str | Path | AnalogueIndex | None = None,
        relax: bool | Relaxer | object = False,
    ) -> list[GenerationResult]:
        """Crystal structure prediction: ``n`` candidates with exactly this cell content,
        best first (``"auto"``: analogues and the model's candidates merged by plan log-prob). ``strategy`` (None: the generator's, ``"auto"`` by default;
        see :attr:`STRATEGIES`) and ``reference`` (the analogue corpus) choose where
        candidates come from; the model makes at most 3 x ``n`` attempts; other arguments
        as in :meth:`sample`. Raises :class:`RequestError` when neither the model nor an
        analogue can express the composition. ``relax``: True relaxes the top
        candidates (``RelaxConfig.top``, 3) with CHGNet and re-ranks them by energy per
        atom; a :class:`~crystalgen.analogues.relax.Relaxer` or any ASE calculator relaxes
        with that; a relax that diverges keeps the unrelaxed candidate (see the trace)."""
        strategy = _check_strategy(strategy or self.strategy)
        _check_n(n)
        relaxer = as_relaxer(relax)
        if relaxer is not None:
            found = self.predict_structure(composition, max(n, relaxer.config.top), temperature, seed, batch_size,
                                           validate, progress, min_distance, options, strategy, reference)
            return relax_results(found, relaxer, parse_composition(composition).formula)[:n]
        analogue: list[GenerationResult] = []
        want = self.auto_ranking.candidates(n) if strategy == "auto" else n
        if strategy != "model":
            try:
                analogue = self.analogues(reference).predict_structure(parse_composition(composition), n=want,
                                                                     validate=validate is not False)
            except NoAnalogueError as err:
                if strategy == "analogue":
                    raise RequestError(str(err)) from None
            if strategy == "analogue" or not needs_model(self.auto_ranking, len(analogue), n):
                return analogue[:n]
        try:
            request = GenerationRequest.build(composition, exact_cell=True, max_atoms=self.max_atoms)
        except RequestError:
            if analogue:
                return analogue[:n]
            raise
        opts = self.options(options, temperature=temperature, seed=seed, batch_size=batch_size, validate=validate,
                            progress=progress, min_distance=min_distance)
        model = self.generate(request, want * self.plan_search, options=opts.with_(only_valid=False, max_rounds=3))
        if self.plan_search > 1 or analogue:
            model = best_by_plan(self.model, model, want)
        return self._merged(analogue, model, n) if strategy == "auto" else model

    def predict_structures(
        self,
        compositions: list[str | Composition],
        n: int = 1,
        temperature: float | None = None,
        seed: int | None = None,
        batch_size: int | None = None,
        validate: bool | None = None,
        max_rounds: int = 3,
        progress: bool | None = None,
        min_distance: float | None = None,
        options: SamplingOptions | None = None,
        strategy: str | None = None,
        reference: str | Path | AnalogueIndex | None = None,
        relax: bool | Relaxer | object = False,
    ) -> list[list[GenerationResult]]:
        """Crystal structure prediction for many compositions at once (other arguments as
        in :meth:`sample`).

        Sequences of different compositions share batches (left-padded prefixes), which
        is what makes evaluating thousands of test crystals fast. Returns ``n``
        candidates per composition (fewer where the model failed ``max_rounds`` times;
        none for a composition the model cannot express). ``strategy`` and ``reference``
        as in :meth:`predict_structure` (``"auto"``: analogues and the model's candidates merged);
        ``relax`` as in :meth:`predict_structure`.
        """
        strategy = _check_strategy(strategy or self.strategy)
        _check_n(n)
        relaxer = as_relaxer(relax)
        if relaxer is not None:
            found = self.predict_structures(compositions, max(n, relaxer.config.top), temperature, seed, batch_size,
                                            validate, max_rounds, progress, min_distance, options, strategy, reference)
            return [relax_results(r, relaxer, parse_composition(c).formula)[:n] for c, r in zip(compositions, found)]
        analogue: list[list[GenerationResult]] = [[] for _ in compositions]
        want = self.auto_ranking.candidates(n) if strategy == "auto" else n
        if strategy != "model":
            analogue = self.analogues(reference).predict_structures(compositions, n=want, validate=validate is not False)
            if strategy == "analogue":
                return [a[:n] for a in analogue]
        requests: list[GenerationRequest | None] = []
        for comp, found in zip(compositions, analogue):
            if found and not needs_model(self.auto_ranking, len(found), n):
                requests.append(None)
                continue
            try:
                requests.append(GenerationRequest.build(comp, exact_cell=True, max_atoms=self.max_atoms))
            except RequestError as err:
                log.info("skipping %s: %s", comp, err)
                requests.append(None)
        opts = self.options(options, temperature=temperature, seed=seed, batch_size=batch_size, validate=validate,
                            max_rounds=max_rounds, progress=progress, min_distance=min_distance)
        model = self._rounds.generate_many(requests, want * self.plan_search, opts)
        if self.plan_search > 1 or strategy == "auto":
            model = [best_by_plan(self.model, more, want) if more else more for more in model]
        return [self._merged(found, more, n) if strategy == "auto" else more[:n] for found, more in zip(analogue, model)]

    def _merged(self, analogue: list[GenerationResult], model: list[GenerationResult], n: int) -> list[GenerationResult]:
        """``auto``'s answer from both sides' candidates (:func:`~crystalgen.auto_ranking.merge`);
        the model's alone, as ranked, where no analogue exists and no energy term is asked for."""
        if analogue or (model and self.auto_ranking.energy_top > 0):
            return merge(analogue, model, n, self.auto_ranking)
        return model[:n]

    def generate(
        self,
        request: GenerationRequest,
        n: int,
        temperature: float | None = None,
        seed: int | None = None,
        batch_size: int | None = None,
        validate: bool | None = None,
        only_valid: bool | None = None,
        max_rounds: int | None = None,
        progress: bool | None = None,
        min_distance: float | None = None,
        options: SamplingOptions | None = None,
    ) -> list[GenerationResult]:
        """Generate for a prepared request (used by the CLI and the pipelines)."""
        _check_n(n)
        opts = self.options(options, temperature=temperature, seed=seed, batch_size=batch_size, validate=validate,
                            only_valid=only_valid, max_rounds=max_rounds, progress=progress,
                            min_distance=min_distance)
        return self._rounds.generate(request, n, opts)

    def stream(self, request: GenerationRequest, n: int, options: SamplingOptions | None = None,
               chunk: int = 4096) -> Iterator[list[GenerationResult]]:
        """:meth:`generate`'s results in chunks, each from up to ``chunk`` sequences, as they
        finish: a caller that writes each chunk out and drops it holds one chunk in memory
        however large ``n`` is (``crystalgen sample`` does). The chunks cut the work
        only; the crystals are :meth:`generate`'s up to float rounding (bitwise when
        ``chunk`` >= ``n``)."""
        _check_n(n)
        if chunk < 1:
            raise RequestError(f"chunk must be at least 1, got {chunk}")
        return self._rounds.stream(request, n, self.options(options), chunk)


def _check_strategy(strategy: str) -> str:
    if strategy not in CrystalGenerator.STRATEGIES:
        raise RequestError(f"strategy must be one of {', '.join(CrystalGenerator.STRATEGIES)}, got {strategy!r}")
    return strategy


def _check_n(n: int) -> None:
    if int(n) < 1:
        raise RequestError(f"n must be at least 1, got {n}")
