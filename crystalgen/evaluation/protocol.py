"""What the harness needs from a generator, so the model, the PyXtal baseline and the
ground-truth oracle are all scored by the same code.

`crystalgen.api.CrystalGenerator` satisfies this protocol structurally; it is loaded
lazily (`load_model_generator`) so that evaluating a baseline never imports the model.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from pymatgen.core import Composition

from crystalgen.results import GenerationResult


@runtime_checkable
class Generator(Protocol):
    """A crystal generator the harness can score.

    predict_structure: `n` candidate crystals for one exact composition (the cell's
        atom counts), reproducible for a given `seed` (CSP task).
    sample: `n` crystals of the generator's own choosing (de novo task).
    """

    def predict_structure(
        self, composition: Composition | str, n: int = 1, seed: int | None = None
    ) -> list[GenerationResult]: ...

    def sample(self, n: int = 1, seed: int | None = None) -> list[GenerationResult]: ...


def generator_name(generator: object) -> str:
    """A short label for reports: the generator's `name` attribute, else its class name."""
    return str(getattr(generator, "name", type(generator).__name__))


def load_model_generator(path: str | None = None, min_distance: float | None = None) -> Generator:
    """The shipped model (or the checkpoint at `path`), imported only when asked for;
    ``min_distance``: its distance guard (Å, 0 = off; None: the sampler's default)."""
    from crystalgen.api import CrystalGenerator  # lazy: heavy, and optional for baselines

    kwargs = {} if min_distance is None else {"min_distance": min_distance}
    return CrystalGenerator.from_pretrained(path, **kwargs)
