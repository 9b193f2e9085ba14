"""Outputs of a process killed with SIGKILL while writing: the ``.h5`` on disk is a valid
file holding whole chunks only, and the staging folder the dead run left is removed by
the next run into the same target (never a live run's, never a user's file); the same
holds for the temporary files of a screening run folder."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from crystalgen.cli import main
from crystalgen.io import read_h5
from crystalgen.output_paths import STAGING_MARK, lock_folder, output_target, staging_folder, staging_folders
from crystalgen.screening.config import ScreenConfig
from crystalgen.screening.pipeline import run_screen
from crystalgen.screening.run_folder import RunFolderBusy
from test_screening import write_config

TESTS = Path(__file__).parent
LIMIT_S = 600  # generous for a busy machine; a process that never gets there fails the test

# Writes chunk 1 (2 crystals), records the file's hash, then stops for good halfway through
# appending chunk 2 (after half of the datasets grew) and says so in READY.
_KILLED_MID_APPEND = """
import hashlib, sys, time
from pathlib import Path
from crystalgen import io
from crystalgen.data.readers import read_structures
from crystalgen.results import GenerationResult

out, ready = Path(sys.argv[1]), Path(sys.argv[2])
results = [GenerationResult(r.structure, log_likelihood=-float(i))
           for i, r in enumerate(read_structures(sys.argv[3]))][:4]
writer = io.ResultWriter(out)
writer.write(results[:2])
digest = hashlib.sha256(out.read_bytes()).hexdigest()
extend = io._h5_extend

def stalled(f, columns, sites):
    if int(f.attrs.get("count", 0)) < 2:  # catching the spare up with chunk 1
        return extend(f, columns, sites)
    names = list(columns)
    extend(f, {k: columns[k] for k in names[: len(names) // 2]}, sites)
    f.flush()
    ready.write_text(digest)
    time.sleep(3600)

io._h5_extend = stalled
writer.write(results[2:])
"""


def _wait_for(path: Path, proc: subprocess.Popen) -> None:
    deadline = time.time() + LIMIT_S
    while not path.exists() and time.time() < deadline:
        assert proc.poll() is None, proc.communicate()[1]
        time.sleep(0.05)
    assert path.exists(), "the process never got there"


def _count(path: Path) -> int:
    with h5py.File(path, "r") as f:
        return int(f.attrs["count"])


def _assert_whole_chunks(path: Path, chunk: int) -> int:
    """The file opens, every dataset holds the rows of the same whole chunks; returns their count."""
    with h5py.File(path, "r") as f:
        count = int(f.attrs["count"])
        offsets = f["site_offsets"][:]
        assert len(offsets) == count + 1
        for name in ("formula", "cif", "lattice", "log_likelihood", "valid", "trace", "report", "metadata"):
            assert f[name].shape[0] == count, name
        for name in ("species", "frac_coords"):
            assert f[name].shape[0] == offsets[-1], name
    assert count and count % chunk == 0
    assert len(read_h5(path)) == count
    return count


def test_h5_killed_mid_append_keeps_the_file_of_the_finished_chunk(tmp_path, pool_sample_path, pool_records):
    out, ready = tmp_path / "out.h5", tmp_path / "ready"
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_MID_APPEND, str(out), str(ready), str(pool_sample_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(ready, proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert hashlib.sha256(out.read_bytes()).hexdigest() == ready.read_text()  # untouched by the killed append
    assert _assert_whole_chunks(out, chunk=2) == 2
    for got, want in zip(read_h5(out), pool_records[:2], strict=True):
        np.testing.assert_allclose(got.structure.lattice.matrix, want.structure.lattice.matrix)
    (stale,) = staging_folders(out)  # the dead run's spare
    target = output_target(out, None, ("h5",), overwrite=True)
    assert target.stale_staging == (stale,) and not stale.exists()


def test_sample_killed_mid_run_leaves_whole_chunks_and_the_next_run_cleans_up(tmp_path):
    out = tmp_path / "run.h5"
    user_file = tmp_path / f".run.h5{STAGING_MARK}notes"  # a file, not a staging folder: never removed
    user_file.write_text("mine")
    cmd = [sys.executable, "-c", "from crystalgen.cli import main; main()", "sample", "--formula", "NaCl",
           "-n", "100000", "--chunk-size", "8", "--batch-size", "8", "--workers", "0", "--seed", "3",
           "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(out, proc)  # the first chunk is on disk (it appears by a rename)
    deadline = time.time() + LIMIT_S
    while _count(out) < 16 and time.time() < deadline:  # and the second, so the spare of the third exists
        assert proc.poll() is None, proc.communicate()[1]
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert _assert_whole_chunks(out, chunk=8) >= 16

    with staging_folder(tmp_path, f".run.h5{STAGING_MARK}") as live:  # another run, still writing
        again = subprocess.run([*cmd[:7], "16", *cmd[8:], "--overwrite"], capture_output=True, text=True,
                               timeout=LIMIT_S)
        assert again.returncode == 0, again.stderr
        assert live.exists()
    assert _assert_whole_chunks(out, chunk=8) == 16
    removed = [line for line in again.stderr.splitlines() if line.startswith("removed ")]
    assert len(removed) == 1 and "killed" in removed[0]
    assert staging_folders(out) == [] and user_file.read_text() == "mine"


def test_a_killed_folder_write_leaves_a_staging_folder_that_the_next_run_removes(tmp_path):
    out = tmp_path / "cifs"
    code = ("import sys, time\nfrom pathlib import Path\nfrom crystalgen.output_paths import staged_folder\n"
            "with staged_folder(Path(sys.argv[1]), overwrite=True) as tmp:\n"
            "    (tmp / 'half.cif').write_text('data_x')\n    Path(sys.argv[2]).touch()\n    time.sleep(3600)\n")
    out.mkdir()
    (out / "00000_NaCl.cif").write_text("a user's file")
    ready = tmp_path / "ready"
    proc = subprocess.Popen([sys.executable, "-c", code, str(out), str(ready)], stderr=subprocess.PIPE, text=True)
    _wait_for(ready, proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    (stale,) = staging_folders(out)
    assert stale.parent == out and (stale / "half.cif").exists()
    target = output_target(out, None, ("cif",), overwrite=True)
    assert target.stale_staging == (stale,)
    assert sorted(p.name for p in out.iterdir()) == ["00000_NaCl.cif"]  # only the dead run's folder went
    assert (out / "00000_NaCl.cif").read_text() == "a user's file"


def test_a_screening_run_removes_only_the_temporary_files_a_dead_run_left_and_never_races_a_live_one(tmp_path):
    """``.NAME.XXXXXXXX.tmp`` is what an atomic write killed halfway leaves (``tempfile.mkstemp``)."""
    config_path = write_config(tmp_path / "c.toml", nacl=3, lio=3)
    config = ScreenConfig.from_toml(config_path)
    run_dir = tmp_path / "run"
    for folder in ("shards", "cifs", "notes"):
        (run_dir / folder).mkdir(parents=True)
    dead = [run_dir / ".config.json.k3x_9q2a.tmp", run_dir / ".screen.h5.ab12cd34.tmp",
            run_dir / "shards" / ".t001-s0000.json.0a1b2c3d.tmp", run_dir / "cifs" / ".NaCl_001_NaCl.cif.zzzzzzzz.tmp"]
    users = [run_dir / ".notes.txt.ab12cd34.tmp",  # not a name the run writes
             run_dir / ".screen.h5.tmp",  # not a mkstemp name
             run_dir / "shards" / ".t009-s0000.json.0a1b2c3d.tmp",  # no such shard in this run
             run_dir / "notes" / ".screen.h5.ab12cd34.tmp"]  # the run writes no screen.h5 there
    for path in dead + users:
        path.write_text("partial")

    live = lock_folder(run_dir, blocking=True)  # a live run into the folder
    try:
        with pytest.raises(RunFolderBusy):
            run_screen(config, run_dir, workers=1, progress=False)
        cli = CliRunner().invoke(main, ["screen", str(config_path), "--out", str(run_dir), "--quiet", "--overwrite"])
    finally:
        os.close(live)
    assert cli.exit_code == 1 and "another crystalgen screen is running into" in cli.output, cli.output
    assert all(p.exists() for p in dead + users), "a live run's files were touched"

    run_screen(config, run_dir, workers=1, progress=False)
    assert not any(p.exists() for p in dead)
    assert all(p.read_text() == "partial" for p in users)
    assert (run_dir / "screen.h5").stat().st_size > 0
    assert sorted(run_dir.glob("**/*.tmp")) == sorted(users)
