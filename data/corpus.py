"""The prepared-corpus HDF5 file: schema, writer and reader.

`crystalgen data prepare` writes one file; training and evaluation read it with
`read_corpus`. N structures, M sites in total; ragged per-structure arrays are
stored concatenated, with an `*_offsets` array of length N+1 (structure i owns
rows offsets[i]:offsets[i+1]).

    /id                     (N,)    str    material id
    /source                 (N,)    str    source tag (CSV `source` column, else input file name)
    /properties/<name>      (N,)    f8     e.g. formation_energy_per_atom; NaN when missing
    /lattice                (N,3,3) f8     lattice vectors as rows, Å
    /lattice_params         (N,6)   f8     a, b, c (Å), alpha, beta, gamma (degrees)
    /num_sites              (N,)    i4
    /site_offsets           (N+1,)  i8
    /species                (M,)    i2     atomic numbers
    /frac_coords            (M,3)   f8
    /symmetry/              spglib at symprec = attrs["symprec"] (0.01)
        spacegroup          (N,)    i2
        std_lattice         (N,3,3) f8     standardised (conventional) cell
        std_offsets         (N+1,)  i8
        std_species         (S,)    i2
        std_frac_coords     (S,3)   f8
        std_wyckoff         (S,)    S1     Wyckoff letter of each standardised-cell atom
        asym_offsets        (N+1,)  i8     symmetry-reduced site list (one site per orbit)
        asym_index          (K,)    i4     index of the orbit's representative within the structure's std cell
        asym_multiplicity   (K,)    i4     orbit size in the standardised cell
    /wyckoff/               `crystalgen.representation.wyckoff.WyckoffCrystal` form
        ok                  (N,)    bool   False where conversion failed (then no sites, zeros)
        spacegroup          (N,)    i2
        lattice             (N,6)   f8     conventional a, b, c, alpha, beta, gamma
        site_offsets        (N+1,)  i8
        site_element        (W,)    i2     atomic number
        site_letter         (W,)    S1
        site_multiplicity   (W,)    i4
        site_xyz            (W,3)   f8     representative position
        site_oxidation      (W,)    i2     pymatgen's best oxidation-state guess for the element, 0 if none
    attrs: schema_version, symprec, sources (JSON list of input paths)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

SCHEMA_VERSION = 1

# Top-level per-structure arrays (besides id/source/properties) in the file.
_BASE_NAMES = ("lattice", "lattice_params", "num_sites", "site_offsets", "species", "frac_coords")


@dataclass
class Corpus:
    """The whole corpus in memory as numpy arrays (see the module docstring for the layout)."""

    ids: np.ndarray
    sources: np.ndarray
    properties: dict[str, np.ndarray]
    base: dict[str, np.ndarray]
    symmetry: dict[str, np.ndarray]
    wyckoff: dict[str, np.ndarray]
    attrs: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)

    def sites(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(atomic numbers, fractional coordinates) of structure i."""
        lo, hi = self.base["site_offsets"][i], self.base["site_offsets"][i + 1]
        return self.base["species"][lo:hi], self.base["frac_coords"][lo:hi]

    def structure(self, i: int):
        """Structure i as a pymatgen Structure."""
        from pymatgen.core import Lattice, Structure

        numbers, frac = self.sites(i)
        return Structure(Lattice(self.base["lattice"][i]), numbers.tolist(), frac)

    def wyckoff_crystal(self, i: int):
        """Structure i as a `WyckoffCrystal`, or None where conversion failed."""
        from pymatgen.core import Element

        from crystalgen.representation.wyckoff import WyckoffCrystal, WyckoffSite

        w = self.wyckoff
        if not w["ok"][i]:
            return None
        lo, hi = w["site_offsets"][i], w["site_offsets"][i + 1]
        sites = [
            WyckoffSite(Element.from_Z(int(z)).symbol, letter.decode(), int(m), tuple(float(v) for v in xyz))
            for z, letter, m, xyz in zip(
                w["site_element"][lo:hi], w["site_letter"][lo:hi], w["site_multiplicity"][lo:hi], w["site_xyz"][lo:hi]
            )
        ]
        return WyckoffCrystal(int(w["spacegroup"][i]), tuple(float(v) for v in w["lattice"][i]), sites)


def _as_float(value: Any) -> float:
    return value if isinstance(value, float) else float("nan")


def _ragged(rows: list[np.ndarray], dtype: str, width: int | None = None) -> np.ndarray:
    shape = (0,) if width is None else (0, width)
    return np.concatenate(rows).astype(dtype) if rows else np.zeros(shape, dtype)


def _offsets(lengths: list[int]) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]).astype(np.int64)


def build_corpus(entries: list[dict[str, Any]], attrs: dict[str, Any] | None = None) -> Corpus:
    """Stack per-structure dicts (as made by `crystalgen.data.prepare.process_entry`) into a Corpus."""
    names = sorted({k for e in entries for k, v in e["properties"].items() if isinstance(v, float)})
    props = {n: np.array([_as_float(e["properties"].get(n)) for e in entries], dtype="f8") for n in names}

    def stack(key: str, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
        return np.array([e[key] for e in entries], dtype=dtype).reshape((len(entries), *shape))

    base = {
        "lattice": stack("lattice", "f8", (3, 3)),
        "lattice_params": stack("lattice_params", "f8", (6,)),
        "num_sites": np.array([len(e["species"]) for e in entries], dtype="i4"),
        "site_offsets": _offsets([len(e["species"]) for e in entries]),
        "species": _ragged([e["species"] for e in entries], "i2"),
        "frac_coords": _ragged([e["frac_coords"] for e in entries], "f8", 3),
    }
    symmetry = {
        "spacegroup": stack("spacegroup", "i2", ()),
        "std_lattice": stack("std_lattice", "f8", (3, 3)),
        "std_offsets": _offsets([len(e["std_species"]) for e in entries]),
        "std_species": _ragged([e["std_species"] for e in entries], "i2"),
        "std_frac_coords": _ragged([e["std_frac_coords"] for e in entries], "f8", 3),
        "std_wyckoff": _ragged([e["std_wyckoff"] for e in entries], "S1"),
        "asym_offsets": _offsets([len(e["asym_index"]) for e in entries]),
        "asym_index": _ragged([e["asym_index"] for e in entries], "i4"),
        "asym_multiplicity": _ragged([e["asym_multiplicity"] for e in entries], "i4"),
    }
    wyckoff = {
        "ok": stack("wyckoff_ok", "bool", ()),
        "spacegroup": stack("wyckoff_spacegroup", "i2", ()),
        "lattice": stack("wyckoff_lattice", "f8", (6,)),
        "site_offsets": _offsets([len(e["wyckoff_element"]) for e in entries]),
        "site_element": _ragged([e["wyckoff_element"] for e in entries], "i2"),
        "site_letter": _ragged([e["wyckoff_letter"] for e in entries], "S1"),
        "site_multiplicity": _ragged([e["wyckoff_multiplicity"] for e in entries], "i4"),
        "site_xyz": _ragged([e["wyckoff_xyz"] for e in entries], "f8", 3),
        "site_oxidation": _ragged([e["wyckoff_oxidation"] for e in entries], "i2"),
    }
    ids = np.array([e["id"] for e in entries], dtype=object)
    sources = np.array([e["source"] for e in entries], dtype=object)
    return Corpus(ids, sources, props, base, symmetry, wyckoff, dict(attrs or {}))


def write_corpus(path: str | Path, corpus: Corpus) -> None:
    """Write `corpus` to an HDF5 file (overwrites)."""
    text = h5py.string_dtype("utf-8")
    with h5py.File(path, "w") as f:
        f.attrs["schema_version"] = SCHEMA_VERSION
        for key, value in corpus.attrs.items():
            f.attrs[key] = value if isinstance(value, (int, float, str)) else json.dumps(value)
        f.create_dataset("id", data=corpus.ids.astype(object), dtype=text)
        f.create_dataset("source", data=corpus.sources.astype(object), dtype=text)
        for name, array in corpus.properties.items():
            f.create_dataset(f"properties/{name}", data=array)
        if not corpus.properties:
            f.create_group("properties")
        for group, arrays in (("", corpus.base), ("symmetry", corpus.symmetry), ("wyckoff", corpus.wyckoff)):
            for name, array in arrays.items():
                f.create_dataset(f"{group}/{name}" if group else name, data=array, compression="gzip", compression_opts=4)


def read_corpus(path: str | Path) -> Corpus:
    """Load a corpus written by `write_corpus` into memory."""
    with h5py.File(path, "r") as f:
        version = int(f.attrs.get("schema_version", 0))
        if version != SCHEMA_VERSION:
            raise ValueError(f"{path}: corpus schema version {version}, this code reads {SCHEMA_VERSION}")
        attrs = {k: (v.item() if hasattr(v, "item") else v) for k, v in f.attrs.items()}
        ids = np.array(f["id"].asstr()[...], dtype=object)
        sources = np.array(f["source"].asstr()[...], dtype=object)
        props = {name: f["properties"][name][...] for name in f["properties"]}
        base = {name: f[name][...] for name in _BASE_NAMES}
        symmetry = {name: f["symmetry"][name][...] for name in f["symmetry"]}
        wyckoff = {name: f["wyckoff"][name][...] for name in f["wyckoff"]}
    return Corpus(ids, sources, props, base, symmetry, wyckoff, attrs)
