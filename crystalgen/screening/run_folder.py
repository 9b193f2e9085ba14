"""One live driver per run folder, and no temporary files of a dead one.

Every file of a run is written atomically, through ``.NAME.XXXXXXXX.tmp`` beside it
(``tempfile.mkstemp``), so a driver killed mid-write leaves that temporary file behind.
The driver holds an exclusive ``flock`` on RUN_DIR for the whole run; the kernel drops it
when the process dies, even by ``kill -9``. A driver that gets the lock therefore knows that
the temporary files of the run's own names in RUN_DIR and its subfolders were left by a
dead one and removes them; anything else there is left alone. A second driver into a folder
whose run is alive is refused rather than racing it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from crystalgen.output_paths import CAN_LOCK, OutputError, lock_folder

#: ``tempfile.mkstemp(prefix=".NAME.", suffix=".tmp")``: eight characters of [a-z0-9_]
TEMP_NAME = re.compile(r"\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp")


class RunFolderBusy(OutputError):
    """Another live driver is running into this folder."""


def stale_temp_files(run_dir: Path, own: Callable[[Path], bool]) -> list[Path]:
    """The temporary files in ``run_dir`` and its subfolders that stand for a path ``own`` claims."""
    found = []
    for folder in [run_dir, *sorted(p for p in run_dir.iterdir() if p.is_dir() and not p.is_symlink())]:
        for path in sorted(folder.iterdir()):
            match = TEMP_NAME.fullmatch(path.name)
            if match and path.is_file() and not path.is_symlink() and own(folder / match["name"]):
                found.append(path)
    return found


@contextmanager
def claimed_run_folder(run_dir: Path, own: Callable[[Path], bool]) -> Iterator[list[Path]]:
    """Hold ``run_dir`` for the block and yield the dead runs' temporary files it removed
    (none where there is no ``flock``: a live run's could not be told apart)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = lock_folder(run_dir, blocking=False)
    if fd is None and CAN_LOCK:
        raise RunFolderBusy(f"another crystalgen screen is running into {run_dir}; wait for it or stop it first")
    try:
        removed = stale_temp_files(run_dir, own) if fd is not None else []
        for path in removed:
            path.unlink(missing_ok=True)
        yield removed
    finally:
        if fd is not None:
            os.close(fd)
