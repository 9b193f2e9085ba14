"""crystalgen: crystal-structure generation with an Intern-S2-style backbone.

The public API is imported lazily so that `import crystalgen` stays cheap for
the CLI and for code (training on a GPU box) that never touches pymatgen.
"""

from __future__ import annotations

from importlib import metadata

try:
    __version__ = metadata.version("crystalgen")
except metadata.PackageNotFoundError:  # running from a source tree
    __version__ = "0.1.0"

__all__ = ["__version__", "CrystalGenerator", "GenerationResult"]


def __getattr__(name: str):
    if name in ("CrystalGenerator", "GenerationResult"):
        from crystalgen import api

        return getattr(api, name)
    raise AttributeError(f"module 'crystalgen' has no attribute {name!r}")
