"""Output targets that never destroy user files.

A command checks its output path before it does any work (so a bad ``--out`` costs
nothing), writes into a fresh temporary folder, and then moves in only the files it
made: an existing folder keeps everything else it held, and a file of the same name
is replaced only when the user asked for it (``--overwrite``). Everything is created
with the user's umask, not ``tempfile``'s private 0700/0600.

A staging folder is named after its target (``.NAME.crystalgen-staging-*`` beside it, or
``.crystalgen-staging-*`` inside an existing output folder) and holds an exclusive
``flock`` while its run lives. The kernel drops that lock when the process dies, even
by ``kill -9``, so the next run into the same target recognises a staging folder nobody
holds as left by a dead run and removes it (:func:`remove_stale_staging`); it never
touches anything else.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

try:
    import fcntl
except ImportError:  # not POSIX: staging folders are not locked, and stale ones are left alone
    fcntl = None  # type: ignore[assignment]

CAN_LOCK = fcntl is not None

STAGING_MARK = ".crystalgen-staging-"
SUFFIX_FORMATS = {".cif": "cif", ".xyz": "extxyz", ".extxyz": "extxyz", ".json": "json", ".h5": "h5", ".hdf5": "h5"}


class OutputError(ValueError):
    """An output path that cannot be written, or only by losing user files."""


@dataclass(frozen=True)
class OutputTarget:
    """Where results go: ``path`` in ``fmt``, as a folder of files or as one file."""

    path: Path
    fmt: str
    folder: bool
    #: staging folders of dead runs into this target, removed while checking it
    stale_staging: tuple[Path, ...] = ()


def umask_mode(folder: bool) -> int:
    """The mode ``open``/``mkdir`` would give a new file or folder under the current umask."""
    mask = os.umask(0)
    os.umask(mask)
    return (0o777 if folder else 0o666) & ~mask


def output_format(path: str | Path, fmt: str | None, formats: tuple[str, ...]) -> tuple[str, bool]:
    """The format from ``fmt`` or the suffix, and whether it is written as a folder (CIFs, no suffix).

    A known suffix that disagrees with ``fmt`` is refused: ``x.json`` never holds HDF5.
    """
    suffix_fmt = SUFFIX_FORMATS.get(Path(path).suffix.lower())
    if fmt is not None and fmt not in formats:
        raise OutputError(f"unknown format {fmt!r}; choose from {', '.join(formats)}")
    if fmt is not None and suffix_fmt is not None and fmt != suffix_fmt:
        raise OutputError(f"--format {fmt} does not match the extension of {path} (a {suffix_fmt} file); "
                          f"drop --format or change the extension")
    fmt = fmt or suffix_fmt or "cif"
    return fmt, fmt == "cif" and suffix_fmt is None


def _check_parent(path: Path) -> None:
    """The folders above ``path`` exist or can be made: the nearest existing one is a writable folder."""
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise OutputError(f"cannot write {path}: {ancestor} is a file, not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write {path}: folder {ancestor} is not writable")


def check_output_file(path: str | Path, overwrite: bool = False) -> Path:
    """Refuse a file target that is a folder, cannot get its folder (a file in the way, no write
    permission), or exists (unless ``overwrite``)."""
    path = Path(os.path.abspath(path))
    if path.is_dir():
        raise OutputError(f"cannot write {path}: it is a folder, and a file is expected here")
    if path.exists() and not overwrite:
        raise OutputError(f"{path} already exists; choose another name or pass --overwrite")
    _check_parent(path)
    return path


def check_output_folder(path: str | Path, overwrite: bool = False) -> Path:
    """Refuse a folder target that is a file, an unwritable folder, or already holds files (unless ``overwrite``)."""
    path = Path(os.path.abspath(path))
    if path.exists():
        if not path.is_dir():
            raise OutputError(f"cannot write {path}: it is a file, and a folder is expected here")
        if not os.access(path, os.W_OK | os.X_OK):
            raise OutputError(f"cannot write into {path}: the folder is not writable")
        if not overwrite and any(path.iterdir()):
            raise OutputError(f"{path} already holds files; choose a new folder or pass --overwrite "
                              f"(which replaces only files of the same names)")
        return path
    _check_parent(path)
    return path


def output_target(path: str | Path, fmt: str | None, formats: tuple[str, ...], overwrite: bool = False) -> OutputTarget:
    """Resolve and check an output path before any work is done, after removing the staging
    folders a dead run into it left behind; raises :class:`OutputError`."""
    fmt, folder = output_format(path, fmt, formats)
    stale = remove_stale_staging(path)
    checked = check_output_folder(path, overwrite) if folder else check_output_file(path, overwrite)
    return OutputTarget(checked, fmt, folder, tuple(stale))


def lock_folder(folder: Path, blocking: bool) -> int | None:
    """An open descriptor of ``folder`` holding an exclusive ``flock`` on it, or None when
    another process holds it (or there is no ``flock``: see :data:`CAN_LOCK`)."""
    if fcntl is None:
        return None
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def staging_folders(path: str | Path) -> list[Path]:
    """The staging folders of runs into ``path``, live or dead."""
    path = Path(os.path.abspath(path))
    found = list(path.parent.glob(f".{path.name}{STAGING_MARK}*"))
    if path.is_dir() and not path.is_symlink():
        found += path.glob(f"{STAGING_MARK}*")
    return sorted(p for p in found if p.is_dir() and not p.is_symlink())


def remove_stale_staging(path: str | Path) -> list[Path]:
    """Remove the staging folders that dead runs into ``path`` left (no process holds their
    lock) and return them; without ``flock`` (not POSIX) none is removed."""
    stale: list[Path] = []
    for folder in staging_folders(path) if fcntl is not None else []:
        fd = lock_folder(folder, blocking=False)
        if fd is None:  # a live run is writing through it
            continue
        try:
            shutil.rmtree(folder, ignore_errors=True)
        finally:
            os.close(fd)
        stale.append(folder)
    return stale


@contextmanager
def staging_folder(parent: Path, prefix: str) -> Iterator[Path]:
    """A fresh folder ``parent/prefix*`` locked for as long as the block runs, then removed
    (unless the block moved it away)."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    fd = lock_folder(tmp, blocking=True)
    try:
        yield tmp
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        if fd is not None:
            os.close(fd)


@contextmanager
def staged_folder(path: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty temporary folder; on success move its files into ``path``.

    A new ``path`` is the temporary folder renamed (one atomic step). An existing one
    receives the files one by one; nothing else in it is touched, and a file of the
    same name is replaced only with ``overwrite``. On failure nothing is moved.
    """
    path = check_output_folder(path, overwrite)
    existed = path.exists()
    path.parent.mkdir(parents=True, exist_ok=True)
    parent, prefix = (path, STAGING_MARK) if existed else (path.parent, f".{path.name}{STAGING_MARK}")
    with staging_folder(parent, prefix) as tmp:
        yield tmp
        if not existed:
            os.chmod(tmp, umask_mode(folder=True))
            os.replace(tmp, path)
            return
        for item in sorted(tmp.iterdir()):
            dest = path / item.name
            if dest.exists() and (not overwrite or dest.is_dir()):
                raise OutputError(f"{dest} appeared while writing; left it untouched")
            os.replace(item, dest)


@contextmanager
def staged_file(path: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary file path beside ``path``; on success rename it onto ``path``."""
    path = check_output_file(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    with staging_folder(path.parent, f".{path.name}{STAGING_MARK}") as tmp:
        yield tmp / path.name
        os.replace(tmp / path.name, path)
