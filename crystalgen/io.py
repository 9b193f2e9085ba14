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
from pathlib import Path

import h5py
import numpy as np
from ase.io import write as ase_write

from crystalgen.output_paths import OutputError, OutputTarget, output_target, staged_file, staged_folder
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
    list after every chunk), rows appended to the ``.h5`` datasets (the file closed after
    every chunk). Folder files are named by their index over the whole run, with at least
    ``width`` digits.
    """

    def __init__(self, path: str | Path, fmt: str | None = None, overwrite: bool = False, width: int = 5) -> None:
        self.target = check_target(path, fmt, overwrite)
        self.overwrite = overwrite
        self.width = width
        self.count = 0  # results written so far

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
            with h5py.File(self.target.path, "a") as f:
                _h5_append(f, results)
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


def _h5_append(f: h5py.File, results: Sequence[GenerationResult]) -> None:
    """Create the (resizable) datasets of an empty file, or extend those there, with ``results``."""
    start = int(f.attrs.get("count", 0))
    if not start:
        f.attrs["format"] = "crystalgen-results-v1"
    n_sites = np.cumsum([len(r.structure) for r in results], dtype=np.int64)
    offsets = int(f["site_offsets"][-1]) + n_sites if start else np.concatenate([[0], n_sites])
    ll = [np.nan if r.log_likelihood is None else r.log_likelihood for r in results]
    columns = {
        "formula": ([r.structure.composition.formula for r in results], _STR),
        "cif": (cif_strings(results), _STR),
        "lattice": (np.array([r.structure.lattice.matrix for r in results]).reshape(-1, 3, 3), None),
        "site_offsets": (offsets, None),
        "species": (np.array([s.specie.Z for r in results for s in r.structure], np.int64), None),
        "frac_coords": (np.array([s.frac_coords for r in results for s in r.structure], np.float64).reshape(-1, 3),
                        None),
        "log_likelihood": (np.array(ll, np.float64), None),
        "valid": (np.array([bool(r.valid) for r in results]), None),
        "trace": ([json.dumps(r.trace) for r in results], _STR),
        "report": ([json.dumps(r.report) for r in results], _STR),
        "metadata": ([json.dumps(r.metadata) for r in results], _STR),
    }
    for name, (data, dtype) in columns.items():
        if dtype is not None:
            data = np.array(data, dtype=object)
        if name not in f:
            f.create_dataset(name, data=data, dtype=dtype, maxshape=(None, *data.shape[1:]), chunks=True)
            continue
        old = f[name].shape[0]
        f[name].resize(old + len(data), axis=0)
        f[name][old:] = data
    f.attrs["count"] = start + len(results)


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
