"""The harness's view of generators: the protocol (:mod:`crystalgen.generation.protocol`),
report labels, and the model loaded only when asked for, so that evaluating a baseline
never imports it.
"""

from __future__ import annotations

from crystalgen.generation.protocol import BatchGenerator, Generator

__all__ = ["BatchGenerator", "Generator", "generator_name", "load_model_generator"]


def generator_name(generator: object) -> str:
    """A short label for reports: the generator's ``name``."""
    return str(generator.name)


def load_model_generator(path: str | None = None, min_distance: float | None = None, strategy: str = "model",
                         reference=None, charge_neutral: bool = True, allow_intermetallic: bool = False,
                         volume_guard: bool = True, plan_search: int = 1,
                         analogue_config=None, auto_ranking=None, like: str | None = None) -> Generator:
    """The shipped model (or the checkpoint at `path`), imported only when asked for;
    ``min_distance``: its distance guard (Å, 0 = off; None: the sampler's default);
    ``strategy``: ``"model"`` scores the model alone, ``"auto"`` analogues from
    ``reference`` (an index already stripped of the test crystals) first;
    ``charge_neutral``, ``allow_intermetallic``: its de novo plan rule; ``volume_guard``:
    cells kept in the plan's volume bin; ``plan_search``: its CSP candidates are the best
    of this many samples by plan log-probability (1: as sampled); ``analogue_config``: how
    ``"auto"`` ranks analogues (None: ``AnalogueConfig()``); ``auto_ranking``: how ``"auto"``
    merges them with the model's candidates (None: the model directory's margin, else the default);
    ``like``: the source prompt of its de novo samples (None: none)."""
    from crystalgen.api import CrystalGenerator  # lazy: heavy, and optional for baselines

    kwargs = {"strategy": strategy, "reference": reference, "charge_neutral": charge_neutral,
              "allow_intermetallic": allow_intermetallic, "volume_guard": volume_guard, "plan_search": plan_search,
              "analogue_config": analogue_config, "like": like}
    if auto_ranking is not None:
        kwargs["auto_ranking"] = auto_ranking
    if min_distance is not None:
        kwargs["min_distance"] = min_distance
    return CrystalGenerator.from_pretrained(path, **kwargs)
