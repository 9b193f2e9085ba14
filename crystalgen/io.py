"""Writing generated crystals: symmetrised CIF, extxyz, JSON and HDF5.

Every write goes through a temporary path beside the destination and moves only its
own files into place (:mod:`crystalgen.output_paths`), so a failed write never leaves a
partial file behind and never removes a file it did not write. :class:`ResultWriter`
writes a long run chunk by chunk: memory holds one chunk, and an interrupted run keeps
the chunks it finished.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

import h5py
import numpy as np
from ase.io import write as ase_write

from crystalgen.output_paths import (
    STAGING_MARK,
    OutputError,
    OutputTarget,
    output_target,
    staged_file,
    staged_folder,
    staging_folder,
    umask_mode,
)
from crystalgen.results import GenerationResult

FORMATS = ("cif", "extxyz", "json", "h5")
_STR = h5py.string_dtype()


def cif_string(result: GenerationResult, symprec: float = 0.01) -> str:
    """A CIF carrying the space group (symmetrised), falling back to P1 if spglib fails.

    Generated cells are symmetric by construction, so a tight tolerance keeps the
    written structure identical to the generated one.
    """
    return _symmetrised_cif(result.structure, symprec)


def _symmetrised_cif(structure, symprec: float = 0.01) -> str:
    from pymatgen.io.cif import CifWriter

    try:
        return str(CifWriter(structure, symprec=symprec))
    except Exception:  # spglib could not symmetrise this cell: write it as P1
        return str(CifWriter(structure))


def cif_strings(results: Sequence[GenerationResult]) -> list[str]:
    """:func:`cif_string` of every result; on all cores when there are many (symmetrising
    runs spglib several times per structure: ~13 ms each on the 2-core dev machine)."""
    from crystalgen.parallel import parallel_map

    return parallel_map(_symmetrised_cif, [r.structure for r in results], workers=os.cpu_count() or 1,
                        chunksize=32, progress=False, serial_below=64)


def check_target(path: str | Path, fmt: str | None = None, overwrite: bool = False) -> OutputTarget:
    """Check where :func:`write_results` would write, before any crystal is generated.

    The format comes from ``fmt`` or the suffix (a suffix-less path is a folder of CIFs);
    raises :class:`crystalgen.output_paths.OutputError` for a mismatch, a missing or
    unwritable folder, a file where a folder is expected (or the reverse), or an existing
    target without ``overwrite``.
    """
    return output_target(path, fmt, FORMATS, overwrite)


class ResultWriter:
    """Writes results to one target chunk by chunk, so a long run holds one chunk in memory
    and an interrupted run keeps every chunk it finished.

    The first chunk goes through a temporary path like any write (:mod:`crystalgen.output_paths`);
    later chunks are added to what is there: new CIF files moved into the folder, blocks
    or frames appended to a ``.cif`` / ``.extxyz`` file in one write call, items written
    over a ``.json`` list's closing bracket in one write call (the file is a valid JSON
    list after every chunk), rows appended to a spare ``.h5`` that then replaces the file
    (:class:`_H5Appender`: a killed run leaves a valid file of whole chunks). Folder files
    are named by their index over the whole run, with at least ``width`` digits.
    """

    def __init__(self, path: str | Path, fmt: str | None = None, overwrite: bool = False, width: int = 5) -> None:
        self.target = check_target(path, fmt, overwrite)
        self.overwrite = overwrite
        self.width = width
        self.count = 0  # results written so far
        self._h5 = _H5Appender(self.target.path)

    def __enter__(self) -> "ResultWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Remove what the writer staged for later chunks; the target is complete after every chunk."""
        self._h5.close()

    def write(self, results: Sequence[GenerationResult]) -> None:
        """Add one chunk of results to the target."""
        if not results:
            return
        names = [f"{self.count + i:0{self.width}d}_{r.structure.composition.reduced_formula}"
                 for i, r in enumerate(results)]
        if self.target.folder:
            self._write_folder(names, results)
        elif self.count == 0:
            with staged_file(self.target.path, self.overwrite) as tmp:
                if self.target.fmt == "h5":
                    with h5py.File(tmp, "w") as f:
                        _h5_append(f, results)
                else:
                    tmp.write_bytes(self._text(names, results, first=True))
        elif self.target.fmt == "h5":
            self._h5.append(*_h5_columns(results), self.count)
        else:
            data = self._text(names, results, first=False)
            fd = os.open(self.target.path, os.O_WRONLY)
            try:
                size = os.fstat(fd).st_size
                os.pwrite(fd, data, size - 1 if self.target.fmt == "json" else size)  # json: over the "]"
                os.fsync(fd)
            finally:
                os.close(fd)
        self.count += len(results)

    def _write_folder(self, names: list[str], results: Sequence[GenerationResult]) -> None:
        path = self.target.path
        if self.count and not self.overwrite:
            taken = [n for n in names if (path / f"{n}.cif").exists()]
            if taken:
                raise OutputError(f"{path / taken[0]}.cif appeared while writing; left it untouched")
        # after the first chunk the folder holds this run's files: only the new names are checked
        with staged_folder(path, self.overwrite or self.count > 0) as tmp:
            for name, text in zip(names, cif_strings(results)):
                (tmp / f"{name}.cif").write_text(text)

    def _text(self, names: list[str], results: Sequence[GenerationResult], first: bool) -> bytes:
        """The chunk as bytes of a ``cif``, ``extxyz`` or ``json`` file (``first``: the file's
        start; else what follows what is there, for json in place of its final ``]``)."""
        fmt = self.target.fmt
        if fmt == "cif":
            blocks = [text.replace("data_", f"data_{name}_", 1) for name, text in zip(names, cif_strings(results))]
            return (("" if first else "\n") + "\n".join(blocks)).encode()
        if fmt == "extxyz":
            frames = []
            for r in results:
                atoms = r.to_ase()
                atoms.info["log_likelihood"] = r.log_likelihood if r.log_likelihood is not None else float("nan")
                atoms.info["valid"] = bool(r.valid) if r.valid is not None else False
                frames.append(atoms)
            buffer = io.StringIO()
            ase_write(buffer, frames, format="extxyz")
            return buffer.getvalue().encode()
        items = json.dumps([r.as_dict() for r in results])
        return (items if first else ", " + items[1:]).encode()


def write_results(results: Sequence[GenerationResult], path: str | Path, fmt: str | None = None,
                  overwrite: bool = False) -> Path:
    """Write results to ``path`` in ``fmt`` (default: from the suffix; a folder for ``cif``).

    cif: a folder of one symmetrised CIF per structure, or one multi-block ``.cif`` file;
    extxyz: all structures as frames of one file, with log-likelihood and validity;
    json: a list of ``GenerationResult.as_dict()``; h5: structures, traces and reports.
    An existing file, or a folder holding files, is written into only with ``overwrite``,
    and then only files of the same names are replaced. (One chunk of a :class:`ResultWriter`.)
    """
    ResultWriter(path, fmt, overwrite).write(results)
    return Path(path)


def write_h5(results: Sequence[GenerationResult], path: Path) -> None:
    """One HDF5 file: CIF text, lattice/species/coordinates, traces, reports, scores."""
    with h5py.File(path, "w") as f:
        _h5_append(f, results)


_H5_TEXT = ("formula", "cif", "trace", "report", "metadata")  # variable-length string columns
_H5_SITES = ("species", "frac_coords")  # one row per site; the others have one row per crystal


def _h5_columns(results: Sequence[GenerationResult]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The rows ``results`` add to each dataset, and their number of sites."""
    ll = [np.nan if r.log_likelihood is None else r.log_likelihood for r in results]
    columns = {
        "formula": [r.structure.composition.formula for r in results],
        "cif": cif_strings(results),
        "lattice": np.array([r.structure.lattice.matrix for r in results]).reshape(-1, 3, 3),
        "species": np.array([s.specie.Z for r in results for s in r.structure], np.int64),
        "frac_coords": np.array([s.frac_coords for r in results for s in r.structure], np.float64).reshape(-1, 3),
        "log_likelihood": np.array(ll, np.float64),
        "valid": np.array([bool(r.valid) for r in results]),
        "trace": [json.dumps(r.trace) for r in results],
        "report": [json.dumps(r.report) for r in results],
        "metadata": [json.dumps(r.metadata) for r in results],
    }
    sites = np.array([len(r.structure) for r in results], np.int64)
    return {k: np.array(v, dtype=object) if k in _H5_TEXT else v for k, v in columns.items()}, sites


def _h5_rows(f: h5py.File, start: int, stop: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Crystals ``start:stop`` of a results file, as :func:`_h5_columns` gives them."""
    offsets = f["site_offsets"][start:stop + 1]
    columns = {}
    for name in f:
        if name in _H5_TEXT:
            columns[name] = np.array(f[name].asstr()[start:stop], dtype=object)
        elif name in _H5_SITES:
            columns[name] = f[name][offsets[0]:offsets[-1]]
        elif name != "site_offsets":
            columns[name] = f[name][start:stop]
    return columns, np.diff(offsets)


def _h5_extend(f: h5py.File, columns: dict[str, np.ndarray], sites: np.ndarray) -> None:
    """Create the (resizable) datasets of an empty file, or extend those there, with these rows."""
    start = int(f.attrs.get("count", 0))
    if not start:
        f.attrs["format"] = "crystalgen-results-v1"
    ends = np.cumsum(sites, dtype=np.int64)
    columns = {**columns, "site_offsets": int(f["site_offsets"][-1]) + ends if start else np.concatenate([[0], ends])}
    for name, data in columns.items():
        if name not in f:
            f.create_dataset(name, data=data, dtype=_STR if name in _H5_TEXT else None,
                             maxshape=(None, *data.shape[1:]), chunks=True)
            continue
        old = f[name].shape[0]
        f[name].resize(old + len(data), axis=0)
        f[name][old:] = data
    f.attrs["count"] = start + len(sites)


def _h5_append(f: h5py.File, results: Sequence[GenerationResult]) -> None:
    """Add ``results`` to an open results file (new or holding results)."""
    _h5_extend(f, *_h5_columns(results))


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _H5Appender:
    """Appends chunks to a results ``.h5`` so that the file on disk is, at every moment, a
    complete HDF5 file holding whole chunks only: HDF5 rewrites its metadata in place, so a
    process killed during an in-place append can leave a file no library opens.

    A chunk is appended to a spare file in a staging folder beside the target, which
    then replaces the target in one ``os.replace``. The replaced file, one chunk behind,
    is kept through a hard link and becomes the next spare, so each chunk is written
    twice and nothing is copied whole (disk: twice the file while the run lasts).
    """

    def __init__(self, target: Path) -> None:
        self.target = target
        self._staging = ExitStack()
        self._folder: Path | None = None
        self._spare_count = 0  # crystals in the spare (when there is one)

    def append(self, columns: dict[str, np.ndarray], sites: np.ndarray, count: int) -> None:
        """Add one chunk's rows (:func:`_h5_columns`) to the target, which holds ``count`` crystals."""
        if self._folder is None:
            self._folder = self._staging.enter_context(
                staging_folder(self.target.parent, f".{self.target.name}{STAGING_MARK}"))
        spare, previous = self._folder / "spare.h5", self._folder / "previous.h5"
        if not spare.exists():
            self._spare_count = 0
        with h5py.File(spare, "a") as f, h5py.File(self.target, "r") as committed:
            if self._spare_count < count:  # catch up with the chunk(s) the target has and the spare lacks
                _h5_extend(f, *_h5_rows(committed, self._spare_count, count))
            _h5_extend(f, columns, sites)
        _fsync(spare)
        try:
            os.link(self.target, previous)
        except OSError:  # no hard links here: the next spare is rebuilt from the target
            previous = None
        os.chmod(spare, umask_mode(folder=False))
        os.replace(spare, self.target)
        if previous is not None:
            os.replace(previous, spare)
            self._spare_count = count

    def close(self) -> None:
        """Remove the staging folder (the target is complete after every chunk)."""
        self._staging.close()
        self._folder = None


def read_h5(path: str | Path) -> list[GenerationResult]:
    """Read results written by :func:`write_h5` back (structures from the stored arrays)."""
    from pymatgen.core import Lattice, Structure

    out = []
    with h5py.File(path, "r") as f:
        offsets = f["site_offsets"][:]
        for i in range(int(f.attrs["count"])):
            a, b = offsets[i], offsets[i + 1]
            structure = Structure(Lattice(f["lattice"][i]), f["species"][a:b].tolist(), f["frac_coords"][a:b])
            ll = float(f["log_likelihood"][i])
            out.append(
                GenerationResult(
                    structure=structure,
                    trace=json.loads(f["trace"][i]),
                    report=json.loads(f["report"][i]),
                    log_likelihood=None if ll != ll else ll,
                    metadata=json.loads(f["metadata"][i]),
                )
            )
    return out
