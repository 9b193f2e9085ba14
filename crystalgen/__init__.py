"""crystalgen: crystal-structure generation with an Intern-S2-style backbone.

The root package is the top-layer facade (crystalgen.devtools.imports): it names the
public API but imports it lazily, in ``__getattr__``, because Python runs this file
before every submodule; `import crystalgen.heads` (training on a GPU box that never
touches pymatgen, the CLI's start-up) then loads nothing else.
"""

from __future__ import annotations

import os
from importlib import metadata

# spglib's C library prints warnings such as "get_bravais_exact_positions_and_lattice failed" on
# stderr whenever a symmetry search at a loose tolerance gives up; crystalgen handles those results
# (a failed check, a P1 CIF), so they are noise. Errors are still raised or returned; setting
# SPGLIB_WARNING yourself (e.g. to ON) overrides this.
os.environ.setdefault("SPGLIB_WARNING", "OFF")

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
