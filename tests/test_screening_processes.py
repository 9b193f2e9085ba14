"""The screening process model with the shipped model as generator (issue: a run with
several workers finished its shards, then hung; a killed run left its workers behind).

A shard worker samples in-process (no pool inside the pool), workers die with the
driver, Ctrl-C stops a run within seconds without a traceback, and a killed run resumes
to exactly the results of an uninterrupted one.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_screening import FIXTURE, assert_same_run, children_of, wait_until_gone

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


def screen(config: Path, out: Path, workers: int) -> list[str]:
    return [sys.executable, "-c", "from crystalgen.cli import main; main()", "screen", str(config),
            "--out", str(out), "--quiet", "--workers", str(workers)]


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


def test_ctrl_c_stops_the_run_quickly_and_cleanly(tmp_path):
    config = write_model_config(tmp_path / "long.toml", candidates=120)  # still running when interrupted
    proc = subprocess.Popen(screen(config, tmp_path / "interrupted", 2), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + RUN_LIMIT_S
    while len(children_of(proc.pid)) < 2 and time.time() < deadline:  # the workers have started
        assert proc.poll() is None, proc.communicate()[1]
        time.sleep(0.05)
    time.sleep(2.0)  # into their first shard
    workers = children_of(proc.pid)
    t0 = time.time()
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    # "within seconds", not the minutes it once took; the bound leaves room for a loaded 2-core CI machine
    assert time.time() - t0 < 30, "Ctrl-C took too long"
    assert proc.returncode != 0 and "Traceback" not in stderr, stderr
    assert wait_until_gone(workers), "worker processes outlived the interrupted driver"
