"""``python -m crystalgen.training``: the ``crystalgen train`` command without the rest of the CLI."""

from crystalgen.training.cli import command

if __name__ == "__main__":
    command(prog_name="python -m crystalgen.training")
