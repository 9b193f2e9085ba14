"""What evaluation and screening can drive: the model, the PyXtal baseline, the oracle,
analogue generators, user code. Implement these methods; nothing else is looked up.

Every method is called with keywords (``n`` may come first, positionally) and returns
:class:`~crystalgen.results.GenerationResult` objects; the same ``seed`` must give the same
crystals. A generator may ignore the sampling knobs it has no use for (a random-structure
baseline has no temperature) but must honour what it is asked to generate.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from pymatgen.core import Composition

from crystalgen.results import GenerationResult


@runtime_checkable
class Generator(Protocol):
    """A crystal generator the evaluation harness and the screening pipeline can drive.

    ``name``: a short label for reports.
    ``parallel_safe``: True when the object may be pickled into worker processes and
        called there (the harness then fans its queries out); False for a generator that
        runs its own processes or holds unpicklable state (the model).
    """

    name: str
    parallel_safe: bool

    def predict_structure(
        self, composition: Composition | str, n: int = 1, seed: int | None = None
    ) -> list[GenerationResult]:
        """``n`` candidate crystals with exactly this cell content (structure prediction)."""
        ...

    def sample(
        self,
        n: int = 1,
        seed: int | None = None,
        formula: str | None = None,
        chemsys: str | None = None,
        spacegroup: int | None = None,
        num_atoms: int | None = None,
        temperature: float | None = None,
        batch_size: int | None = None,
        validate: bool | None = None,
    ) -> list[GenerationResult]:
        """``n`` crystals: of ``formula`` (reduced: any number of formula units), with
        exactly the elements of ``chemsys`` ("Li-Fe-O"), in ``spacegroup``, with
        ``num_atoms`` in the primitive cell; de novo when none is given. ``temperature``,
        ``batch_size`` and ``validate`` (attach a validators' report) are sampling knobs;
        None means the generator's default."""
        ...


@runtime_checkable
class BatchGenerator(Generator, Protocol):
    """A generator that batches many compositions itself, so evaluation hands it every
    query at once (the model: sequences of different compositions share batches)."""

    def predict_structures(
        self, compositions: list[Composition | str], n: int = 1, seed: int | None = None,
        validate: bool | None = None,
    ) -> list[list[GenerationResult]]:
        """``n`` candidates per composition, in order (fewer where the generator failed)."""
        ...
