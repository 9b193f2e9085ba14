"""The `crystalgen` command line.

Each sub-command lives in its own module of this package and exposes a click
command or group named ``command``; the list below says which modules exist.
Modules are imported only when found, so a partial checkout still gives a
working CLI, and an import error inside a module is never hidden.
"""

from __future__ import annotations

import importlib
import importlib.util

import click

from crystalgen import __version__

# module name (in crystalgen.cli) -> registered in this order
_COMMAND_MODULES = ["validate", "data", "info", "train", "sample", "evaluate", "screen"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="crystalgen")
def main() -> None:
    """crystalgen: generate, validate and screen inorganic crystal structures."""


for _name in _COMMAND_MODULES:
    if importlib.util.find_spec(f"crystalgen.cli.{_name}") is not None:
        main.add_command(importlib.import_module(f"crystalgen.cli.{_name}").command)
