"""Generate the shipped Wyckoff table (`wyckoff_tables.npz`) from pyxtal, once.

Run ``python -m crystalgen.representation.build_tables``. Encoding, the grammar and
decoding then need only numpy: training runs on machines without pyxtal/pymatgen, and
sampling must not pay for building pyxtal ``Group`` objects.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

TABLE_PATH = Path(__file__).with_name("wyckoff_tables.npz")
SYSTEMS = ("triclinic", "monoclinic", "orthorhombic", "tetragonal", "trigonal", "hexagonal", "cubic")
LETTERS = "abcdefghijklmnopqrstuvwxyzA"
CENTRING = {"P": 1, "A": 2, "B": 2, "C": 2, "I": 2, "R": 3, "F": 4}


def crystal_system(sg: int) -> int:
    """Index into SYSTEMS for an international space-group number."""
    for i, last in enumerate((2, 15, 74, 142, 167, 194, 230)):
        if sg <= last:
            return i
    raise ValueError(sg)


def build(path: Path = TABLE_PATH) -> None:
    from pymatgen.core import Element
    from pyxtal.symmetry import Group

    sg_system = np.zeros(231, np.int8)
    sg_centring = np.zeros(231, np.int8)
    sg_symbol = [""] * 231
    sg_wp_offset = [0, 0]  # index 0 is an unused dummy group
    wp_letter, wp_mult, wp_free, wp_op_offset, ops = [], [], [], [0], []
    for sg in range(1, 231):
        group = Group(sg)
        sg_system[sg] = crystal_system(sg)
        sg_centring[sg] = CENTRING[group.symbol[0]]
        sg_symbol[sg] = group.symbol
        # pyxtal lists general -> special; store letters ascending (a first).
        for wp in sorted(group.Wyckoff_positions, key=lambda w: LETTERS.index(w.letter)):
            rot = wp.ops[0].affine_matrix[:3, :3]
            wp_letter.append(LETTERS.index(wp.letter))
            wp_mult.append(wp.multiplicity)
            wp_free.append([bool(np.any(rot[:, j] != 0)) for j in range(3)])
            ops.extend(op.affine_matrix[:3, :4] for op in wp.ops)
            wp_op_offset.append(len(ops))
        sg_wp_offset.append(len(wp_letter))
    electroneg = np.full(95, np.inf)
    for z in range(1, 95):
        x = Element.from_Z(z).X
        electroneg[z] = x if np.isfinite(x) else np.inf
    np.savez_compressed(
        path,
        sg_system=sg_system,
        sg_centring=sg_centring,
        sg_symbol=np.array(sg_symbol),
        sg_wp_offset=np.array(sg_wp_offset, np.int32),
        wp_letter=np.array(wp_letter, np.int8),
        wp_mult=np.array(wp_mult, np.int16),
        wp_free=np.array(wp_free, bool),
        wp_op_offset=np.array(wp_op_offset, np.int32),
        ops=np.array(ops, np.float64),
        electronegativity=electroneg,
    )


if __name__ == "__main__":
    build()
    print(f"wrote {TABLE_PATH}")
