"""Screening-run configuration, read from a TOML file.

A run is fully described by its config plus the run seed: the same file gives the same
shards, the same seeds and therefore the same candidates, which is what lets a killed run
resume without changing its results. Example (see ``examples/screen_*.toml``)::

    [run]
    generator = "pyxtal"            # "default" | "pyxtal" | "path/to/model_dir" | "module:factory"
    generator_options = { max_atoms = 20 }
    seed = 0
    shard_size = 16
    workers = 2

    [[targets]]
    formula = "NaCl"                # or chemsys = "Li-Fe-O" (then formula is left out)
    candidates = 32
    spacegroup = 225                # optional, passed to the generator
    num_atoms = 8                   # optional, passed to the generator
    label = "NaCl-8"                # optional; needed when two targets share a formula

    [sampling]
    temperature = 1.0

    [filters]
    checks = ["all"]                # validator checks that must pass ("all" = the overall verdict)
    max_atoms = 20
    spacegroups = []                # allowed space-group numbers of candidates; empty = any
    min_spacegroup = 16             # e.g. 16: orthorhombic or higher symmetry only
    min_pass_rate = 0.0             # warn when a target's validity rate is below this

    [novelty]
    reference = "/work/shared/data/train/pool.csv.gz"   # optional

    [rank]
    by = "energy"                   # or "log_likelihood", "formation_energy"
    calculator = "chgnet.model.dynamics:CHGNetCalculator"
    calculator_kwargs = { use_device = "cpu" }
    relax = true

    [export]
    top_k = 10
"""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Target:
    """One thing to generate for: a formula or a chemical system, and how many candidates."""

    formula: str | None = None
    chemsys: str | None = None
    candidates: int = 16
    spacegroup: int | None = None
    num_atoms: int | None = None
    label: str | None = None

    def __post_init__(self) -> None:
        if (self.formula is None) == (self.chemsys is None):
            raise ValueError("each [[targets]] entry needs exactly one of `formula` or `chemsys`")
        if self.candidates < 1:
            raise ValueError("`candidates` must be at least 1")

    @property
    def name(self) -> str:
        """A stable label: ``label``, else the formula or the chemical system as written.

        It seeds the target's shards and names it in the outputs, so it must be unique.
        """
        if self.label:
            return self.label
        return self.formula if self.formula is not None else str(self.chemsys)

    @property
    def elements(self) -> frozenset[str]:
        """The elements this target may contain (used to cut the novelty reference down)."""
        if self.formula is not None:
            from pymatgen.core import Composition

            return frozenset(el.symbol for el in Composition(self.formula).elements)
        return frozenset(s.strip() for s in str(self.chemsys).split("-") if s.strip())


@dataclass
class RunConfig:
    """generator: "default" | "pyxtal" | "path/to/model_dir" | "module:factory";
    generator_options: keyword arguments for it (e.g. ``{ max_atoms = 12 }`` for pyxtal,
    ``{ device = "cuda" }`` for the model)."""

    generator: str = "default"
    generator_options: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    shard_size: int = 16
    workers: int = 1


@dataclass
class SamplingConfig:
    temperature: float = 1.0
    batch_size: int | None = None


@dataclass
class FilterConfig:
    """Which candidates survive validation.

    checks: validator check names that must pass; ``"all"`` means the report's overall verdict.
        A check a report does not contain counts as failed, so a typo cannot pass silently.
    spacegroups / min_spacegroup: allowed space groups (found at ``symprec``); an empty list
        allows any, ``min_spacegroup`` = 16 keeps orthorhombic and higher symmetry.
    """

    checks: list[str] = field(default_factory=lambda: ["all"])
    max_atoms: int | None = None
    spacegroups: list[int] = field(default_factory=list)
    min_spacegroup: int = 1
    min_pass_rate: float = 0.0
    symprec: float = 0.1


@dataclass
class NoveltyConfig:
    reference: str | None = None
    ltol: float = 0.2
    stol: float = 0.3
    angle_tol: float = 5.0


@dataclass
class RankConfig:
    """How surviving candidates are scored; lower score ranks first.

    by = "log_likelihood": score = -log-likelihood (the model's own confidence).
    by = "energy": score = energy per atom (eV) from ``calculator`` ("module:factory",
        called with ``calculator_kwargs``), after a FIRE relaxation when ``relax``.
    by = "formation_energy": that energy minus the elements' (elemental structures of the
        novelty reference, same calculator), comparable across compositions.
    """

    by: str = "log_likelihood"
    calculator: str | None = None
    calculator_kwargs: dict[str, Any] = field(default_factory=dict)
    relax: bool = False
    fmax: float = 0.1
    steps: int = 100

    def __post_init__(self) -> None:
        if self.by not in ("log_likelihood", "energy", "formation_energy"):
            raise ValueError(f"[rank] by must be 'log_likelihood', 'energy' or 'formation_energy', not {self.by!r}")
        if self.by != "log_likelihood" and not self.calculator:
            raise ValueError(f"[rank] by = '{self.by}' needs calculator = 'module:factory'")


@dataclass
class ExportConfig:
    top_k: int = 10
    cif_symprec: float = 0.1


@dataclass
class ScreenConfig:
    targets: list[Target]
    run: RunConfig = field(default_factory=RunConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    filters: FilterConfig = field(default_factory=FilterConfig)
    novelty: NoveltyConfig = field(default_factory=NoveltyConfig)
    rank: RankConfig = field(default_factory=RankConfig)
    export: ExportConfig = field(default_factory=ExportConfig)

    def __post_init__(self) -> None:
        if not self.targets:
            raise ValueError("a screening config needs at least one [[targets]] entry")
        if self.rank.by == "formation_energy" and not self.novelty.reference:
            raise ValueError("[rank] by = 'formation_energy' takes its elements from [novelty] reference")
        if self.run.shard_size < 1:
            raise ValueError("[run] shard_size must be at least 1")
        names = [t.name for t in self.targets]
        repeated = sorted({n for n in names if names.count(n) > 1} | ({"total"} & set(names)))
        if repeated:
            raise ValueError(f"target names must be unique (and not 'total'): {repeated}; "
                             "give repeated targets a `label`")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ScreenConfig":
        sections = {
            "run": RunConfig,
            "sampling": SamplingConfig,
            "filters": FilterConfig,
            "novelty": NoveltyConfig,
            "rank": RankConfig,
            "export": ExportConfig,
        }
        unknown = set(d) - set(sections) - {"targets"}
        if unknown:
            raise ValueError(f"unknown config sections: {sorted(unknown)}")
        kwargs: dict[str, Any] = {name: kind(**d.get(name, {})) for name, kind in sections.items()}
        return cls(targets=[Target(**t) for t in d.get("targets", [])], **kwargs)

    @classmethod
    def from_toml(cls, path: str | Path) -> "ScreenConfig":
        """Read a config file; a relative novelty reference is taken relative to the file
        (``training-pool`` names the reference corpus shipped with the package)."""
        path = Path(path)
        with open(path, "rb") as fh:
            cfg = cls.from_dict(tomllib.load(fh))
        ref = cfg.novelty.reference
        if ref and ref != "training-pool" and not Path(ref).is_absolute() and not Path(ref).exists():
            cfg.novelty.reference = str((path.parent / ref).resolve())
        return cfg
