"""Logs stay readable: no progress bars when stderr is not a terminal, no spglib warning noise."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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


_SPGLIB_NOISE = """
import numpy as np, spglib
import crystalgen  # after spglib: the C library reads the setting each time it would warn
rng = np.random.default_rng(0)
for _ in range(100):  # distorted random cells: spglib's loose-tolerance search gives up on some
    cell = (np.eye(3) * 4 + rng.normal(size=(3, 3)) * 0.8, rng.random((6, 3)), [1, 1, 2, 2, 3, 3])
    for symprec in (0.5, 1.0, 1.5):
        spglib.get_symmetry_dataset(cell, symprec=symprec)
print("done")
"""


def test_spglib_failure_noise_stays_off_stderr():
    env = {k: v for k, v in os.environ.items() if k != "SPGLIB_WARNING"}
    quiet = subprocess.run([sys.executable, "-c", _SPGLIB_NOISE], env=env, capture_output=True, text=True, check=True)
    loud = subprocess.run([sys.executable, "-c", _SPGLIB_NOISE], env={**env, "SPGLIB_WARNING": "ON"},
                          capture_output=True, text=True, check=True)
    assert "get_bravais_exact_positions_and_lattice failed" in loud.stderr  # the cells do trigger it
    assert "spglib" not in quiet.stderr and quiet.stdout.strip() == "done"


def test_progress_bars_draw_only_on_a_terminal(monkeypatch):
    import io

    from crystalgen import progress

    fake = io.StringIO()
    monkeypatch.setattr(sys, "stderr", fake)
    for _ in progress.progress_bar(range(50), enabled=True, mininterval=0):
        pass
    assert fake.getvalue() == "" and not progress.interactive()

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty = Terminal()
    monkeypatch.setattr(sys, "stderr", tty)
    assert progress.interactive()
    for _ in progress.progress_bar(range(5), enabled=True, file=tty, mininterval=0):
        pass
    assert "\r" in tty.getvalue()
    for _ in progress.progress_bar(range(5), enabled=False, file=Terminal()):
        pass


def test_training_asked_for_a_bar_writes_none_into_a_redirected_log(tmp_path):
    """``train(progress=True)``, as a script calls it, with its output going to a log file."""
    tests = Path(__file__).parent
    code = f"""
import sys
sys.path.insert(0, {str(tests)!r})
from training_data import fixture_corpus_path
from crystalgen.training.config import load_config
from crystalgen.training.loop import train
config = load_config({str(tests.parent / "examples" / "train_tiny.toml")!r},
                     ["num_threads=1", "sample_every=0", "log_every=2", "eval_every=100", "max_steps=4",
                      "data.batch_size=4", "data.val_fraction=0.1"])
train(config, fixture_corpus_path(), {str(tmp_path / "run")!r}, progress=True)
"""
    log = tmp_path / "train.log"
    with open(log, "w") as f:
        subprocess.run([sys.executable, "-c", code], stdout=f, stderr=subprocess.STDOUT, check=True, timeout=600,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    text = log.read_text()
    assert "event=start" in text and "step=4" in text  # the log lines are there
    assert "\r" not in text and "it/s" not in text
