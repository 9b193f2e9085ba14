"""``crystalgen train``: defined in :mod:`crystalgen.training.cli` (importable without pymatgen)."""

from crystalgen.training.cli import command

__all__ = ["command"]
