"""A reference corpus indexed by anonymous formula, built once and cached next to the corpus.

Every entry is stored as its spglib primitive cell (arrays, so that a candidate is built
without parsing CIF text), with its space group, reduced element counts, formula units
per primitive cell (Z) and, where the corpus has it, e_above_hull. Entries are keyed by
the sorted reduced counts ("anonymous formula", e.g. (1, 1, 3) for ABX3); a query with Z
formula units in its cell is answered by every entry of the same key whose Z divides it,
so Z changes between a target and its analogue are found.

Parsing and symmetry analysis cost ~5 ms per structure, so the arrays are written to a
sidecar (`<corpus>.analogues.npz`, or the user cache when the corpus folder is read-only)
keyed by the corpus's size and SHA-256; a changed corpus is re-indexed.

Each entry also carries its prototype key (`prototype_key`: anonymous formula, space group
and the Wyckoff letters of each element's orbits), so the ranking can count how often a
structure type recurs in the corpus. A sidecar written without the keys gains them on load.
"""

from __future__ import annotations

import hashlib
import math
import os
import warnings
from dataclasses import dataclass, field
from functools import reduce
from pathlib import Path
from typing import Any

import numpy as np
import spglib
from pymatgen.core import Composition, Element, Lattice, Structure

from crystalgen.data.reference import REFERENCE_POOL, is_reference_file, resolve
from crystalgen.parallel import parallel_map

INDEX_VERSION = 1
SYMPREC = 0.1
_FIELDS = ("ids", "sources", "spacegroup", "e_above_hull", "lattice", "site_offsets", "species", "frac_coords")


def reduced_counts(numbers: np.ndarray) -> tuple[tuple[int, ...], tuple[int, ...], int]:
    """(atomic numbers, counts reduced by their gcd, the gcd = formula units) of a site list."""
    z, counts = np.unique(np.asarray(numbers), return_counts=True)
    g = reduce(math.gcd, counts.tolist())
    return tuple(int(v) for v in z), tuple(int(c) // g for c in counts), g


def composition_key(composition: Composition | str) -> tuple[tuple[str, ...], tuple[int, ...], int]:
    """(element symbols, reduced integer counts, formula units) of a cell composition."""
    amounts = Composition(composition).get_el_amt_dict()
    if any(abs(a - round(a)) > 1e-6 for a in amounts.values()):
        raise ValueError(f"{Composition(composition).formula}: fractional site occupancies have no analogue")
    counts = [int(round(a)) for a in amounts.values()]
    g = reduce(math.gcd, counts)
    return tuple(amounts), tuple(c // g for c in counts), g


def prototype_key(lattice: np.ndarray, numbers: np.ndarray, frac_coords: np.ndarray, symprec: float = SYMPREC) -> str:
    """The structure type of a cell: reduced counts, space group, and per element its reduced count
    with the sorted Wyckoff letters of its orbits ("1,1,3|221|1:a;1:b;3:c" for cubic perovskite).
    Element identities are dropped, so substituted analogues of one prototype share the key."""
    numbers = np.asarray(numbers, dtype=np.int64)
    _, counts, units = reduced_counts(numbers)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            data = spglib.get_symmetry_dataset((np.asarray(lattice, float), np.asarray(frac_coords, float), numbers),
                                               symprec=symprec)
    except Exception:  # spglib raises on some odd cells (older versions return None)
        data = None
    if data is None:
        return f"{','.join(map(str, sorted(counts)))}|1|"
    orbits = sorted(set(int(o) for o in data.equivalent_atoms))
    letters: dict[int, list[str]] = {}
    for o in orbits:
        letters.setdefault(int(numbers[o]), []).append(str(data.wyckoffs[o]))
    per_element = sorted(f"{int((numbers == z).sum()) // units}:{''.join(sorted(w))}" for z, w in letters.items())
    return f"{','.join(map(str, sorted(counts)))}|{int(data.number)}|{';'.join(per_element)}"


def _primitive_arrays(task: tuple[str, str, Any, float]) -> dict[str, Any] | None:
    """One entry as primitive-cell arrays; None when it cannot be parsed or is disordered."""
    ident, source, payload, e_hull = task
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            structure = payload if isinstance(payload, Structure) else Structure.from_str(payload, fmt="cif")
            if not structure.is_ordered:
                return None
            try:
                sga = SpacegroupAnalyzer(structure, symprec=SYMPREC)
                prim, sg = sga.find_primitive(), sga.get_space_group_number()
            except Exception:  # spglib fails on a few odd cells: keep the cell as given, P1
                prim, sg = structure, 1
    except Exception:
        return None
    lattice = np.asarray(prim.lattice.matrix, dtype=np.float64)
    species = np.array([site.specie.Z for site in prim], dtype=np.int16)
    frac_coords = np.asarray(prim.frac_coords, dtype=np.float64) % 1.0
    return {
        "id": ident, "source": source, "spacegroup": int(sg), "e_above_hull": float(e_hull),
        "lattice": lattice, "species": species, "frac_coords": frac_coords,
        "prototype": prototype_key(lattice, species, frac_coords),
    }


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _corpus_tasks(path: Path) -> list[tuple[str, str, Any, float]]:
    """(id, source, CIF text or Structure, e_above_hull) for every entry of a corpus path."""
    import h5py

    if is_reference_file(path):
        from crystalgen.data.reference import read_reference, read_reference_extras

        ids, _, cifs = read_reference(path)
        extras = read_reference_extras(path)
        sources = extras.get("source", [path.name] * len(ids))
        e_hull = extras.get("e_above_hull", [float("nan")] * len(ids))
        return list(zip(ids, sources, cifs, e_hull))
    if path.suffix in (".h5", ".hdf5") and path.is_file():
        with h5py.File(path, "r") as f:
            prepared = "schema_version" in f.attrs and "site_offsets" in f
        if prepared:
            from crystalgen.data.corpus import read_corpus

            corpus = read_corpus(path)
            e_hull = corpus.properties.get("e_above_hull", np.full(len(corpus), np.nan))
            return [(str(corpus.ids[i]), str(corpus.sources[i]), corpus.structure(i), float(e_hull[i]))
                    for i in range(len(corpus))]
    from crystalgen.data.readers import iter_raw

    tasks = []
    for entry in iter_raw(path):
        if entry.kind == "cif":
            payload = entry.payload
        else:
            from crystalgen.data.readers import parse_entry

            payload = parse_entry(entry).structure
            if payload is None:
                continue
        source = str(entry.properties.get("source") or path.name)
        tasks.append((entry.id, source, payload, _float(entry.properties.get("e_above_hull"))))
    return tasks


def corpus_fingerprint(path: Path) -> str:
    """size + SHA-256 of a corpus file (of the sorted names, sizes and contents' hashes for a folder)."""
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    size = 0
    for p in files:
        size += p.stat().st_size
        h.update(str(p.relative_to(path) if path.is_dir() else p.name).encode())
        with open(p, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return f"v{INDEX_VERSION}:{size}:{h.hexdigest()}"


def sidecar_paths(path: Path, fingerprint: str) -> list[Path]:
    """Where the index cache may live: next to the corpus (unless its folder is marked read-only,
    which even root respects here), else in the user cache."""
    beside = (path / ".analogues.npz") if path.is_dir() else path.with_name(path.name + ".analogues.npz")
    cache_root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "crystalgen" / "analogues"
    in_cache = cache_root / f"{fingerprint.split(':')[-1][:24]}.npz"
    folder = beside.parent
    read_only = folder.is_dir() and not folder.stat().st_mode & 0o222
    return [in_cache] if read_only else [beside, in_cache]


@dataclass
class AnalogueIndex:
    """Primitive cells of a reference corpus, looked up by anonymous formula.

    Per entry i: ids, sources, spacegroup, e_above_hull (NaN if unknown), lattice (3x3 rows,
    Å), sites species/frac_coords[site_offsets[i]:site_offsets[i+1]], prototype (its
    `prototype_key`; computed from the arrays when not given).
    """

    ids: np.ndarray
    sources: np.ndarray
    spacegroup: np.ndarray
    e_above_hull: np.ndarray
    lattice: np.ndarray
    site_offsets: np.ndarray
    species: np.ndarray
    frac_coords: np.ndarray
    origin: str = ""
    prototype: np.ndarray | None = None
    elements: list[tuple[int, ...]] = field(init=False, repr=False)
    counts: list[tuple[int, ...]] = field(init=False, repr=False)
    z: np.ndarray = field(init=False, repr=False)
    _by_key: dict[tuple[int, ...], np.ndarray] = field(init=False, repr=False)
    _popularity: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.prototype is None:
            self.prototype = np.array([prototype_key(self.lattice[i], self.species[lo:hi], self.frac_coords[lo:hi])
                                       for i, (lo, hi) in enumerate(zip(self.site_offsets[:-1], self.site_offsets[1:]))],
                                      dtype=object)
        self._popularity = {}
        for key in self.prototype:
            self._popularity[key] = self._popularity.get(key, 0) + 1
        self.elements, self.counts, zs = [], [], []
        by_key: dict[tuple[int, ...], list[int]] = {}
        for i in range(len(self.ids)):
            numbers, counts, g = reduced_counts(self.species[self.site_offsets[i]:self.site_offsets[i + 1]])
            self.elements.append(numbers)
            self.counts.append(counts)
            zs.append(g)
            by_key.setdefault(tuple(sorted(counts)), []).append(i)
        self.z = np.array(zs, dtype=np.int32)
        self._by_key = {k: np.array(v, dtype=np.int64) for k, v in by_key.items()}

    def __len__(self) -> int:
        return len(self.ids)

    def lookup(self, counts: tuple[int, ...], formula_units: int | None) -> np.ndarray:
        """Entries with these reduced counts (any order) whose Z divides `formula_units` (any Z if None)."""
        hits = self._by_key.get(tuple(sorted(counts)), np.zeros(0, dtype=np.int64))
        return hits[formula_units % self.z[hits] == 0] if len(hits) and formula_units else hits

    def popularity(self, i: int) -> int:
        """How many entries of the index share entry i's prototype (itself included)."""
        return self._popularity[self.prototype[i]]

    def formula(self, i: int) -> str:
        """Entry i's reduced formula."""
        return Composition({Element.from_Z(n): c for n, c in zip(self.elements[i], self.counts[i])}).reduced_formula

    def structure(self, i: int) -> Structure:
        """Entry i's primitive cell."""
        lo, hi = self.site_offsets[i], self.site_offsets[i + 1]
        return Structure(Lattice(self.lattice[i]), self.species[lo:hi].tolist(), self.frac_coords[lo:hi])

    def subset(self, keep: np.ndarray) -> "AnalogueIndex":
        """A new index holding only the entries where `keep` is True."""
        keep = np.asarray(keep, dtype=bool)
        lengths = np.diff(self.site_offsets)
        site_keep = np.repeat(keep, lengths)
        offsets = np.concatenate([[0], np.cumsum(lengths[keep])])
        return AnalogueIndex(self.ids[keep], self.sources[keep], self.spacegroup[keep], self.e_above_hull[keep],
                             self.lattice[keep], offsets, self.species[site_keep], self.frac_coords[site_keep],
                             self.origin, self.prototype[keep])

    # --- building and caching -------------------------------------------------------------

    @classmethod
    def from_entries(cls, rows: list[dict[str, Any]], origin: str = "") -> "AnalogueIndex":
        rows = [r for r in rows if r is not None]
        lengths = [len(r["species"]) for r in rows]
        return cls(
            ids=np.array([r["id"] for r in rows], dtype=object),
            sources=np.array([r["source"] for r in rows], dtype=object),
            spacegroup=np.array([r["spacegroup"] for r in rows], dtype=np.int16),
            e_above_hull=np.array([r["e_above_hull"] for r in rows], dtype=np.float64),
            lattice=np.array([r["lattice"] for r in rows], dtype=np.float64).reshape(-1, 3, 3),
            site_offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
            species=np.concatenate([r["species"] for r in rows]) if rows else np.zeros(0, np.int16),
            frac_coords=np.concatenate([r["frac_coords"] for r in rows]) if rows else np.zeros((0, 3)),
            origin=origin, prototype=np.array([r["prototype"] for r in rows], dtype=object),
        )

    @classmethod
    def build(cls, path: str | Path, workers: int = 2, progress: bool = True) -> "AnalogueIndex":
        """Index a corpus (no cache): reference pool .h5, `data prepare` .h5, CSV(.gz) or CIF folder/file."""
        path = resolve(path)
        tasks = _corpus_tasks(path)
        rows = parallel_map(_primitive_arrays, tasks, workers=workers, desc=f"index {path.name}", chunksize=64,
                            progress=progress, serial_below=256)
        return cls.from_entries(rows, origin=str(path))

    def save(self, path: Path, fingerprint: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".tmp{os.getpid()}.npz")
        arrays = {name: getattr(self, name) for name in _FIELDS}
        arrays["ids"] = np.array([str(v) for v in self.ids])
        arrays["sources"] = np.array([str(v) for v in self.sources])
        arrays["prototype"] = np.array([str(v) for v in self.prototype])
        np.savez_compressed(tmp, fingerprint=np.array(fingerprint), **arrays)
        os.replace(tmp, path)

    @classmethod
    def load_file(cls, path: Path, fingerprint: str | None = None, origin: str = "") -> "AnalogueIndex | None":
        """The cached index at `path`, or None if it is missing or was built from another corpus."""
        try:
            with np.load(path, allow_pickle=False) as data:
                if fingerprint is not None and str(data["fingerprint"]) != fingerprint:
                    return None
                arrays = {name: data[name] for name in _FIELDS}
                prototype = data["prototype"].astype(object) if "prototype" in data.files else None
        except (OSError, KeyError, ValueError):
            return None
        arrays["ids"] = arrays["ids"].astype(object)
        arrays["sources"] = arrays["sources"].astype(object)
        return cls(**arrays, origin=origin, prototype=prototype)

    @staticmethod
    def has_prototypes(path: Path) -> bool:
        """Whether the sidecar at `path` already stores the prototype keys."""
        try:
            with np.load(path, allow_pickle=False) as data:
                return "prototype" in data.files
        except (OSError, ValueError):
            return False


def load_index(path: str | Path = REFERENCE_POOL, workers: int = 2, progress: bool = True) -> AnalogueIndex:
    """The analogue index of a corpus: from its sidecar cache when it matches, else built and cached."""
    path = resolve(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such reference corpus")
    fingerprint = corpus_fingerprint(path)
    candidates = sidecar_paths(path, fingerprint)
    index = None
    for sidecar in candidates:
        index = AnalogueIndex.load_file(sidecar, fingerprint, origin=str(path))
        if index is not None and AnalogueIndex.has_prototypes(sidecar):
            return index
        if index is not None:  # an older sidecar: its prototype keys were just computed, store them
            break
    if index is None:
        index = AnalogueIndex.build(path, workers=workers, progress=progress)
    for sidecar in candidates:
        try:
            index.save(sidecar, fingerprint)
            break
        except OSError:
            continue
    return index
