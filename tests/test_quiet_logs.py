"""Logs stay readable: no progress bars when stderr is not a terminal, no spglib warning noise."""

from __future__ import annotations

import os
import subprocess
import sys

from click.testing import CliRunner

from crystalgen.cli import main


def test_no_progress_bar_when_stderr_is_not_a_terminal(mpts52_sample_path):
    result = CliRunner().invoke(main, ["validate", str(mpts52_sample_path)])  # no --quiet; CliRunner is no tty
    assert result.exit_code == 0, result.output
    assert "validating" not in result.output and "it/s" not in result.output and "struct/s" not in result.output
    assert "overall" in result.output


def test_spglib_warnings_are_off_unless_the_user_asks():
    code = "import os, crystalgen; print(os.environ['SPGLIB_WARNING'])"
    env = {k: v for k, v in os.environ.items() if k != "SPGLIB_WARNING"}
    off = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    on = subprocess.run([sys.executable, "-c", code], env={**env, "SPGLIB_WARNING": "ON"}, capture_output=True,
                        text=True, check=True)
    assert off.stdout.strip() == "OFF" and on.stdout.strip() == "ON"
