"""The screening process model with the shipped model as generator (issue: a run with
several workers finished its shards, then hung; a killed run left its workers behind).

A shard worker samples in-process (no pool inside the pool), workers die with the
driver, Ctrl-C stops a run without a traceback (exit code 130) and keeps its finished
shards, and a killed or interrupted run resumes to exactly the results of an
uninterrupted one. The Ctrl-C test gates its shards (``gated_generator.py``), so the run
is busy when the signal lands on any machine.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from crystalgen.screening.config import ScreenConfig
from crystalgen.screening.pipeline import run_screen
from crystalgen.screening.shards import shard_seed
from test_screening import FIXTURE, assert_same_run, children_of, wait_until_gone

TESTS = Path(__file__).parent

#: generous for a busy 2-core machine; a hang never finishes at all
RUN_LIMIT_S = 600


def write_model_config(path: Path, candidates: int = 6) -> Path:
    path.write_text(f"""
[run]
generator = "default"
seed = 5
shard_size = 2
workers = 2

[[targets]]
formula = "NaCl"
candidates = {candidates}

[sampling]
batch_size = 8

[filters]
checks = ["distance"]

[novelty]
reference = "{FIXTURE}"

[rank]
by = "log_likelihood"

[export]
top_k = 2
""")
    return path


#: Python code that gives its process the SIGINT handling of a command typed at a terminal.
#: Ctrl-C raises KeyboardInterrupt only in a process that started with SIGINT at its default:
#: Python keeps an inherited SIG_IGN, and a non-interactive shell hands exactly that to a job
#: it starts in the background (``pytest &``, ``nohup pytest &``), from pytest down to the
#: driver, which then drops the test's SIGINT and waits on its gated shards for ever.
FOREGROUND_SIGINT = "import signal; signal.signal(signal.SIGINT, signal.default_int_handler); "


def screen(config: Path, out: Path, workers: int) -> list[str]:
    return [sys.executable, "-c", FOREGROUND_SIGINT + "from crystalgen.cli import main; main()", "screen",
            str(config), "--out", str(out), "--quiet", "--workers", str(workers)]


def start_and_wait_for_a_shard(cmd: list[str], out: Path) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + RUN_LIMIT_S
    while not list((out / "shards").glob("*.json")) and time.time() < deadline:
        assert proc.poll() is None, proc.communicate()[1]
        time.sleep(0.05)
    return proc


@pytest.fixture(scope="module")
def whole_run(tmp_path_factory):
    """An uninterrupted run in two worker processes, under a time limit."""
    tmp = tmp_path_factory.mktemp("model_screen")
    config = write_model_config(tmp / "c.toml")
    done = subprocess.run(screen(config, tmp / "whole", 2), capture_output=True, text=True, timeout=RUN_LIMIT_S)
    return config, tmp / "whole", done


def test_model_screen_with_two_workers_finishes(whole_run):
    _, out, done = whole_run
    assert done.returncode == 0, done.stderr
    assert "3 shards run" in done.stdout
    assert (out / "screen.h5").stat().st_size > 0 and len(list((out / "shards").glob("*.json"))) == 3


def test_killed_model_run_leaves_no_workers_and_resumes_identically(whole_run, tmp_path):
    config, whole, _ = whole_run
    out = tmp_path / "killed"
    proc = start_and_wait_for_a_shard(screen(config, out, 2), out)
    workers = children_of(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    done_before = len(list((out / "shards").glob("*.json")))
    assert workers and wait_until_gone(workers), "worker processes outlived the killed driver"
    resumed = subprocess.run(screen(config, out, 2), capture_output=True, text=True, timeout=RUN_LIMIT_S)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{3 - done_before} shards run" in resumed.stdout
    assert_same_run(whole, out)


GATED_SHARDS = 12  # more than the two workers hold, so the interrupted run has queued work
FREE_SHARDS = 2  # the shards a gated run can finish before its gate opens


def write_gated_config(path: Path, gate: Path) -> Path:
    """Single-candidate PyXtal shards; all but the first FREE_SHARDS wait for ``gate`` to exist."""
    free = [shard_seed(7, "NaCl", i) for i in range(FREE_SHARDS)]
    path.write_text(f"""
[run]
generator = "gated_generator:GatedGenerator"
generator_options = {{ gate = "{gate}", free = {free} }}
seed = 7
shard_size = 1
workers = 2

[[targets]]
formula = "NaCl"
candidates = {GATED_SHARDS}

[filters]
checks = ["distance", "lattice"]

[novelty]
reference = "{FIXTURE}"

[rank]
by = "energy"
calculator = "ase.calculators.lj:LennardJones"

[export]
top_k = 3
""")
    return path


def run_cli(cmd: list[str], **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, **kwargs)


@contextlib.contextmanager
def sigint_ignored():
    """This process ignores SIGINT, as one started by ``pytest &`` in a script does, and so
    do the children it starts meanwhile (the Ctrl-C test's worst case, on every machine)."""
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)


def test_ctrl_c_stops_a_busy_run_cleanly_keeps_finished_shards_and_resumes_identically(tmp_path):
    gate = tmp_path / "gate"
    config = write_gated_config(tmp_path / "gated.toml", gate)
    gate.touch()
    run_screen(ScreenConfig.from_toml(config), tmp_path / "whole", workers=1, progress=False)
    gate.unlink()

    out = tmp_path / "interrupted"
    with sigint_ignored():
        proc = run_cli(screen(config, out, 2))
    free = {f"t000-s{i:04d}.json" for i in range(FREE_SHARDS)}
    deadline = time.time() + RUN_LIMIT_S
    while not free <= {p.name for p in (out / "shards").glob("*.json")} and time.time() < deadline:
        assert proc.poll() is None, proc.communicate()[1]
        time.sleep(0.05)
    # the run cannot finish now: both workers are on (or about to take) a shard that waits for the gate
    children = children_of(proc.pid)
    proc.send_signal(signal.SIGINT)
    try:
        _, stderr = proc.communicate(timeout=60)  # a hang bound, not a speed test
    except subprocess.TimeoutExpired:
        for pid in [proc.pid, *children]:  # leave no hung driver or worker behind
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.communicate()
        raise
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "leaked" not in stderr, stderr
    assert f"interrupted: {FREE_SHARDS} of {GATED_SHARDS} shards are finished" in stderr
    assert children and wait_until_gone(children), "worker processes outlived the interrupted driver"
    assert {p.name for p in (out / "shards").iterdir()} == free  # finished shards kept, no partial files

    gate.touch()
    resumed = run_cli(screen(config, out, 1))
    stdout, stderr = resumed.communicate(timeout=RUN_LIMIT_S)
    assert resumed.returncode == 0, stderr
    assert f"{GATED_SHARDS - FREE_SHARDS} shards run" in stdout
    assert_same_run(tmp_path / "whole", out)
