"""The `crystalgen` command line.

Each sub-command lives in its own module of this package and exposes a click
command or group named ``command``; the list below says which modules exist.
Modules are imported only when found, so a partial checkout still gives a
working CLI, and an import error inside a module is never hidden.
"""

from __future__ import annotations

import os

# OpenMP threads that spin-wait make torch tens of times slower on a busy machine
# (measured here); passive waiting costs nothing on an idle one. Set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import importlib  # noqa: E402
import importlib.util  # noqa: E402

import click  # noqa: E402

from crystalgen import __version__  # noqa: E402

# module name (in crystalgen.cli) -> registered in this order
_COMMAND_MODULES = ["validate", "data", "info", "train", "sample", "evaluate", "screen"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="crystalgen")
def main() -> None:
    """crystalgen: generate, validate and screen inorganic crystal structures."""


for _name in _COMMAND_MODULES:
    if importlib.util.find_spec(f"crystalgen.cli.{_name}") is not None:
        main.add_command(importlib.import_module(f"crystalgen.cli.{_name}").command)
