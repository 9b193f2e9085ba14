"""Generate ``wyckoff_sets.npz``, the equivalent Wyckoff settings of every space group, once.

Run ``python -m crystalgen.representation.build_sets``. Per group it stores the coset
representatives of the Euclidean normaliser listed in pyxtal's ``wyckoff_sets.json`` that
keep a generic lattice of the crystal system (origin shifts, inversion, axis swaps where the
metric allows them), each with the Wyckoff-letter map it induces, found by moving a generic
point of every position rather than trusting the table's text. Rewriting a crystal with such
an operation gives the same crystal in another equally standard Wyckoff form; training uses
them as augmentation (``representation.equivalent``) with numpy alone.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from crystalgen.representation.build_tables import LETTERS, crystal_system
from crystalgen.representation.tables import SPACE_GROUPS, lattice_matrix
from crystalgen.representation.wyckoff import WyckoffError, representative

SETS_PATH = Path(__file__).with_name("wyckoff_sets.npz")
_GENERIC = {0: (4.1, 5.3, 6.7, 83.0, 101.0, 107.0), 1: (4.1, 5.3, 6.7, 90, 101.0, 90), 2: (4.1, 5.3, 6.7, 90, 90, 90),
            3: (4.1, 4.1, 6.7, 90, 90, 90), 4: (4.1, 4.1, 6.7, 90, 90, 120), 5: (4.1, 4.1, 6.7, 90, 90, 120),
            6: (4.1, 4.1, 4.1, 90, 90, 90)}


def generic_metric(sg: int) -> np.ndarray:
    """Metric tensor of a lattice with no equalities beyond those of the group's crystal system."""
    m = lattice_matrix(_GENERIC[crystal_system(sg)])
    return m @ m.T


def _lies_on(table, w: int, pos: np.ndarray) -> bool:
    try:
        representative(table, w, pos)
    except WyckoffError:
        return False
    return True


def letter_map(sg: int, rotation: np.ndarray, translation: np.ndarray, rng: np.random.Generator) -> list[int]:
    """Index of the Wyckoff position each position of ``sg`` goes to under the operation."""
    table = SPACE_GROUPS[sg]
    out = []
    for w in range(len(table.letters)):
        # several generic points, so that no point near a special position decides the image
        moved = [np.mod(rotation @ table.derive_xyz(w, rng.random(3)) + translation, 1.0) for _ in range(4)]
        hits = [v for v in range(len(table.letters))
                if table.multiplicity[v] == table.multiplicity[w] and all(_lies_on(table, v, m) for m in moved)]
        if not hits:
            raise ValueError(f"group {sg}: position {table.letters[w]} has no image")
        out.append(hits[0])
    return out


def build(path: Path = SETS_PATH) -> None:
    from pymatgen.core.operations import SymmOp
    from pyxtal.symmetry import Group

    rng = np.random.default_rng(0)
    offsets, rotations, translations, maps = [0, 0], [], [], []
    for sg in range(1, 231):
        metric = generic_metric(sg)
        for text in Group(sg).get_alternatives()["Coset Representative"]:
            try:
                op = SymmOp.from_xyz_str(text)
            except Exception:  # pyxtal's table holds a few malformed entries ("y,x-,z")
                continue
            rot, shift = np.rint(op.rotation_matrix), np.mod(op.translation_vector, 1.0)
            if not np.allclose(rot.T @ metric @ rot, metric):
                continue  # an axis permutation that needs equal lengths is no isometry in general
            mapping = letter_map(sg, rot, shift, rng)
            rotations.append(rot)
            translations.append(shift)
            maps.append(mapping + [-1] * (len(LETTERS) - len(mapping)))
        offsets.append(len(rotations))
    np.savez_compressed(
        path,
        sg_offset=np.array(offsets, np.int32),
        rotation=np.array(rotations, np.int8),
        translation=np.array(translations, np.float64),
        wp_map=np.array(maps, np.int8),
    )


if __name__ == "__main__":
    build()
    print(f"wrote {SETS_PATH}")
