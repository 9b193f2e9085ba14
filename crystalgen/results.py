"""The result of generating one crystal, shared by the API, evaluation and screening.

A plain dataclass so that every generator (the shipped model, the PyXtal baseline)
returns the same thing, and so that results serialise to JSON and back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pymatgen.core import Structure


@dataclass
class GenerationResult:
    """One generated crystal.

    structure: the crystal, as a pymatgen Structure.
    trace: the reasoning trace (structured form, see ``crystalgen.trace``), or None for
        generators that do not plan (the PyXtal baseline).
    report: the validators' report as a plain dict (``ValidationReport.as_dict()``), or None
        when the result was not validated.
    log_likelihood: the generator's log-likelihood of this crystal (nats), if it has one.
    metadata: anything else a generator records (seed, temperature, target formula, ...).
    """

    structure: Structure
    trace: dict[str, Any] | None = None
    report: dict[str, Any] | None = None
    log_likelihood: float | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def valid(self) -> bool | None:
        """Whether every applicable validator check passed (None if not validated)."""
        return None if self.report is None else bool(self.report.get("pass"))

    def to_ase(self):
        """The structure as an ``ase.Atoms`` object."""
        from pymatgen.io.ase import AseAtomsAdaptor

        return AseAtomsAdaptor.get_atoms(self.structure)

    def as_dict(self) -> dict[str, Any]:
        return {
            "structure": self.structure.as_dict(),
            "trace": self.trace,
            "report": self.report,
            "log_likelihood": self.log_likelihood,
            "metadata": self.metadata,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "GenerationResult":
        return cls(
            structure=Structure.from_dict(d["structure"]),
            trace=d.get("trace"),
            report=d.get("report"),
            log_likelihood=d.get("log_likelihood"),
            metadata=dict(d.get("metadata") or {}),
        )
