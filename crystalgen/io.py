"""Writing generated crystals: symmetrised CIF, extxyz, JSON and HDF5.

Every writer goes through a temporary path beside the destination and moves only its
own files into place at the end (:mod:`crystalgen.output_paths`), so an interrupted or
failed run never leaves a partial file behind and never removes a file it did not write.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

from crystalgen.output_paths import OutputTarget, output_target, staged_file, staged_folder
from crystalgen.results import GenerationResult

FORMATS = ("cif", "extxyz", "json", "h5")


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


def _names(results: Sequence[GenerationResult]) -> list[str]:
    return [f"{i:05d}_{r.structure.composition.reduced_formula}" for i, r in enumerate(results)]


def check_target(path: str | Path, fmt: str | None = None, overwrite: bool = False) -> OutputTarget:
    """Check where :func:`write_results` would write, before any crystal is generated.

    The format comes from ``fmt`` or the suffix (a suffix-less path is a folder of CIFs);
    raises :class:`crystalgen.output_paths.OutputError` for a mismatch, a missing or
    unwritable folder, a file where a folder is expected (or the reverse), or an existing
    target without ``overwrite``.
    """
    return output_target(path, fmt, FORMATS, overwrite)


def write_results(results: Sequence[GenerationResult], path: str | Path, fmt: str | None = None,
                  overwrite: bool = False) -> Path:
    """Write results to ``path`` in ``fmt`` (default: from the suffix; a folder for ``cif``).

    cif: a folder of one symmetrised CIF per structure, or one multi-block ``.cif`` file;
    extxyz: all structures as frames of one file, with log-likelihood and validity;
    json: a list of ``GenerationResult.as_dict()``; h5: structures, traces and reports.
    An existing file, or a folder holding files, is written into only with ``overwrite``,
    and then only files of the same names are replaced.
    """
    target = check_target(path, fmt, overwrite)
    fmt = target.fmt
    if target.folder:
        with staged_folder(target.path, overwrite) as tmp:
            for name, text in zip(_names(results), cif_strings(results)):
                (tmp / f"{name}.cif").write_text(text)
        return Path(path)
    with staged_file(target.path, overwrite) as tmp:
        if fmt == "cif":
            blocks = []
            for name, text in zip(_names(results), cif_strings(results)):
                blocks.append(text.replace("data_", f"data_{name}_", 1))
            tmp.write_text("\n".join(blocks))
        elif fmt == "extxyz":
            from ase.io import write

            frames = []
            for r in results:
                atoms = r.to_ase()
                atoms.info["log_likelihood"] = r.log_likelihood if r.log_likelihood is not None else float("nan")
                atoms.info["valid"] = bool(r.valid) if r.valid is not None else False
                frames.append(atoms)
            write(str(tmp), frames, format="extxyz")
        elif fmt == "json":
            tmp.write_text(json.dumps([r.as_dict() for r in results]))
        else:
            write_h5(results, tmp)
    return Path(path)


def write_h5(results: Sequence[GenerationResult], path: Path) -> None:
    """One HDF5 file: CIF text, lattice/species/coordinates, traces, reports, scores."""
    import h5py
    import numpy as np

    str_dt = h5py.string_dtype()
    with h5py.File(path, "w") as f:
        f.attrs["format"] = "crystalgen-results-v1"
        f.attrs["count"] = len(results)
        f.create_dataset("formula", data=[r.structure.composition.formula for r in results], dtype=str_dt)
        f.create_dataset("cif", data=cif_strings(results), dtype=str_dt)
        f.create_dataset("lattice", data=np.array([r.structure.lattice.matrix for r in results]).reshape(-1, 3, 3))
        n_sites = np.array([len(r.structure) for r in results], np.int64)
        f.create_dataset("site_offsets", data=np.concatenate([[0], np.cumsum(n_sites)]))
        species = [s.specie.Z for r in results for s in r.structure]
        frac = [s.frac_coords for r in results for s in r.structure]
        f.create_dataset("species", data=np.array(species, np.int64))
        f.create_dataset("frac_coords", data=np.array(frac, np.float64).reshape(-1, 3))
        ll = [np.nan if r.log_likelihood is None else r.log_likelihood for r in results]
        f.create_dataset("log_likelihood", data=np.array(ll, np.float64))
        f.create_dataset("valid", data=np.array([bool(r.valid) for r in results]))
        f.create_dataset("trace", data=[json.dumps(r.trace) for r in results], dtype=str_dt)
        f.create_dataset("report", data=[json.dumps(r.report) for r in results], dtype=str_dt)
        f.create_dataset("metadata", data=[json.dumps(r.metadata) for r in results], dtype=str_dt)


def read_h5(path: str | Path) -> list[GenerationResult]:
    """Read results written by :func:`write_h5` back (structures from the stored arrays)."""
    import h5py
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
